"""How much of a data set carries a rationale: the numbers of digest §2.4, for any task."""

from __future__ import annotations

from collections.abc import Sequence

from uimer.data.types import Example, TaskKind


def rationale_stats(examples: Sequence[Example], labels: Sequence[str], kind: TaskKind | str) -> dict:
    """Coverage figures of a split.

    Returns `n_examples`; `coverage`, the share (0..1) of examples with at least one rationale word;
    `mean_rationale_words`, the mean over ALL examples (unannotated ones count 0) of rationale words; and
    for classification/pair tasks `per_class_coverage`, {label name: share}, for labels that occur in the split.
    """
    kind = TaskKind(kind)
    n = len(examples)
    n_words = [sum(ex.rationale) if ex.rationale is not None else 0 for ex in examples]
    stats: dict = {
        "n_examples": n,
        "coverage": (sum(1 for w in n_words if w > 0) / n) if n else 0.0,
        "mean_rationale_words": (sum(n_words) / n) if n else 0.0,
    }
    if kind in (TaskKind.CLASSIFICATION, TaskKind.PAIR):
        totals: dict[int, int] = {}
        covered: dict[int, int] = {}
        for ex, w in zip(examples, n_words, strict=True):
            if ex.label is None:
                continue
            totals[ex.label] = totals.get(ex.label, 0) + 1
            covered[ex.label] = covered.get(ex.label, 0) + (1 if w > 0 else 0)
        stats["per_class_coverage"] = {
            labels[i]: covered[i] / totals[i] for i in range(len(labels)) if totals.get(i)
        }
    return stats
