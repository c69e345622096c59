"""Progress display for long runs: one rich bar per seed over epochs, with the latest dev score."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class EpochProgress:
    def __init__(self, enabled: bool = True, max_epochs: int = 0, console: Console | None = None):
        self.enabled = enabled
        self.max_epochs = max_epochs
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.task_id = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def start_seed(self, seed: int) -> None:
        if self.progress is not None:
            self.task_id = self.progress.add_task(f"seed {seed}", total=self.max_epochs, status="")

    def epoch_done(self, record: dict) -> None:
        if self.progress is not None and self.task_id is not None:
            status = f"dev {record['dev']:.4f}"
            if record.get("l_int") is not None:
                status += f"  L_int {record['l_int']:.4f}"
            self.progress.update(self.task_id, advance=1, status=status)

    def end_seed(self, seed: int, result: dict) -> None:
        if self.progress is not None and self.task_id is not None:
            self.progress.update(
                self.task_id,
                total=result["epochs_run"],
                completed=result["epochs_run"],
                status=f"best dev {result['dev']:.4f} (epoch {result['best_epoch']})  test {result['test']:.4f}",
            )

    def skip(self, seed: int, result: dict) -> None:
        if self.enabled:
            self.console.print(f"seed {seed}: already done (test {result['test']:.4f}), skipped")
