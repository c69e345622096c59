"""Task metrics. Slot F1 is seqeval's default (conlleval-compatible, micro, entity level) mode, as JointBERT
and the UIMER reference use."""

from __future__ import annotations

import warnings

from seqeval.metrics import f1_score

HIGHER_IS_BETTER = {"accuracy": True, "slot_f1": True}


def accuracy(predictions: list[int], gold: list[int]) -> float:
    if not gold:
        return 0.0
    return sum(int(p == g) for p, g in zip(predictions, gold, strict=True)) / len(gold)


def slot_f1(predictions: list[list[str]], gold: list[list[str]]) -> float:
    """Entity-level micro F1 in seqeval's default (conlleval) mode.

    The label set holds JointBERT's PAD and UNK, which an undertrained tagger may predict. seqeval then counts
    them as (wrong) entities, as in the reference, and warns on every call; the warning is silenced so that
    sweep logs stay readable.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".* seems not to be NE tag", category=UserWarning)
        return float(f1_score(gold, predictions))
