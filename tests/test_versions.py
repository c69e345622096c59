"""Behaviour versions: a result is traceable to the code that made it, and a bump makes older results stale.

Version "1" is implicit in fingerprints, so the committed benchmark results (made before versions existed) keep
their fingerprints and their status without being rewritten."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_sweep import _fake_run, make_world
from uimer.cli import main
from uimer.experiments.config import load_grid
from uimer.experiments.report import render
from uimer.experiments.results_view import load_view
from uimer.experiments.sweep import made_by_older_version, plan_runs, run_status, sweep
from uimer.interpret.marginalization import IMUniform
from uimer.training import runner

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def test_committed_results_keep_their_status_unless_a_version_was_bumped():
    """A committed run made by code whose versions are all still 1 keeps its fingerprint and counts; one whose
    method (or rationale reader) was bumped since (issue 29's calibration fixes) is an older version: stale,
    not counted, and still on disk."""
    plan = json.loads((BENCHMARKS / "plans" / "lowresource-minilm.json").read_text())
    committed = {run["relpath"]: run["fingerprint"] for run in plan["runs"]}
    runs = plan_runs(load_grid("lowresource-minilm"))
    assert len(runs) == 288
    current, older, rerun = [], [], []
    for run in runs:
        stored = json.loads((BENCHMARKS / run.relpath).read_text())
        if all(v == runner.IMPLICIT_VERSION for v in run.spec.versions().values()):
            assert run.fingerprint == committed[str(run.relpath)] == stored["fingerprint"], run.name
            assert not made_by_older_version(stored, run.cell.method)
            current.append(run)
        elif made_by_older_version(stored, run.cell.method):
            assert run_status(BENCHMARKS, run) == "stale", run.name
            older.append(run)
        else:  # rerun since the bump: it carries today's versions and fingerprint
            assert stored["versions"] == run.spec.versions() and stored["fingerprint"] == run.fingerprint, run.name
            assert run_status(BENCHMARKS, run) == "done"
            rerun.append(run)
    methods = {r.cell.method for r in current}
    assert methods == {"baseline", "gb-ghaeini", "im-mask", "im-mlm", "im-prior", "im-uniform"}
    assert all(r.cell.setting_key.startswith("slot") for r in current if r.cell.family == "im")
    assert not any(r.spec.task == "esnli" for r in current if r.cell.method != "baseline")
    # stale runs remain only in bumped UIMER methods (reruns shrink this set; the baseline is never among them)
    assert older and {r.cell.family for r in older} <= {"gb", "im", "dm"}
    assert len(current) + len(older) + len(rerun) == 288


def test_a_bump_changes_the_fingerprint_of_that_method_only(monkeypatch):
    base = runner.RunSpec(task="snips-intent", method="baseline")
    im = runner.RunSpec(task="snips-intent", method="im-uniform")
    before = (base.fingerprint(), im.fingerprint())
    monkeypatch.setattr(IMUniform, "version", "3")
    assert im.versions() == {"trainer": "1", "method": "3"}
    assert base.fingerprint() == before[0] and im.fingerprint() != before[1]
    monkeypatch.setattr(runner, "TRAINER_VERSION", "2")
    assert base.fingerprint() != before[0]


@pytest.fixture
def swept(tmp_path, tiny_tokenizer):
    grid_path = make_world(tmp_path, tiny_tokenizer, methods={"baseline": {}, "im-uniform": {}})
    results = tmp_path / "results"
    sweep(load_grid(grid_path), results, progress=False, run_fn=_fake_run)
    return grid_path, results


def test_a_method_bump_marks_its_old_results_stale_in_the_report_without_deleting_them(swept, monkeypatch, capsys):
    grid_path, results = swept
    files = sorted(p for p in (results / "runs").rglob("seed*.json"))
    assert len(load_view(results).records) == 4
    for path in files:
        record = json.loads(path.read_text())
        assert record["versions"] == runner.behaviour_versions(record["method"], record["task"])
        assert record["versions"]["method"] == ("2" if record["method"] == "im-uniform" else "1")

    monkeypatch.setattr(IMUniform, "version", "3")  # a behaviour fix in im-uniform
    view = load_view(results)
    assert sorted(r["variant"] for r in view.records) == ["baseline", "baseline"]
    assert sorted(r["variant"] for r in view.stale) == ["im-uniform", "im-uniform"]
    text = render(results, view, [])
    assert "2 of them were made by an older behaviour version" in text
    assert "runs/jsonl/full/im-uniform/seed1.json" in text
    assert "2 runs counted" in text
    assert sorted(p for p in (results / "runs").rglob("seed*.json")) == files  # not deleted

    assert main(["report", str(results), "--no-figures", "--quiet"]) == 0
    assert "made by an older behaviour version" in (results / "REPORT.md").read_text()

    assert main(["sweep", str(grid_path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 2 done, 2 to run (2 of them stale: configuration changed, 2 of these made by an older " \
           "method/trainer version)" in " ".join(out.split())

    grid = load_grid(grid_path)
    statuses = {r.cell.variant: run_status(results, r) for r in plan_runs(grid)}
    assert statuses == {"baseline": "done", "im-uniform": "stale"}
    outcome = sweep(grid, results, progress=False, run_fn=_fake_run)  # a rerun replaces exactly those
    assert sorted(outcome.finished) == ["jsonl-full/im-uniform/seed1", "jsonl-full/im-uniform/seed2"]
    assert len(load_view(results).records) == 4


def test_a_trainer_bump_makes_every_old_result_stale(swept, monkeypatch):
    _, results = swept
    monkeypatch.setattr(runner, "TRAINER_VERSION", "2")
    view = load_view(results)
    assert not view.records and len(view.stale) == 4


def test_train_refuses_to_mix_results_of_an_older_version(tmp_path, tiny_tokenizer, monkeypatch):
    from test_trainer import offline_runner
    from uimer.errors import OutputError
    from uimer.training.trainer import TrainConfig

    offline_runner(monkeypatch, tiny_tokenizer)
    spec = runner.RunSpec(task="toy", method="im-uniform", seeds=[1], output_dir=str(tmp_path),
                          config=TrainConfig(lr=1e-3, batch_size=4, max_epochs=1))
    first = runner.run_experiment(spec, progress=False)
    assert first["versions"] == {"trainer": "1", "method": "2"}
    monkeypatch.setattr(IMUniform, "version", "3")
    with pytest.raises(OutputError, match="older uimer version"):
        runner.run_experiment(spec, progress=False)
    again = runner.run_experiment(spec, progress=False, overwrite=True)
    assert again["versions"]["method"] == "3" and again["fingerprint"] != first["fingerprint"]
