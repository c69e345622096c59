"""Word-level attribution scores of a saved model under any registered interpretation method, and the
perturbed forwards that faithfulness needs.

- A saved model (`uimer train --save-model`) is loaded with `load_saved_model`; `prepare_method` sets up what
  a method needs outside training: IM's replacement proposer (the prior needs the task's training text), or
  DM's extractor (`extractor.pt` saved next to the model when present, otherwise trained on the fly for
  `--extractor-epochs` epochs on the task's training data with the model frozen, exactly as the DM
  schedule's extractor phase).
- The *target* of an attribution is the predicted class (tag sequence) by default, or the gold one.
- GB and DM give a score per word piece; a word's score is the max over its pieces. IM scores whole words:
  per word w, the word's pieces are replaced together by the method's K proposals and
  a_w = LO(p(y|x)) - LO(sum_r q_r p(y | x'_w(r))) in bits (Eq. 4 for the one-word set {w}); all words of a
  batch go through the model in a few chunked forwards.
- Faithfulness removes whole words: their pieces are deleted (ERASER; the sequences are compacted in one
  tensor operation) or replaced by [MASK]; all thresholds of a batch are stacked and run in chunks.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from uimer.data.encoding import Batch, EncodedSplit, encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.evaluation.rationale_metrics import (
    ERASER_THRESHOLDS,
    ScoredInstances,
    hard_sizes,
    threshold_counts,
)
from uimer.interpret.base import InterpretationMethod, MethodSetup
from uimer.interpret.words import chunked, index_batch, pieces_to_words, word_membership  # noqa: F401 - re-exported
from uimer.models.task_model import TaskModel

EXTRACTOR_FILE = "extractor.pt"
REMOVALS = ("delete", "mask")
TARGETS = ("pred", "gold")


# -- loading --------------------------------------------------------------------------------------------
@dataclass
class SavedModel:
    model: TaskModel
    tokenizer: object
    info: dict
    path: Path

    @property
    def kind(self) -> TaskKind:
        return TaskKind(self.info["kind"])

    @property
    def labels(self) -> list[str]:
        return list(self.info["labels"])

    @property
    def name(self) -> str:
        return str(self.info.get("method") or self.path.name)

    @property
    def seed(self) -> int:
        return int(self.info.get("seed") or 0)


def load_saved_model(path: str | Path, device: torch.device | str = "cpu") -> SavedModel:
    model, tokenizer, info = TaskModel.load(Path(path))
    model.to(device).eval()
    return SavedModel(model, tokenizer, info, Path(path))


# -- words <-> pieces -----------------------------------------------------------------------------------
@dataclass
class EncodedWords:
    """A split encoded as the trainer does, plus each piece's word (global over premise + hypothesis)."""

    split: EncodedSplit
    word_ids: list[torch.Tensor]  # per example (L,) word index per piece, -1 on [CLS]/[SEP]
    n_words: list[int]  # per example: all its words (premise + hypothesis)

    def batch_word_ids(self, indices: Sequence[int], length: int) -> torch.Tensor:
        out = torch.full((len(indices), length), -1, dtype=torch.long)
        for row, i in enumerate(indices):
            ids = self.word_ids[i]
            out[row, : len(ids)] = ids
        return out


def encode_with_words(examples: list[Example], tokenizer, kind: TaskKind, max_length: int = 128) -> EncodedWords:
    """`encode_examples` plus the piece -> word map (the tokenizer called with the very same arguments)."""
    split = encode_examples(examples, tokenizer, kind, max_length)
    word_ids: list[torch.Tensor] = []
    if examples:
        firsts = [e.words for e in examples]
        if kind is TaskKind.PAIR:
            enc = tokenizer(firsts, [e.pair_words or [] for e in examples], is_split_into_words=True,
                            truncation=True, max_length=max_length)
        else:
            enc = tokenizer(firsts, is_split_into_words=True, truncation=True, max_length=max_length)
        for i, example in enumerate(examples):
            offset = len(example.words)
            ids = [-1 if w is None else w + (offset if s == 1 else 0)
                   for w, s in zip(enc.word_ids(i), enc.sequence_ids(i), strict=True)]
            word_ids.append(torch.tensor(ids, dtype=torch.long))
    return EncodedWords(split, word_ids, [len(e.all_words) for e in examples])


# -- targets --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_batch(model: TaskModel, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, predictions): class ids (B,), or predicted tags (B, W) padded with 0 (tagging)."""
    logits = model(batch)
    if model.kind is TaskKind.TAGGING:
        paths = model.predict(logits, batch)
        tags = torch.zeros_like(batch.tags)
        for row, path in enumerate(paths):
            tags[row, : len(path)] = torch.tensor(path, dtype=torch.long)
        return logits, tags
    return logits, logits.argmax(-1)


def with_target(batch: Batch, kind: TaskKind, prediction: torch.Tensor) -> Batch:
    """The batch whose labels (tags) are `prediction`: attributions and faithfulness then explain it."""
    if kind is TaskKind.TAGGING:
        return replace(batch, tags=prediction)
    return replace(batch, labels=prediction)


def target_probabilities(model: TaskModel, batch: Batch) -> torch.Tensor:
    """(B,) p(target | x): the target class's softmax, or the CRF probability of the target tag sequence."""
    return model.gold_log_prob(model(batch), batch).exp()


# -- preparing a method outside training ---------------------------------------------------------------
@dataclass
class PrepareOptions:
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    seed: int = 0
    max_length: int = 128
    batch_size: int = 24
    train_examples: list[Example] | None = None  # the task's training data (IM prior, DM extractor)
    log: Callable[[str], None] = lambda message: None


def prepare_method(method: InterpretationMethod, saved: SavedModel, options: PrepareOptions) -> None:
    """Set up `method` to explain `saved.model`: IM proposer, DM extractor (loaded or trained); GB needs none."""
    if method.family == "baseline":
        raise ConfigError("the baseline has no interpretation method; pick one with --method (gb-*, im-*, dm-*)")
    with torch.random.fork_rng(devices=_rng_devices(options.device)):
        torch.manual_seed(options.seed)
        if method.family == "im":
            _prepare_im(method, saved, options)
        elif method.family == "dm":
            _prepare_dm(method, saved, options)


def _prepare_im(method, saved: SavedModel, options: PrepareOptions) -> None:
    train = EncodedSplit([], [], saved.tokenizer.pad_token_id)
    if getattr(method, "strategy", "") == "prior":
        if not options.train_examples:
            raise ConfigError("im-prior needs the task's training text for its unigram prior; pass --data-dir "
                              "(and --task when the saved model does not name one)")
        train = encode_examples(options.train_examples, saved.tokenizer, saved.kind, options.max_length)
    method.prepare(MethodSetup(saved.model, saved.tokenizer, train, options.seed, torch.device(options.device)))


def _prepare_dm(method, saved: SavedModel, options: PrepareOptions) -> None:
    from uimer.interpret.extractor import load_extractor

    stored = saved.path / EXTRACTOR_FILE
    if stored.exists():
        method.extractor = load_extractor(stored, options.device)
        options.log(f"DM extractor loaded from {stored}")
        return
    if not options.train_examples:
        raise ConfigError(f"{saved.path} has no {EXTRACTOR_FILE}; DM needs the task's training data to train an "
                          "extractor for this model (pass --data-dir, and --task if the model does not name one)")
    fit_extractor(method, saved, options)


def fit_extractor(method, saved: SavedModel, options: PrepareOptions) -> None:
    """Train a DiffMask extractor for the frozen saved model (the DM schedule's extractor phase)."""
    from uimer.training.schedules import train_extractor
    from uimer.training.trainer import TrainConfig

    defaults = TrainConfig()  # the run's clipping and shuffling defaults, defined once there
    device = torch.device(options.device)
    train = encode_examples(options.train_examples or [], saved.tokenizer, saved.kind, options.max_length)
    method.prepare(MethodSetup(saved.model, saved.tokenizer, train, options.seed, device, defaults.eval_batch_size))
    extractor = method.build_extractor(1)
    shuffler = torch.Generator().manual_seed(options.seed + 1)
    noise = method.noise_generator(options.seed, device)
    options.log(f"training a DM extractor for {saved.path}: {method.dm.extractor_epochs} epochs (at least "
                f"{method.dm.extractor_min_steps} steps) on {len(train)} training examples (model frozen)")
    train_extractor(saved.model, method, extractor, train, batch_size=options.batch_size, shuffle=defaults.shuffle,
                    max_grad_norm=defaults.max_grad_norm, device=device, lr=method.dm.lr_extractor,
                    shuffler=shuffler, noise=noise)
    extractor.eval()
    method.extractor = extractor
    saved.model.eval()


def _rng_devices(device: torch.device | str) -> list[int]:
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


# -- scores ---------------------------------------------------------------------------------------------
def piece_attributions(method: InterpretationMethod, model: TaskModel, batch: Batch) -> torch.Tensor:
    """(B, L) piece scores under any method (zero on specials and padding)."""
    return method.attribute(model, batch).scores.detach()


def word_attributions(method: InterpretationMethod, model: TaskModel, batch: Batch, word_ids: torch.Tensor,
                      n_words: int) -> torch.Tensor:
    """(B, W) word scores under any method; -inf for absent words."""
    word_ids = word_ids.to(batch.input_ids.device)
    return method.attribute(model, batch, word_ids=word_ids, n_words=n_words).words.detach()


# -- perturbations --------------------------------------------------------------------------------------
def top_words(scores: torch.Tensor, present: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(B, W) bool: each row's `counts` best words, ties to the earlier word (as the metrics rank)."""
    keys = scores.masked_fill(~present, -math.inf)
    order = torch.argsort(keys, dim=1, descending=True, stable=True)
    ranks = torch.argsort(order, dim=1, stable=True)
    return (ranks < counts.unsqueeze(1)) & present


def remove_pieces(batch: Batch, removed: torch.Tensor, removal: str, mask_id: int | None, pad_id: int) -> Batch:
    """The batch with `removed` (B, L) pieces deleted (sequences compacted) or replaced by [MASK]."""
    if removal == "mask":
        if mask_id is None:
            raise ConfigError("--removal mask needs a tokenizer with a [MASK] token")
        return replace(batch, input_ids=batch.input_ids.masked_fill(removed, mask_id))
    keep = batch.attention_mask.bool() & ~removed
    lengths = keep.sum(1)
    width = max(int(lengths.max()), 1)
    position = keep.long().cumsum(1) - 1
    rows = torch.arange(batch.size, device=keep.device).unsqueeze(1).expand_as(keep)
    r, p = rows[keep], position[keep]

    def compact(values: torch.Tensor, fill) -> torch.Tensor:
        out = torch.full((batch.size, width), fill, dtype=values.dtype, device=values.device)
        out[r, p] = values[keep]
        return out

    attention = (torch.arange(width, device=keep.device).unsqueeze(0) < lengths.unsqueeze(1)).to(
        batch.attention_mask.dtype)
    return replace(batch, input_ids=compact(batch.input_ids, pad_id), attention_mask=attention,
                   token_type_ids=compact(batch.token_type_ids, 0), rationale=compact(batch.rationale, 0.0),
                   real_mask=compact(batch.real_mask, False))


def _cat_batches(batches: list[Batch]) -> Batch:
    """Rows of several batches in one (padded to the longest)."""
    from dataclasses import fields

    length = max(b.input_ids.shape[1] for b in batches)

    def pad(t: torch.Tensor, fill) -> torch.Tensor:
        if t.dim() < 2 or t.shape[1] == length:
            return t
        extra = torch.full((t.shape[0], length - t.shape[1], *t.shape[2:]), fill, dtype=t.dtype, device=t.device)
        return torch.cat([t, extra], 1)

    per_piece = {"input_ids": 0, "attention_mask": 0, "token_type_ids": 0, "rationale": 0.0, "real_mask": False}
    out = {}
    for f in fields(Batch):
        parts = [getattr(b, f.name) for b in batches]
        if f.name in per_piece:
            parts = [pad(t, per_piece[f.name]) for t in parts]
        out[f.name] = torch.cat(parts)
    return Batch(**out)


@torch.no_grad()
def perturbed_probabilities(model: TaskModel, batch: Batch, word_ids: torch.Tensor, scores: torch.Tensor,
                            present: torch.Tensor, hard_k: torch.Tensor, fractions: Sequence[float], removal: str,
                            mask_id: int | None, pad_id: int, chunk: int = 512) -> dict:
    """Class probabilities (or target probability, tagging) after removing / keeping the top words.

    Variants: hard comprehensiveness/sufficiency (top-k words), then per fraction f comprehensiveness and
    sufficiency (top ceil(f n) words). All variants' sentences are stacked and run in chunked forwards.
    Returns {"hard_comprehensiveness": (B, C), "hard_sufficiency": ..., "comprehensiveness": {f: ...},
    "sufficiency": {f: ...}} with (B, C) softmaxes, or (B,) target probabilities for tagging.
    """
    n_words = present.sum(1)
    counts = [hard_k.to(n_words.device)]
    counts += [torch.as_tensor(threshold_counts(f, n_words.cpu().numpy()), device=n_words.device) for f in fractions]
    piece_of = word_ids.clamp_min(0)
    variants: list[Batch] = []
    for c in counts:
        top = top_words(scores, present, c)  # (B, W)
        top_piece = top.gather(1, piece_of) & (word_ids >= 0)
        other_piece = (~top).gather(1, piece_of) & (word_ids >= 0)
        variants.append(remove_pieces(batch, top_piece, removal, mask_id, pad_id))  # comprehensiveness
        variants.append(remove_pieces(batch, other_piece, removal, mask_id, pad_id))  # sufficiency
    stacked = _cat_batches(variants)
    if model.kind is TaskKind.TAGGING:
        probs = chunked(lambda part: target_probabilities(model, part), stacked, chunk)
    else:
        probs = chunked(lambda part: torch.softmax(model(part), -1), stacked, chunk)
    probs = probs.view(len(variants), batch.size, *probs.shape[1:]).cpu()
    out = {"hard_comprehensiveness": probs[0], "hard_sufficiency": probs[1], "comprehensiveness": {},
           "sufficiency": {}}
    for i, f in enumerate(fractions):
        out["comprehensiveness"][f] = probs[2 + 2 * i]
        out["sufficiency"][f] = probs[3 + 2 * i]
    return out


# -- a whole split --------------------------------------------------------------------------------------
@dataclass
class ScoredSplit:
    """Everything `evaluate-rationales` reports and exports, for the examples that were scored."""

    examples: list[Example]
    indices: list[int]  # positions of the scored examples in the split
    instances: ScoredInstances
    predictions: list  # class ids, or tag-id lists
    probabilities: np.ndarray | None  # (N, C) class probabilities (classification/pair)
    perturbed: dict  # same keys as `perturbed_probabilities`, arrays over N (class tasks: (N, C))
    removal: str
    fractions: tuple[float, ...]
    target: str


def resolve_removal(removal: str, kind: TaskKind) -> str:
    """'auto' = delete (ERASER) except for slot filling, where the CRF needs every word: [MASK]."""
    if removal == "auto":
        return "mask" if kind is TaskKind.TAGGING else "delete"
    if removal not in REMOVALS:
        raise ConfigError(f"--removal must be auto, delete or mask, not {removal!r}")
    if removal == "delete" and kind is TaskKind.TAGGING:
        raise ConfigError("deleting words would misalign slot tags; use --removal mask for slot filling")
    return removal


def score_examples(method: InterpretationMethod, saved: SavedModel, examples: list[Example], *,
                   top_k: int | None = None, fractions: Sequence[float] = ERASER_THRESHOLDS,
                   removal: str = "auto", target: str = "pred", faithfulness: bool = True,
                   batch_size: int = 32, max_length: int = 128, chunk: int = 512,
                   device: torch.device | str = "cpu", only_with_rationale: bool = True) -> ScoredSplit:
    """Word scores, predictions and perturbed probabilities for `examples` (those with a gold rationale)."""
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {TARGETS}, not {target!r}")
    kind = saved.kind
    removal = resolve_removal(removal, kind)
    fractions = tuple(sorted(float(f) for f in fractions))
    if any(not 0 < f <= 1 for f in fractions):
        raise ConfigError("thresholds must be fractions in (0, 1]")
    keep = [i for i, e in enumerate(examples) if e.has_rationale or not only_with_rationale]
    chosen = [examples[i] for i in keep]
    encoded = encode_with_words(chosen, saved.tokenizer, kind, max_length)
    model = saved.model.to(device).eval()
    tokenizer = saved.tokenizer
    width = max(encoded.n_words, default=0)
    all_scores = np.zeros((len(chosen), width))
    present_all = np.zeros((len(chosen), width), dtype=bool)
    gold_all = np.zeros((len(chosen), width), dtype=bool)
    for i, e in enumerate(chosen):
        flags = e.rationale or []
        gold_all[i, : len(flags)] = np.asarray(flags, dtype=bool)
    predictions: list = [None] * len(chosen)
    probabilities = np.zeros((len(chosen), len(saved.labels))) if kind is not TaskKind.TAGGING else None
    perturbed_rows: list[tuple[list[int], dict]] = []
    hard_k = np.zeros(len(chosen), dtype=np.int64)  # filled per batch below
    for batch in encoded.split.batches(batch_size):
        batch = batch.to(device)
        idx = batch.index.tolist()
        w = max(encoded.n_words[i] for i in idx)
        word_ids = encoded.batch_word_ids(idx, batch.input_ids.shape[1]).to(device)
        logits, pred = predict_batch(model, batch)
        if target == "pred":
            batch = with_target(batch, kind, pred)
        for row, i in enumerate(idx):
            predictions[i] = pred[row, : int(batch.word_mask[row].sum())].tolist() if kind is TaskKind.TAGGING \
                else int(pred[row])
        if probabilities is not None:
            probabilities[idx] = torch.softmax(logits, -1).cpu().numpy()
        scores = word_attributions(method, model, batch, word_ids, w)
        present = word_membership(word_ids, w).any(-1)
        all_scores[idx, :w] = scores.masked_fill(~present, 0.0).cpu().numpy()
        present_all[idx, :w] = present.cpu().numpy()
        gold = torch.as_tensor(gold_all[idx, :w], device=device) & present
        k = torch.as_tensor(hard_sizes(gold.cpu().numpy(), present.cpu().numpy(), top_k), device=device)
        hard_k[idx] = k.cpu().numpy()
        if faithfulness:
            probs = perturbed_probabilities(model, batch, word_ids, scores, present, k, fractions, removal,
                                            tokenizer.mask_token_id, tokenizer.pad_token_id, chunk)
            perturbed_rows.append((idx, probs))
    perturbed = _merge_perturbed(perturbed_rows, len(chosen), fractions)
    instances = ScoredInstances(all_scores, gold_all, present_all, hard_k)
    if faithfulness and chosen:
        target_ids = _target_ids(predictions, chosen, target)

        def pick(values, ids=target_ids) -> np.ndarray:
            return _target_column(values, ids)

        instances.full = pick(_full_probabilities(model, encoded, predictions, probabilities, target, chosen,
                                                  batch_size, device))
        instances.hard_comprehensiveness = pick(perturbed["hard_comprehensiveness"])
        instances.hard_sufficiency = pick(perturbed["hard_sufficiency"])
        instances.comprehensiveness = {f: pick(v) for f, v in perturbed["comprehensiveness"].items()}
        instances.sufficiency = {f: pick(v) for f, v in perturbed["sufficiency"].items()}
    return ScoredSplit(chosen, keep, instances, predictions, probabilities, perturbed, removal, fractions, target)


def _target_ids(predictions: list, examples: list[Example], target: str) -> np.ndarray | None:
    if predictions and isinstance(predictions[0], list):
        return None
    if target == "gold":
        return np.array([e.label for e in examples], dtype=np.int64)
    return np.array(predictions, dtype=np.int64)


def _target_column(values, ids: np.ndarray | None) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1 or ids is None:
        return values
    return values[np.arange(len(values)), ids]


def _full_probabilities(model, encoded: EncodedWords, predictions, probabilities, target, examples,
                        batch_size, device) -> np.ndarray:
    """p(c | x) for the clean inputs: class softmaxes (N, C), or the target sequence probability (tagging)."""
    if probabilities is not None:
        return probabilities
    out = np.zeros(len(examples))
    with torch.no_grad():
        for batch in encoded.split.batches(batch_size):
            batch = batch.to(device)
            idx = batch.index.tolist()
            if target == "pred":
                tags = torch.zeros_like(batch.tags)
                for row, i in enumerate(idx):
                    tags[row, : len(predictions[i])] = torch.tensor(predictions[i], dtype=torch.long)
                batch = with_target(batch, TaskKind.TAGGING, tags)
            out[idx] = target_probabilities(model, batch).cpu().numpy()
    return out


def _merge_perturbed(rows: list[tuple[list[int], dict]], n: int, fractions: Sequence[float]) -> dict:
    """Per-batch perturbed probabilities -> arrays over all N scored examples."""
    if not rows:
        return {"hard_comprehensiveness": None, "hard_sufficiency": None, "comprehensiveness": {}, "sufficiency": {}}
    sample = rows[0][1]["hard_comprehensiveness"]
    shape = (n, *sample.shape[1:])

    def gather(get) -> np.ndarray:
        out = np.zeros(shape)
        for idx, probs in rows:
            out[idx] = get(probs).numpy()
        return out

    return {
        "hard_comprehensiveness": gather(lambda p: p["hard_comprehensiveness"]),
        "hard_sufficiency": gather(lambda p: p["hard_sufficiency"]),
        "comprehensiveness": {f: gather(lambda p, f=f: p["comprehensiveness"][f]) for f in fractions},
        "sufficiency": {f: gather(lambda p, f=f: p["sufficiency"][f]) for f in fractions},
    }
