"""Resumable sweeps over a grid: one JSON file per finished (setting, method variant, seed) run.

Layout of a results directory::

    DIR/runs/<task>/<setting>/<variant>/seed<S>.json          one finished run (SeedResult + metadata)
    DIR/runs/<task>/<setting>/<variant>/logs/seed<S>-steps.jsonl.gz   its per-step log (L_task, L_int, lr),
                                                                      gzip-compressed (see `read_step_log`)
    DIR/failed/<task>/<setting>/<variant>/seed<S>.json        the last error of a run that failed (removed on success)
    DIR/plans/<grid name>.json                                every run the grid expects (for the report)
    DIR/sweeps.jsonl                                          one line per sweep invocation (wall-clock)
    DIR/sweep.log                                             what happened, with timestamps

Resuming: a run is done when its file exists and carries the fingerprint (`RunSpec.fingerprint()`, which covers
the behaviour versions of the trainer and the method) of the run the grid now asks for; a file with another
fingerprint (the config changed, or the code's behaviour version was bumped) is rerun and replaced, and a
damaged file (truncated, not JSON) is rerun with a warning. A
run's file is written only once the run has finished, atomically (temporary file, fsync, rename); the
driver writes it, so a run killed at any point leaves nothing that counts, and the temporary files a kill
can leave behind are removed when the next sweep starts. One sweep at a time may work on a directory (an
flock on DIR/.sweep.lock, released by the kernel even on SIGKILL).

Execution: sequentially in this process (rich progress per run), or as Ray tasks (`--ray` starts a local
instance, `--ray-address` joins a cluster): each run is one task requesting the grid's `resources`
(num_cpus, num_gpus); the task sets torch's threads to its CPUs, prints a line per epoch (Ray forwards it to
the driver's console), and returns the result and step log to the driver, so workers need the data and
models at the same paths but no shared results directory. Sequential runs also use `num_cpus` torch
threads unless `--threads` says otherwise: on a busy machine, more threads than free cores make small
models many times slower (measured: a tiny BERT epoch 10x slower with 2 threads than with 1 on a loaded
2-core machine).

Cost estimate (`--dry-run`), per run, first that applies: the mean measured seconds (whole run, data loading
included) of finished runs of the same (column, variant), then of the same (column, method); the measured
baseline of the column times the variant's measured cost ratio to the baseline in the other columns of the
same task (a method's relative cost carries over between data sizes far better than a fixed factor: on
nli-500, 1.8x predicted 3,030 s for im-prior-warm, nli-100's ratio 2.8x predicts 4,720 s, measured 5,949 s);
the measured baseline times the method's cost factor; the grid's `cost.baseline[setting]` times the factor.
Factors: the grid's `cost.factor[variant or method]`, else DEFAULT_FACTORS (rough whole-run ratios to the
baseline on few-shot data, where evaluation dominates; measured numbers replace them as runs finish).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import gzip
import json
import logging
import math
import os
import signal
import socket
import statistics
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from uimer.atomic import write_json_atomic as _write_json
from uimer.atomic import write_text_atomic  # noqa: F401 - re-exported for the report
from uimer.errors import ConfigError, UimerError, UimerWarning, describe_os_error
from uimer.experiments.config import Cell, Grid, column_name
from uimer.training.runner import RunSpec
from uimer.training.trainer import TrainConfig

log = logging.getLogger("uimer.sweep")

RUNS = "runs"
FAILED = "failed"
PLANS = "plans"
CHECKPOINTS = "checkpoints"  # mid-run state of unfinished runs (git-ignored; removed when the run is stored)
SCHEMA = 1
# Whole-run cost relative to the baseline in the same setting (see the module docstring).
DEFAULT_FACTORS = {
    "baseline": 1.0, "gb-ghaeini": 2.5, "gb-huang": 2.5, "im-mask": 2.0, "im-mlm": 3.5, "im-prior": 3.5,
    "im-uniform": 3.5, "dm-one-pass": 3.0, "dm-multi-round": 6.0,
}


class SweepError(UimerError):
    """A sweep cannot start (lock held, Ray missing or unable to place a run)."""


# -- planning --------------------------------------------------------------------------------------------
@dataclass
class PlannedRun:
    cell: Cell
    seed: int
    spec: RunSpec
    fingerprint: str
    resources: dict

    @property
    def column(self) -> str:
        return column_name(self.spec.task, self.spec.setting)

    @property
    def run_dir(self) -> Path:
        return Path(RUNS) / self.spec.task / self.spec.setting / self.cell.variant

    @property
    def relpath(self) -> Path:
        return self.run_dir / f"seed{self.seed}.json"

    @property
    def steps_relpath(self) -> Path:
        return self.run_dir / "logs" / f"seed{self.seed}-steps.jsonl.gz"

    @property
    def checkpoint_relpath(self) -> Path:
        return Path(CHECKPOINTS) / self.spec.task / self.spec.setting / self.cell.variant / f"seed{self.seed}.pt"

    @property
    def failed_relpath(self) -> Path:
        return Path(FAILED) / self.spec.task / self.spec.setting / self.cell.variant / f"seed{self.seed}.json"

    @property
    def name(self) -> str:
        return f"{self.column}/{self.cell.variant}/seed{self.seed}"

    def meta(self) -> dict:
        """What the report needs to place a run, without reading the grid again."""
        return {
            "variant": self.cell.variant, "method": self.cell.method, "family": self.cell.family,
            "label": self.cell.label, "paper": self.cell.paper, "setting_key": self.cell.setting_key,
            "column": self.column, "task": self.spec.task, "setting": self.spec.setting,
            "encoder": self.spec.encoder, "seed": self.seed, "fingerprint": self.fingerprint,
            "versions": self.spec.versions(), "relpath": str(self.relpath), "confidence": self.cell.confidence,
        }


def _spec_for(cell: Cell, seed: int, data_dir: str | None, device: str | None) -> RunSpec:
    f = cell.fields
    config = TrainConfig(**f["train"], device=device or f.get("device") or "auto",
                         method_options=dict(f["options"]))
    if cell.task != "jsonl" and data_dir:
        run_data_dir = data_dir
    else:
        run_data_dir = f.get("data_dir")
    return RunSpec(
        task=cell.task, method=cell.method, encoder=f["encoder"], shot=f.get("shot"), train_size=f.get("train_size"),
        seeds=[seed], data_dir=run_data_dir, output_dir="", dev_size=f.get("dev_size"),
        max_length=f["max_length"], pooling=f["pooling"], save_model=False, rationale_file=f.get("rationale_file"),
        config=config,
    )


def plan_runs(grid: Grid, seeds: list[int] | None = None, only_settings: list[str] | None = None,
              only_methods: list[str] | None = None, data_dir: str | None = None,
              device: str | None = None, *, only_seeds: list[int] | None = None,
              gpus_per_run: float | None = None) -> list[PlannedRun]:
    """Expand methods x settings x seeds; `seeds` replaces every setting's seeds, `only_seeds` keeps only
    these of them (a filter, like `only_settings`). Paths must be unique. `gpus_per_run` replaces the grid's
    `resources.num_gpus` (a fraction lets Ray pack several runs onto one GPU); it is no part of a run's
    fingerprint."""
    if gpus_per_run is not None and (gpus_per_run < 0 or (gpus_per_run > 1 and gpus_per_run != int(gpus_per_run))):
        raise ConfigError(f"--gpus-per-run {gpus_per_run:g}: give a fraction in [0, 1] or a whole number of GPUs")
    runs: list[PlannedRun] = []
    owner: dict[Path, str] = {}
    cells = grid.cells(only_settings, only_methods)
    if only_seeds:
        known = sorted({int(seed) for cell in cells for seed in seeds or cell.fields["seeds"]})
        unknown = [seed for seed in only_seeds if seed not in known]
        if unknown:
            raise ConfigError(f"{grid.path}: --only-seeds {' '.join(map(str, unknown))}: no selected cell plans "
                              f"that seed (planned seeds: {' '.join(map(str, known))})")
    for cell in cells:
        resources = {"num_cpus": 1.0, "num_gpus": 0.0, **cell.fields.get("resources", {})}
        if gpus_per_run is not None:
            resources["num_gpus"] = float(gpus_per_run)
        for seed in seeds or cell.fields["seeds"]:
            if only_seeds and int(seed) not in only_seeds:
                continue
            spec = _spec_for(cell, int(seed), data_dir, device)
            run = PlannedRun(cell, int(seed), spec, spec.fingerprint(), resources)
            where = f"methods.{cell.variant} x settings.{cell.setting_key}"
            if run.relpath in owner and owner[run.relpath] != where:
                raise ConfigError(f"{grid.path}: {where} and {owner[run.relpath]} would both write {run.relpath} "
                                  "(same task, setting and variant): rename one of them")
            owner[run.relpath] = where
            runs.append(run)
    return runs


# -- files -----------------------------------------------------------------------------------------------
def read_json(path: Path) -> dict | None:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clean_temporaries(results: Path) -> int:
    """Remove what killed writers left behind (only ever called while holding the sweep lock)."""
    removed = 0
    for sub in (RUNS, FAILED, PLANS, CHECKPOINTS):
        for tmp in (results / sub).rglob(".*.tmp") if (results / sub).exists() else []:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed += 1
    for tmp in results.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed += 1
    return removed


@contextlib.contextmanager
def sweep_lock(results: Path) -> Iterator[None]:
    try:
        results.mkdir(parents=True, exist_ok=True)
        handle = open(results / ".sweep.lock", "a+")  # noqa: SIM115 - held for the whole sweep
    except OSError as err:
        raise SweepError(f"--results {results}: cannot create or write it: {describe_os_error(err)}") from err
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise SweepError(f"{results} is in use by another sweep ({holder}); wait for it or use another --results"
                             ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        yield
    finally:
        handle.close()


def run_status(results: Path, run: PlannedRun) -> str:
    """'done' (stored with this fingerprint), 'stale' (stored with another one: another configuration, or made by
    an older behaviour version of the code), 'damaged' (a run file that does not parse) or 'todo'."""
    path = results / run.relpath
    stored = read_json(path)
    if stored is None:
        return "damaged" if path.exists() else "todo"
    if not isinstance(stored.get("test"), int | float):
        return "damaged"
    return "done" if stored.get("fingerprint") == run.fingerprint else "stale"


def made_by_older_version(stored: dict, method: str) -> bool:
    """Whether a stored run was computed by an older behaviour version of the trainer, its method or its task's
    rationale reader (a run file without `versions` predates them: version 1 throughout)."""
    from uimer.training.runner import IMPLICIT_VERSION, behaviour_versions

    current = behaviour_versions(method, stored.get("task"))
    recorded = stored.get("versions") or {}
    return any(str(recorded.get(key, IMPLICIT_VERSION)) != value for key, value in current.items())


def write_plan(results: Path, grid: Grid, runs: list[PlannedRun]) -> None:
    write_json_atomic(results / PLANS / f"{grid.name}.json", {
        "schema": SCHEMA, "grid": grid.name, "files": [str(p) for p in grid.files],
        "written_at": utc_now(), "runs": [r.meta() for r in runs],
    })


def utc_now() -> str:
    """Now in UTC, to the second, ISO 8601: the one timestamp format of run files, manifests and logs (sweep and
    tune both write it, so their records sort and compare as text)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- one run (in this process or in a Ray worker) ----------------------------------------------------------
def _absolute_if_local(value: str | None) -> str | None:
    """Relative paths that exist here become absolute, so workers with another working directory find them."""
    if not value:
        return value
    path = Path(value).expanduser()
    if not path.is_absolute() and path.exists():
        return str(path.resolve())
    return value


def make_payload(run: PlannedRun, threads: int | None, results: Path | None = None) -> dict:
    """What a worker needs to train one run; with `results`, where it keeps (and resumes from) its checkpoint."""
    spec = asdict(run.spec)
    spec["encoder"] = _absolute_if_local(spec["encoder"])
    spec["rationale_file"] = _absolute_if_local(spec["rationale_file"])
    if spec["data_dir"]:
        spec["data_dir"] = str(Path(spec["data_dir"]).expanduser().resolve())
    options = spec["config"]["method_options"]
    if isinstance(options.get("mlm"), str):
        options["mlm"] = _absolute_if_local(options["mlm"])
    checkpoint = str((Path(results) / run.checkpoint_relpath).resolve()) if results is not None else None
    return {"name": run.name, "spec": spec, "seed": run.seed, "threads": threads, "meta": run.meta(),
            "checkpoint": checkpoint}


def partial_steps_path(checkpoint: Path) -> Path:
    """The step log of an unfinished run, kept next to its checkpoint so a resumed run continues it."""
    return checkpoint.with_name(checkpoint.stem + "-steps.jsonl")


def spec_from_dict(data: dict) -> RunSpec:
    data = dict(data)
    data["config"] = TrainConfig(**data["config"])
    return RunSpec(**data)


_ENCODED_CACHE: dict[tuple, object] = {}


def encoded_task(spec: RunSpec):
    """Tokenise a task once per process (Ray reuses workers): every run of a setting shares it, as seeds do."""
    from uimer.models.encoder import load_tokenizer
    from uimer.training.runner import EncodedTask, load_task_for

    key = (spec.task, spec.data_dir, spec.rationale_file, spec.encoder, spec.max_length, spec.dev_size)
    if key not in _ENCODED_CACHE:
        _ENCODED_CACHE.clear()  # one task at a time is plenty; a sweep is ordered by setting
        task = load_task_for(spec)
        _ENCODED_CACHE[key] = EncodedTask(task, load_tokenizer(spec.encoder), spec.max_length, spec.dev_size)
    return _ENCODED_CACHE[key]


def resolve_device(name: str):
    import torch

    from uimer.checks import default_device

    if name in (None, "", "auto"):
        return torch.device(default_device())
    return torch.device(name)


def execute_run(payload: dict, on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train and evaluate one seed; returns {"record": the run file's content, "steps": the step log text}."""
    import torch

    from uimer.training.checkpoint import SeedCheckpoint
    from uimer.training.runner import run_seed

    start = time.perf_counter()
    if payload.get("threads"):
        torch.set_num_threads(max(1, int(payload["threads"])))
    spec = spec_from_dict(payload["spec"])
    device = resolve_device(spec.config.device)
    spec.config = dataclasses.replace(spec.config, device=str(device))
    encoded = encoded_task(spec)
    with contextlib.ExitStack() as stack:
        checkpoint = None
        if payload.get("checkpoint"):
            checkpoint = SeedCheckpoint.for_run(Path(payload["checkpoint"]), payload["meta"]["fingerprint"],
                                                payload["seed"])
            steps_path = partial_steps_path(checkpoint.path)
        else:
            steps_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="uimer-run-"))) / "steps.jsonl"
        result = run_seed(spec, encoded, payload["seed"], device, on_epoch or (lambda record: None), steps_path,
                          checkpoint)
        steps = steps_path.read_text() if steps_path.exists() else ""
    resumed = checkpoint.resumed if checkpoint is not None else None
    earlier = resumed["seconds"] if resumed else 0.0  # the cut-off part's training time (its set-up is not known)
    record = {
        "schema": SCHEMA, **payload["meta"], **asdict(result),
        "wall_seconds": time.perf_counter() - start + earlier, "device": str(device),
        "threads": torch.get_num_threads(), "resumed_at": resumed["at"] if resumed else None,
        "host": socket.gethostname(), "finished_at": utc_now(),
        "spec": {k: v for k, v in payload["spec"].items() if k not in ("seeds", "output_dir", "save_model")},
    }
    return {"record": record, "steps": steps}


def write_step_log(path: Path, text: str) -> None:
    """A step log, gzip-compressed and reproducible (no name or time in the header), written atomically.
    Raw JSONL step logs were most of a results directory's size (131k lines for one grid)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_step_log(path: Path) -> str:
    """The text of a step log stored as `X.jsonl.gz` or `X.jsonl` (either name may be given); "" if absent."""
    path = Path(path)
    plain = path.with_name(path.name.removesuffix(".gz"))
    packed = plain.with_name(plain.name + ".gz")
    if packed.exists():
        return gzip.decompress(packed.read_bytes()).decode("utf-8")
    if plain.exists():
        return plain.read_text()
    return ""


def store_result(results: Path, run: PlannedRun, output: dict) -> dict:
    """The driver's half: step log first, then the run file (whose presence means 'done')."""
    write_step_log(results / run.steps_relpath, output.get("steps", ""))
    record = output["record"]
    if record.get("fingerprint") != run.fingerprint:  # an injected run function must not lie about its run
        raise SweepError(f"{run.name}: the run returned fingerprint {record.get('fingerprint')}, "
                         f"expected {run.fingerprint}")
    write_json_atomic(results / run.relpath, record)
    checkpoint = results / run.checkpoint_relpath
    for done_with in (results / run.failed_relpath, checkpoint, partial_steps_path(checkpoint)):
        with contextlib.suppress(FileNotFoundError):
            done_with.unlink()
    return record


def store_failure(results: Path, run: PlannedRun, error: BaseException, detail: str) -> None:
    write_json_atomic(results / run.failed_relpath, {
        **run.meta(), "error": f"{type(error).__name__}: {error}".strip(), "traceback": detail, "at": utc_now(),
    })


# -- cost model ------------------------------------------------------------------------------------------
def run_seconds(record: dict) -> float | None:
    """Worker-seconds of a finished run: its wall-clock times its torch threads, because a run given two threads
    holds two of the one-core workers that the budget and the cost model count in."""
    value = record.get("wall_seconds", record.get("seconds"))
    if not isinstance(value, int | float):
        return None
    threads = record.get("threads")
    return float(value) * (threads if isinstance(threads, int) and threads > 1 else 1)


def measured_seconds(dirs: list[Path]) -> dict[tuple[str, str], list[float]]:
    """Seconds of finished runs keyed by (column, variant) and (column, "method:" + method), plus each
    variant's cost ratios to the baseline, one per column where both are measured, keyed by
    ("task:" + task, "ratio:" + variant)."""
    table: dict[tuple[str, str], list[float]] = {}
    task_of: dict[str, str] = {}
    for root in dirs:
        for path in (Path(root) / RUNS).rglob("seed*.json") if (Path(root) / RUNS).exists() else []:
            record = read_json(path)
            if not record or "column" not in record:
                continue
            seconds = run_seconds(record)
            if seconds is None:
                continue
            table.setdefault((record["column"], record["variant"]), []).append(seconds)
            table.setdefault((record["column"], "method:" + record["method"]), []).append(seconds)
            if record.get("task"):
                task_of[record["column"]] = record["task"]
    ratios: dict[tuple[str, str], list[float]] = {}
    for (column, variant), seconds in table.items():
        baseline = table.get((column, "method:baseline"))
        if column in task_of and baseline and not variant.startswith("method:"):
            ratios.setdefault(("task:" + task_of[column], "ratio:" + variant), []).append(
                statistics.fmean(seconds) / statistics.fmean(baseline))
    return {**table, **ratios}


def cost_factor(grid: Grid, cell: Cell) -> float:
    factors = grid.cost.get("factor") or {}
    for key in (cell.variant, cell.method):
        if key in factors:
            return float(factors[key])
    for key in (cell.method, cell.method.rsplit("-", 1)[0]):
        if key in DEFAULT_FACTORS:
            return DEFAULT_FACTORS[key]
    return DEFAULT_FACTORS.get(cell.family, 3.0)


def estimate_seconds(grid: Grid, run: PlannedRun, measured: dict) -> tuple[float | None, str]:
    """Seconds for one run and where the number comes from."""
    column, cell = run.column, run.cell
    for key, source in (((column, cell.variant), "measured"), ((column, "method:" + cell.method), "measured")):
        if measured.get(key):
            return statistics.fmean(measured[key]), source
    baseline = measured.get((column, "method:baseline"))
    ratios = measured.get(("task:" + run.spec.task, "ratio:" + cell.variant))
    if baseline and ratios:
        ratio = statistics.fmean(ratios)
        return statistics.fmean(baseline) * ratio, f"baseline x {ratio:.1f} (task)"
    factor = cost_factor(grid, cell)
    if baseline:
        return statistics.fmean(baseline) * factor, f"baseline x {factor:g}"
    base = (grid.cost.get("baseline") or {}).get(cell.setting_key)
    if base is not None:
        return float(base) * factor, f"model {float(base):g}s x {factor:g}"
    return None, "unknown"


# -- executing a list of runs ------------------------------------------------------------------------------
@dataclass
class SweepOutcome:
    planned: int = 0
    skipped: int = 0
    finished: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False


RunFunction = Callable[[dict], dict]


def _log_line(results: Path, text: str) -> None:
    with open(results / "sweep.log", "a") as handle:
        handle.write(f"{utc_now()} {text}\n")


def run_sequential(todo: list[PlannedRun], results: Path, outcome: SweepOutcome, progress: bool = True,
                   threads: int | None = None, run_fn: RunFunction | None = None, console=None) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                   disable=not progress)
    with bar:
        overall = bar.add_task("runs", total=len(todo), status="")
        for run in todo:
            epochs = bar.add_task(f"  {run.name}", total=run.spec.config.max_epochs, status="")

            def on_epoch(record: dict, task_id=epochs) -> None:
                status = f"dev {record['dev']:.4f}" if record.get("dev") is not None else ""
                bar.update(task_id, advance=1, status=status)

            payload = make_payload(run, threads or max(1, math.floor(run.resources["num_cpus"])), results)
            _log_line(results, f"start {run.name}")
            try:
                output = run_fn(payload) if run_fn else execute_run(payload, on_epoch)
                record = store_result(results, run, output)
            except Exception as err:  # one broken run must not stop the grid
                detail = traceback.format_exc()
                store_failure(results, run, err, detail)
                outcome.failed.append((run.name, f"{type(err).__name__}: {err}"))
                _log_line(results, f"FAILED {run.name}: {type(err).__name__}: {err}")
                if not progress:
                    console.print(f"[red]failed[/red] {run.name}: {type(err).__name__}: {err}")
            else:
                outcome.finished.append(run.name)
                _log_line(results, f"done {run.name} test {record['test']:.4f} in {record.get('wall_seconds', 0):.1f}s")
                if not progress:
                    console.print(f"done {run.name}: test {100 * record['test']:.2f} ({record.get('wall_seconds', 0):.0f}s)")
            bar.remove_task(epochs)
            bar.update(overall, advance=1)


def import_ray():
    # Ray folds log lines that differ only in numbers ("repeated 2x across cluster"), which would hide the
    # per-epoch lines of parallel seeds; it reads this switch when it is first imported.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    try:
        import ray
    except ImportError:
        raise SweepError("--ray / --ray-address need Ray: pip install 'ray>=2.9' (or pip install 'uimer[ray]')") from None
    return ray


def epoch_printer(name: str) -> Callable[[dict], None]:
    """A Ray task has no progress bar, and an NLI run can take an hour: one printed line per epoch shows it is
    alive and how dev moves. Ray forwards a task's stdout to the driver's console and keeps it in its worker logs."""

    def on_epoch(record: dict) -> None:
        parts = [f"{name}:"]
        if record.get("round") is not None:
            parts.append(f"round {record['round']} {record.get('phase') or ''}".rstrip())
        parts.append(f"epoch {record.get('epoch')}")
        for key in ("dev", "l_task", "l_int", "l_phi"):
            if record.get(key) is not None:
                parts.append(f"{key} {record[key]:.4f}")
        print(" ".join(parts), flush=True)

    return on_epoch


def _ray_entry(payload: dict, run_fn: RunFunction | None = None) -> dict:
    """What a Ray worker executes (module level, so it pickles by reference)."""
    if run_fn:
        return run_fn(payload)
    print(f"{payload['name']}: started", flush=True)
    return execute_run(payload, epoch_printer(payload["name"]))


def run_on_ray(todo: list[PlannedRun], results: Path, outcome: SweepOutcome, address: str | None = None,
               num_cpus: int | None = None, progress: bool = True, run_fn: RunFunction | None = None,
               console=None) -> None:
    """One Ray task per run with the run's CPU/GPU request; results are written here as they arrive."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ray = import_ray()
    console = console or Console(stderr=True)
    started_here = not ray.is_initialized()
    if started_here:
        on_term = signal.getsignal(signal.SIGTERM)
        if address:
            ray.init(address=address, log_to_driver=True)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                     object_store_memory=256 * 1024 * 1024)
        # ray.init installs a SIGTERM handler that exits with SystemExit(1), so a polite kill of the sweep was
        # logged as "stopped by an error"; the caller's handler (`uimer sweep`: stop like Ctrl-C) comes back.
        if threading.current_thread() is threading.main_thread() and on_term is not None:
            signal.signal(signal.SIGTERM, on_term)
    pending: dict = {}
    try:
        total = ray.cluster_resources()
        for run in todo:
            for resource, amount in (("CPU", run.resources["num_cpus"]), ("GPU", run.resources["num_gpus"])):
                if amount > total.get(resource, 0.0) and not address:
                    raise SweepError(f"{run.name} asks for {amount:g} {resource} but the local Ray instance has "
                                     f"{total.get(resource, 0.0):g}; lower `resources` in the grid")
        remote = ray.remote(_ray_entry)
        for run in todo:
            threads = max(1, math.floor(run.resources["num_cpus"]))
            ref = remote.options(num_cpus=run.resources["num_cpus"], num_gpus=run.resources["num_gpus"],
                                 name=run.name).remote(make_payload(run, threads, results), run_fn)
            pending[ref] = run
            _log_line(results, f"submitted {run.name}")
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console,
                       disable=not progress)
        with bar:
            overall = bar.add_task("runs (ray)", total=len(todo), status="")
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    run = pending.pop(ref)
                    try:
                        record = store_result(results, run, ray.get(ref))
                    except Exception as err:  # the task's exception (RayTaskError) or a bad result
                        store_failure(results, run, err, str(err))
                        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
                        outcome.failed.append((run.name, first))
                        _log_line(results, f"FAILED {run.name}: {first}")
                    else:
                        outcome.finished.append(run.name)
                        _log_line(results, f"done {run.name} test {record['test']:.4f} "
                                           f"in {record.get('wall_seconds', 0):.1f}s")
                        bar.update(overall, status=f"last: {run.name} {100 * record['test']:.2f}")
                        if not progress:
                            console.print(f"done {run.name}: test {100 * record['test']:.2f}")
                    bar.update(overall, advance=1)
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()


def sweep(grid: Grid, results: Path, *, seeds: list[int] | None = None, only_settings: list[str] | None = None,
          only_methods: list[str] | None = None, only_seeds: list[int] | None = None,
          data_dir: str | None = None, device: str | None = None,
          use_ray: bool = False, ray_address: str | None = None, ray_num_cpus: int | None = None,
          threads: int | None = None, progress: bool = True, run_fn: RunFunction | None = None,
          console=None, gpus_per_run: float | None = None) -> SweepOutcome:
    """Run every planned run that is not done yet; returns what happened. Safe to interrupt and rerun."""
    results = Path(results)
    full_plan = plan_runs(grid, seeds, None, None, data_dir, device)
    runs = plan_runs(grid, seeds, only_settings, only_methods, data_dir, device, only_seeds=only_seeds,
                     gpus_per_run=gpus_per_run)
    if (use_ray or ray_address) and any(r.spec.config.device.startswith("cuda") and not r.resources["num_gpus"]
                                        for r in runs):
        raise ConfigError("--device cuda on Ray needs a GPU share per run: Ray hides the GPUs from tasks that "
                          "ask for none (give --gpus-per-run, e.g. 0.25 to run four at a time on one GPU)")
    outcome = SweepOutcome(planned=len(runs))
    started, t0 = utc_now(), time.perf_counter()
    with sweep_lock(results):
        removed = clean_temporaries(results)
        write_plan(results, grid, full_plan)
        status = {r.name: run_status(results, r) for r in runs}
        todo = [r for r in runs if status[r.name] != "done"]
        outcome.skipped = len(runs) - len(todo)
        for run in runs:
            if status[run.name] == "damaged":
                message = f"{results / run.relpath} is damaged (truncated or not JSON); that run starts over"
                warnings.warn(message, UimerWarning, stacklevel=2)
                _log_line(results, message)
        mode = "ray" if (use_ray or ray_address) else "sequential"
        _log_line(results, f"sweep {grid.name}: {len(runs)} runs, {outcome.skipped} done, {len(todo)} to run ({mode})"
                  + (f"; removed {removed} temporary files" if removed else ""))
        error = None
        try:
            if todo and mode == "ray":
                run_on_ray(todo, results, outcome, ray_address, ray_num_cpus, progress, run_fn, console)
            elif todo:
                run_sequential(todo, results, outcome, progress, threads, run_fn, console)
        except KeyboardInterrupt:
            outcome.interrupted = True
            _log_line(results, "interrupted")
            raise
        except BaseException as err:  # e.g. the Ray cluster went away: say so where the sessions are listed
            error = f"{type(err).__name__}: {err}".strip()
            _log_line(results, f"stopped by an error: {error}")
            raise
        finally:
            with open(results / "sweeps.jsonl", "a") as handle:
                handle.write(json.dumps({
                    "grid": grid.name, "mode": mode, "started": started, "finished": utc_now(),
                    "elapsed_seconds": round(time.perf_counter() - t0, 1), "planned": len(runs),
                    "skipped": outcome.skipped, "finished_runs": len(outcome.finished),
                    "failed_runs": len(outcome.failed), "interrupted": outcome.interrupted,
                    **({"error": error[:500]} if error else {}),
                }) + "\n")
    return outcome


def write_json_atomic(path: Path, data) -> None:
    _write_json(path, data, indent=1)
