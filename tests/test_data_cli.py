"""The data sub-commands and `load_task`."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pytest

from uimer.data.cli import register
from uimer.data.tasks import TASKS, load_task
from uimer.errors import ConfigError


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
needs_data = pytest.mark.skipif(
    not (DATA / "snips" / "intent_label.txt").exists() or not (DATA / "esnli" / "esnli_dev.csv").exists(),
    reason=f"SNIPS/e-SNLI not found under {DATA}",
)


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="uimer")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def make_jsonl(d: Path) -> Path:
    rows = [{"text": "what is the weather", "label": "weather"}, {"text": "play jazz", "label": "music"}] * 3
    for name in ("train", "dev", "test"):
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return d


def test_tasks_tuple():
    assert TASKS == ("snips-intent", "snips-slot", "esnli", "jsonl")
    with pytest.raises(ConfigError):
        load_task("mnli", Path("."))


def test_load_task_jsonl_with_rationale_file(tmp_path):
    make_jsonl(tmp_path)
    rf = tmp_path / "r.yaml"
    rf.write_text("keywords:\n  weather: [weather]\n  music: [play]\n", encoding="utf-8")
    task = load_task("jsonl", tmp_path, rationale_file=rf)
    assert task.train[0].rationale == [0, 0, 0, 1] and task.train[1].rationale == [1, 0]


@needs_data
@pytest.mark.integration
def test_sample_snips_and_esnli(capsys):
    assert run(["data", "sample", "--task", "snips-intent", "--shot", "1", "--seed", "55", "--data-dir", str(DATA)]) == 0
    assert json.loads(capsys.readouterr().out) == [1059, 6327, 9205, 8602, 11001, 12029, 10691]
    assert run(["data", "sample", "--task", "esnli", "--train-size", "100", "--seed", "1988", "--data-dir", str(DATA)]) == 0
    got = json.loads(capsys.readouterr().out)
    assert len(got) == len(set(got)) == 100 and max(got) < 1089
    with pytest.raises(ConfigError, match="--train-size"):
        run(["data", "sample", "--task", "esnli", "--shot", "5", "--seed", "1", "--data-dir", str(DATA)])


@needs_data
@pytest.mark.integration
def test_rationale_stats_json_and_table(capsys, monkeypatch):
    monkeypatch.setenv("UIMER_DATA_DIR", str(DATA))
    assert run(["rationales", "stats", "--task", "snips-intent", "--split", "dev", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "snips-intent" and out["n_examples"] == 700 and abs(out["coverage"] - 0.83) < 0.005
    assert run(["rationales", "stats", "--task", "snips-slot", "--split", "test"]) == 0
    assert "snips-slot" in capsys.readouterr().out


def test_stats_jsonl_needs_data_dir(tmp_path, capsys):
    with pytest.raises(ConfigError, match="--data-dir"):
        run(["rationales", "stats", "--task", "jsonl"])
    make_jsonl(tmp_path)
    assert run(["rationales", "stats", "--task", "jsonl", "--data-dir", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["coverage"] == 0.0


def test_sample_requires_shot_or_train_size():
    with pytest.raises(SystemExit):
        run(["data", "sample", "--task", "snips-intent", "--seed", "1"])
