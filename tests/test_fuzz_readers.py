"""Property-based fuzzing (hypothesis) of what reads user input: the JSONL reader, the rules reader and the
word -> piece rationale alignment. Arbitrary Unicode, empty strings, very long lines and mismatched lengths may
only ever give a UimerError or a correct result; any other exception is a bug."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import make_tokenizer
from uimer.data.encoding import encode_examples
from uimer.data.jsonl import load_jsonl
from uimer.data.rationales import load_rationale_file
from uimer.data.types import Example, TaskKind
from uimer.errors import UimerError

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOKENIZER = make_tokenizer()

text = st.text(max_size=40)
long_text = st.text(min_size=1000, max_size=5000, alphabet=st.characters(codec="utf-8"))
word = st.text(st.characters(exclude_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=12).filter(
    lambda w: w.split() == [w])
words = st.lists(word, min_size=1, max_size=8)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=True) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=10,
)


@st.composite
def jsonl_line(draw) -> str:
    """A line that is sometimes a well-formed example, sometimes almost one, sometimes anything."""
    kind = draw(st.sampled_from(["good"] * 6 + ["mutated", "garbage", "long", "blank"]))
    if kind == "blank":
        return draw(st.sampled_from(["", "   ", "\t"]))
    if kind == "garbage":
        return draw(text).replace("\n", " ")
    if kind == "long":
        return json.dumps({"text": draw(long_text), "label": "a"})
    ws = draw(words)
    obj: dict = {"words": ws, "label": draw(st.sampled_from(["a", "b"])),
                 "rationale": [draw(st.integers(0, 1)) for _ in ws]}
    if kind == "mutated":
        for key in draw(st.lists(st.sampled_from(["words", "text", "label", "rationale", "tags", "pair_words",
                                                  "pair_text"]), max_size=3)):
            obj[key] = draw(json_value)
    return json.dumps(obj, ensure_ascii=draw(st.booleans()))


def _check_task(task) -> None:
    """What a correct load guarantees."""
    assert task.labels and len(set(task.labels)) == len(task.labels)
    for split in (task.train, task.dev, task.test):
        assert split
        for ex in split:
            assert ex.words and all(w and w.split() == [w] for w in ex.words)
            n = len(ex.words) + len(ex.pair_words or [])
            assert ex.rationale is None or (len(ex.rationale) == n and set(ex.rationale) <= {0, 1})
            if task.kind is TaskKind.TAGGING:
                assert len(ex.tags) == len(ex.words) and all(0 <= t < len(task.labels) for t in ex.tags)
            else:
                assert 0 <= ex.label < len(task.labels)


@FUZZ
@given(splits=st.lists(st.lists(jsonl_line(), min_size=1, max_size=6), min_size=3, max_size=3),
       raw=st.binary(max_size=30), use_raw=st.sampled_from([False] * 5 + [True]))
def test_jsonl_reader_gives_a_uimer_error_or_a_correct_task(splits, raw, use_raw):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, lines in zip(("train", "dev", "test"), splits, strict=True):
            (folder / f"{name}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if use_raw:
            (folder / "dev.jsonl").write_bytes(raw)
        try:
            task = load_jsonl(folder)
        except UimerError as err:
            event(f"error: {str(err).split(': ')[-1][:30]}")
            return
        event("loaded")
        _check_task(task)


rules_yaml = st.one_of(
    text,
    long_text,
    st.builds(lambda kw: json.dumps({"keywords": kw}), st.dictionaries(text, st.lists(text, max_size=3) | text,
                                                                         max_size=3)),
    st.builds(lambda rx: json.dumps({"regexes": rx}), st.lists(text | st.just("(?P<rationale>a+)"), max_size=3)),
    st.builds(lambda v: json.dumps(v), json_value),
)


@FUZZ
@given(content=rules_yaml, sentence=words, label=st.none() | text)
def test_rules_reader_gives_a_uimer_error_or_a_working_source(content, sentence, label):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(content, encoding="utf-8")
        try:
            source = load_rationale_file(path)
        except UimerError:
            event("error")
            return
    event("loaded")
    flags = source.mark(sentence, label)
    assert len(flags) == len(sentence) and set(flags) <= {0, 1}


@st.composite
def example_batch(draw):
    examples = []
    for _ in range(draw(st.integers(1, 4))):
        ws = draw(st.lists(word, min_size=0, max_size=10) | st.just(["x" * 300]))
        size = len(ws) + draw(st.sampled_from([0, 0, 0, -1, 1, 5]))
        rationale = draw(st.none() | st.lists(st.integers(0, 1), min_size=max(size, 0), max_size=max(size, 0)))
        examples.append(Example(words=ws, label=0, rationale=rationale))
    return examples


@FUZZ
@given(examples=example_batch(), max_length=st.integers(4, 40))
def test_word_to_piece_alignment_gives_a_uimer_error_or_correct_pieces(examples, max_length):
    try:
        split = encode_examples(examples, TOKENIZER, TaskKind.CLASSIFICATION, max_length)
    except UimerError:
        event("error")
        return
    event("encoded")
    for example, encoded in zip(examples, split.encoded, strict=True):
        assert len(example.rationale or example.words) == len(example.words)
        n = len(encoded.input_ids)
        assert n <= max_length and encoded.rationale.shape == (n,) and encoded.real.shape == (n,)
        assert not encoded.real[0] and not encoded.real[-1]  # [CLS] ... [SEP]
        assert not (encoded.rationale.bool() & ~encoded.real).any()  # never on special pieces
        word_ids = TOKENIZER(example.words, is_split_into_words=True, truncation=True,
                             max_length=max_length).word_ids()
        for pos, w in enumerate(word_ids):
            expected = 1.0 if w is not None and example.rationale and example.rationale[w] else 0.0
            assert encoded.rationale[pos].item() == expected


@pytest.mark.parametrize("rationale", [[1], [1, 0, 0, 1]])
def test_mismatched_rationale_length_is_a_data_error_naming_the_example(rationale):
    example = Example(words=["play", "music", "now"], label=0, rationale=rationale, source="mine.jsonl:7")
    with pytest.raises(UimerError, match=r"mine.jsonl:7, field 'rationale'"):
        encode_examples([example], TOKENIZER, TaskKind.CLASSIFICATION)
