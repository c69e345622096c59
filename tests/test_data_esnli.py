"""e-SNLI: dev/test by column name, the 1,089-pair training pool, and CSV errors."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from uimer.data.esnli import ESNLI_LABELS, load_esnli, parse_marked, read_esnli_csv, read_view_data
from uimer.data.types import TaskKind
from uimer.errors import DataError


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
needs_esnli = pytest.mark.skipif(
    not (DATA / "esnli" / "esnli_dev.csv").exists(),
    reason=f"e-SNLI not found under {DATA} (set UIMER_TEST_DATA_DIR to the folder holding esnli/)",
)

HEADER = (
    "pairID,gold_label,Sentence1,Sentence2,Explanation_1,Sentence1_marked_1,Sentence2_marked_1,"
    "Sentence1_Highlighted_1,Sentence2_Highlighted_1\r\n"
)


def test_parse_marked():
    assert parse_marked(" Two *Women* are *eating* *lunch.* * ") == (
        ["two", "women", "are", "eating", "lunch", "."],
        [0, 1, 0, 1, 1, 0],
    )


def test_punctuation_glued_to_a_highlight_is_not_rationale():
    """Issue 29 fix 5: `*airplane.*` marks `airplane`, not the period (the old rule flagged `airplane.`)."""
    assert parse_marked("an *airplane.*") == (["an", "airplane", "."], [0, 1, 0])
    assert parse_marked('*"diner,"* *airplane*. near.') == (['"', "diner", ',"', "airplane", ".", "near."],
                                                          [0, 1, 0, 1, 0, 0])
    assert parse_marked("*man's* *u.s.*") == (["man's", "u.s", "."], [1, 1, 0])  # inner punctuation stays
    assert parse_marked("*...*") == (["..."], [1])  # nothing but punctuation: kept as highlighted


@pytest.mark.integration
def test_split_punctuation_leaves_the_word_pieces_unchanged():
    """Splitting edge punctuation off changes rationale flags only: the pieces are the same."""
    from uimer.models.encoder import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    text = "A *man* rides an *airplane.* , near *Paris,* *(France)*"
    words, flags = parse_marked(text)
    joined = tokenizer(" ".join(words))["input_ids"]
    assert joined == tokenizer(text.replace("*", "").lower())["input_ids"]
    pieces = tokenizer(words, is_split_into_words=True)
    marked = {tokenizer.convert_ids_to_tokens(pieces["input_ids"][i]) for i, w in enumerate(pieces.word_ids())
              if w is not None and flags[w]}
    assert marked == {"man", "airplane", "paris", "france"}


@needs_esnli
@pytest.mark.integration
def test_load_esnli():
    task = load_esnli(DATA)
    assert task.name == "esnli" and task.kind is TaskKind.PAIR and task.labels == ESNLI_LABELS
    assert (len(task.train), len(task.dev), len(task.test)) == (1089, 9842, 9824)
    dev_counts = Counter(task.labels[e.label] for e in task.dev)
    assert dev_counts == {"entailment": 3329, "contradiction": 3278, "neutral": 3235}
    test_counts = Counter(task.labels[e.label] for e in task.test)
    assert test_counts == {"entailment": 3368, "contradiction": 3237, "neutral": 3219}
    # SOURCE.md checks: every dev pair has a highlight; 6,607 premises have one.
    assert all(e.has_rationale for e in task.dev)
    assert sum(any(e.rationale[: len(e.words)]) for e in task.dev) == 6607
    for e in task.dev[:200] + task.train:
        assert len(e.rationale) == len(e.words) + len(e.pair_words)
        assert all("*" not in w and w == w.lower() for w in e.all_words)
    first = task.dev[0]
    assert first.pair_words[-2:] == ["lunch", "."] and first.rationale[-2:] == [1, 0]  # `*lunch.*`
    # Pool order: UIMER view_data.txt (999), then Structured-e-SNLI (90).
    assert "view_data.txt" in task.train[0].source and "view_data.txt" in task.train[998].source
    assert "assigned_samples_training.csv" in task.train[999].source
    assert task.train[0].words[:3] == ["a", "person", "on"]
    assert task.train[0].pair_words == "a person is training his horse for a competition.".split()
    assert task.labels[task.train[0].label] == "neutral"
    pool = Counter(task.labels[e.label] for e in task.train)
    assert pool == {"entailment": 334 + 30, "contradiction": 333 + 30, "neutral": 332 + 30}


def test_missing_csv_column(tmp_path):
    p = tmp_path / "esnli_dev.csv"
    p.write_text(HEADER.replace("Sentence2_marked_1,", "") + "x,neutral,a,b,e,*a*,{},{}\r\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_esnli_csv(p)
    e = err.value
    assert e.path == str(p) and e.line == 1 and e.field == "Sentence2_marked_1"
    assert "line 1, field 'Sentence2_marked_1'" in str(e)


def test_unknown_gold_label_names_row(tmp_path):
    p = tmp_path / "esnli_test.csv"
    rows = 'x,neutral,a b,c d,e,*a* b,c *d*,0,1\r\ny,"entailment",a,"multi\r\nline",e,a,*c*,{},0\r\nz,-,a,c,e,a,c,{},{}\r\n'
    p.write_text(HEADER + rows, encoding="utf-8")
    with pytest.raises(DataError) as err:
        read_esnli_csv(p)
    assert err.value.line == 5 and err.value.field == "gold_label" and "'-'" in str(err.value)


def test_esnli_csv_small(tmp_path):
    p = tmp_path / "esnli_dev.csv"
    p.write_text(HEADER + "x,contradiction,A b,C d,e, *A* b,C *d.*,0,1\r\n", encoding="utf-8")
    (ex,) = read_esnli_csv(p)
    assert (ex.words, ex.pair_words, ex.rationale, ex.label) == (["a", "b"], ["c", "d", "."], [1, 0, 0, 1, 0], 2)
    assert ex.source == f"{p}:2"


def test_view_data_needs_header(tmp_path):
    p = tmp_path / "view_data.txt"
    p.write_text("neutral\na\nb\na\n*b*\n--------------\n", encoding="utf-8")
    with pytest.raises(DataError, match="header"):
        read_view_data(p)


def test_empty_csv(tmp_path):
    p = tmp_path / "esnli_dev.csv"
    p.write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        read_esnli_csv(p)
