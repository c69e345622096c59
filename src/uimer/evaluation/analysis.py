"""The paper's analyses of attributions (§5.3-5.4): explanations of single sentences (Table 3) and accuracy
split by whether rationales outscore non-rationales (Table 4).

a_R and a_N: for IM they are the method's multi-token scores (Eq. 4: all rationale pieces replaced together,
and as many non-rationale pieces), as in the paper; for per-token methods (GB, DM) they are the mean word
score over the rationale words and over the other words, as the paper does for DM. An example counts in
Table 4's a_R > a_N split only when both are defined (at least one rationale and one other word).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.evaluation.attributions import (
    TARGETS,
    SavedModel,
    encode_with_words,
    piece_attributions,
    predict_batch,
    target_probabilities,
    with_target,
    word_membership,
)
from uimer.evaluation.render import TokenExplanation
from uimer.interpret.base import Attribution, InterpretationMethod


def unit_of(method: InterpretationMethod) -> str:
    return method.unit


# -- inputs ----------------------------------------------------------------------------------------------
def rationale_source(task_name: str | None, rationale_file: str | None = None):
    """The rule source that marks rationale words for a task (None when the task has no rules)."""
    from pathlib import Path

    from uimer.data import rationales

    if rationale_file:
        return rationales.load_rationale_file(Path(rationale_file))
    if task_name == "snips-intent":
        return rationales.snips_intent_rationales()
    if task_name == "snips-slot":
        return rationales.snips_slot_rationales()
    return None


def parse_rationale(text: str, n_words: int) -> list[int]:
    """'0 1 0 ...' (or '0,1,0') -> flags; one per word (premise + hypothesis words for pairs)."""
    parts = text.replace(",", " ").split()
    if any(p not in ("0", "1") for p in parts):
        raise ConfigError(f"--rationale must be 0/1 flags separated by spaces, got {text!r}")
    if len(parts) != n_words:
        raise ConfigError(f"--rationale has {len(parts)} flags for {n_words} words")
    return [int(p) for p in parts]


def build_examples(sentences: list[str], kind: TaskKind, labels: list[str], *, pairs: list[str] | None = None,
                   gold_labels: list[str] | None = None, rationales: list[str] | None = None) -> list[Example]:
    """Whitespace-tokenised examples; gold labels by name (optional), rationale flags (optional)."""
    pairs = pairs or []
    gold_labels = gold_labels or []
    rationales = rationales or []
    if kind is TaskKind.PAIR and len(pairs) != len(sentences):
        raise ConfigError("pair models need one --pair hypothesis per sentence")
    for name, values in (("--label", gold_labels), ("--rationale", rationales)):
        if values and len(values) != len(sentences):
            raise ConfigError(f"give {name} once per sentence ({len(sentences)} sentences, {len(values)} given)")
    examples = []
    for i, sentence in enumerate(sentences):
        words = sentence.split()
        if not words:
            raise ConfigError("empty sentence")
        pair_words = pairs[i].split() if kind is TaskKind.PAIR else None
        label = None
        if gold_labels and kind is not TaskKind.TAGGING:
            if gold_labels[i] not in labels:
                raise ConfigError(f"unknown label {gold_labels[i]!r}; the model's labels are {', '.join(labels)}")
            label = labels.index(gold_labels[i])
        example = Example(words=words, label=label if label is not None else 0, pair_words=pair_words,
                          tags=[0] * len(words) if kind is TaskKind.TAGGING else None)
        if rationales:
            example.rationale = parse_rationale(rationales[i], len(example.all_words))
        examples.append(example)
    return examples


def mark_rationales(examples: list[Example], source, labels: list[str], label_names: list[str | None]) -> None:
    """Fill missing rationales from a rule source, using each example's given label name."""
    from uimer.data.rationales import mark_example_words

    if source is None:
        return
    for example, name in zip(examples, label_names, strict=True):
        if example.rationale is None:
            example.rationale = mark_example_words(source, example.words, example.pair_words, name)


# -- explanations ----------------------------------------------------------------------------------------
def group_means(scores: torch.Tensor, present: torch.Tensor, gold: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """(a_R, a_N, valid): mean score over rationale words and over the other scored words."""
    rationale = gold & present
    other = present & ~gold
    s = scores.masked_fill(~present, 0.0)
    n_r, n_o = rationale.sum(1), other.sum(1)
    a_r = (s * rationale).sum(1) / n_r.clamp_min(1)
    a_n = (s * other).sum(1) / n_o.clamp_min(1)
    return a_r, a_n, (n_r > 0) & (n_o > 0)


def _gold_words(examples: list[Example], idx: list[int], width: int, device) -> torch.Tensor:
    gold = torch.zeros(len(idx), width, dtype=torch.bool)
    for row, i in enumerate(idx):
        flags = examples[i].rationale or []
        n = min(len(flags), width)
        gold[row, :n] = torch.tensor(flags[:n], dtype=torch.bool)
    return gold.to(device)


def multi_token_scores(attribution: Attribution, present: torch.Tensor,
                       gold: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """(a_R, a_N, valid, note) per example: the method's own multi-token scores where it has them (IM's Eq. 4),
    else the means of its word scores over the rationale words and over the others."""
    if attribution.a_r is not None and attribution.a_n is not None:
        return attribution.a_r, attribution.a_n, attribution.valid, "Eq. 4, multi-token"
    return (*group_means(attribution.words.detach(), present, gold), "mean word score")


def explain_examples(method: InterpretationMethod, saved: SavedModel, examples: list[Example], *,
                     target: str = "pred", pieces: bool = False, batch_size: int = 32, max_length: int = 128,
                     device: torch.device | str = "cpu", model_name: str | None = None,
                     gold_known: list[bool] | None = None) -> list[TokenExplanation]:
    """One `TokenExplanation` per example (word scores, or piece scores with `pieces`)."""
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {TARGETS}")
    kind, labels, model = saved.kind, saved.labels, saved.model.to(device).eval()
    gold_known = gold_known or [False] * len(examples)
    if target == "gold" and not all(gold_known):
        raise ConfigError("--target gold needs the gold --label of every sentence")
    encoded = encode_with_words(examples, saved.tokenizer, kind, max_length)
    out: list[TokenExplanation | None] = [None] * len(examples)
    for batch in encoded.split.batches(batch_size):
        batch = batch.to(device)
        idx = batch.index.tolist()
        width = max(encoded.n_words[i] for i in idx)
        word_ids = encoded.batch_word_ids(idx, batch.input_ids.shape[1]).to(device)
        logits, pred = predict_batch(model, batch)
        explained = with_target(batch, kind, pred) if target == "pred" else batch
        with torch.no_grad():
            probability = target_probabilities(model, with_target(batch, kind, pred))
        attribution = method.attribute(model, explained, word_ids=word_ids, n_words=width)
        scores = attribution.words.detach()
        present = word_membership(word_ids, width).any(-1)
        gold = _gold_words(examples, idx, width, device)
        has_rationale = [examples[i].rationale is not None and any(examples[i].rationale) for i in idx]
        a_r, a_n, valid, a_note = (None, None, None, "")
        if any(has_rationale):
            a_r, a_n, valid, a_note = multi_token_scores(attribution, present, gold)
        piece_scores = piece_attributions(method, model, explained) if pieces else None
        for row, i in enumerate(idx):
            e = examples[i]
            if kind is TaskKind.TAGGING:
                n = int(batch.word_mask[row].sum())
                prediction = " ".join(labels[t] for t in pred[row, :n].tolist())
            else:
                prediction = labels[int(pred[row])]
            if piece_scores is not None:
                real = batch.real_mask[row]
                tokens = saved.tokenizer.convert_ids_to_tokens(batch.input_ids[row][real].tolist())
                token_scores = piece_scores[row][real].tolist()
                rationale = batch.rationale[row][real].long().tolist() if e.rationale is not None else None
                pair_start = _pair_start_piece(batch.token_type_ids[row][real]) if kind is TaskKind.PAIR else None
            else:
                n_words = encoded.n_words[i]
                tokens = e.all_words
                token_scores = [float(s) if bool(p) else math.nan
                                for s, p in zip(scores[row, :n_words].tolist(), present[row, :n_words].tolist(),
                                                strict=True)]
                rationale = list(e.rationale) if e.rationale is not None else None
                pair_start = len(e.words) if kind is TaskKind.PAIR else None
            explanation = TokenExplanation(
                tokens=tokens, scores=token_scores, model_name=model_name or saved.name, method=method.name,
                unit=unit_of(method), prediction=prediction, probability=float(probability[row]),
                rationale=rationale, pair_start=pair_start,
                gold_label=labels[e.label] if gold_known[i] and kind is not TaskKind.TAGGING else None,
            )
            if valid is not None and bool(valid[row]):
                explanation.a_r, explanation.a_n = float(a_r[row]), float(a_n[row])
                explanation.a_note = a_note
            out[i] = explanation
    return [e for e in out if e is not None]


def _pair_start_piece(types: torch.Tensor) -> int | None:
    second = (types == 1).nonzero()
    return int(second[0]) if second.numel() else None


# -- Table 4 ---------------------------------------------------------------------------------------------
@dataclass
class AttributionAccuracy:
    """Accuracy split by a_R > a_N (Table 4), over one split."""

    model: str
    method: str
    examples: int
    valid: int  # examples where both a_R and a_N are defined
    accuracy: float  # over all examples
    accuracy_r_gt_n: float  # over valid examples with a_R > a_N
    accuracy_r_le_n: float  # over valid examples with a_R <= a_N
    share_r_gt_n: float  # fraction of valid examples with a_R > a_N
    count_r_gt_n: int
    target: str

    def as_dict(self) -> dict:
        return asdict(self)


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else math.nan


def table4_row(correct: np.ndarray, a_r: np.ndarray, a_n: np.ndarray, valid: np.ndarray, *, model: str,
               method: str, target: str) -> AttributionAccuracy:
    """Table 4's numbers from per-example correctness and scores (pure arithmetic)."""
    correct, valid = np.asarray(correct, dtype=bool), np.asarray(valid, dtype=bool)
    gt = valid & (np.asarray(a_r) > np.asarray(a_n))
    le = valid & ~gt
    return AttributionAccuracy(
        model=model, method=method, examples=int(correct.size), valid=int(valid.sum()),
        accuracy=_mean(correct.astype(float)), accuracy_r_gt_n=_mean(correct[gt].astype(float)),
        accuracy_r_le_n=_mean(correct[le].astype(float)),
        share_r_gt_n=float(gt.sum() / valid.sum()) if valid.any() else math.nan, count_r_gt_n=int(gt.sum()),
        target=target,
    )


def attribution_accuracy(method: InterpretationMethod, saved: SavedModel, examples: list[Example], *,
                         target: str = "gold", batch_size: int = 32, max_length: int = 128,
                         device: torch.device | str = "cpu", model_name: str | None = None) -> AttributionAccuracy:
    """Table 4 for one model on a split: a_R, a_N per example (target = gold class by default, as Eq. 4)."""
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {TARGETS}")
    kind, model = saved.kind, saved.model.to(device).eval()
    encoded = encode_with_words(examples, saved.tokenizer, kind, max_length)
    n = len(examples)
    correct = np.zeros(n, dtype=bool)
    a_r_all, a_n_all = np.zeros(n), np.zeros(n)
    valid_all = np.zeros(n, dtype=bool)
    for batch in encoded.split.batches(batch_size):
        batch = batch.to(device)
        idx = batch.index.tolist()
        width = max(encoded.n_words[i] for i in idx)
        word_ids = encoded.batch_word_ids(idx, batch.input_ids.shape[1]).to(device)
        _, pred = predict_batch(model, batch)
        if kind is TaskKind.TAGGING:
            same = (pred == batch.tags) | ~batch.word_mask
            correct[idx] = same.all(1).cpu().numpy()
        else:
            correct[idx] = (pred == batch.labels).cpu().numpy()
        explained = with_target(batch, kind, pred) if target == "pred" else batch
        present = word_membership(word_ids, width).any(-1)
        gold = _gold_words(examples, idx, width, device)
        attribution = method.attribute(model, explained, word_ids=word_ids, n_words=width)
        a_r, a_n, valid, _ = multi_token_scores(attribution, present, gold)
        a_r_all[idx] = a_r.detach().cpu().numpy()
        a_n_all[idx] = a_n.detach().cpu().numpy()
        valid_all[idx] = valid.cpu().numpy()
    return table4_row(correct, a_r_all, a_n_all, valid_all, model=model_name or saved.name, method=method.name,
                      target=target)
