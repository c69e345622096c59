"""One entry point from a task name to its `TaskData`; nothing is cached on disk here."""

from __future__ import annotations

from pathlib import Path

from uimer.data.esnli import load_esnli
from uimer.data.jsonl import load_jsonl
from uimer.data.rationales import load_rationale_file, mark_example_words
from uimer.data.snips import load_snips
from uimer.data.types import TaskData, TaskKind
from uimer.errors import ConfigError

TASKS = ("snips-intent", "snips-slot", "esnli", "jsonl")


def apply_rationale_file(task: TaskData, rationale_file: Path) -> TaskData:
    """Re-mark every example of every split with a user rationale file (keywords keyed by label NAME).

    Tagging examples have no single label, so only the file's regexes apply to them. For pairs, premise and
    hypothesis are marked separately. The task is modified in place and returned.
    """
    source = load_rationale_file(Path(rationale_file))
    for split in (task.train, task.dev, task.test):
        for ex in split:
            label_name = None
            if task.kind is not TaskKind.TAGGING and ex.label is not None:
                label_name = task.labels[ex.label]
            ex.rationale = mark_example_words(source, ex.words, ex.pair_words, label_name)
    task.extra["rationale_file"] = str(rationale_file)
    return task


def load_task(name: str, data_dir: Path, rationale_file: Path | None = None) -> TaskData:
    """Load task `name` (one of TASKS). `data_dir`: the data root for snips-*/esnli, the folder holding the
    .jsonl files for jsonl. `rationale_file` (YAML, see uimer.data.rationales) replaces the built-in rationales."""
    data_dir = Path(data_dir)
    if name == "snips-intent":
        task = load_snips(data_dir, "intent")
    elif name == "snips-slot":
        task = load_snips(data_dir, "slot")
    elif name == "esnli":
        task = load_esnli(data_dir)
    elif name == "jsonl":
        task = load_jsonl(data_dir)
    else:
        raise ConfigError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    if rationale_file is not None:
        apply_rationale_file(task, rationale_file)
    return task
