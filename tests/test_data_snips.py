"""SNIPS loading (JointBERT layout) and its bad-input errors."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from uimer.data.snips import load_snips
from uimer.data.types import TaskKind
from uimer.errors import DataError


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
needs_snips = pytest.mark.skipif(
    not (DATA / "snips" / "intent_label.txt").exists(),
    reason=f"SNIPS not found under {DATA} (set UIMER_TEST_DATA_DIR to the folder holding snips/)",
)


@pytest.fixture(scope="module")
def intent():
    return load_snips(DATA, "intent")


@needs_snips
@pytest.mark.integration
def test_intent_task(intent):
    assert intent.name == "snips-intent" and intent.kind is TaskKind.CLASSIFICATION and intent.metric == "accuracy"
    assert intent.labels[0] == "UNK" and len(intent.labels) == 8
    assert (len(intent.train), len(intent.dev), len(intent.test)) == (13084, 700, 700)
    ex = intent.train[1]
    assert ex.words == ["add", "step", "to", "me", "to", "the", "50", "clásicos", "playlist"]
    assert intent.labels[ex.label] == "AddToPlaylist"
    assert ex.rationale == [1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert ex.source.endswith("train/seq.in:2")
    assert max(len(e.words) for e in intent.train) == 35


@needs_snips
@pytest.mark.integration
def test_slot_task():
    slot = load_snips(DATA / "snips", "slot")  # the SNIPS folder itself is accepted too
    assert slot.name == "snips-slot" and slot.kind is TaskKind.TAGGING and slot.metric == "slot_f1"
    assert slot.labels[:3] == ["PAD", "UNK", "O"] and len(slot.labels) == 74
    ex = slot.train[1]
    assert [slot.labels[t] for t in ex.tags][:2] == ["O", "B-entity_name"]
    assert ex.label is None
    assert [w for w, r in zip(ex.words, ex.rationale, strict=True) if r] == ["add", "to", "to"]  # digest §2.2
    ex = slot.train[2]
    assert [w for w, r in zip(ex.words, ex.rationale, strict=True) if r] == ["textbook", "best"]
    assert all(len(e.rationale) == len(e.words) == len(e.tags) for e in slot.train)


def _write_snips(root: Path, seq_in: str, seq_out: str, label: str) -> Path:
    (root / "intent_label.txt").write_text("UNK\nPlayMusic\nGetWeather\n", encoding="utf-8")
    (root / "slot_label.txt").write_text("PAD\nUNK\nO\nB-artist\nI-artist\n", encoding="utf-8")
    for split in ("train", "dev", "test"):
        d = root / split
        d.mkdir(parents=True)
        (d / "seq.in").write_text(seq_in if split == "train" else "play music \n", encoding="utf-8")
        (d / "seq.out").write_text(seq_out if split == "train" else "O O \n", encoding="utf-8")
        (d / "label").write_text(label if split == "train" else "PlayMusic\n", encoding="utf-8")
    return root


def test_tiny_copy_loads(tmp_path):
    root = _write_snips(tmp_path, "play adele \nweather\n", "O B-artist \nO\n", "PlayMusic\nGetWeather\n")
    task = load_snips(tmp_path, "intent")
    assert [e.words for e in task.train] == [["play", "adele"], ["weather"]]
    assert [e.rationale for e in task.train] == [[1, 0], [1]]
    assert task.train[1].source == f"{root / 'train' / 'seq.in'}:2"


def test_word_count_mismatch(tmp_path):
    _write_snips(tmp_path, "play adele\nplay some jazz\n", "O B-artist\nO O\n", "PlayMusic\nPlayMusic\n")
    with pytest.raises(DataError) as err:
        load_snips(tmp_path, "slot")
    e = err.value
    assert e.path.endswith("seq.out") and e.line == 2 and e.field == "tags"
    assert "seq.out, line 2, field 'tags'" in str(e)


def test_intent_not_in_label_file(tmp_path):
    _write_snips(tmp_path, "play adele\nbook a table\n", "O B-artist\nO O O\n", "PlayMusic\nBookRestaurant\n")
    with pytest.raises(DataError) as err:
        load_snips(tmp_path, "intent")
    e = err.value
    assert e.path.endswith("label") and e.line == 2 and e.field == "label" and "BookRestaurant" in str(e)


def test_tag_not_in_label_file(tmp_path):
    _write_snips(tmp_path, "play adele\n", "O B-singer\n", "PlayMusic\n")
    with pytest.raises(DataError) as err:
        load_snips(tmp_path, "slot")
    e = err.value
    assert e.path.endswith("seq.out") and e.line == 1 and e.field == "tags" and "B-singer" in str(e)


def test_line_count_mismatch(tmp_path):
    _write_snips(tmp_path, "play adele\nplay jazz\n", "O B-artist\nO O\n", "PlayMusic\n")
    with pytest.raises(DataError) as err:
        load_snips(tmp_path, "intent")
    assert err.value.path.endswith("label") and err.value.line == 2 and "lines" in str(err.value)


def test_empty_label_file(tmp_path):
    _write_snips(tmp_path, "play adele\n", "O B-artist\n", "PlayMusic\n")
    (tmp_path / "train" / "label").write_text("", encoding="utf-8")
    with pytest.raises(DataError, match="empty") as err:
        load_snips(tmp_path, "intent")
    assert err.value.path.endswith(os.path.join("train", "label"))


def test_non_utf8_seq_in(tmp_path):
    _write_snips(tmp_path, "play adele\n", "O B-artist\n", "PlayMusic\n")
    (tmp_path / "dev" / "seq.in").write_bytes(b"play caf\xe9 \n")
    with pytest.raises(DataError) as err:
        load_snips(tmp_path, "intent")
    assert err.value.path.endswith(os.path.join("dev", "seq.in")) and err.value.line == 1


def test_missing_dataset_hints_fetch(tmp_path):
    with pytest.raises(DataError, match="uimer data fetch snips"):
        load_snips(tmp_path, "intent")


@needs_snips
def test_data_root_holding_snips_folder(tmp_path):
    # The "root or folder" rule: a data root holding snips/ resolves to it (dev copied in as a small train).
    shutil.copytree(DATA / "snips" / "dev", tmp_path / "snips" / "train")
    shutil.copytree(DATA / "snips" / "dev", tmp_path / "snips" / "dev")
    shutil.copytree(DATA / "snips" / "test", tmp_path / "snips" / "test")
    for f in ("intent_label.txt", "slot_label.txt"):
        shutil.copy(DATA / "snips" / f, tmp_path / "snips" / f)
    assert len(load_snips(tmp_path, "slot").train) == 700
