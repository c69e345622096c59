"""Low-resource samplers: exact reproduction of the reference's few-shot SNIPS subsets."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest

from uimer.data.sampling import sample_intent, sample_pairs, sample_slot, slot_types, stratified_subset
from uimer.data.snips import load_snips
from uimer.data.types import Example
from uimer.errors import ConfigError


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
SUBSETS = DATA.parent / "docs" / "fewshot-subsets.json"
needs_snips = pytest.mark.skipif(
    not (DATA / "snips" / "intent_label.txt").exists(), reason=f"SNIPS not found under {DATA}"
)


@pytest.fixture(scope="module")
def snips():
    return load_snips(DATA, "intent"), load_snips(DATA, "slot")


@needs_snips
@pytest.mark.integration
@pytest.mark.skipif(not SUBSETS.exists(), reason=f"{SUBSETS} not found")
def test_reproduces_every_reference_subset(snips):
    intent, slot = snips
    subsets = json.loads(SUBSETS.read_text(encoding="utf-8"))["subsets"]
    assert len(subsets) == 40
    for key, expected in subsets.items():
        task, shot, seed = key.split("/")
        shot_n, seed_n = int(shot.removeprefix("shot")), int(seed.removeprefix("seed"))
        if task == "intent":
            got = sample_intent(intent.train, intent.labels, shot_n, seed_n)
        else:
            got = sample_slot(slot.train, slot.labels, shot_n, seed_n)
        assert got == expected, key  # same indices, same order


@needs_snips
@pytest.mark.integration
def test_subset_properties(snips):
    intent, slot = snips
    assert len(slot_types(slot.labels)) == 40
    got = sample_intent(intent.train, intent.labels, 5, 1988)
    assert Counter(intent.train[i].label for i in got) == dict.fromkeys(range(1, 8), 5)
    assert sample_intent(intent.train, intent.labels, -1, 3) == list(range(13084))
    assert sample_slot(slot.train, slot.labels, None, 3) == list(range(13084))
    assert len(sample_slot(slot.train, slot.labels, 1, 55)) == 24
    state = random.getstate()
    sample_slot(slot.train, slot.labels, 3, 42)
    assert random.getstate() == state  # the global RNG is left alone


def test_sample_pairs():
    assert sample_pairs(1089, 100, 55) == random.Random(55).sample(range(1089), 100)
    assert sample_pairs(1089, 100, 55) != sample_pairs(1089, 100, 1988)
    assert sample_pairs(5, -1, 0) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError):
        sample_pairs(5, 6, 0)


def test_stratified_subset():
    examples = [Example(words=["w"], label=i % 3 if i < 90 else 0) for i in range(100)]  # 40/30/30
    got = stratified_subset(examples, 10, seed=7)
    assert got == sorted(got) and len(set(got)) == 10
    assert Counter(examples[i].label for i in got) == {0: 4, 1: 3, 2: 3}
    assert stratified_subset(examples, 10, seed=7) == got
    assert stratified_subset(examples, 10, seed=8) != got
    assert stratified_subset(examples, 500, seed=7) == list(range(100))


def test_stratified_subset_tagging_by_first_non_o_type():
    labels = ["PAD", "UNK", "O", "B-a", "I-a", "B-b"]
    examples = [Example(words=["x", "y"], tags=[2, 3 if i % 2 else 5]) for i in range(20)]
    got = stratified_subset(examples, 6, seed=1, labels=labels)
    assert Counter(examples[i].tags[1] for i in got) == {3: 3, 5: 3}
