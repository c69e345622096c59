"""Hugging Face features -> the padded dict a HF model takes *and* the uimer `Batch` the methods read.

Features are what a tokenizer (or `uimer.data.alignment.encode_with_rationales`) returns per example:
`input_ids`, `attention_mask`, optional `token_type_ids`, `special_tokens_mask`, `labels` (or `label`) and
`rationale_mask`. The padding is uimer's own (`uimer.data.encoding.collate`), so a batch from here is padded
exactly as one from uimer's CLI.

How the `Batch` is filled:
- `real_mask`: attended positions that are not special tokens -- from `special_tokens_mask` when the features
  carry it, else from the tokenizer's special ids ([UNK] counts as a real piece: it stands for a word);
- sequence classification / pairs: `labels` (B,) class ids; `word_starts` is empty (W = 1, `word_mask` all
  False), since no method scores words there and HF features do not say where words start;
- token classification: the scored pieces are those whose label is not -100 (the first piece of each word
  under HF's usual label alignment): `word_starts` lists them, `tags` holds their labels, `labels` is -1;
- `index`: the feature's `index` when present (its position in the training split, which lets UIMER-IM use
  the replacement sets built for that split), else -1 (sets are then drawn for the batch itself).

Pitfall: `transformers.Trainer` drops every dataset column its model's `forward` does not take
(`remove_unused_columns=True`, the default), `rationale_mask` and `special_tokens_mask` included, *before*
the collator sees the features. Set `TrainingArguments(remove_unused_columns=False)`; the collator refuses
features without `rationale_mask` (naming that setting) unless built with `require_rationale=False`.
This module does not import `transformers`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from uimer.data.encoding import Batch, EncodedExample, EncodedSplit, collate
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError, DataError

IGNORE_INDEX = -100
BATCH_KEY = "uimer_batch"
RATIONALE_FIELD = "rationale_mask"
_LABEL_KEYS = ("labels", "label", "label_ids")


def _tensor(value, dtype: torch.dtype) -> torch.Tensor:
    return value.detach().clone().to(dtype) if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=dtype)


def _label(feature: Mapping):
    for key in _LABEL_KEYS:
        if key in feature and feature[key] is not None:
            return key, feature[key]
    return None, None


def _unpadded_length(attention: torch.Tensor, where: str) -> int:
    """Features may come padded already: keep the attended prefix (right padding only)."""
    n = int(attention.sum())
    if not bool(attention[:n].all()):
        raise DataError(where, "attention_mask must be ones then zeros (right padding)", field="attention_mask")
    return n


@dataclass
class RationaleCollator:
    """A data collator for `transformers.Trainer` (or any DataLoader) that keeps the rationales.

    Returns the HF model's inputs plus `uimer_batch`, the `Batch` the methods read; `pop_batch` takes it back
    out before the model's forward. `kind` is 'classification', 'pair' or 'tagging'; None infers it from the
    labels (a list per example: tagging)."""

    tokenizer: object
    kind: TaskKind | str | None = None
    require_rationale: bool = True
    special_ids: frozenset[int] = field(init=False)

    def __post_init__(self) -> None:
        if self.kind is not None:
            self.kind = _task_kind(self.kind)
        ids = set(getattr(self.tokenizer, "all_special_ids", []))
        ids.discard(getattr(self.tokenizer, "unk_token_id", None))
        self.special_ids = frozenset(ids)
        if getattr(self.tokenizer, "pad_token_id", None) is None:
            raise ConfigError("tokenizer: it has no pad token, which padding a batch needs (set tokenizer.pad_token)")

    def __call__(self, features: Sequence[Mapping]) -> dict:
        inputs, batch = self.collate(features)
        inputs[BATCH_KEY] = batch
        return inputs

    def collate(self, features: Sequence[Mapping]) -> tuple[dict[str, torch.Tensor], Batch]:
        """(the HF model's keyword arguments, the uimer Batch) for a list of features."""
        if not features:
            raise DataError("batch", "no features to collate", field="features")
        if self.require_rationale and not any(RATIONALE_FIELD in f for f in features):
            raise ConfigError(
                f"features carry no '{RATIONALE_FIELD}': transformers.Trainer drops columns its model's forward "
                "does not take, so set TrainingArguments(remove_unused_columns=False) (or build the collator "
                "with require_rationale=False for data without rationales)")
        kind = self.kind or _infer_kind(features)
        items = [self.encode_feature(f, i, kind) for i, f in enumerate(features)]
        indices = [int(f.get("index", -1)) for f in features]
        batch = collate(items, indices, int(self.tokenizer.pad_token_id))
        inputs: dict[str, torch.Tensor] = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        if any("token_type_ids" in f for f in features):
            inputs["token_type_ids"] = batch.token_type_ids
        if any(_label(f)[0] is not None for f in features):
            inputs["labels"] = batch.labels if kind is not TaskKind.TAGGING else _piece_labels(batch)
        return inputs, batch

    def split(self, features: Sequence[Mapping]) -> EncodedSplit:
        """A uimer split of a whole training set of features: what UIMER-IM builds its replacement sets from.

        HF features carry no words, so each example's `words` are its real word pieces (for messages only);
        batches of the split are padded as `collate` pads them."""
        if not features:
            return EncodedSplit([], [], int(self.tokenizer.pad_token_id))
        kind = self.kind or _infer_kind(features)
        items = [self.encode_feature(f, i, kind) for i, f in enumerate(features)]
        examples = []
        for i, item in enumerate(items):
            pieces = self.tokenizer.convert_ids_to_tokens(item.input_ids[item.real].tolist()) or ["[empty]"]
            examples.append(Example(words=[str(p) for p in pieces], label=item.label if item.label >= 0 else None,
                                    source=f"feature #{i + 1}"))
        return EncodedSplit(examples, items, int(self.tokenizer.pad_token_id))

    def encode_feature(self, feature: Mapping, i: int, kind: TaskKind) -> EncodedExample:
        """One feature, unpadded, as uimer's encoding stores an example (`i` names it in errors)."""
        where = f"example #{i + 1} of the batch"
        if "input_ids" not in feature:
            raise DataError(where, "a feature needs input_ids", field="input_ids")
        ids = _tensor(feature["input_ids"], torch.long)
        attention = _tensor(feature.get("attention_mask", [1] * len(ids)), torch.long)
        if len(attention) != len(ids):
            raise DataError(where, f"{len(attention)} entries for {len(ids)} input_ids", field="attention_mask")
        n, length = _unpadded_length(attention, where), len(ids)

        def column(name: str, dtype: torch.dtype, default: torch.Tensor) -> torch.Tensor:
            if name not in feature or feature[name] is None:
                return default
            value = _tensor(feature[name], dtype)
            if value.dim() != 1 or len(value) != length:
                raise DataError(where, f"{tuple(value.shape)} entries for {length} input_ids", field=name)
            return value[:n]

        ids = ids[:n]
        types = column("token_type_ids", torch.long, torch.zeros(n, dtype=torch.long))
        rationale = column(RATIONALE_FIELD, torch.float, torch.zeros(n))
        if "special_tokens_mask" in feature:
            special = column("special_tokens_mask", torch.long, torch.zeros(n, dtype=torch.long)).bool()
        else:
            special = torch.tensor([int(t) in self.special_ids for t in ids], dtype=torch.bool)
        real = ~special
        rationale = rationale * real.to(rationale.dtype)  # specials are never rationales
        key, value = _label(feature)
        label, starts, tags = -1, torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
        if kind is TaskKind.TAGGING:
            if key is not None:
                piece_labels = column(key, torch.long, torch.full((n,), IGNORE_INDEX, dtype=torch.long))
                starts = (piece_labels != IGNORE_INDEX).nonzero().squeeze(1)
                tags = piece_labels[starts]
                if bool((tags < 0).any()):
                    raise DataError(where, "token labels are class ids or -100", field=key)
        elif key is not None:
            label = int(value.item() if isinstance(value, torch.Tensor) else value)
        return EncodedExample(input_ids=ids, token_type_ids=types, rationale=rationale, real=real,
                              word_starts=starts, kept_words=torch.arange(len(starts)), label=label, tags=tags,
                              n_words=len(starts))


def _piece_labels(batch: Batch) -> torch.Tensor:
    """(B, L) HF token labels rebuilt from the scored pieces: tags there, -100 everywhere else."""
    labels = torch.full_like(batch.input_ids, IGNORE_INDEX)
    rows = torch.arange(batch.size).unsqueeze(1).expand_as(batch.word_starts)
    labels[rows[batch.word_mask], batch.word_starts[batch.word_mask]] = batch.tags[batch.word_mask]
    return labels


def _task_kind(kind: TaskKind | str) -> TaskKind:
    try:
        return TaskKind(kind)
    except ValueError as err:
        choices = ", ".join(k.value for k in TaskKind)
        raise ConfigError(f"kind must be one of {choices}, not {kind!r}") from err


def _infer_kind(features: Sequence[Mapping]) -> TaskKind:
    """Tagging when a feature's label is a sequence, else classification (a pair only differs in token types)."""
    for feature in features:
        _, value = _label(feature)
        if value is None:
            continue
        if isinstance(value, torch.Tensor):
            return TaskKind.TAGGING if value.dim() > 0 else TaskKind.CLASSIFICATION
        return TaskKind.TAGGING if isinstance(value, Sequence) else TaskKind.CLASSIFICATION
    return TaskKind.CLASSIFICATION


def pop_batch(inputs: dict, device: torch.device | str | None = None) -> Batch:
    """Take the uimer `Batch` out of a collated dict (so the rest can go to the HF forward), on `device`."""
    batch = inputs.pop(BATCH_KEY, None)
    if batch is None:
        raise ConfigError(f"inputs have no '{BATCH_KEY}': collate them with uimer's RationaleCollator")
    if device is None and "input_ids" in inputs:
        device = inputs["input_ids"].device
    return batch if device is None else batch.to(device)
