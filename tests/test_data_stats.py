"""Rationale coverage against digest §2.4, and the effect of the regex-28 fix."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from uimer.data.rationales import REGEX_28_INDEX, SNIPS_SLOT_REGEXES, snips_slot_rationales
from uimer.data.snips import load_snips
from uimer.data.stats import rationale_stats
from uimer.data.types import Example, TaskKind


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
needs_snips = pytest.mark.skipif(
    not (DATA / "snips" / "intent_label.txt").exists(), reason=f"SNIPS not found under {DATA}"
)


def test_stats_small():
    examples = [
        Example(words=["a", "b"], label=0, rationale=[1, 1]),
        Example(words=["a"], label=0, rationale=[0]),
        Example(words=["a"], label=1, rationale=None),
        Example(words=["a"], label=1, rationale=[1]),
    ]
    s = rationale_stats(examples, ["x", "y", "z"], TaskKind.CLASSIFICATION)
    assert s == {
        "n_examples": 4,
        "coverage": 0.5,
        "mean_rationale_words": 0.75,
        "per_class_coverage": {"x": 0.5, "y": 0.5},
    }
    assert "per_class_coverage" not in rationale_stats(examples, ["x", "y"], "tagging")


@needs_snips
@pytest.mark.integration
def test_intent_coverage_matches_digest():
    task = load_snips(DATA, "intent")
    s = rationale_stats(task.train, task.labels, task.kind)
    assert abs(100 * s["coverage"] - 84.4) <= 0.5
    assert abs(s["mean_rationale_words"] - 1.29) <= 0.01
    expected = {"AddToPlaylist": 0.96, "BookRestaurant": 0.82, "GetWeather": 0.66, "PlayMusic": 0.97,
                "RateBook": 0.97, "SearchCreativeWork": 0.69, "SearchScreeningEvent": 0.85}
    assert set(s["per_class_coverage"]) == set(expected)  # UNK has no examples
    for name, share in expected.items():
        assert abs(s["per_class_coverage"][name] - share) <= 0.01, name
    for split, cov in (("dev", 83.0), ("test", 81.3)):
        assert abs(100 * rationale_stats(getattr(task, split), task.labels, task.kind)["coverage"] - cov) <= 0.5


@needs_snips
@pytest.mark.integration
def test_slot_coverage_reference_and_fixed():
    fixed = load_snips(DATA, "slot")
    reference = load_snips(DATA, "slot", rationale_source=snips_slot_rationales(reference_regex28=True))
    s_fixed = rationale_stats(fixed.train, fixed.labels, fixed.kind)
    s_ref = rationale_stats(reference.train, reference.labels, reference.kind)
    print(f"slot coverage train: fixed {100 * s_fixed['coverage']:.2f} %, reference {100 * s_ref['coverage']:.2f} %")
    assert abs(100 * s_ref["coverage"] - 80.8) <= 0.5
    assert abs(s_ref["mean_rationale_words"] - 1.88) <= 0.01
    assert s_fixed["coverage"] > s_ref["coverage"]

    p28 = re.compile(SNIPS_SLOT_REGEXES[REGEX_28_INDEX])
    assert sum(1 for e in fixed.train if p28.match(" ".join(e.words))) == 320  # digest §2.2: 116 as written
    n_diff = 0
    for a, b in zip(fixed.train, reference.train, strict=True):
        if a.rationale != b.rationale:
            n_diff += 1
            assert p28.match(" ".join(a.words)), a.source  # only regex 28 explains a difference
            changed = {w for w, x, y in zip(a.words, a.rationale, b.rationale, strict=True) if x != y}
            assert changed == {"here"}, a.source  # the fix only adds "here"
    assert n_diff > 0
    for split, cov in (("dev", 80.9), ("test", 79.1)):
        got = rationale_stats(getattr(reference, split), reference.labels, reference.kind)["coverage"]
        assert abs(100 * got - cov) <= 0.5
