"""What a results directory holds, as cells: the run files that count, grouped by (variant, column).

A run file counts for its cell when its fingerprint is the one the latest plan of its grid (DIR/plans/*.json)
expects; files written under another configuration, or by an older behaviour version of their method or the
trainer (`versions`; a file without it is version 1), are listed as stale and left out. Without any plan every
run file counts. The report (`uimer.experiments.report`) and its figures read this view; tests read it directly.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from uimer.errors import UimerError
from uimer.experiments.config import load_paper_results
from uimer.experiments.stats import DEFAULT_LEVEL, PairedDelta, paired_delta
from uimer.experiments.sweep import FAILED, PLANS, RUNS, made_by_older_version, read_json


@dataclass
class CellStats:
    variant: str
    column: str
    tests: list[float]  # in %
    seeds: list[int]
    expected: int | None = None  # seeds the plan expects (None: no plan)
    devs: list[float | None] = field(default_factory=list)  # in %, aligned with tests (None: not recorded)

    @property
    def n(self) -> int:
        return len(self.tests)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.tests) if self.tests else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.tests) if len(self.tests) > 1 else (0.0 if self.tests else None)

    @property
    def complete(self) -> bool:
        return self.expected is None or self.n >= self.expected

    @property
    def dev_mean(self) -> float | None:
        """Mean dev score (%) at the selected epochs: what variants are chosen by."""
        devs = [d for d in self.devs if d is not None]
        return statistics.fmean(devs) if devs and len(devs) == self.n else None

    def by_seed(self) -> dict[int, float]:
        return dict(zip(self.seeds, self.tests, strict=True))

    def dev_by_seed(self) -> dict[int, float]:
        return {s: d for s, d in zip(self.seeds, self.devs, strict=True) if d is not None}


@dataclass
class Row:
    variant: str
    method: str
    family: str
    label: str
    paper: dict[str, str | None] = field(default_factory=dict)  # column -> paper key
    tuned: bool = False  # written by `uimer tune`: chosen on dev among many trials, so its dev is optimistic
    # column -> level of its paired intervals there: the strictest its plans or runs state for that column (a
    # second look planned for one column leaves the variant's other columns at the default)
    levels: dict[str, float] = field(default_factory=dict)


@dataclass
class ResultsView:
    """Everything the report shows, computed once (tests read it directly)."""

    rows: list[Row]
    columns: list[str]
    cells: dict[tuple[str, str], CellStats]
    records: list[dict]
    stale: list[dict]
    missing: list[dict]
    failures: list[dict]
    sessions: list[dict]
    baseline: str | None
    paper: dict

    def cell(self, variant: str, column: str) -> CellStats | None:
        return self.cells.get((variant, column))

    def paper_mean(self, row: Row, column: str) -> float | None:
        key = row.paper.get(column)
        return self.paper["methods"].get(key, {}).get("mean", {}).get(column) if key else None

    def paper_std(self, row: Row, column: str) -> float | None:
        key = row.paper.get(column)
        return self.paper["methods"].get(key, {}).get("std", {}).get(column) if key else None

    def level(self, variant: str, column: str) -> float:
        """The interval level the variant's grid planned (`confidence`) in this column, else 95 %."""
        row = next((r for r in self.rows if r.variant == variant), None)
        return row.levels.get(column, DEFAULT_LEVEL) if row is not None else DEFAULT_LEVEL

    def paired(self, variant: str, column: str) -> PairedDelta | None:
        """The variant minus the baseline in this column, seed by seed (None without shared seeds)."""
        return self.paired_against(variant, self.baseline, column) if self.baseline else None

    def paired_against(self, variant: str, reference: str, column: str, score: str = "test") -> PairedDelta | None:
        """The variant minus any other row (e.g. its alpha-0 twin) in this column, seed by seed, on test or dev."""
        cell, ref = self.cell(variant, column), self.cell(reference, column)
        if cell is None or ref is None or variant == reference:
            return None
        # a planned second look binds both directions
        level = max(self.level(variant, column), self.level(reference, column))
        if score == "dev":
            return paired_delta(cell.dev_by_seed(), ref.dev_by_seed(), level)
        return paired_delta(cell.by_seed(), ref.by_seed(), level)

    def dev_choice(self, column: str, families: tuple[str, ...]) -> str | None:
        """The complete cell of these families with the highest mean dev score (ties: the earlier row). Rows
        written by `uimer tune` do not compete: their dev is the best of many trials, biased upward.

        Cells are compared on the seeds they all share: a cell that got extra seeds (new few-shot subsets, some
        harder than others) would otherwise be judged on other data than its rivals."""
        candidates = []
        for row in self.rows:
            cell = self.cell(row.variant, column)
            if row.family not in families or row.tuned or cell is None or not cell.complete or cell.dev_mean is None:
                continue
            candidates.append((row.variant, cell))
        if not candidates:
            return None
        shared = set.intersection(*(set(cell.seeds) for _, cell in candidates))
        best: tuple[float, str] | None = None
        for variant, cell in candidates:
            devs = [d for s, d in zip(cell.seeds, cell.devs, strict=True) if s in shared] if shared else cell.devs
            score = statistics.fmean(devs)
            if best is None or score > best[0]:
                best = (score, variant)
        return best[1]

    def shared_dev_mean(self, variant: str, column: str, families: tuple[str, ...]) -> float | None:
        """The mean dev `dev_choice` compared this cell on (its seeds shared with every competing cell)."""
        cell = self.cell(variant, column)
        if cell is None or cell.dev_mean is None:
            return None
        rivals = [self.cell(r.variant, column) for r in self.rows if r.family in families and not r.tuned]
        rivals = [c for c in rivals if c is not None and c.complete and c.dev_mean is not None]
        shared = set.intersection(*(set(c.seeds) for c in rivals)) if rivals else set()
        devs = [d for s, d in zip(cell.seeds, cell.devs, strict=True) if s in shared] if shared else cell.devs
        return statistics.fmean(devs)


def _column_order(columns: set[str], paper: dict) -> list[str]:
    known = [c for c in paper["settings"] if c in columns]
    return known + sorted(columns - set(known))


def _note_level(levels: dict[tuple[str, str], float], meta: dict) -> None:
    """Keep the strictest `confidence` stated for the variant in the run's column: a later plan at the default
    must not loosen it."""
    level, key = meta.get("confidence"), (meta["variant"], meta["column"])
    if isinstance(level, (int, float)) and not isinstance(level, bool) and DEFAULT_LEVEL <= level < 1:
        levels[key] = max(float(level), levels.get(key, DEFAULT_LEVEL))


def load_view(results: Path) -> ResultsView:
    results = Path(results)
    if not results.is_dir():
        raise UimerError(f"{results}: no such results directory")
    paper = load_paper_results()
    expected: dict[str, dict] = {}
    plan_files = sorted((results / PLANS).glob("*.json"), key=lambda p: (read_json(p) or {}).get("written_at", ""))
    levels: dict[tuple[str, str], float] = {}  # (variant, column) -> the strictest level a plan or run states
    for plan_file in plan_files:  # later plans win for a run both list
        for run in (read_json(plan_file) or {}).get("runs", []):
            expected[run["relpath"]] = run
            _note_level(levels, run)

    records, stale = [], []
    for path in sorted((results / RUNS).rglob("seed*.json")) if (results / RUNS).exists() else []:
        record = read_json(path)
        if not record or "test" not in record or "variant" not in record:
            continue
        relpath = str(path.relative_to(results))
        record["_path"] = relpath
        plan = expected.get(relpath)
        older = made_by_older_version(record, record.get("method", ""))
        record["_older_version"] = older
        if older or (plan is not None and plan["fingerprint"] != record.get("fingerprint")):
            stale.append(record)
        else:
            records.append(record)

    failures = []
    for path in sorted((results / FAILED).rglob("seed*.json")) if (results / FAILED).exists() else []:
        failure = read_json(path)
        if failure:
            failures.append(failure)

    # Rows in plan order (then any others), with the paper key per column.
    rows: dict[str, Row] = {}
    for meta in [*expected.values(), *records]:
        row = rows.setdefault(meta["variant"], Row(meta["variant"], meta["method"], meta["family"],
                                                   meta.get("label") or meta["variant"]))
        row.paper.setdefault(meta["column"], meta.get("paper"))
        row.tuned = row.tuned or bool(meta.get("tuned"))
        _note_level(levels, meta)
    for (variant, column), level in levels.items():
        if variant in rows:
            rows[variant].levels[column] = level
    columns = _column_order({m["column"] for m in [*expected.values(), *records]}, paper)

    cells: dict[tuple[str, str], CellStats] = {}
    for record in records:
        key = (record["variant"], record["column"])
        cell = cells.setdefault(key, CellStats(*key, [], []))
        cell.tests.append(100 * float(record["test"]))
        cell.seeds.append(int(record["seed"]))
        cell.devs.append(100 * float(record["dev"]) if record.get("dev") is not None else None)
    expected_by_cell: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for run in expected.values():
        expected_by_cell[(run["variant"], run["column"])].append(run)
    done = {r["_path"] for r in records}
    failed_by_path = {f.get("relpath"): f for f in failures}
    stale_paths = {r["_path"] for r in stale}
    missing = []
    for key, runs in expected_by_cell.items():
        cell = cells.setdefault(key, CellStats(*key, [], []))
        cell.expected = len(runs)
        absent = [r for r in runs if r["relpath"] not in done]
        if absent:
            missing.append({
                "variant": key[0], "column": key[1], "have": len(runs) - len(absent), "expected": len(runs),
                "seeds": [r["seed"] for r in absent],
                "failed": {r["seed"]: failed_by_path[r["relpath"]]["error"] for r in absent
                           if r["relpath"] in failed_by_path},
                "stale": [r["seed"] for r in absent if r["relpath"] in stale_paths],
            })
    cells = {k: v for k, v in cells.items() if v.n or v.expected}
    baseline = next((r.variant for r in rows.values() if r.variant == "baseline"), None) or next(
        (r.variant for r in rows.values() if r.method == "baseline"), None)
    sessions = []
    if (results / "sweeps.jsonl").exists():
        for line in (results / "sweeps.jsonl").read_text().splitlines():
            try:
                sessions.append(json.loads(line))
            except ValueError:
                continue
    return ResultsView(list(rows.values()), columns, cells, records, stale, missing, failures, sessions, baseline,
                       paper)
