"""Helpers the examples share: where the data is, the CLI's few-shot subsets, and HF features with rationales.

Everything here is public uimer API plus `transformers`; it is what your own script would do to feed a Hugging Face
model with SNIPS and uimer's gold rationales (the intent keyword dictionary, the slot regular expressions).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from uimer import encode_with_rationales
from uimer.data import sampling
from uimer.data.paths import resolve_data_dir
from uimer.data.tasks import load_task
from uimer.data.types import Example, TaskData, TaskKind

REPO = Path(__file__).resolve().parents[1]


def default_data_dir() -> Path:
    """`$UIMER_DATA_DIR`, else `shared/data` beside the checkout (scripts/data-dir.sh's rule), else the cache."""
    if os.environ.get("UIMER_DATA_DIR"):
        return resolve_data_dir(None)
    shared = REPO.parent / "shared" / "data"
    return shared if (shared / "snips").is_dir() else resolve_data_dir(None)


def few_shot(task: TaskData, shot: int, seed: int) -> list[Example]:
    """The n-shot training subset `uimer train --shot N --seeds S` trains on (the reference's sampler)."""
    if task.kind is TaskKind.TAGGING:
        indices = sampling.sample_slot(task.train, task.labels, shot, seed)
    else:
        indices = sampling.sample_intent(task.train, task.labels, shot, seed)
    return [task.train[i] for i in indices]


def subset(task: TaskData, examples: Sequence[Example], size: int | None, seed: int = 0) -> list[Example]:
    """A seeded stratified subset of `size` examples (`uimer train --dev-size`'s rule), or all of them."""
    if size is None or size >= len(examples):
        return list(examples)
    keep = sampling.stratified_subset(examples, size, seed, labels=task.labels)
    return [examples[i] for i in keep]


def features(tokenizer, examples: Sequence[Example], kind: TaskKind, max_length: int) -> list[dict]:
    """One HF feature per example: input ids, `rationale_mask` (from the word flags), and `labels` -- the class id,
    or for tagging the word's tag on its first piece and -100 elsewhere (the usual HF label alignment)."""
    words = [e.words for e in examples]
    flags = [e.rationale or [0] * len(e.words) for e in examples]
    enc = encode_with_rationales(tokenizer, words, word_rationales=flags, truncation=True, max_length=max_length)
    rows = []
    for i, example in enumerate(examples):
        row = {key: enc[key][i] for key in enc.keys()}
        if kind is TaskKind.TAGGING:
            previous, labels = None, []
            for word in enc.word_ids(i):
                labels.append(-100 if word is None or word == previous else example.tags[word])
                previous = word
            row["labels"] = labels
        else:
            row["labels"] = example.label
        rows.append(row)
    return rows


def load(name: str, data_dir: str | Path | None) -> TaskData:
    """A uimer task (`snips-intent`, `snips-slot`) read by uimer's reader, rationales included."""
    return load_task(name, Path(data_dir) if data_dir else default_data_dir())
