"""Results tables: mean ± sample std over seeds, one row per method, and the paired delta against the
baseline of the same task and setting (same seed = same few-shot subset, see `uimer.experiments.stats`)."""

from __future__ import annotations

from rich.table import Table

from uimer.experiments.stats import PairedDelta, format_delta, paired_delta


def format_score(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def _by_seed(summary: dict) -> dict[int, float]:
    return {int(r["seed"]): 100 * float(r["test"]) for r in summary["per_seed"]}


def paired_against_baseline(summary: dict, summaries: list[dict]) -> PairedDelta | None:
    """The summary's test scores minus those of a baseline run of the same task, setting and encoder."""
    if summary["method"] == "baseline":
        return None
    key = (summary["task"], summary["setting"], summary["encoder"])
    base = next((s for s in summaries if s["method"] == "baseline"
                 and (s["task"], s["setting"], s["encoder"]) == key), None)
    return paired_delta(_by_seed(summary), _by_seed(base)) if base is not None else None


def results_table(summaries: list[dict], title: str | None = None) -> Table:
    """A rich table of `results.json` summaries (scores in %); with a baseline among them, every other row
    also shows its paired delta: mean [95 % t-interval] wins–losses, † where the interval excludes 0."""
    table = Table(title=title)
    with_delta = any(s["method"] == "baseline" for s in summaries) and len(summaries) > 1
    columns = ["task", "setting", "method", "encoder", "seeds", "test (mean ± std)"]
    if with_delta:
        columns.append("Δ vs baseline, paired [95 % CI] W–L")
    columns.append("per seed (test)")
    for column in columns:
        table.add_column(column, justify="right" if column.startswith(("seeds", "test", "Δ")) else "left")
    for s in summaries:
        per_seed = "  ".join(f"{r['seed']}:{100 * r['test']:.2f}" for r in s["per_seed"])
        row = [s["task"], s["setting"], s["method"], s["encoder"], str(len(s["per_seed"])),
               format_score(s["test_mean"], s["test_std"])]
        if with_delta:
            delta = paired_against_baseline(s, summaries)
            row.append("" if s["method"] == "baseline" else format_delta(delta))
        table.add_row(*row, per_seed)
    return table


def results_markdown(summaries: list[dict]) -> str:
    lines = ["| task | setting | method | seeds | test (mean ± std) | Δ vs baseline, paired [95 % CI] W–L |",
             "|---|---|---|---|---|---|"]
    for s in summaries:
        delta = paired_against_baseline(s, summaries)
        lines.append(
            f"| {s['task']} | {s['setting']} | {s['method']} | {len(s['per_seed'])} | "
            f"{format_score(s['test_mean'], s['test_std'])} | {format_delta(delta) if delta else ''} |"
        )
    return "\n".join(lines)
