"""SNIPS in the JointBERT layout: intent classification and slot filling (digest §1.1).

Layout under the SNIPS folder: `intent_label.txt`, `slot_label.txt` and `{train,dev,test}/{seq.in,seq.out,label}`.
Unlike the reference (which silently maps unknown labels to UNK), an intent or tag that is not in its label
file is an error here: in a user's copy it almost always means a corrupted or misaligned file.
"""

from __future__ import annotations

from pathlib import Path

from uimer.data.rationales import RationaleSource, snips_intent_rationales, snips_slot_rationales
from uimer.data.textio import read_lines
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import DataError

SPLITS = ("train", "dev", "test")
SUBTASKS = ("intent", "slot")


def snips_dir(data_dir: Path) -> Path:
    """Accept either the data root (holding `snips/`) or the SNIPS folder itself."""
    data_dir = Path(data_dir)
    if (data_dir / "intent_label.txt").exists() or not (data_dir / "snips").is_dir():
        candidate = data_dir
    else:
        candidate = data_dir / "snips"
    if not (candidate / "intent_label.txt").exists():
        raise DataError(
            candidate / "intent_label.txt",
            "SNIPS not found; run `uimer data fetch snips` or pass --data-dir pointing at the folder holding snips/",
        )
    return candidate


def read_label_file(path: Path) -> list[str]:
    """One label a line; blank lines are not allowed and duplicates are an error (ids would be ambiguous)."""
    labels: list[str] = []
    seen: dict[str, int] = {}
    for i, line in enumerate(read_lines(path), start=1):
        name = line.strip()
        if not name:
            raise DataError(path, "blank line in label file", line=i)
        if name in seen:
            raise DataError(path, f"duplicate label {name!r} (first on line {seen[name]})", line=i)
        seen[name] = i
        labels.append(name)
    return labels


def _read_split(
    split_dir: Path,
    intent_ids: dict[str, int],
    tag_ids: dict[str, int],
) -> list[tuple[list[str], int, list[int], str]]:
    """Read one split's three files in lock-step: (words, intent id, tag ids, source) per line."""
    p_in, p_out, p_label = split_dir / "seq.in", split_dir / "seq.out", split_dir / "label"
    seq_in, seq_out, intents = read_lines(p_in), read_lines(p_out), read_lines(p_label)
    n = len(seq_in)
    for path, lines in ((p_out, seq_out), (p_label, intents)):
        if len(lines) != n:
            raise DataError(
                path,
                f"has {len(lines)} lines but {p_in} has {n}; the three files must align line by line",
                line=min(len(lines), n) + 1,
            )
    rows = []
    for i, (text, tags_text, intent_text) in enumerate(zip(seq_in, seq_out, intents, strict=True), start=1):
        words = text.split()
        tags = tags_text.split()
        if not words:
            raise DataError(p_in, "empty utterance", line=i, field="words")
        if len(tags) != len(words):
            raise DataError(
                p_out, f"{len(tags)} tags for {len(words)} words in {p_in.name} line {i}", line=i, field="tags"
            )
        intent = intent_text.strip()
        if intent not in intent_ids:
            raise DataError(p_label, f"intent {intent!r} is not in intent_label.txt", line=i, field="label")
        tag_idx = []
        for t in tags:
            if t not in tag_ids:
                raise DataError(p_out, f"tag {t!r} is not in slot_label.txt", line=i, field="tags")
            tag_idx.append(tag_ids[t])
        rows.append((words, intent_ids[intent], tag_idx, f"{p_in}:{i}"))
    return rows


def load_snips(data_dir: Path, subtask: str, *, rationale_source: RationaleSource | None = None) -> TaskData:
    """Load SNIPS for `subtask` "intent" (`snips-intent`) or "slot" (`snips-slot`), file order preserved.

    Every example gets a word-level rationale: the gold intent's keyword list for "intent", the 28 regexes
    (with the regex-28 fix) for "slot", unless `rationale_source` overrides it (e.g.
    `snips_slot_rationales(reference_regex28=True)` to reproduce the reference exactly).
    `data_dir` is the data root holding `snips/`, or the SNIPS folder itself.
    """
    if subtask not in SUBTASKS:
        raise ValueError(f"subtask must be one of {SUBTASKS}, got {subtask!r}")
    root = snips_dir(data_dir)
    intent_labels = read_label_file(root / "intent_label.txt")
    slot_labels = read_label_file(root / "slot_label.txt")
    intent_ids = {name: i for i, name in enumerate(intent_labels)}
    tag_ids = {name: i for i, name in enumerate(slot_labels)}
    if subtask == "intent":
        source = rationale_source or snips_intent_rationales()
    else:
        source = rationale_source or snips_slot_rationales()

    splits: dict[str, list[Example]] = {}
    for split in SPLITS:
        examples = []
        for words, intent, tags, where in _read_split(root / split, intent_ids, tag_ids):
            if subtask == "intent":
                rationale = source.mark(words, intent_labels[intent])
                examples.append(Example(words=words, label=intent, rationale=rationale, source=where))
            else:
                rationale = source.mark(words, None)
                examples.append(Example(words=words, tags=tags, rationale=rationale, source=where))
        splits[split] = examples

    if subtask == "intent":
        return TaskData(
            name="snips-intent",
            kind=TaskKind.CLASSIFICATION,
            labels=intent_labels,
            train=splits["train"],
            dev=splits["dev"],
            test=splits["test"],
            metric="accuracy",
            extra={"data_dir": str(root)},
        )
    return TaskData(
        name="snips-slot",
        kind=TaskKind.TAGGING,
        labels=slot_labels,
        train=splits["train"],
        dev=splits["dev"],
        test=splits["test"],
        metric="slot_f1",
        extra={"data_dir": str(root), "intent_labels": intent_labels},
    )
