"""Paired comparisons of a method against the baseline, seed by seed.

The same seed draws the same few-shot subset (and the same initial head), so the seed-to-seed spread of a
column is mostly the subset's, shared by every method. Comparing each method with the baseline of the *same*
seed removes that shared part: the paired deltas d_s = method_s - baseline_s carry the method's own effect,
and their t-interval says whether it differs from 0 at the 95 % level. With 4 seeds the t quantile is 3.18,
so an interval excludes 0 only when the deltas are consistent, not just large on average.

No scipy: the two-sided 95 % Student t quantiles are tabulated (df 1-30, then 40/60/120 and the normal
limit), interpolated linearly in 1/df between table entries.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# Two-sided 95 % quantiles t_{0.975, df}.
_T975 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
    29: 2.045, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980,
}
_Z975 = 1.959964


def t_quantile_975(df: int) -> float:
    """t_{0.975, df}: exact table values, interpolated in 1/df beyond 30, the normal quantile in the limit."""
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df in _T975:
        return _T975[df]
    keys = sorted(_T975)
    if df > keys[-1]:
        lo_df, lo_t, hi_inv, hi_t = keys[-1], _T975[keys[-1]], 0.0, _Z975
    else:
        lo_df = max(k for k in keys if k < df)
        hi_df = min(k for k in keys if k > df)
        lo_t, hi_inv, hi_t = _T975[lo_df], 1.0 / hi_df, _T975[hi_df]
    lo_inv = 1.0 / lo_df
    w = (1.0 / df - hi_inv) / (lo_inv - hi_inv)
    return hi_t + w * (lo_t - hi_t)


@dataclass
class PairedDelta:
    """method - baseline over the seeds both have; `low`/`high` bound the 95 % t-interval of the mean."""

    seeds: list[int]
    deltas: list[float]
    mean: float
    low: float | None  # None with fewer than 2 pairs (no spread, no interval)
    high: float | None
    wins: int
    losses: int
    ties: int

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


def paired_delta(method: dict[int, float], baseline: dict[int, float]) -> PairedDelta | None:
    """Pair per-seed scores by seed (seeds only one side has are left out); None if no seed is shared."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    deltas = [method[s] - baseline[s] for s in seeds]
    mean = statistics.fmean(deltas)
    low = high = None
    if len(deltas) > 1:
        half = t_quantile_975(len(deltas) - 1) * statistics.stdev(deltas) / math.sqrt(len(deltas))
        low, high = mean - half, mean + half
    wins = sum(d > 0 for d in deltas)
    losses = sum(d < 0 for d in deltas)
    return PairedDelta(seeds, deltas, mean, low, high, wins, losses, len(deltas) - wins - losses)


def format_delta(delta: PairedDelta | None, digits: int = 2) -> str:
    """`+1.23 [-0.40, +2.86] 3–1` with a trailing `†` where the interval excludes 0."""
    if delta is None:
        return "—"
    text = f"{delta.mean:+.{digits}f}"
    if delta.low is not None and delta.high is not None:
        text += f" [{delta.low:+.{digits}f}, {delta.high:+.{digits}f}]"
    text += f" {delta.wins}–{delta.losses}"
    if delta.ties:
        text += f"–{delta.ties}"
    if delta.significant:
        text += " †"
    return text
