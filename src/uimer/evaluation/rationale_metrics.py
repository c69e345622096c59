"""Plausibility and faithfulness of attribution scores against gold rationales (ERASER conventions).

Every metric is a class declaring `NAME`, `SHORT_NAME`, `FAMILY`, `RANGE` and `LOWER_IS_BETTER` (ferret's
evaluator convention) with one `compute(instances) -> MetricResult`. The metrics are pure arithmetic on
`ScoredInstances`; the model forwards that faithfulness needs are run beforehand by
`uimer.evaluation.attributions.score_examples`, so the numbers here can be checked by hand.

Conventions (decided here, printed by `uimer evaluate-rationales`):
- Unit = *word* (whitespace token), because rationales are annotated on words: a word's score is the max of
  its word pieces' scores (IM scores whole words directly). Premise and hypothesis words of a pair are one
  sequence. Words whose pieces were all truncated away are not scored and not counted.
- Ranking = descending score; ties go to the earlier word (a stable sort), so results are deterministic.
  Signed scores (gradient x input) are ranked as they are: the top words are those pushing the target up.
- Hard rationale = the top-k words; k = the instance's number of gold rationale words by default (so token
  precision = recall = F1 then), or a fixed k capped at the number of words.
- Token P/R/F1 = ERASER's `instance_macro`: per-instance precision |P & G|/|P|, recall |P & G|/|G| and F1,
  each averaged over instances.
- AUPRC = per-instance average precision (sklearn's step-wise AP, sum_n (R_n - R_{n-1}) P_n over distinct
  score thresholds, tied scores entering together), averaged over instances. (ERASER's `auprc` key is the
  trapezoidal area; its `average_precision` key is this one.)
- IOU F1 = ERASER's `partial_match_score` macro F1 at IOU >= 0.5: spans are maximal runs of consecutive
  words; a predicted span counts as matched when its best IOU with a gold span is >= 0.5; per-instance
  P = matched/|pred spans|, R = matched/|gold spans|; the reported value is F1(mean P, mean R).
- Comprehensiveness = p(c|x) - p(c|x minus the hard rationale), sufficiency = p(c|x) - p(c|hard rationale
  only), c = the predicted class (ERASER), averaged over instances. Removal deletes the words' pieces by
  default (ERASER deletes tokens); `--removal mask` replaces them by [MASK] instead (the only choice for
  slot filling, whose CRF needs every word).
- AOPC = the mean of those drops over the thresholds f in {1, 5, 10, 20, 50} % (ERASER's bins), removing
  (keeping) the top ceil(f * n) words, at least 1, of an n-word instance; thresholds are always printed.
- Only instances with at least one gold rationale word are scored (all metrics use the same instances).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

ERASER_THRESHOLDS = (0.01, 0.05, 0.10, 0.20, 0.50)
IOU_THRESHOLD = 0.5
PLAUSIBILITY, FAITHFULNESS = "plausibility", "faithfulness"


@dataclass
class ScoredInstances:
    """N instances padded to W words: scores, gold rationales, hard-rationale sizes, and perturbed
    probabilities of the predicted class (present only when faithfulness was computed)."""

    scores: np.ndarray  # (N, W) float, word attribution scores (anything beyond `mask` is ignored)
    gold: np.ndarray  # (N, W) bool, gold rationale words
    mask: np.ndarray  # (N, W) bool, scored words
    k: np.ndarray  # (N,) int, hard-rationale size per instance
    full: np.ndarray | None = None  # (N,) p(c | x)
    hard_comprehensiveness: np.ndarray | None = None  # (N,) p(c | x minus the top-k words)
    hard_sufficiency: np.ndarray | None = None  # (N,) p(c | top-k words only)
    comprehensiveness: dict[float, np.ndarray] = field(default_factory=dict)  # f -> (N,) p(c | x minus top f)
    sufficiency: dict[float, np.ndarray] = field(default_factory=dict)  # f -> (N,) p(c | top f only)

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        self.gold = np.asarray(self.gold, dtype=bool) & np.asarray(self.mask, dtype=bool)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.k = np.asarray(self.k, dtype=np.int64)

    @classmethod
    def from_lists(cls, scores: list, gold: list, k: list[int] | int | None = None, **faithfulness) -> ScoredInstances:
        """Ragged per-instance lists -> padded arrays; `k` None = gold size, an int = fixed k."""
        width = max((len(s) for s in scores), default=0)
        n = len(scores)
        s = np.zeros((n, width))
        g = np.zeros((n, width), dtype=bool)
        m = np.zeros((n, width), dtype=bool)
        for i, (row, flags) in enumerate(zip(scores, gold, strict=True)):
            s[i, : len(row)] = row
            g[i, : len(flags)] = np.asarray(flags, dtype=bool)
            m[i, : len(row)] = True
        return cls(s, g, m, hard_sizes(g, m, k), **faithfulness)

    @property
    def thresholds(self) -> tuple[float, ...]:
        return tuple(sorted(self.comprehensiveness))

    @property
    def has_faithfulness(self) -> bool:
        return self.full is not None


def hard_sizes(gold: np.ndarray, mask: np.ndarray, k: int | np.ndarray | list | None) -> np.ndarray:
    """k per instance: its number of gold words (None), or a fixed k capped at its number of words."""
    n_words = np.asarray(mask, dtype=bool).sum(1)
    if k is None:
        return (np.asarray(gold, dtype=bool) & mask).sum(1).astype(np.int64)
    return np.minimum(np.asarray(k, dtype=np.int64), n_words)


def threshold_counts(fraction: float, n_words: np.ndarray) -> np.ndarray:
    """Words removed (kept) at threshold f: ceil(f * n), at least 1 and at most n (0 only when n = 0).

    The tiny epsilon keeps f * n that is an integer up to rounding (0.1 * 30 = 3.0000000000000004) at it.
    """
    n = np.asarray(n_words, dtype=np.int64)
    counts = np.ceil(fraction * n - 1e-9).astype(np.int64)
    return np.clip(counts, np.minimum(1, n), n)


def top_k_mask(scores: np.ndarray, mask: np.ndarray, k: np.ndarray) -> np.ndarray:
    """(N, W) bool: each row's k highest-scoring words among `mask`, ties to the earlier word."""
    keys = np.where(mask, -np.asarray(scores, dtype=np.float64), np.inf)
    order = np.argsort(keys, axis=1, kind="stable")
    ranks = np.argsort(order, axis=1, kind="stable")
    return (ranks < np.asarray(k)[:, None]) & mask


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _f1(p: np.ndarray | float, r: np.ndarray | float) -> np.ndarray:
    p, r = np.asarray(p, dtype=np.float64), np.asarray(r, dtype=np.float64)
    return _safe_div(2 * p * r, p + r)


def average_precision(scores: np.ndarray, gold: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(N,) average precision per row (sklearn's definition, ties grouped); NaN for rows without gold.

    Sorted by descending score, position i belongs to the tie group ending at e(i); the precision of that
    group's threshold is TP(e)/(e+1), and every gold word adds (1/|G|) of recall there:
    AP = (1/|G|) sum_{i gold} TP(e(i)) / (e(i) + 1).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n, width = scores.shape
    if width == 0:
        return np.full(n, np.nan)
    keys = np.where(mask, -scores, np.inf)
    order = np.argsort(keys, axis=1, kind="stable")
    s = np.take_along_axis(keys, order, 1)
    g = np.take_along_axis(gold & mask, order, 1)
    valid = np.take_along_axis(mask, order, 1)
    tp = np.cumsum(g, axis=1)
    positions = np.arange(width)
    # the last position of each tie group: where the next key differs (or the row's scored words end)
    nxt = np.concatenate([s[:, 1:], np.full((n, 1), np.nan)], axis=1)
    nxt_valid = np.concatenate([valid[:, 1:], np.zeros((n, 1), dtype=bool)], axis=1)
    is_last = valid & (~nxt_valid | (nxt != s))
    candidate = np.where(is_last, positions, width)
    group_end = np.minimum.accumulate(candidate[:, ::-1], axis=1)[:, ::-1]
    group_end = np.minimum(group_end, width - 1)
    precision_at_end = np.take_along_axis(tp, group_end, 1) / (group_end + 1)
    n_gold = g.sum(1)
    total = (precision_at_end * g).sum(1)
    return np.where(n_gold > 0, _safe_div(total, n_gold), np.nan)


def spans(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True as [start, end) spans."""
    padded = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def iou_match_counts(predicted: np.ndarray, gold: np.ndarray, threshold: float = IOU_THRESHOLD
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per instance: predicted spans whose best IOU with a gold span is >= threshold, |pred spans|, |gold spans|."""
    matched, n_pred, n_gold = [], [], []
    for p_row, g_row in zip(predicted, gold, strict=True):
        p_spans, g_spans = spans(p_row), spans(g_row)
        hits = 0
        for ps, pe in p_spans:
            best = 0.0
            for gs, ge in g_spans:
                inter = max(0, min(pe, ge) - max(ps, gs))
                union = (pe - ps) + (ge - gs) - inter
                best = max(best, inter / union if union else 0.0)
            hits += int(best >= threshold)
        matched.append(hits)
        n_pred.append(len(p_spans))
        n_gold.append(len(g_spans))
    return np.array(matched), np.array(n_pred), np.array(n_gold)


# -- the metric classes ----------------------------------------------------------------------------------
@dataclass
class MetricResult:
    name: str
    value: float
    per_instance: np.ndarray  # (n,) over the instances scored (NaN where undefined)
    range: tuple[float, float]
    lower_is_better: bool
    family: str
    details: dict = field(default_factory=dict)

    @property
    def arrow(self) -> str:
        return "↓" if self.lower_is_better else "↑"

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "range": list(self.range),
                "lower_is_better": self.lower_is_better, "family": self.family, **self.details}


class RationaleMetric(ABC):
    """One plausibility or faithfulness metric (ferret-style class metadata + `compute`)."""

    NAME: ClassVar[str]
    SHORT_NAME: ClassVar[str]
    FAMILY: ClassVar[str]
    RANGE: ClassVar[tuple[float, float]]
    LOWER_IS_BETTER: ClassVar[bool]

    def compute(self, instances: ScoredInstances) -> MetricResult:
        """The metric over the instances that have a gold rationale (see the module docstring)."""
        rows = (instances.gold & instances.mask).any(1)
        values, details = self.per_instance(instances, rows)
        value = self.aggregate(values, details)
        return MetricResult(self.NAME, value, values, self.RANGE, self.LOWER_IS_BETTER, self.FAMILY, details)

    @abstractmethod
    def per_instance(self, instances: ScoredInstances, rows: np.ndarray) -> tuple[np.ndarray, dict]:
        """(n,) values for the selected rows, plus details for the report."""

    def aggregate(self, values: np.ndarray, details: dict) -> float:
        kept = values[~np.isnan(values)]
        return float(kept.mean()) if kept.size else math.nan


class _TokenOverlap(RationaleMetric):
    FAMILY = PLAUSIBILITY
    RANGE = (0.0, 1.0)
    LOWER_IS_BETTER = False

    @staticmethod
    def prf(instances: ScoredInstances, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        scores, gold, mask, k = instances.scores[rows], instances.gold[rows], instances.mask[rows], instances.k[rows]
        predicted = top_k_mask(scores, mask, k)
        tp = (predicted & gold).sum(1)
        p = _safe_div(tp, predicted.sum(1))
        r = _safe_div(tp, gold.sum(1))
        return p, r, _f1(p, r)

    def details_for(self, instances: ScoredInstances, rows: np.ndarray) -> dict:
        k = instances.k[rows]
        return {"k": "gold" if np.array_equal(k, instances.gold[rows].sum(1)) else "fixed",
                "mean_k": float(k.mean()) if k.size else 0.0, "instances": int(rows.sum())}


class TokenPrecision(_TokenOverlap):
    NAME = "token_precision"
    SHORT_NAME = "tok-P"

    def per_instance(self, instances, rows):
        return self.prf(instances, rows)[0], self.details_for(instances, rows)


class TokenRecall(_TokenOverlap):
    NAME = "token_recall"
    SHORT_NAME = "tok-R"

    def per_instance(self, instances, rows):
        return self.prf(instances, rows)[1], self.details_for(instances, rows)


class TokenF1(_TokenOverlap):
    NAME = "token_f1"
    SHORT_NAME = "tok-F1"

    def per_instance(self, instances, rows):
        return self.prf(instances, rows)[2], self.details_for(instances, rows)


class AUPRC(RationaleMetric):
    NAME = "auprc"
    SHORT_NAME = "AUPRC"
    FAMILY = PLAUSIBILITY
    RANGE = (0.0, 1.0)
    LOWER_IS_BETTER = False

    def per_instance(self, instances, rows):
        ap = average_precision(instances.scores[rows], instances.gold[rows], instances.mask[rows])
        return ap, {"instances": int(rows.sum()), "definition": "per-instance average precision, averaged"}


class IOUF1(RationaleMetric):
    NAME = "iou_f1"
    SHORT_NAME = "IOU-F1"
    FAMILY = PLAUSIBILITY
    RANGE = (0.0, 1.0)
    LOWER_IS_BETTER = False

    def __init__(self, threshold: float = IOU_THRESHOLD):
        self.threshold = threshold

    def per_instance(self, instances, rows):
        mask, k = instances.mask[rows], instances.k[rows]
        predicted = top_k_mask(instances.scores[rows], mask, k)
        matched, n_pred, n_gold = iou_match_counts(predicted, instances.gold[rows], self.threshold)
        p, r = _safe_div(matched, n_pred), _safe_div(matched, n_gold)
        details = {"iou_threshold": self.threshold, "precision": float(p.mean()) if p.size else math.nan,
                   "recall": float(r.mean()) if r.size else math.nan, "instances": int(rows.sum())}
        return _f1(p, r), details

    def aggregate(self, values, details) -> float:
        """ERASER's macro F1: the F1 of the mean precision and the mean recall."""
        if math.isnan(details["precision"]):
            return math.nan
        return float(_f1(details["precision"], details["recall"]))


class _Faithfulness(RationaleMetric):
    FAMILY = FAITHFULNESS
    RANGE = (-1.0, 1.0)

    def check(self, instances: ScoredInstances) -> None:
        if not instances.has_faithfulness:
            raise ValueError(f"{self.NAME} needs perturbed probabilities (compute them with faithfulness on)")


class Comprehensiveness(_Faithfulness):
    NAME = "comprehensiveness"
    SHORT_NAME = "comp"
    LOWER_IS_BETTER = False

    def per_instance(self, instances, rows):
        self.check(instances)
        return instances.full[rows] - instances.hard_comprehensiveness[rows], {"removed": "top-k words"}


class Sufficiency(_Faithfulness):
    NAME = "sufficiency"
    SHORT_NAME = "suff"
    LOWER_IS_BETTER = True

    def per_instance(self, instances, rows):
        self.check(instances)
        return instances.full[rows] - instances.hard_sufficiency[rows], {"kept": "top-k words"}


class _AOPC(_Faithfulness):
    key: ClassVar[str]

    def per_instance(self, instances, rows):
        self.check(instances)
        table = getattr(instances, self.key)
        thresholds = tuple(sorted(table))
        if not thresholds:
            raise ValueError(f"{self.NAME} needs at least one threshold")
        drops = np.stack([instances.full[rows] - table[f][rows] for f in thresholds], axis=1)
        curve = drops.mean(0).tolist() if drops.size else [math.nan] * len(thresholds)
        return drops.mean(1), {"thresholds": list(thresholds), "curve": curve}


class AOPCComprehensiveness(_AOPC):
    NAME = "aopc_comprehensiveness"
    SHORT_NAME = "AOPC-comp"
    LOWER_IS_BETTER = False
    key = "comprehensiveness"


class AOPCSufficiency(_AOPC):
    NAME = "aopc_sufficiency"
    SHORT_NAME = "AOPC-suff"
    LOWER_IS_BETTER = True
    key = "sufficiency"


PLAUSIBILITY_METRICS: tuple[type[RationaleMetric], ...] = (TokenPrecision, TokenRecall, TokenF1, AUPRC, IOUF1)
FAITHFULNESS_METRICS: tuple[type[RationaleMetric], ...] = (Comprehensiveness, Sufficiency, AOPCComprehensiveness,
                                                            AOPCSufficiency)
ALL_METRICS = PLAUSIBILITY_METRICS + FAITHFULNESS_METRICS


def evaluate_instances(instances: ScoredInstances) -> list[MetricResult]:
    """Every plausibility metric, and every faithfulness metric when perturbed probabilities are present."""
    metrics = list(PLAUSIBILITY_METRICS) + (list(FAITHFULNESS_METRICS) if instances.has_faithfulness else [])
    return [metric().compute(instances) for metric in metrics]
