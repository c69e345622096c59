"""Results tables: mean ± sample std over seeds, one row per method."""

from __future__ import annotations

from rich.table import Table


def format_score(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{100 * mean:.2f} ± {100 * (std or 0.0):.2f}"


def results_table(summaries: list[dict], title: str | None = None) -> Table:
    """A rich table of `results.json` summaries (scores in %)."""
    table = Table(title=title)
    for column in ("task", "setting", "method", "encoder", "seeds", "test (mean ± std)", "per seed (test)"):
        table.add_column(column, justify="right" if column.startswith(("seeds", "test")) else "left")
    for s in summaries:
        per_seed = "  ".join(f"{r['seed']}:{100 * r['test']:.2f}" for r in s["per_seed"])
        table.add_row(
            s["task"], s["setting"], s["method"], s["encoder"], str(len(s["per_seed"])),
            format_score(s["test_mean"], s["test_std"]), per_seed,
        )
    return table


def results_markdown(summaries: list[dict]) -> str:
    lines = ["| task | setting | method | seeds | test (mean ± std) |", "|---|---|---|---|---|"]
    for s in summaries:
        lines.append(
            f"| {s['task']} | {s['setting']} | {s['method']} | {len(s['per_seed'])} | "
            f"{format_score(s['test_mean'], s['test_std'])} |"
        )
    return "\n".join(lines)
