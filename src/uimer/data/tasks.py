"""One entry point from a task name to its `TaskData`; nothing is cached on disk here."""

from __future__ import annotations

from pathlib import Path

from uimer.data.esnli import load_esnli
from uimer.data.jsonl import load_jsonl
from uimer.data.rationales import (
    CombinedRationales,
    KeywordRationales,
    RegexRationales,
    load_rationale_file,
    mark_example_words,
)
from uimer.data.snips import load_snips
from uimer.data.types import TASKS, TaskData, TaskKind  # noqa: F401 - TASKS is re-exported
from uimer.errors import ConfigError

# Behaviour versions of a task's gold rationales (see uimer.training.runner.behaviour_versions); bump one when
# the words a task marks as rationale change. esnli 2: punctuation glued to a highlighted word is no longer
# rationale (issue 29, fix 5).
RATIONALE_VERSIONS = {"esnli": "2"}


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
    task.extra["rationale_problem"] = rationale_coverage_problem(task, source)
    return task


def rationale_coverage_problem(task: TaskData, source) -> str | None:
    """What in a rules file matches nothing in the task (keyword labels the task lacks, regexes that match no
    training example, rules that mark no training example at all), with counts; None when everything matches.

    A typo in a label name or a pattern otherwise trains exactly like the baseline, without a word."""
    parts = [source] if not isinstance(source, CombinedRationales) else source.sources
    problems: list[str] = []
    sentences = [" ".join(ex.words) for ex in task.train] + [" ".join(ex.pair_words) for ex in task.train
                                                             if ex.pair_words]
    for part in parts:
        if isinstance(part, KeywordRationales):
            unknown = [label for label in part.mapping if label not in task.labels]
            if task.kind is TaskKind.TAGGING and part.mapping:
                problems.append(f"keywords apply to the gold label, which tagging tasks do not have "
                                f"({len(part.mapping)} keyword label(s) unused)")
            elif unknown:
                problems.append(f"{len(unknown)} of {len(part.mapping)} keyword label(s) match no label of the task "
                                f"({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''})")
        elif isinstance(part, RegexRationales):
            silent = [i + 1 for i, (pattern, groups) in enumerate(zip(part.patterns, part._groups, strict=True))
                      if not any((m := pattern.match(s)) and any(m.group(g) for g in groups) for s in sentences)]
            if silent:
                problems.append(f"{len(silent)} of {len(part.patterns)} regex(es) match no training example "
                                f"(#{', #'.join(map(str, silent[:5]))}{', ...' if len(silent) > 5 else ''})")
    marked = sum(1 for ex in task.train if ex.rationale and any(ex.rationale))
    if not marked and task.train:
        problems.append(f"the rules mark no word in any of the {len(task.train)} training examples")
    if not problems:
        return None
    return "; ".join(problems) + f" ({marked} of {len(task.train)} training examples get a rationale)"


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
