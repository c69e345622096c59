"""Your own data as JSON Lines.

Directory layout::

    my-task/
      train.jsonl      # required
      dev.jsonl        # required (model selection)
      test.jsonl       # required (final report)
      labels.txt       # optional: one label (or tag) name a line; fixes the label order/ids

Each non-blank line is one JSON object describing one example:

| key | type | meaning |
|---|---|---|
| `words` | list of strings | the sentence, already tokenised into words |
| `text` | string | alternative to `words`: split on whitespace |
| `pair_words` / `pair_text` | as above | second sentence (hypothesis) for sentence-pair tasks |
| `label` | string | class name, for classification and sentence-pair tasks |
| `tags` | list of strings | one tag per word (e.g. BIO: `"B-city"`, `"O"`), for tagging tasks |
| `rationale` | list of 0/1, or null | 1 marks a rationale word; one entry per word of `words` followed by `pair_words`; null or absent = not annotated |

Give `words` or `text` (not both), and likewise `pair_words` or `pair_text`. Blank lines are skipped.
Examples::

    {"text": "what is the weather in paris", "label": "GetWeather", "rationale": [0, 0, 0, 1, 0, 0]}
    {"words": ["play", "jazz"], "tags": ["O", "B-genre"]}
    {"text": "a man sleeps", "pair_text": "a person rests", "label": "entailment", "rationale": null}

The task kind is inferred from the first line of `train.jsonl`: `tags` -> tagging, a pair sentence ->
sentence-pair classification, otherwise classification. Every line of every split must then have the same
shape (a line may not have both `label` and `tags`). Labels come from `labels.txt` when present (a label not
listed there is an error); otherwise they are the sorted set of labels/tags seen in `train.jsonl` (with `"O"`
first for tagging when it occurs), and a dev/test label unseen in training is an error. Every problem is
reported with the file, the line number and the JSON field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from uimer.data.snips import read_label_file
from uimer.data.textio import read_lines
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import DataError

SPLIT_FILES = {"train": "train.jsonl", "dev": "dev.jsonl", "test": "test.jsonl"}
LABELS_FILE = "labels.txt"


def _words(obj: dict[str, Any], words_key: str, text_key: str, path: Path, line: int) -> list[str] | None:
    has_w, has_t = words_key in obj and obj[words_key] is not None, text_key in obj and obj[text_key] is not None
    if has_w and has_t:
        raise DataError(path, f"give either {words_key!r} or {text_key!r}, not both", line, words_key)
    if has_w:
        words = obj[words_key]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataError(path, "expected a list of strings", line, words_key)
        bad = [w for w in words if not w or w.split() != [w]]
        if bad:
            raise DataError(path, f"words must be non-empty and contain no whitespace, got {bad[0]!r}", line, words_key)
        if not words:
            raise DataError(path, "empty word list", line, words_key)
        return list(words)
    if has_t:
        text = obj[text_key]
        if not isinstance(text, str):
            raise DataError(path, "expected a string", line, text_key)
        if not text.split():
            raise DataError(path, "empty text", line, text_key)
        return text.split()
    return None


def _kind_of(obj: dict[str, Any]) -> TaskKind:
    if obj.get("tags") is not None:
        return TaskKind.TAGGING
    if obj.get("pair_words") is not None or obj.get("pair_text") is not None:
        return TaskKind.PAIR
    return TaskKind.CLASSIFICATION


class _Row:
    __slots__ = ("words", "pair_words", "label", "tags", "rationale", "path", "line")

    def __init__(self, words, pair_words, label, tags, rationale, path, line):
        self.words, self.pair_words, self.label, self.tags = words, pair_words, label, tags
        self.rationale, self.path, self.line = rationale, path, line


def _parse_file(path: Path, kind: TaskKind | None) -> tuple[list[_Row], TaskKind]:
    """Parse and shape-check one split; `kind` None means "infer from the first line"."""
    rows: list[_Row] = []
    for line_no, line in enumerate(read_lines(path), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line_no) from None
        if not isinstance(obj, dict):
            raise DataError(path, f"expected a JSON object {{...}}, got {type(obj).__name__}", line_no, "$")
        words = _words(obj, "words", "text", path, line_no)
        if words is None:
            raise DataError(path, "missing the sentence: give 'words' or 'text'", line_no, "words")
        pair_words = _words(obj, "pair_words", "pair_text", path, line_no)
        line_kind = _kind_of(obj)
        if kind is None:
            kind = line_kind
        elif line_kind is not kind:
            field = {TaskKind.TAGGING: "tags", TaskKind.PAIR: "pair_words"}.get(line_kind) or (
                "tags" if kind is TaskKind.TAGGING else "pair_words"
            )
            raise DataError(
                path, f"this line is a {line_kind.value} example but the data set is {kind.value}", line_no, field
            )
        label = tags = None
        if kind is TaskKind.TAGGING:
            if obj.get("label") is not None:
                raise DataError(path, "a tagging line has 'tags', not 'label'", line_no, "label")
            tags = obj["tags"]
            if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
                raise DataError(path, "expected a list of tag strings", line_no, "tags")
            if len(tags) != len(words):
                raise DataError(path, f"{len(tags)} tags for {len(words)} words", line_no, "tags")
        else:
            label = obj.get("label")
            if label is None:
                raise DataError(path, "missing 'label'", line_no, "label")
            if not isinstance(label, str) or not label:
                raise DataError(path, "label must be a non-empty string", line_no, "label")
        rationale = obj.get("rationale")
        if rationale is not None:
            n = len(words) + len(pair_words or [])
            if not isinstance(rationale, list) or not all(
                type(r) is int and r in (0, 1) for r in rationale  # bool is not allowed
            ):
                raise DataError(path, "rationale must be a list of 0/1 integers or null", line_no, "rationale")
            if len(rationale) != n:
                what = "words + pair_words" if pair_words else "words"
                raise DataError(
                    path, f"rationale has {len(rationale)} entries but there are {n} {what}", line_no, "rationale"
                )
            rationale = list(rationale)
        rows.append(_Row(words, pair_words, label, tags, rationale, path, line_no))
    if kind is None:
        raise DataError(path, "no examples (only blank lines)")
    return rows, kind


def load_jsonl(directory: Path, name: str = "jsonl") -> TaskData:
    """Load a JSONL task directory (format in the module docstring). Metric: accuracy, or slot_f1 for tagging."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(directory, "not a directory; expected a folder with train.jsonl, dev.jsonl, test.jsonl")
    parsed: dict[str, list[_Row]] = {}
    kind: TaskKind | None = None
    for split, fname in SPLIT_FILES.items():
        parsed[split], kind = _parse_file(directory / fname, kind)
    assert kind is not None

    labels_path = directory / LABELS_FILE
    fixed = labels_path.exists()
    if fixed:
        labels = read_label_file(labels_path)
    else:
        seen: set[str] = set()
        for row in parsed["train"]:
            seen.update(row.tags if kind is TaskKind.TAGGING else [row.label])
        labels = sorted(seen)
        if kind is TaskKind.TAGGING and "O" in seen:
            labels = ["O"] + [x for x in labels if x != "O"]
    ids = {lab: i for i, lab in enumerate(labels)}
    where = f"{LABELS_FILE}" if fixed else "train.jsonl (no labels.txt)"

    splits: dict[str, list[Example]] = {}
    for split, rows in parsed.items():
        examples = []
        for r in rows:
            if kind is TaskKind.TAGGING:
                unknown = [t for t in r.tags if t not in ids]
                if unknown:
                    raise DataError(r.path, f"tag {unknown[0]!r} is not in {where}", r.line, "tags")
                ex = Example(words=r.words, tags=[ids[t] for t in r.tags], rationale=r.rationale)
            else:
                if r.label not in ids:
                    raise DataError(r.path, f"label {r.label!r} is not in {where}", r.line, "label")
                ex = Example(words=r.words, pair_words=r.pair_words, label=ids[r.label], rationale=r.rationale)
            ex.source = f"{r.path}:{r.line}"
            examples.append(ex)
        splits[split] = examples

    return TaskData(
        name=name,
        kind=kind,
        labels=labels,
        train=splits["train"],
        dev=splits["dev"],
        test=splits["test"],
        metric="slot_f1" if kind is TaskKind.TAGGING else "accuracy",
        extra={"data_dir": str(directory)},
    )


def write_jsonl(task: TaskData, directory: Path, rationales: bool = False) -> dict[str, int]:
    """Write a task in this format (train/dev/test.jsonl + labels.txt, so label ids keep their order and
    --shot draws the same subsets as on the original task). Without `rationales` every line has
    `"rationale": null`, as a user's own data before they write a rules file."""
    from uimer.atomic import write_text_atomic

    directory = Path(directory)
    counts = {}
    for split in ("train", "dev", "test"):
        lines = []
        for ex in getattr(task, split):
            obj: dict[str, Any] = {"words": list(ex.words)}
            if ex.pair_words is not None:
                obj["pair_words"] = list(ex.pair_words)
            if task.kind is TaskKind.TAGGING:
                obj["tags"] = [task.labels[t] for t in ex.tags or []]
            else:
                obj["label"] = task.labels[ex.label]
            obj["rationale"] = [int(r) for r in ex.rationale] if rationales and ex.rationale is not None else None
            lines.append(json.dumps(obj))
        write_text_atomic(directory / f"{split}.jsonl", "\n".join(lines) + "\n")
        counts[split] = len(lines)
    write_text_atomic(directory / LABELS_FILE, "\n".join(task.labels) + "\n")
    return counts
