"""`uimer report DIR`: the sweep's results side by side with the paper's, as DIR/REPORT.md (+ figures).

What counts is `uimer.experiments.results_view`'s job; the figures are `report_figures`'. Scores are test
scores at the best dev epoch, in %; "mean ± std" is over seeds with the sample (ddof = 1) standard deviation, as
the paper's Table 9.

Gains are paired (issue 29): the same seed draws the same few-shot subset, so every method is compared with
the baseline seed by seed (`uimer.experiments.stats`): the mean paired delta, its 95 % t-interval (or the
stricter level its grid planned for a second look, named in the interval), and wins and losses over the seeds;
`†` marks an interval that excludes 0.

Selection is on dev, never on test: the "best variant" of a family and the "best UIMER" of a column are the
complete cells with the highest *mean dev score* (ties: the earlier row); their test deltas are reported.

Targets (issues 6 and 29), per low-resource column (every column but the full-data ones): the dev-chosen
variant of each UIMER family (GB, IM, DM) has a significant paired gain over our baseline; the dev-chosen
best UIMER variant overall has a significant gain of at least half the paper's margin, where the paper's
margin is its best UIMER mean in that column (over all of its UIMER rows) minus its baseline.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import defaultdict
from pathlib import Path

from uimer.errors import UimerError
from uimer.experiments.report_figures import figure_lint, figure_rounds
from uimer.experiments.results_view import ResultsView, load_view
from uimer.experiments.stats import format_delta
from uimer.experiments.sweep import PLANS, read_json, write_text_atomic

FAMILIES = ("gb", "im", "dm")
NOTES = "NOTES.md"  # optional, in the results directory: included in the report after the targets
FAMILY_NAMES = {"gb": "UIMER-GB", "im": "UIMER-IM", "dm": "UIMER-DM"}


# -- formatting ------------------------------------------------------------------------------------------
def _f(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def table2(view: ResultsView) -> list[str]:
    base = view.baseline
    header = ["method", *view.columns]
    out = []
    for row in view.rows:
        cells = []
        for column in view.columns:
            cell = view.cell(row.variant, column)
            paper = view.paper_mean(row, column)
            if cell is None:  # not planned: the paper's number alone, for reference
                cells.append(f"({_f(paper)})" if paper is not None else "")
                continue
            if cell.mean is None:
                cells.append(f"— ({_f(paper)})")
                continue
            text = f"{_f(cell.mean)}{'' if cell.complete else '*'} ({_f(paper)})"
            base_cell = view.cell(base, column) if base else None
            if row.variant != base and base_cell is not None and base_cell.mean is not None:
                text += f" {_f(cell.mean - base_cell.mean, sign=True)}"
            cells.append(text)
        out.append([f"{row.variant}", *cells])
    return _table(header, out)


def table9(view: ResultsView) -> list[str]:
    header = ["method", *view.columns]
    out = []
    for row in view.rows:
        cells = []
        for column in view.columns:
            cell = view.cell(row.variant, column)
            paper_mean, paper_std = view.paper_mean(row, column), view.paper_std(row, column)
            paper_text = f" [{_f(paper_mean)} ± {_f(paper_std)}]" if paper_mean is not None and paper_std is not None \
                else (f" [{_f(paper_mean)}]" if paper_mean is not None else "")
            if cell is None:
                cells.append(paper_text.strip())
                continue
            if cell.mean is None:
                cells.append(f"— (0/{cell.expected}){paper_text}")
                continue
            seeds = f"{cell.n}" if cell.expected is None or cell.complete else f"{cell.n}/{cell.expected}"
            cells.append(f"{_f(cell.mean)} ± {_f(cell.std)} ({seeds}){paper_text}")
        out.append([row.variant, *cells])
    return _table(header, out)


def cost_table(view: ResultsView) -> tuple[list[str], float]:
    by_variant: dict[str, list[dict]] = defaultdict(list)
    for record in view.records:
        by_variant[record["variant"]].append(record)

    def wall(record: dict) -> float:
        return float(record.get("wall_seconds", record.get("seconds", 0.0)) or 0.0)

    def per_column(variant: str) -> dict[str, float]:
        groups: dict[str, list[float]] = defaultdict(list)
        for record in by_variant.get(variant, []):
            groups[record["column"]].append(wall(record))
        return {c: statistics.fmean(v) for c, v in groups.items()}

    base_cols = per_column(view.baseline) if view.baseline else {}
    rows, total = [], 0.0
    for row in view.rows:
        runs = by_variant.get(row.variant, [])
        if not runs:
            continue
        walls = [wall(r) for r in runs]
        trains = [float(r.get("seconds", 0.0) or 0.0) for r in runs]
        total += sum(walls)
        mine = per_column(row.variant)
        common = [c for c in mine if c in base_cols and base_cols[c] > 0]
        ratio = sum(mine[c] for c in common) / sum(base_cols[c] for c in common) if common else None
        rows.append([row.variant, str(len(runs)), _hours(sum(walls)), f"{statistics.fmean(walls):.0f}",
                     f"{statistics.fmean(trains):.0f}", f"{ratio:.2f}" if ratio is not None else "—"])
    header = ["method", "runs", "total (sum of runs)", "mean s / run", "mean training s / run", "× baseline"]
    return _table(header, rows), total


def seconds_matrix(view: ResultsView) -> list[str]:
    """Mean seconds per run for every (method, column): where the time goes."""
    groups: dict[tuple[str, str], list[float]] = defaultdict(list)
    for record in view.records:
        groups[(record["variant"], record["column"])].append(
            float(record.get("wall_seconds", record.get("seconds", 0.0)) or 0.0))
    rows = [[row.variant, *(f"{statistics.fmean(groups[(row.variant, c)]):.0f}" if groups.get((row.variant, c))
                            else "" for c in view.columns)] for row in view.rows
            if any(groups.get((row.variant, c)) for c in view.columns)]
    return _table(["method", *view.columns], rows)


def _choice_text(view: ResultsView, variant: str, column: str, families: tuple[str, ...]) -> str:
    cell = view.cell(variant, column)
    shared = view.shared_dev_mean(variant, column, families)
    dev = f"dev {_f(cell.dev_mean)}"
    if shared is not None and _f(shared) != _f(cell.dev_mean):  # it has seeds its rivals lack
        dev += f"; {_f(shared)} on the seeds all {'/'.join(families)} cells share"
    return f"{variant} ({dev}) test {_f(cell.mean)}, Δ {format_delta(view.paired(variant, column))}"


def target_lines(view: ResultsView) -> list[str]:
    """The targets per low-resource column, one line each, plus a tally. Variants are chosen by mean dev
    score; a gain counts only where its paired interval (95 %, or the level its grid planned) lies above 0."""
    base = view.baseline
    if base is None:
        return ["- no baseline runs: the targets cannot be checked"]
    paper_methods = view.paper["methods"]
    lines, family_ok, family_all, margin_ok, margin_all, best_sig, best_all = [], 0, 0, 0, 0, 0, 0
    for column in view.columns:
        if column.endswith("-full"):
            continue
        base_cell = view.cell(base, column)
        if base_cell is None or base_cell.mean is None:
            continue
        incomplete = [v for (v, c), cell in view.cells.items() if c == column and not cell.complete]
        note = f" (incomplete cells, not compared: {', '.join(sorted(incomplete))})" if incomplete else ""
        if not base_cell.complete:
            lines.append(f"- **{column}**: baseline incomplete ({base_cell.n} seeds): not checked{note}")
            continue
        parts = [f"baseline {_f(base_cell.mean)}"]
        for family in FAMILIES:
            # Only complete cells compete: a mean over fewer seeds than the baseline's is not comparable.
            variant = view.dev_choice(column, (family,))
            if variant is None:
                parts.append(f"{FAMILY_NAMES[family]}: no complete cell")
                continue
            delta = view.paired(variant, column)
            ok = delta is not None and delta.significant_gain
            family_all += 1
            family_ok += ok
            parts.append(f"{FAMILY_NAMES[family]} {_choice_text(view, variant, column, (family,))} "
                         f"{'✅' if ok else '❌'}")
        best = view.dev_choice(column, FAMILIES)
        if best is not None:
            delta = view.paired(best, column)
            best_all += 1
            best_sig += delta is not None and delta.significant_gain
            parts.append(f"best UIMER by dev: {best}")
        paper_base = paper_methods.get("baseline", {}).get("mean", {}).get(column)
        paper_uimer = [(m["mean"][column], k) for k, m in paper_methods.items()
                       if m.get("family") in FAMILIES and column in m.get("mean", {})]
        if best is not None and paper_base is not None and paper_uimer:
            paper_best, paper_key = max(paper_uimer)
            need = (paper_best - paper_base) / 2
            delta = view.paired(best, column)
            gain = delta.mean if delta is not None else math.nan
            ok = delta is not None and delta.significant_gain and gain >= need
            margin_all += 1
            margin_ok += ok
            parts.append(f"its gain {_f(gain, sign=True)} vs required {_f(need, sign=True)} "
                         f"(half the paper's {_f(paper_best - paper_base, sign=True)}, paper best {paper_key}), "
                         f"significant: {'yes' if delta is not None and delta.significant_gain else 'no'} "
                         f"{'✅' if ok else '❌'}")
        lines.append(f"- **{column}**: " + "; ".join(parts) + note)
    lines.append(f"- **tally**: dev-chosen family variant with a significant gain in {family_ok}/{family_all} "
                 f"(column, family) pairs; dev-chosen best UIMER with a significant gain in {best_sig}/{best_all} "
                 f"columns; margin target (significant and ≥ half the paper's margin) met in "
                 f"{margin_ok}/{margin_all} columns")
    return lines


def paired_table(view: ResultsView) -> list[str]:
    """Every variant minus the baseline, seed by seed: mean [95 % t-interval, or the planned level named inside]
    wins–losses, † if it excludes 0.
    `◆` marks the family's dev-chosen variant of the column, `★` the column's dev-chosen best UIMER."""
    rows = []
    for row in view.rows:
        if row.variant == view.baseline:
            continue
        cells = []
        for column in view.columns:
            delta = view.paired(row.variant, column)
            if delta is None:
                cells.append("")
                continue
            marks = ""
            if row.family in FAMILIES and view.dev_choice(column, (row.family,)) == row.variant:
                marks += " ◆"
            if view.dev_choice(column, FAMILIES) == row.variant:
                marks += " ★"
            cells.append(format_delta(delta) + marks)
        rows.append([row.variant, *cells])
    return _table(["method", *view.columns], rows)


def against_table(view: ResultsView, reference: str) -> list[str]:
    """Every other row minus `reference`, seed by seed, on test and on dev (`uimer report --against`)."""
    rows = []
    for row in view.rows:
        if row.variant == reference:
            continue
        for score in ("test", "dev"):
            cells = [format_delta(view.paired_against(row.variant, reference, column, score))
                     if view.cell(row.variant, column) and view.cell(reference, column) else ""
                     for column in view.columns]
            rows.append([f"{row.variant} ({score})", *cells])
    return _table(["method", *view.columns], rows)


def dev_table(view: ResultsView) -> list[str]:
    """Mean dev score (%) at the selected epochs: what the dev-based choices above read."""
    rows = []
    for row in view.rows:
        cells = []
        for column in view.columns:
            cell = view.cell(row.variant, column)
            cells.append(_f(cell.dev_mean) if cell is not None and cell.dev_mean is not None else "")
        rows.append([row.variant, *cells])
    return _table(["method", *view.columns], rows)


def budget_lines(results: Path, view: ResultsView) -> list[str]:
    """The time budget of each grid whose file sets `cost.budget`: run time so far plus the sweep's estimate
    for the rest, divided by the budget's parallel runs (run times are measured with that many running)."""
    from uimer.experiments.config import load_grid
    from uimer.experiments.sweep import estimate_seconds, measured_seconds, plan_runs, run_seconds

    lines = []
    counted = {r["_path"]: r for r in view.records}
    measured = None
    for plan_file in sorted((Path(results) / PLANS).glob("*.json")):
        plan = read_json(plan_file) or {}
        candidates = [plan.get("grid"), *(reversed(plan.get("files") or []))]
        grid = None
        for name in filter(None, candidates):
            try:
                grid = load_grid(name)
                break
            except UimerError:
                continue
        budget = (grid.cost.get("budget") if grid else None) or {}
        if not budget:
            continue
        measured = measured if measured is not None else measured_seconds([Path(results)])
        runs = plan_runs(grid)
        done = [counted[str(r.relpath)] for r in runs if str(r.relpath) in counted]
        spent = sum(run_seconds(r) or 0.0 for r in done)
        todo = [r for r in runs if str(r.relpath) not in counted]
        estimates = [estimate_seconds(grid, r, measured)[0] for r in todo]
        rest = sum(e for e in estimates if e is not None)
        unknown = sum(e is None for e in estimates)
        workers, hours = float(budget.get("workers", 1)), float(budget["hours"])
        wall = (spent + rest) / workers / 3600
        ok = wall <= hours and not unknown
        text = f"{len(done)}/{len(runs)} runs done in {_hours(spent)} of run time"
        if todo:
            text += (f"; the other {len(todo)} estimated at {_hours(rest)} by the sweep's cost model"
                     + (f" ({unknown} without an estimate)" if unknown else ""))
        lines.append(f"- **time, grid {grid.name}**: {text}; the whole grid ≈ {wall:.1f} h of wall-clock with "
                     f"{workers:g} run(s) in parallel, budget {hours:g} h {'✅' if ok else '❌'}")
    return lines


# -- the document ----------------------------------------------------------------------------------------
def render(results: Path, view: ResultsView, figures: list[tuple[str, str]], against: tuple[str, ...] = ()) -> str:
    encoders = sorted({r.get("encoder", "?") for r in view.records})
    grids = sorted({p.stem for p in (Path(results) / PLANS).glob("*.json")})
    lines = [f"# Results: {results}", ""]
    lines.append(f"{len(view.records)} runs counted"
                 + (f" from grid(s) {', '.join(grids)}" if grids else "")
                 + (f"; encoder(s): {', '.join(encoders)}" if encoders else "") + ". "
                 "Scores: test score (%) at the best dev epoch (accuracy for intent/NLI, slot F1 for slots).")
    dev_notes = defaultdict(set)
    for record in view.records:
        dev_size = (record.get("spec") or {}).get("dev_size")
        if dev_size:
            dev_notes[dev_size].add(record["column"])
    for size, columns in sorted(dev_notes.items()):
        lines.append("")
        lines.append(f"Model selection in {', '.join(sorted(columns))} used a seeded, label-stratified subset of "
                     f"{size} dev examples (the paper selects on the whole dev set).")
    lines += ["", "## Targets (low-resource columns)", "",
              "Variants are chosen by mean dev score, never by test. Δ: the variant's test minus the baseline's, "
              "seed by seed (same seed = same few-shot subset): mean [95 % t-interval] wins–losses; † marks an "
              "interval that excludes 0. A gain counts only where its interval lies above 0. A variant whose "
              "comparison was looked at before with fewer seeds is judged at the stricter level its grid "
              "planned (`confidence`), named inside its interval: [97.5 %: low, high].", "",
              *target_lines(view), *budget_lines(results, view)]
    notes = Path(results) / NOTES
    if notes.is_file():  # hand-written context for these runs (e.g. code changed since), shown verbatim
        lines += ["", f"## Notes on these runs ({NOTES})", "", notes.read_text().strip()]
    lines += ["", "## Paired deltas against the baseline (test, %)", "",
              "Each cell: mean of (variant − baseline) over the seeds both have [95 % t-interval; a stricter "
              "planned level is named inside] wins–losses(–ties); † the interval excludes 0; ◆ the family's variant chosen by mean dev in this column; "
              "★ the column's best UIMER variant chosen by mean dev. `tuned-*` rows were chosen by `uimer tune` "
              "on mean dev over many trials; they take no part in the ◆/★ choices (their dev is the best of "
              "many, hence optimistic), but their test deltas are paired like the others.", "",
              *paired_table(view)]
    for reference in against:
        lines += ["", f"## Paired deltas against {reference} (test and dev, %)", "",
                  f"Each cell: mean of (row − {reference}) over the seeds both have [95 % t-interval; a "
                  "stricter planned level is named inside] wins–losses(–ties); † the interval excludes 0. A control row (e.g. an alpha-0 twin) is the "
                  "reference: what a variant gains over it is what the difference between them buys.", "",
                  *against_table(view, reference)]
    lines += ["", "## Mean dev score at the selected epochs (%)", "",
              "What the dev-based choices read (dev is a seeded 1000-example subset where noted above).", "",
              *dev_table(view)]
    lines += ["", "## Table 2 layout: our mean (paper's mean) and our delta against our baseline", "",
              "Each cell: our mean over seeds, the paper's Table 2 mean in parentheses, then our mean minus our "
              "own baseline's in the same column. `*` marks a cell with fewer seeds than planned, `—` a planned "
              "cell without runs; a paper number alone marks a cell this grid does not run.", "", *table2(view)]
    lines += ["", "## Table 9 layout: mean ± sample std (seeds) [paper mean ± std]", "",
              "The number in parentheses is the count of seeds behind the cell (`n/planned` when incomplete). "
              "The paper publishes stds for the few-shot settings only.", "", *table9(view)]
    lines += ["", "## Missing cells", ""]
    if view.missing:
        for m in sorted(view.missing, key=lambda m: (view.columns.index(m["column"]) if m["column"] in view.columns
                                                   else 99, m["variant"])):
            extra = ""
            if m["failed"]:
                extra += "; failed: " + ", ".join(f"seed {s} ({e})" for s, e in m["failed"].items())
            if m["stale"]:
                extra += "; stale (config changed): seeds " + ", ".join(map(str, m["stale"]))
            lines.append(f"- {m['column']} × {m['variant']}: {m['have']}/{m['expected']} seeds; missing seeds "
                         f"{', '.join(map(str, m['seeds']))}{extra}")
    else:
        lines.append("None: every planned run is present." if view.cells else "No runs yet.")
    if view.stale:
        older = [r for r in view.stale if r.get("_older_version")]
        lines += ["", f"{len(view.stale)} run file(s) were written under an older configuration and are not counted "
                      "(a rerun of the sweep replaces them)."]
        if older:
            lines += ["", f"{len(older)} of them were made by an older behaviour version of their method or of the "
                          "trainer (stale, not counted, not deleted): "
                          + ", ".join(sorted(r["_path"] for r in older)[:20]) + (" ..." if len(older) > 20 else "")]
    cost_lines, total = cost_table(view)
    lines += ["", "## Wall-clock cost per method", "",
              "Seconds per run include loading and tokenising the task; training seconds are SeedResult.seconds. "
              "`× baseline` is the ratio of mean seconds per run to the baseline's, over the columns both have.",
              "", *cost_lines, ""]
    lines.append(f"Sum over all counted runs: {_hours(total)}.")
    if view.records:
        lines += ["", "Mean seconds per run:", "", *seconds_matrix(view)]
    if view.sessions:
        elapsed = sum(float(s.get("elapsed_seconds", 0)) for s in view.sessions)
        lines += ["", f"Wall-clock of the {len(view.sessions)} sweep invocation(s) on this directory: {_hours(elapsed)} "
                  "(parallel runs overlap; interrupted invocations included)."]
    if figures:
        lines += ["", "## Figures", ""]
        for name, caption in figures:
            lines += [f"![{caption}]({name})", "", f"*{caption}*", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(results: Path, figures: bool = True, output: Path | None = None,
                 against: tuple[str, ...] = ()) -> tuple[Path, str]:
    """Write the report (default DIR/REPORT.md); figures go to DIR and are linked relative to the report.
    `against`: rows to pair every other row with, besides the baseline (controls such as an alpha-0 twin)."""
    results = Path(results)
    view = load_view(results)
    known = [row.variant for row in view.rows]
    for reference in against:
        if reference not in known:
            raise UimerError(f"--against {reference}: no such row in {results} (rows: {', '.join(known) or 'none'})")
    path = Path(output) if output else results / "REPORT.md"
    drawn: list[tuple[str, str]] = []
    if figures and view.records:
        drawn = figure_lint(results, view) + figure_rounds(results, view)
        drawn = [(os.path.relpath(results / name, path.parent), caption) for name, caption in drawn]
    text = render(results, view, drawn, tuple(against))
    write_text_atomic(path, text)
    return path, text
