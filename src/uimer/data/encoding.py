"""Word -> word-piece encoding, done once per split and cached, and padding into batches.

Rationales are annotated on words; here every piece of a rationale word becomes 1 and special and padding
positions 0, for any fast tokenizer (the alignment uses the tokenizer's own `word_ids`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import torch

from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError, DataError


@dataclass
class EncodedExample:
    """One example's pieces, kept unpadded so batches pad only to their own longest member."""

    input_ids: torch.Tensor  # (L,)
    token_type_ids: torch.Tensor  # (L,)
    rationale: torch.Tensor  # (L,) float 0/1 on pieces of rationale words
    real: torch.Tensor  # (L,) bool: a word piece (not [CLS]/[SEP]/padding)
    word_starts: torch.Tensor  # (W,) piece index of each kept word's first piece
    kept_words: torch.Tensor  # (W,) which word each start belongs to (words with no piece or truncated are absent)
    label: int
    tags: torch.Tensor  # (W,) tag ids (tagging) else empty
    n_words: int  # words in the example before truncation (tagging scores them all)


@dataclass
class Batch:
    """A padded batch; every tensor is (B, ...) and moves together with `.to()`."""

    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    token_type_ids: torch.Tensor  # (B, L)
    rationale: torch.Tensor  # (B, L) float
    real_mask: torch.Tensor  # (B, L) bool
    has_rationale: torch.Tensor  # (B,) bool
    labels: torch.Tensor  # (B,) class ids (-1 for tagging)
    word_starts: torch.Tensor  # (B, W) piece index of word w's first piece (0 where padded)
    word_mask: torch.Tensor  # (B, W) bool
    tags: torch.Tensor  # (B, W) gold tag ids (0 where padded)
    index: torch.Tensor  # (B,) position of each example in its split

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @property
    def size(self) -> int:
        return self.input_ids.shape[0]


class EncodedSplit(Sequence[EncodedExample]):
    """A split encoded once; `batches()` yields padded batches in a given order."""

    def __init__(self, examples: list[Example], encoded: list[EncodedExample], pad_id: int):
        self.examples = examples
        self.encoded = encoded
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i):  # type: ignore[override]
        return self.encoded[i]

    def subset(self, indices: Sequence[int]) -> EncodedSplit:
        return EncodedSplit([self.examples[i] for i in indices], [self.encoded[i] for i in indices], self.pad_id)

    def collate(self, indices: Sequence[int]) -> Batch:
        return collate([self.encoded[i] for i in indices], list(indices), self.pad_id)

    def batches(self, batch_size: int, order: Sequence[int] | None = None) -> Iterator[Batch]:
        order = list(range(len(self))) if order is None else list(order)
        for start in range(0, len(order), batch_size):
            yield self.collate(order[start : start + batch_size])

    def length_sorted_batches(self, batch_size: int) -> Iterator[Batch]:
        """Evaluation batches grouped by length, so little compute is spent on padding."""
        order = sorted(range(len(self)), key=lambda i: len(self.encoded[i].input_ids))
        return self.batches(batch_size, order)


def collate(items: list[EncodedExample], indices: list[int], pad_id: int) -> Batch:
    size = len(items)
    length = max(len(e.input_ids) for e in items)
    n_words = max(max(len(e.word_starts) for e in items), 1)
    input_ids = torch.full((size, length), pad_id, dtype=torch.long)
    attention = torch.zeros((size, length), dtype=torch.long)
    types = torch.zeros((size, length), dtype=torch.long)
    rationale = torch.zeros((size, length))
    real = torch.zeros((size, length), dtype=torch.bool)
    starts = torch.zeros((size, n_words), dtype=torch.long)
    word_mask = torch.zeros((size, n_words), dtype=torch.bool)
    tags = torch.zeros((size, n_words), dtype=torch.long)
    for row, e in enumerate(items):
        n, w = len(e.input_ids), len(e.word_starts)
        input_ids[row, :n] = e.input_ids
        attention[row, :n] = 1
        types[row, :n] = e.token_type_ids
        rationale[row, :n] = e.rationale
        real[row, :n] = e.real
        starts[row, :w] = e.word_starts
        word_mask[row, :w] = True
        if len(e.tags):
            tags[row, :w] = e.tags
    return Batch(
        input_ids=input_ids,
        attention_mask=attention,
        token_type_ids=types,
        rationale=rationale,
        real_mask=real,
        has_rationale=rationale.sum(1) > 0,
        labels=torch.tensor([e.label for e in items], dtype=torch.long),
        word_starts=starts,
        word_mask=word_mask,
        tags=tags,
        index=torch.tensor(indices, dtype=torch.long),
    )


def check_example(example: Example, index: int) -> None:
    """Word-level annotations must line up with the words before they are mapped to pieces: a mismatch would index
    past the end (or silently mark the wrong pieces), so it is a DataError naming the example."""
    where = getattr(example, "source", None) or f"example #{index + 1}"
    words = example.words
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
        raise DataError(where, "an example needs a non-empty list of non-empty words", field="words")
    pair = example.pair_words
    if pair is not None and (not isinstance(pair, list) or not all(isinstance(w, str) and w for w in pair)):
        raise DataError(where, "pair_words must be a list of non-empty words", field="pair_words")
    n = len(words) + len(pair or [])
    if example.rationale is not None and len(example.rationale) != n:
        raise DataError(where, f"rationale has {len(example.rationale)} entries for {n} words", field="rationale")
    if example.tags is not None and len(example.tags) not in (0, len(words)):
        raise DataError(where, f"{len(example.tags)} tags for {len(words)} words", field="tags")


def encode_examples(examples: list[Example], tokenizer, kind: TaskKind, max_length: int = 128) -> EncodedSplit:
    """Tokenise a whole split in one tokenizer call and align word-level annotations to pieces."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("uimer needs a fast (Rust) tokenizer for word -> piece alignment")
    if not examples:
        return EncodedSplit([], [], tokenizer.pad_token_id)
    for i, example in enumerate(examples):
        check_example(example, i)
    firsts = [e.words for e in examples]
    if kind is TaskKind.PAIR:
        seconds = [e.pair_words or [] for e in examples]
        enc = tokenizer(firsts, seconds, is_split_into_words=True, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(firsts, is_split_into_words=True, truncation=True, max_length=max_length)
    encoded = []
    for i, example in enumerate(examples):
        word_ids = enc.word_ids(i)
        seq_ids = enc.sequence_ids(i)
        offset = len(example.words)
        rationale_words = example.rationale or []
        ids = torch.tensor(enc["input_ids"][i], dtype=torch.long)
        type_ids = enc.get("token_type_ids")
        types = torch.tensor(type_ids[i], dtype=torch.long) if type_ids is not None else torch.zeros_like(ids)
        rationale = torch.zeros(len(ids))
        real = torch.zeros(len(ids), dtype=torch.bool)
        starts: list[int] = []
        kept: list[int] = []
        previous = None
        for pos, (w, s) in enumerate(zip(word_ids, seq_ids, strict=True)):
            if w is None:
                previous = None
                continue
            real[pos] = True
            global_word = w + (offset if s == 1 else 0)
            if rationale_words and rationale_words[global_word]:
                rationale[pos] = 1.0
            if s == 0 and w != previous:
                starts.append(pos)
                kept.append(w)
            previous = w
        if example.tags:
            tags = torch.tensor([example.tags[w] for w in kept], dtype=torch.long)
        else:
            tags = torch.empty(0, dtype=torch.long)
        encoded.append(
            EncodedExample(
                input_ids=ids,
                token_type_ids=types,
                rationale=rationale,
                real=real,
                word_starts=torch.tensor(starts, dtype=torch.long),
                kept_words=torch.tensor(kept, dtype=torch.long),
                label=example.label if example.label is not None else -1,
                tags=tags,
                n_words=len(example.words),
            )
        )
    return EncodedSplit(examples, encoded, tokenizer.pad_token_id)
