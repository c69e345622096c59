"""The JSONL format for a user's own data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from uimer.data.jsonl import load_jsonl
from uimer.data.types import TaskKind
from uimer.errors import DataError


def write(d: Path, name: str, rows: list) -> Path:
    p = d / name
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def make(d: Path, train: list, dev: list | None = None, test: list | None = None) -> Path:
    write(d, "train.jsonl", train)
    write(d, "dev.jsonl", dev if dev is not None else train[:1])
    write(d, "test.jsonl", test if test is not None else train[:1])
    return d


def test_classification(tmp_path):
    make(
        tmp_path,
        [
            {"text": "what is the weather", "label": "weather", "rationale": [0, 0, 0, 1]},
            {"words": ["play", "jazz"], "label": "music"},
            "",
            {"text": "play", "label": "music", "rationale": None},
        ],
    )
    task = load_jsonl(tmp_path, name="mine")
    assert task.name == "mine" and task.kind is TaskKind.CLASSIFICATION and task.metric == "accuracy"
    assert task.labels == ["music", "weather"]
    assert [e.label for e in task.train] == [1, 0, 0]
    assert task.train[0].rationale == [0, 0, 0, 1] and task.train[1].rationale is None
    assert task.train[2].source.endswith("train.jsonl:4")


def test_tagging_with_o_first(tmp_path):
    make(tmp_path, [{"words": ["play", "jazz"], "tags": ["O", "B-genre"]}, {"text": "x", "tags": ["B-a"]}])
    task = load_jsonl(tmp_path)
    assert task.kind is TaskKind.TAGGING and task.metric == "slot_f1"
    assert task.labels == ["O", "B-a", "B-genre"]
    assert task.train[0].tags == [0, 2]


def test_pairs_and_labels_file(tmp_path):
    make(tmp_path, [{"text": "a man sleeps", "pair_text": "a person rests", "label": "entailment",
                     "rationale": [0, 0, 1, 0, 0, 1]}])
    (tmp_path / "labels.txt").write_text("entailment\nneutral\ncontradiction\n", encoding="utf-8")
    task = load_jsonl(tmp_path)
    assert task.kind is TaskKind.PAIR and task.labels == ["entailment", "neutral", "contradiction"]
    assert task.train[0].pair_words == ["a", "person", "rests"] and task.train[0].label == 0


def test_line_not_an_object(tmp_path):
    make(tmp_path, [{"text": "a", "label": "x"}], dev=[{"text": "a", "label": "x"}, ["a", "list"]])
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path)
    e = err.value
    assert e.path.endswith("dev.jsonl") and e.line == 2 and e.field == "$"
    assert "dev.jsonl, line 2, field '$'" in str(e) and "JSON object" in str(e)


def test_invalid_json(tmp_path):
    make(tmp_path, [{"text": "a", "label": "x"}, '{"text": "b", "label": }'])
    with pytest.raises(DataError, match="invalid JSON") as err:
        load_jsonl(tmp_path)
    assert err.value.line == 2 and err.value.path.endswith("train.jsonl")


def test_rationale_length_mismatch(tmp_path):
    make(tmp_path, [{"text": "a b", "pair_text": "c", "label": "x", "rationale": [0, 1]}])
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path)
    e = err.value
    assert e.path.endswith("train.jsonl") and e.line == 1 and e.field == "rationale"
    assert "train.jsonl, line 1, field 'rationale'" in str(e) and "3" in str(e)


def test_tags_length_mismatch(tmp_path):
    make(tmp_path, [{"text": "a b", "tags": ["O"]}])
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path)
    assert err.value.field == "tags" and err.value.line == 1


def test_label_not_in_labels_file(tmp_path):
    make(tmp_path, [{"text": "a", "label": "x"}], test=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    (tmp_path / "labels.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path)
    e = err.value
    assert e.path.endswith("test.jsonl") and e.line == 2 and e.field == "label" and "'y'" in str(e)


def test_unseen_dev_label_without_labels_file(tmp_path):
    make(tmp_path, [{"text": "a", "label": "x"}], dev=[{"text": "a", "label": "z"}])
    with pytest.raises(DataError, match="not in train.jsonl"):
        load_jsonl(tmp_path)


def test_mixing_kinds(tmp_path):
    make(tmp_path, [{"text": "a b", "label": "x"}, {"text": "a b", "tags": ["O", "O"]}])
    with pytest.raises(DataError) as err:
        load_jsonl(tmp_path)
    assert err.value.line == 2 and err.value.field == "tags" and "classification" in str(err.value)


def test_missing_split_and_empty_file(tmp_path):
    write(tmp_path, "train.jsonl", [{"text": "a", "label": "x"}])
    with pytest.raises(DataError, match="not found") as err:
        load_jsonl(tmp_path)
    assert err.value.path.endswith("dev.jsonl")
    (tmp_path / "dev.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_jsonl(tmp_path)


def test_write_jsonl_round_trips_every_kind(tmp_path):
    from uimer.data.jsonl import write_jsonl

    rows = {
        "cls": [{"words": ["play", "jazz"], "label": "Play", "rationale": [1, 0]},
                {"words": ["rain"], "label": "Weather", "rationale": None}],
        "tag": [{"words": ["to", "paris"], "tags": ["O", "B-city"], "rationale": [0, 1]}],
        "pair": [{"words": ["a", "dog"], "pair_words": ["an", "animal"], "label": "entailment",
                  "rationale": [0, 1, 0, 1]}],
    }
    for name, train in rows.items():
        (tmp_path / name).mkdir()
        task = load_jsonl(make(tmp_path / name, train))
        write_jsonl(task, tmp_path / f"{name}-out", rationales=True)
        again = load_jsonl(tmp_path / f"{name}-out")
        assert again.kind is task.kind and again.labels == task.labels
        assert [(e.words, e.label, e.tags, e.pair_words, e.rationale) for e in again.train] == \
            [(e.words, e.label, e.tags, e.pair_words, e.rationale) for e in task.train]
        write_jsonl(task, tmp_path / f"{name}-bare")
        assert all(e.rationale is None for e in load_jsonl(tmp_path / f"{name}-bare").train)


def test_exported_snips_intent_draws_the_same_shot_subsets(tmp_path, shared_data):
    from uimer.cli import main
    from uimer.data.sampling import sample_intent
    from uimer.data.tasks import load_task

    assert main(["data", "export", "--task", "snips-intent", "--out", str(tmp_path / "x"),
                 "--data-dir", str(shared_data)]) == 0
    exported, original = load_jsonl(tmp_path / "x"), load_task("snips-intent", shared_data)
    assert exported.labels == original.labels and len(exported.test) == len(original.test) == 700
    assert all(e.rationale is None for e in exported.train)
    for seed in (55, 42):
        assert sample_intent(exported.train, exported.labels, 3, seed) == \
            sample_intent(original.train, original.labels, 3, seed)


@pytest.mark.parametrize("name", ["esnli", "snips-slot"])
def test_exported_task_with_rationales_is_the_task(tmp_path, shared_data, name):
    """The user-path checks (benchmarks/jsonl-pair-100, jsonl-slot-1) compare `--task jsonl` runs on an export
    with the grid's runs: that is only a check of the JSONL path if the exported data are the task's own."""
    from uimer.cli import main
    from uimer.data.sampling import sample_pairs, sample_slot, stratified_subset
    from uimer.data.tasks import load_task

    assert main(["data", "export", "--task", name, "--with-rationales", "--out", str(tmp_path / "x"),
                 "--data-dir", str(shared_data)]) == 0
    exported, original = load_jsonl(tmp_path / "x"), load_task(name, shared_data)
    assert exported.kind is original.kind and exported.labels == original.labels
    for split in ("train", "dev", "test"):
        mine, theirs = getattr(exported, split), getattr(original, split)
        assert [(e.words, e.pair_words, e.label, e.tags, e.rationale) for e in mine] == \
            [(e.words, e.pair_words, e.label, e.tags, None if e.rationale is None else list(e.rationale))
             for e in theirs]
    assert any(any(e.rationale) for e in exported.train)
    for seed in (55, 2):
        if name == "esnli":
            assert sample_pairs(len(exported.train), 100, seed) == sample_pairs(len(original.train), 100, seed)
        else:
            assert sample_slot(exported.train, exported.labels, 1, seed) == \
                sample_slot(original.train, original.labels, 1, seed)
    assert stratified_subset(exported.dev, 300, 0, labels=exported.labels) == \
        stratified_subset(original.dev, 300, 0, labels=original.labels)
