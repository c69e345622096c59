"""Rationale alignment for fast tokenizers: word flags and character spans -> piece masks, and their errors."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import WORDS, make_tokenizer
from uimer.data.alignment import (
    check_spans,
    encode_with_rationales,
    spans_to_pieces,
    word_flags_to_pieces,
)
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError, DataError

TOKENIZER = make_tokenizer()
# Known words, words split into several pieces ("songs" -> song ##s) and unknown ones ([UNK]).
VOCAB = [*WORDS, "songs", "playing", "player", "zebra", "Paris"]
sentences = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=8)


@st.composite
def flagged(draw):
    words = draw(sentences)
    return words, draw(st.lists(st.integers(0, 1), min_size=len(words), max_size=len(words)))


def spans_of(words: list[str], flags: list[int]) -> tuple[str, list[tuple[int, int]]]:
    """The whitespace-joined text and the character span of every flagged word."""
    spans, start = [], 0
    for word, flag in zip(words, flags, strict=True):
        if flag:
            spans.append((start, start + len(word)))
        start += len(word) + 1
    return " ".join(words), spans


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(flagged(), min_size=1, max_size=4), st.sampled_from([None, "max_length", "longest"]))
def test_word_flags_mark_exactly_the_pieces_of_flagged_words(batch, padding):
    words = [w for w, _ in batch]
    flags = [f for _, f in batch]
    kwargs = {"padding": padding, "max_length": 24, "truncation": True} if padding else {}
    enc = encode_with_rationales(TOKENIZER, words, word_rationales=flags, **kwargs)
    for i in range(len(batch)):
        mask, word_ids = enc["rationale_mask"][i], enc.word_ids(i)
        assert len(mask) == len(enc["input_ids"][i])
        for pos, word in enumerate(word_ids):
            expected = 0.0 if word is None else float(flags[i][word])
            assert mask[pos] == expected
            if enc["special_tokens_mask"][i][pos] or enc["attention_mask"][i][pos] == 0:
                assert mask[pos] == 0.0  # special and padding positions
    # The same rule as uimer's own encoding of word-level examples.
    ours = encode_examples([Example(words=w, label=0, rationale=f) for w, f in batch], TOKENIZER,
                           TaskKind.CLASSIFICATION, max_length=24 if padding else 128)
    for i, encoded in enumerate(ours):
        n = len(encoded.input_ids)
        assert enc["rationale_mask"][i][:n] == encoded.rationale.tolist()
        assert not any(enc["rationale_mask"][i][n:])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(flagged())
def test_spans_over_whole_words_give_the_word_flag_mask(item):
    words, flags = item
    text, spans = spans_of(words, flags)
    by_span = encode_with_rationales(TOKENIZER, [text], spans=[spans])
    by_word = encode_with_rationales(TOKENIZER, [words], word_rationales=[flags])
    assert by_span["input_ids"] == by_word["input_ids"]
    assert by_span["rationale_mask"] == by_word["rationale_mask"]
    assert "offset_mapping" not in by_span  # asked for internally, not returned to the model


def test_a_span_cutting_a_word_marks_only_the_pieces_it_touches():
    enc = encode_with_rationales(TOKENIZER, ["play songs"], spans=[[(5, 9)]], return_offsets_mapping=True)
    tokens = TOKENIZER.convert_ids_to_tokens(enc["input_ids"][0])
    assert tokens == ["[CLS]", "play", "song", "##s", "[SEP]"]
    assert enc["rationale_mask"][0] == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert "offset_mapping" in enc  # kept when the caller asked for it


def test_tensors_when_asked():
    import torch

    enc = encode_with_rationales(TOKENIZER, ["play songs", "play"], spans=[[(5, 10)], []], padding=True,
                                 return_tensors="pt")
    assert isinstance(enc["rationale_mask"], torch.Tensor) and enc["rationale_mask"].shape == enc["input_ids"].shape
    assert enc["rationale_mask"].tolist() == [[0, 0, 1, 1, 0], [0, 0, 0, 0, 0]]


def test_pairs_align_each_side_to_its_own_words_and_spans():
    enc = encode_with_rationales(TOKENIZER, [["kids", "smiling"]], word_rationales=[[0, 1]],
                                 pairs=[["children", "waving", "at", "camera"]], pair_word_rationales=[[1, 0, 0, 1]])
    tokens = TOKENIZER.convert_ids_to_tokens(enc["input_ids"][0])
    marked = [t for t, m in zip(tokens, enc["rationale_mask"][0], strict=True) if m]
    assert marked == ["smiling", "children", "camera"]
    enc = encode_with_rationales(TOKENIZER, ["kids smiling"], spans=[[(0, 4)]], pairs=["kids waving"],
                                 pair_spans=[[(5, 11)]])
    tokens = TOKENIZER.convert_ids_to_tokens(enc["input_ids"][0])
    marked = [(t, s) for t, s, m in zip(tokens, enc.sequence_ids(0), enc["rationale_mask"][0], strict=True) if m]
    assert marked == [("kids", 0), ("waving", 1)]


def test_low_level_functions_keep_specials_at_zero():
    assert word_flags_to_pieces([None, 0, 0, 1, None, None], [1, 0]) == [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    offsets = [(0, 0), (0, 4), (5, 9), (9, 10), (0, 0)]
    assert spans_to_pieces(offsets, [(0, 10)], special=[True, False, False, False, True]) == [0, 1, 1, 1, 0]


def test_errors_name_the_field():
    with pytest.raises(DataError, match="field 'word_rationales'.*2 flags for 3 words"):
        encode_with_rationales(TOKENIZER, [["play", "the", "song"]], word_rationales=[[1, 0]])
    with pytest.raises(DataError, match="field 'word_rationales'.*0 or 1"):
        encode_with_rationales(TOKENIZER, [["play", "the"]], word_rationales=[[1, 2]])
    with pytest.raises(DataError, match="field 'spans'.*outside"):
        encode_with_rationales(TOKENIZER, ["play the song"], spans=[[(5, 40)]])
    with pytest.raises(DataError, match="field 'spans'.*empty"):
        check_spans([(3, 3)], 10, field="spans")
    with pytest.raises(DataError, match="field 'spans'.*pair of ints"):
        check_spans([(1, 2, 3)], 10, field="spans")
    with pytest.raises(DataError, match="field 'spans'.*1 spans entries for 2 texts"):
        encode_with_rationales(TOKENIZER, ["play", "song"], spans=[[(0, 4)]])
    with pytest.raises(DataError, match="field 'rationale'.*at least 3 words"):
        word_flags_to_pieces([None, 0, 1, 2, None], [1, 0])
    with pytest.raises(ConfigError, match="spans"):
        encode_with_rationales(TOKENIZER, [["play"]], spans=[[(0, 4)]])
    with pytest.raises(ConfigError, match="word_rationales"):
        encode_with_rationales(TOKENIZER, ["play"], word_rationales=[[1]])


def test_slow_tokenizer_is_refused_by_name(tmp_path):
    import transformers

    # transformers 5 renamed the Python tokenizer BertTokenizerLegacy; in 4.x BertTokenizer is the slow one
    slow_class = getattr(transformers, "BertTokenizerLegacy", None) or transformers.BertTokenizer
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]))
    slow = slow_class(str(vocab))
    assert not slow.is_fast
    with pytest.raises(ConfigError, match="tokenizer: BertTokenizer(Legacy)? is a slow tokenizer.*use_fast=True"):
        encode_with_rationales(slow, [["play"]], word_rationales=[[1]])
