"""The word-level data model every reader produces and every later stage consumes.

Everything before tokenisation is kept at the *word* level (whitespace tokens), because rationales are
annotated on words; `uimer.data.encoding` maps words to word pieces for a given tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

# The task names `--task` and the grids accept (readers in uimer.data.tasks); defined here, once.
TASKS = ("snips-intent", "snips-slot", "esnli", "jsonl")


class TaskKind(str, Enum):
    """The three shapes of task the framework trains."""

    CLASSIFICATION = "classification"  # one sentence -> one class (intent classification)
    TAGGING = "tagging"  # one sentence -> one BIO tag per word (slot filling, CRF)
    PAIR = "pair"  # two sentences -> one class (NLI cross-encoder)


@dataclass
class Example:
    """One example at word level.

    `rationale` is a 0/1 list over `words + pair_words` (concatenated for pairs), or None when the
    example has no rationale annotation at all. An all-zero list means "annotated, nothing marked";
    both contribute L_task only.
    """

    words: list[str]
    label: int | None = None  # class id (CLASSIFICATION, PAIR)
    tags: list[int] | None = None  # tag id per word (TAGGING)
    pair_words: list[str] | None = None  # hypothesis words (PAIR)
    rationale: list[int] | None = None
    source: str = ""  # "file:line" where the example was read, for error messages

    @property
    def all_words(self) -> list[str]:
        return self.words + (self.pair_words or [])

    @property
    def has_rationale(self) -> bool:
        return self.rationale is not None and any(self.rationale)


@dataclass
class TaskData:
    """A task's splits plus its label vocabulary."""

    name: str
    kind: TaskKind
    labels: list[str]  # class names (CLASSIFICATION/PAIR) or tag names (TAGGING)
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    metric: str = "accuracy"  # model-selection / reporting metric name
    extra: dict = field(default_factory=dict)
