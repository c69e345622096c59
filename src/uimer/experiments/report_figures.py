"""The report's figures, after the paper's: L_int per step with and without warm-up (Fig. 3) and
dm-multi-round's dev/test per round (Fig. 4). Each returns the (file name, caption) pairs it wrote."""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path

from uimer.experiments.results_view import ResultsView
from uimer.experiments.sweep import read_step_log


def _warmup(record: dict) -> float | str:
    value = ((record.get("spec") or {}).get("config") or {}).get("warmup_epochs", 0)
    return value if isinstance(value, str) else float(value or 0)  # "task", "0.1*" or epochs


def _read_steps(results: Path, record: dict) -> list[dict]:
    """The run's step log, stored compressed (`.jsonl.gz`) or, from older sweeps, as plain `.jsonl`."""
    text = read_step_log(results / Path(record["_path"]).parent / "logs" / f"seed{record['seed']}-steps.jsonl")
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _mean_curve(series: list[dict[int, float]]) -> tuple[list[int], list[float]]:
    xs = sorted({x for s in series for x in s})
    return xs, [statistics.fmean(s[x] for s in series if x in s) for x in xs]


def _label_axes(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Title, axis labels, integer ticks on x (steps or rounds) and a small legend: what both figures share."""
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)


def _save(fig, results: Path, name: str) -> str:
    """Lay out, write RESULTS/NAME and free the figure; returns NAME."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(results / name, dpi=110)
    plt.close(fig)
    return name


def figure_lint(results: Path, view: ResultsView) -> list[tuple[str, str]]:
    """Paper Fig. 3: L_int per training step with and without warm-up, per column and IM strategy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for record in view.records:
        if record.get("family") == "im":
            groups[(record["column"], record["method"])][record["variant"]].append(record)
    written = []
    for column in view.columns:
        pairs = []
        for (col, method), variants in sorted(groups.items()):
            if col != column:
                continue
            kinds = {_warmup(rs[0]) == 0 for rs in variants.values()}
            if kinds == {True, False}:
                pairs.append((method, variants))
        if not pairs:
            continue
        fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.6), squeeze=False)
        for ax, (method, variants) in zip(axes[0], pairs, strict=True):
            for variant, records in sorted(variants.items()):
                warm = _warmup(records[0])
                label = f"{variant} (warm-up {warm})" if warm != 0 else f"{variant} (no warm-up)"
                series = []
                for record in records:
                    steps = {int(s["step"]): float(s["l_int"]) for s in _read_steps(results, record)
                             if s.get("l_int") is not None and s.get("step") is not None}
                    if steps:
                        series.append(steps)
                        ax.plot(list(steps), list(steps.values()), alpha=0.2, linewidth=0.8,
                                color="tab:orange" if warm != 0 else "tab:blue")
                if series:
                    xs, ys = _mean_curve(series)
                    ax.plot(xs, ys, label=f"{label}, mean of {len(series)} seeds",
                            color="tab:orange" if warm != 0 else "tab:blue")
            _label_axes(ax, f"{column}: {method}", "training step", "L_int")
        name = _save(fig, results, f"fig3-lint-{column}.png")
        written.append((name, f"L_int with and without warm-up, {column} (paper Fig. 3)"))
    return written


def figure_rounds(results: Path, view: ResultsView) -> list[tuple[str, str]]:
    """Paper Fig. 4: dev and test after each round of dm-multi-round (round 0 = the warm-up model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_column: dict[str, list[dict]] = defaultdict(list)
    for record in view.records:
        if record.get("method") == "dm-multi-round":
            by_column[record["column"]].append(record)
    written = []
    for column in view.columns:
        records = by_column.get(column)
        if not records:
            continue
        curves: dict[str, list[dict[int, float]]] = {"dev": [], "test": []}
        for record in records:
            rounds = [h for h in record.get("history", []) if h.get("round") is not None
                      and (h.get("phase") in (None, "round"))]
            for key in curves:
                points = {int(h["round"]): 100 * float(h[key]) for h in rounds if h.get(key) is not None}
                if points:
                    curves[key].append(points)
        if not any(curves.values()):
            continue
        fig, ax = plt.subplots(figsize=(5.5, 3.6))
        for key, color in (("dev", "tab:green"), ("test", "tab:red")):
            if not curves[key]:
                continue
            xs, ys = _mean_curve(curves[key])
            spread = [statistics.stdev([s[x] for s in curves[key] if x in s])
                      if sum(x in s for s in curves[key]) > 1 else 0.0 for x in xs]
            ax.plot(xs, ys, marker="o", markersize=3, color=color, label=f"{key} (mean of {len(curves[key])} seeds)")
            ax.fill_between(xs, [y - s for y, s in zip(ys, spread, strict=True)],
                            [y + s for y, s in zip(ys, spread, strict=True)], color=color, alpha=0.15)
        _label_axes(ax, f"{column}: dm-multi-round", "round (0 = warm-up model)", "score (%)")
        name = _save(fig, results, f"fig4-rounds-{column}.png")
        written.append((name, f"multi-round dev/test curves, {column} (paper Fig. 4)"))
    return written
