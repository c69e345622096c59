"""ERASER-format predictions (DeYoung et al. 2020, `rationale_benchmark/metrics.py` input), one JSON line per
scored example, so ERASER's own scorer (and tools reading its format) can consume uimer's attributions.

Per line: `annotation_id`; `rationales` with one entry per document (`docid`; `hard_rationale_predictions`
= the top-k words as maximal [start_token, end_token) spans; `soft_rationale_predictions` = one score per
word of the document); `classification` and `classification_scores` (label -> probability);
`comprehensiveness_classification_scores` / `sufficiency_classification_scores` (after removing / keeping
only the hard rationale); `thresholded_scores` (one entry per AOPC threshold, as ERASER's AOPC reads them).
Pairs have two documents, `<id>_premise` and `<id>_hypothesis`, with word offsets inside each. Words the
encoder truncated get the example's lowest score (ranked last).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from uimer.data.types import TaskKind
from uimer.errors import ConfigError
from uimer.evaluation.attributions import ScoredSplit
from uimer.evaluation.rationale_metrics import spans, top_k_mask


def _label_scores(labels: list[str], probs: np.ndarray) -> dict[str, float]:
    return {label: float(p) for label, p in zip(labels, probs, strict=True)}


def eraser_records(scored: ScoredSplit, labels: list[str], kind: TaskKind, prefix: str) -> list[dict]:
    """One ERASER prediction record per scored example (classification and pair tasks)."""
    if kind is TaskKind.TAGGING:
        raise ConfigError("ERASER's format is for classification; slot filling cannot be exported")
    if scored.probabilities is None or scored.perturbed.get("hard_comprehensiveness") is None:
        raise ConfigError("the ERASER export needs faithfulness scores (do not pass --no-faithfulness)")
    inst = scored.instances
    hard = top_k_mask(inst.scores, inst.mask, inst.k)
    records = []
    for row, (example, index) in enumerate(zip(scored.examples, scored.indices, strict=True)):
        n = len(example.all_words)
        scores = inst.scores[row, :n].astype(float)
        present = inst.mask[row, :n]
        floor = float(scores[present].min()) if present.any() else 0.0
        scores = np.where(present, scores, floor)
        annotation_id = f"{prefix}:{index}"
        if kind is TaskKind.PAIR:
            cut = len(example.words)
            docs = [(f"{annotation_id}_premise", 0, cut), (f"{annotation_id}_hypothesis", cut, n)]
        else:
            docs = [(annotation_id, 0, n)]
        rationales = []
        for docid, start, end in docs:
            rationales.append({
                "docid": docid,
                "hard_rationale_predictions": [{"start_token": a, "end_token": b}
                                               for a, b in spans(hard[row, start:end])],
                "soft_rationale_predictions": [float(s) for s in scores[start:end]],
            })
        p = scored.perturbed
        record = {
            "annotation_id": annotation_id,
            "rationales": rationales,
            "classification": labels[int(scored.predictions[row])],
            "classification_scores": _label_scores(labels, scored.probabilities[row]),
            "comprehensiveness_classification_scores": _label_scores(labels, p["hard_comprehensiveness"][row]),
            "sufficiency_classification_scores": _label_scores(labels, p["hard_sufficiency"][row]),
            "thresholded_scores": [
                {"threshold": f,
                 "comprehensiveness_classification_scores": _label_scores(labels, p["comprehensiveness"][f][row]),
                 "sufficiency_classification_scores": _label_scores(labels, p["sufficiency"][f][row])}
                for f in scored.fractions
            ],
        }
        records.append(record)
    return records


def write_jsonl(records: list[dict], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path
