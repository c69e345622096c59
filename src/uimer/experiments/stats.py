"""Paired comparisons of a method against the baseline, seed by seed.

The same seed draws the same few-shot subset (and the same initial head), so the seed-to-seed spread of a
column is mostly the subset's, shared by every method. Comparing each method with the baseline of the *same*
seed removes that shared part: the paired deltas d_s = method_s - baseline_s carry the method's own effect,
and their t-interval says whether it differs from 0 at the 95 % level. With 4 seeds the t quantile is 3.18,
so an interval excludes 0 only when the deltas are consistent, not just large on average. A comparison that
was looked at before with fewer seeds may ask for a stricter level (`confidence` in a grid's method entry).

Quantiles come from scipy's Student t.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from functools import lru_cache

DEFAULT_LEVEL = 0.95


@lru_cache(maxsize=256)
def t_quantile(df: int, level: float = DEFAULT_LEVEL) -> float:
    """The two-sided quantile t_{(1 + level) / 2, df}: the half-width of a `level` interval in standard errors."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    from scipy.stats import t  # imported here: scipy.stats is slow to load and most commands never need it

    return float(t.ppf((1 + level) / 2, df))


@dataclass
class PairedDelta:
    """method - baseline over the seeds both have; `low`/`high` bound the `level` t-interval of the mean."""

    seeds: list[int]
    deltas: list[float]
    mean: float
    low: float | None  # None with fewer than 2 pairs (no spread, no interval)
    high: float | None
    wins: int
    losses: int
    ties: int
    level: float = DEFAULT_LEVEL

    @property
    def n(self) -> int:
        return len(self.deltas)

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    @property
    def significant_gain(self) -> bool:
        return self.significant and self.mean > 0


def paired_delta(method: dict[int, float], baseline: dict[int, float],
                 level: float = DEFAULT_LEVEL) -> PairedDelta | None:
    """Pair per-seed scores by seed (seeds only one side has are left out); None if no seed is shared."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    deltas = [method[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(deltas)
    low = high = None
    if len(deltas) > 1:
        half = t_quantile(len(deltas) - 1, level) * statistics.stdev(deltas) / math.sqrt(len(deltas))
        low, high = mean - half, mean + half
    wins = sum(d > 0 for d in deltas)
    losses = sum(d < 0 for d in deltas)
    return PairedDelta(seeds, deltas, mean, low, high, wins, losses, len(deltas) - wins - losses, level)


def format_delta(delta: PairedDelta | None, digits: int = 2) -> str:
    """`+1.23 [-0.40, +2.86] 3–1` with a trailing `†` where the interval excludes 0; an interval at another
    level than 95 % names it: `[97.5 %: -0.40, +2.86]`."""
    if delta is None:
        return "—"
    text = f"{delta.mean:+.{digits}f}"
    if delta.low is not None and delta.high is not None:
        level = "" if delta.level == DEFAULT_LEVEL else f"{100 * delta.level:g} %: "
        text += f" [{level}{delta.low:+.{digits}f}, {delta.high:+.{digits}f}]"
    text += f" {delta.wins}–{delta.losses}"
    if delta.ties:
        text += f"–{delta.ties}"
    if delta.significant:
        text += " †"
    return text
