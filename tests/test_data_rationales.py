"""Rationale sources: the paper's keyword dictionary and 28 regexes, and user YAML files."""

from __future__ import annotations

import re

import pytest

from uimer.data.rationales import (
    REGEX_28_INDEX,
    REGEX_28_REFERENCE,
    SNIPS_INTENT_KEYWORDS,
    SNIPS_SLOT_REGEXES,
    SNIPS_SLOT_REGEXES_REFERENCE,
    CombinedRationales,
    KeywordRationales,
    RegexRationales,
    load_rationale_file,
    snips_intent_rationales,
    snips_slot_rationales,
)
from uimer.errors import DataError


def test_dictionary_and_regex_counts():
    assert list(SNIPS_INTENT_KEYWORDS) == [
        "AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
        "SearchScreeningEvent",
    ]
    assert sum(len(v) for v in SNIPS_INTENT_KEYWORDS.values()) == 4 + 4 + 6 + 4 + 7 + 3 + 9
    assert len(SNIPS_SLOT_REGEXES) == 28 and len(SNIPS_SLOT_REGEXES_REFERENCE) == 28
    assert SNIPS_SLOT_REGEXES[:27] == SNIPS_SLOT_REGEXES_REFERENCE[:27]
    for p in SNIPS_SLOT_REGEXES:
        re.compile(p)
    assert not SNIPS_SLOT_REGEXES[22].endswith(".*")  # #23 has no trailing .*


def test_keywords_by_gold_label_name_all_occurrences_case_sensitive():
    src = snips_intent_rationales()
    words = "show me the tv show Show times".split()
    assert src.mark(words, "SearchCreativeWork") == [1, 0, 0, 0, 1, 0, 0]
    assert src.mark(words, "GetWeather") == [0] * 7
    assert src.mark(words, "UNK") == [0] * 7
    assert src.mark(words, None) == [0] * 7


def test_regex_examples_from_digest():
    src = snips_slot_rationales()

    def marked(sentence: str) -> list[str]:
        words = sentence.split()
        return [w for w, r in zip(words, src.mark(words, None), strict=True) if r]

    assert marked("add step to me to the 50 clásicos playlist") == ["add", "to", "to"]
    assert marked("i give this current textbook a rating value of 1 and a best rating of 6") == ["textbook", "best"]
    assert marked("listen to westbam alumb allergic on google music") == ["google", "music"]


def test_regex_28_fix_and_reference_behaviour():
    words = "what will the weather be here".split()
    fixed = RegexRationales([SNIPS_SLOT_REGEXES[REGEX_28_INDEX]])
    reference = RegexRationales([REGEX_28_REFERENCE])
    assert fixed.mark(words, None) == [0, 0, 0, 0, 0, 1]
    assert reference.mark(words, None) == [0] * 6
    assert "\x08" in REGEX_28_REFERENCE
    assert fixed.mark("somewhere nice".split(), None) == [0, 0]  # a real word boundary
    assert reference.mark("near my current location".split(), None) == [0, 0, 1, 1]


def test_named_groups_only_and_none_groups_ignored():
    src = RegexRationales([r".*(?P<none>[0-5]) (?P<rationale>stars).*"])
    assert src.mark("give it 5 stars".split(), None) == [0, 0, 0, 1]


def test_combined_is_union():
    src = CombinedRationales([KeywordRationales({"A": ["x"]}), RegexRationales([r".*(?P<rationale>y).*"])])
    assert src.mark(["x", "y", "z"], "A") == [1, 1, 0]
    assert src.mark(["x", "y", "z"], "B") == [0, 1, 0]


def test_load_rationale_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(
        "keywords:\n  GetWeather: [weather, forecast]\nregexes:\n  - '.*(?P<rationale>here).*'\n", encoding="utf-8"
    )
    src = load_rationale_file(p)
    assert src.mark(["weather", "here", "now"], "GetWeather") == [1, 1, 0]
    assert src.mark(["weather", "here", "now"], "PlayMusic") == [0, 1, 0]


def test_regex_that_does_not_compile(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("regexes:\n  - '.*(?P<rationale>ok).*'\n  - '.*(?P<rationale>broken.*'\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_rationale_file(p)
    e = err.value
    assert e.path == str(p) and e.line == 3 and e.field == "regexes[1]"
    assert "line 3, field 'regexes[1]'" in str(e) and "does not compile" in str(e)


def test_invalid_yaml(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("keywords:\n  A: [a, b\n", encoding="utf-8")
    with pytest.raises(DataError, match="invalid YAML") as err:
        load_rationale_file(p)
    assert err.value.line is not None and str(p) in str(err.value)


def test_wrong_structure(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("keywords:\n  A: {x: 1}\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_rationale_file(p)
    assert err.value.field == "keywords.A" and err.value.line == 2
    p.write_text("regex: []\n", encoding="utf-8")
    with pytest.raises(DataError, match="unknown key"):
        load_rationale_file(p)
