"""e-SNLI with word highlights (digest §1.6, shared/data/esnli/SOURCE.md).

* dev/test: `esnli_dev.csv` / `esnli_test.csv`, read with the csv module by column NAME (the reference read by
  position and so took the wrong columns); the header is verified. Words and rationales come from annotation 1,
  `Sentence1_marked_1` / `Sentence2_marked_1`.
* train: only a 1,089-pair pool with highlights is public. `TaskData.train` holds it in this fixed order:
  1. `train_pool/UIMER/view_data.txt` (999 pairs, file order), then
  2. `train_pool/Structured-e-SNLI/assigned_samples_training.csv` (90 pairs, file order).

Word rule for a marked field: split on whitespace; a token containing `*` is a rationale word and every `*` is
removed from it; tokens that become empty are dropped; words are lower-cased. Punctuation glued to the edges
of a highlighted token is split off as separate *non-rationale* words (`*lunch.*` -> `lunch` (rationale),
`.` (not)): annotators highlight words, and the sentence-final period or a comma they dragged along is no
evidence. The reference strips the "." from highlighted words (digest §1.6); splitting it off instead keeps
the text, so the word pieces are unchanged (BERT-style tokenizers split edge punctuation anyway) and only
the rationale flags of those punctuation pieces change. Before issue 29 the "." piece counted as rationale.
Unhighlighted tokens keep their punctuation attached. `Example.words` is the premise, `Example.pair_words`
the hypothesis, and `Example.rationale` covers premise + hypothesis words.
"""

from __future__ import annotations

import csv
import string
from pathlib import Path

from uimer.data.textio import read_lines, text_stream
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import DataError

ESNLI_LABELS = ["entailment", "neutral", "contradiction"]  # reference ids 0/1/2
REQUIRED_COLUMNS = ("gold_label", "Sentence1_marked_1", "Sentence2_marked_1")
UIMER_POOL = Path("train_pool") / "UIMER" / "view_data.txt"
STRUCTURED_POOL = Path("train_pool") / "Structured-e-SNLI" / "assigned_samples_training.csv"
RECORD_SEPARATOR = "--------------"
PUNCTUATION = frozenset(string.punctuation)
VIEW_DATA_FIELDS = ("gold_label", "Sentence1", "Sentence2", "Sentence1_marked_1", "Sentence2_marked_1")


def esnli_dir(data_dir: Path) -> Path:
    """Accept either the data root (holding `esnli/`) or the e-SNLI folder itself."""
    data_dir = Path(data_dir)
    candidate = data_dir if (data_dir / "esnli_dev.csv").exists() or not (data_dir / "esnli").is_dir() else (
        data_dir / "esnli"
    )
    if not (candidate / "esnli_dev.csv").exists():
        raise DataError(
            candidate / "esnli_dev.csv",
            "e-SNLI not found; run `uimer data fetch esnli` or pass --data-dir pointing at the folder holding esnli/",
        )
    return candidate


def _split_edge_punctuation(word: str) -> tuple[str, str, str]:
    """(leading punctuation, core, trailing punctuation); an all-punctuation word is all core."""
    start, end = 0, len(word)
    while start < end and word[start] in PUNCTUATION:
        start += 1
    while end > start and word[end - 1] in PUNCTUATION:
        end -= 1
    if start == end:
        return "", word, ""
    return word[:start], word[start:end], word[end:]


def parse_marked(text: str) -> tuple[list[str], list[int]]:
    """Words and 0/1 rationale flags of a `*_marked_k` field (see the module docstring for the rule)."""
    words: list[str] = []
    flags: list[int] = []
    for token in text.split():
        word = token.replace("*", "").lower()
        if not word:
            continue
        if "*" not in token:
            words.append(word)
            flags.append(0)
            continue
        lead, core, trail = _split_edge_punctuation(word)
        for part, flag in ((lead, 0), (core, 1), (trail, 0)):
            if part:
                words.append(part)
                flags.append(flag)
    return words, flags


def _make_example(
    path: Path, line: int, label: str, premise: str, hypothesis: str, label_field: str = "gold_label"
) -> Example:
    label = label.strip()
    if label not in ESNLI_LABELS:
        raise DataError(path, f"unknown gold label {label!r}; expected one of {ESNLI_LABELS}", line, label_field)
    p_words, p_flags = parse_marked(premise)
    h_words, h_flags = parse_marked(hypothesis)
    if not p_words:
        raise DataError(path, "empty premise", line, "Sentence1_marked_1")
    if not h_words:
        raise DataError(path, "empty hypothesis", line, "Sentence2_marked_1")
    return Example(
        words=p_words,
        pair_words=h_words,
        label=ESNLI_LABELS.index(label),
        rationale=p_flags + h_flags,
        source=f"{path}:{line}",
    )


def read_esnli_csv(path: Path) -> list[Example]:
    """Read an e-SNLI CSV (original columns) by column name; `line` in errors is the row's first physical line."""
    reader = csv.reader(text_stream(path))
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(path, "file is empty") from None
    except csv.Error as exc:
        raise DataError(path, f"malformed CSV header: {exc}", line=1) from None
    columns = {name.strip(): i for i, name in enumerate(header)}
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            raise DataError(path, f"missing column {name!r} in the header", line=1, field=name)
    i_label, i_prem, i_hyp = (columns[n] for n in REQUIRED_COLUMNS)
    examples = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(path, f"malformed CSV: {exc}", line=start) from None
        if not row or all(not cell.strip() for cell in row):
            start = reader.line_num + 1
            continue
        if len(row) != len(header):
            raise DataError(path, f"row has {len(row)} fields but the header has {len(header)}", line=start)
        examples.append(_make_example(path, start, row[i_label], row[i_prem], row[i_hyp]))
        start = reader.line_num + 1
    return examples


def read_view_data(path: Path) -> list[Example]:
    """Read the UIMER authors' `view_data.txt`: a 5-line header block, then 5-line records, each followed by
    a `--------------` line. Lines 4 and 5 of a record are the marked premise and hypothesis."""
    lines = read_lines(path)
    records: list[tuple[int, list[str]]] = []
    block: list[str] = []
    block_start = 1
    for i, line in enumerate(lines, start=1):
        if line.strip() == RECORD_SEPARATOR:
            records.append((block_start, block))
            block, block_start = [], i + 1
        else:
            block.append(line)
    if any(line.strip() for line in block):
        records.append((block_start, block))
    if not records or [x.strip() for x in records[0][1]] != list(VIEW_DATA_FIELDS):
        raise DataError(path, f"expected a header block {list(VIEW_DATA_FIELDS)} before the first separator", line=1)
    examples = []
    for start, rec in records[1:]:
        if len(rec) != len(VIEW_DATA_FIELDS):
            raise DataError(path, f"record has {len(rec)} lines, expected {len(VIEW_DATA_FIELDS)}", line=start)
        label, _s1, _s2, marked1, marked2 = rec
        examples.append(_make_example(path, start, label, marked1, marked2))
    return examples


def load_esnli(data_dir: Path) -> TaskData:
    """Load e-SNLI: `train` = the 1,089-pair highlighted pool (order in the module docstring), dev 9,842,
    test 9,824. `data_dir` is the data root holding `esnli/`, or the e-SNLI folder itself."""
    root = esnli_dir(data_dir)
    uimer_pool = read_view_data(root / UIMER_POOL)
    structured_pool = read_esnli_csv(root / STRUCTURED_POOL)
    return TaskData(
        name="esnli",
        kind=TaskKind.PAIR,
        labels=list(ESNLI_LABELS),
        train=uimer_pool + structured_pool,
        dev=read_esnli_csv(root / "esnli_dev.csv"),
        test=read_esnli_csv(root / "esnli_test.csv"),
        metric="accuracy",
        extra={
            "data_dir": str(root),
            "train_pool": [
                {"file": str(UIMER_POOL), "count": len(uimer_pool)},
                {"file": str(STRUCTURED_POOL), "count": len(structured_pool)},
            ],
        },
    )
