"""`uimer tune`: the search space, the choice on dev only, resuming, ASHA, and the runs it writes for the report.

Most tests inject a seed function whose dev and test scores are known, so the choice can be checked exactly;
two run real tiny training (a 2-layer BERT on a tiny JSONL task, as tests/test_sweep.py's world).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from uimer.errors import ConfigError
from uimer.experiments.tune import (
    Asha,
    Dimension,
    Study,
    TuneError,
    candidates,
    choose,
    load_trials,
    search_space,
    tune,
    write_chosen,
)
from uimer.training.runner import RunSpec
from uimer.training.trainer import TrainConfig


def make_study(methods=("im-uniform",), trials=6, seeds=(1, 2), max_epochs=6, **kw) -> Study:
    base = RunSpec(task="jsonl", encoder="tiny", seeds=list(seeds), data_dir="/nowhere", output_dir="",
                   config=TrainConfig(max_epochs=max_epochs))
    return Study(base=base, methods=list(methods), trials=trials, **kw)


def dev_of(spec: RunSpec) -> float:
    """A known landscape: dev peaks at alpha = 1 (log scale)."""
    return 0.9 - 0.05 * abs(math.log10(spec.config.alpha))


class FakeSeeds:
    """Seed function with a known dev per configuration, test anti-correlated with dev, and per-epoch reports."""

    def __init__(self, interrupt_at: int | None = None):
        self.calls: list[tuple[float, int]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, spec: RunSpec, seed: int, on_epoch) -> dict:
        self.calls.append((spec.config.alpha, seed))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        final = dev_of(spec) + 0.001 * seed
        for epoch in range(spec.config.max_epochs):  # dev climbs to its final value
            on_epoch({"epoch": epoch, "dev": final * (epoch + 1) / spec.config.max_epochs})
        return {"seed": seed, "dev": final, "test": 1.0 - final, "best_epoch": spec.config.max_epochs - 1,
                "epochs_run": spec.config.max_epochs, "seconds": 0.01,
                "history": [{"epoch": 0, "dev": final, "l_task": 0.1, "l_int": 0.2}]}


def _keys(data) -> set[str]:
    if isinstance(data, dict):
        return set(data) | {k for v in data.values() for k in _keys(v)}
    if isinstance(data, list):
        return {k for v in data for k in _keys(v)}
    return set()


# -- the space and the searchers ---------------------------------------------------------------------------
def test_search_space_per_family():
    assert set(search_space("baseline")) == {"lr"}
    assert set(search_space("gb-huang-base")) == {"alpha", "lr"}
    assert set(search_space("dm-one-pass")) == {"alpha", "lr"}
    space = search_space("im-mask", {"alpha": "0.1:4", "lr": "2e-4"})
    assert set(space) == {"alpha", "lr", "margin"}
    assert space["lr"].values == (2e-4,) and (space["alpha"].low, space["alpha"].high) == (0.1, 4)
    with pytest.raises(ConfigError, match="unknown dimension"):
        search_space("im-mask", {"beta": "1"})
    with pytest.raises(ConfigError, match="LOW:HIGH"):
        Dimension.parse("alpha", "4:1")


def test_dimension_samples_stay_in_range_and_grid_is_geometric():
    dim = Dimension.parse("alpha", "0.001:10")
    rng = random.Random(0)
    values = [dim.sample(rng) for _ in range(200)]
    assert all(0.001 <= v <= 10 for v in values)
    assert sum(v < 0.1 for v in values) > 50  # log-uniform: half the draws below the geometric middle
    assert dim.grid(3) == [0.001, 0.1, 10.0]
    assert Dimension.parse("lr", "1e-4,2e-4").grid(5) == [1e-4, 2e-4]


def test_random_candidates_are_reproducible_and_extend_with_more_trials():
    few, more = candidates(make_study(trials=4)), candidates(make_study(trials=8))
    assert few == more[:4]
    assert few == candidates(make_study(trials=4))
    assert candidates(make_study(trials=4, seed=1)) != few
    two = candidates(make_study(methods=("im-mask", "gb-huang-base"), trials=4))
    assert [c["method"] for c in two] == ["im-mask", "gb-huang-base"] * 2
    assert "margin" not in two[1]["params"]
    grid = candidates(make_study(methods=("gb-ghaeini",), searcher="grid", grid_points=3,
                                 space={"lr": "1e-4,2e-4"}))
    assert len(grid) == 6


# -- choosing on dev, never on test ------------------------------------------------------------------------
def test_tune_chooses_by_mean_dev_and_never_reads_test(tmp_path):
    study = make_study(trials=6, asha=False)
    fake = FakeSeeds()
    outcome = tune(study, tmp_path / "study", progress=False, seed_fn=fake)
    assert outcome.ran == 6 and not outcome.failed
    trials = load_trials(tmp_path / "study")
    assert all("test" not in _keys(t) for t in trials)  # the trial files the choice reads hold no test score
    best = max(trials, key=lambda t: sum(s["dev"] for s in t["seeds"]))
    assert outcome.chosen["id"] == best["id"]
    # test is anti-correlated with dev here: a choice that peeked at test would pick another trial
    worst_test_first = min(trials, key=lambda t: sum(s["dev"] for s in t["seeds"]))
    assert worst_test_first["id"] != best["id"]


def test_choose_ignores_incomplete_trials_and_breaks_ties_by_order():
    trials = [
        {"id": "a", "number": 0, "status": "complete", "seeds": [{"dev": 0.5}, {"dev": 0.7}]},
        {"id": "b", "number": 1, "status": "pruned", "seeds": [{"dev": 0.99}]},
        {"id": "c", "number": 2, "status": "running", "seeds": [{"dev": 0.99}]},
        {"id": "d", "number": 3, "status": "complete", "seeds": [{"dev": 0.6}, {"dev": 0.6}]},
    ]
    assert choose(trials)["id"] == "a"
    assert choose([trials[1], trials[2]]) is None


def test_write_chosen_writes_sweep_run_files_the_report_counts(tmp_path):
    from uimer.experiments.results_view import load_view

    study = make_study(trials=3, asha=False)
    tune(study, tmp_path / "study", progress=False, seed_fn=FakeSeeds())
    results = tmp_path / "results"
    chosen = write_chosen(tmp_path / "study", results)
    assert chosen["variant"] == "tuned-im-uniform" and chosen["column"] == "jsonl-full"
    assert [p["test"] for p in chosen["per_seed"]] == pytest.approx([1 - p["dev"] for p in chosen["per_seed"]])
    files = sorted((results / "runs" / "jsonl" / "full" / "tuned-im-uniform").glob("seed*.json"))
    assert [f.name for f in files] == ["seed1.json", "seed2.json"]
    record = json.loads(files[0].read_text())
    assert record["tuned"]["trial"] == chosen["trial"] and record["family"] == "im"
    assert record["spec"]["config"]["alpha"] == chosen["params"]["alpha"]
    view = load_view(results)
    cell = view.cell("tuned-im-uniform", "jsonl-full")
    assert cell.n == 2 and cell.dev_mean == pytest.approx(100 * chosen["dev_mean"])
    assert "--alpha" in chosen["command"] and "--margin" in chosen["command"]


def test_write_chosen_without_a_complete_trial_is_a_clear_error(tmp_path):
    with pytest.raises(TuneError, match="no study"):
        write_chosen(tmp_path, None)


# -- resuming ----------------------------------------------------------------------------------------------
def test_tune_resumes_after_an_interrupt_without_rerunning_finished_work(tmp_path):
    study = make_study(trials=4, asha=False)
    first = FakeSeeds(interrupt_at=4)  # trial 0: seeds 1, 2; trial 1: seed 1, then killed during seed 2
    with pytest.raises(KeyboardInterrupt):
        tune(study, tmp_path / "s", progress=False, seed_fn=first)
    stored = {t["number"]: t for t in load_trials(tmp_path / "s")}
    assert stored[0]["status"] == "complete" and stored[1]["status"] == "running"
    assert [s["seed"] for s in stored[1]["seeds"]] == [1]
    second = FakeSeeds()
    outcome = tune(study, tmp_path / "s", progress=False, seed_fn=second)
    assert outcome.skipped == 1 and outcome.ran == 3
    # trial 1 resumes at seed 2; trials 2 and 3 run both seeds; trial 0 is not touched
    assert [seed for _, seed in second.calls] == [2, 1, 2, 1, 2]
    again = FakeSeeds()
    assert tune(study, tmp_path / "s", progress=False, seed_fn=again).ran == 0 and again.calls == []
    # a different study is refused in the same directory
    with pytest.raises(TuneError, match="another study"):
        tune(make_study(trials=4, seeds=(1, 3)), tmp_path / "s", progress=False, seed_fn=FakeSeeds())


def test_more_trials_extend_a_finished_study(tmp_path):
    tune(make_study(trials=2, asha=False), tmp_path / "s", progress=False, seed_fn=FakeSeeds())
    fake = FakeSeeds()
    outcome = tune(make_study(trials=3, asha=False), tmp_path / "s", progress=False, seed_fn=fake)
    assert outcome.skipped == 2 and outcome.ran == 1 and len(fake.calls) == 2


# -- ASHA --------------------------------------------------------------------------------------------------
def test_asha_stops_a_trial_below_the_rung_quantile():
    asha = Asha(grace=2, eta=2, max_step=16)
    assert asha.milestones == [2, 4, 8]
    assert not asha.check({}, 2, 0.8)  # the first trial at a rung always continues
    assert not asha.check({}, 2, 0.9)
    rungs: dict = {}
    assert asha.check(rungs, 2, 0.1)  # far below the median of what earlier trials had at step 2
    assert rungs == {"2": 0.1}
    assert not asha.check({}, 3, 0.95)  # reaching step 3 records rung 2 with a good score: continue


def test_tune_with_asha_prunes_bad_trials_and_keeps_them_out_of_the_choice(tmp_path):
    study = make_study(trials=8, seeds=(1, 2), max_epochs=9, grace=3, eta=2)
    outcome = tune(study, tmp_path / "s", progress=False, seed_fn=FakeSeeds())
    trials = load_trials(tmp_path / "s")
    pruned = [t for t in trials if t["status"] == "pruned"]
    assert outcome.pruned == len(pruned) >= 1
    assert all(t["rungs"] for t in trials)
    assert outcome.chosen["status"] == "complete"


# -- Optuna ------------------------------------------------------------------------------------------------
def test_optuna_searcher_runs_and_resumes(tmp_path):
    pytest.importorskip("optuna")
    study = make_study(trials=3, searcher="optuna", asha=False)
    tune(study, tmp_path / "s", progress=False, seed_fn=FakeSeeds())
    assert sum(t["status"] == "complete" for t in load_trials(tmp_path / "s")) == 3
    fake = FakeSeeds()
    more = make_study(trials=5, searcher="optuna", asha=False)
    outcome = tune(more, tmp_path / "s", progress=False, seed_fn=fake)
    assert outcome.skipped == 3 and outcome.ran == 2 and len(fake.calls) == 4


# -- real tiny training through the CLI --------------------------------------------------------------------
def test_tune_cli_on_jsonl_with_a_rationale_file_then_report(tmp_path, tiny_tokenizer, capsys):
    from test_sweep import make_world
    from uimer.cli import main
    from uimer.experiments.config import load_grid
    from uimer.experiments.results_view import load_view
    from uimer.experiments.sweep import sweep

    grid_path = make_world(tmp_path, tiny_tokenizer, max_epochs=2, n_train=16, n_eval=12, seeds=[1, 2])
    results = tmp_path / "results"
    sweep(load_grid(grid_path), results, progress=False)  # the baseline the report pairs with
    rules = tmp_path / "rules.yaml"
    rules.write_text("keywords:\n  PlayMusic: [play, song, music]\n  GetWeather: [weather, tomorrow, paris]\n")
    argv = ["tune", "--task", "jsonl", "--data-dir", str(tmp_path / "data"), "--rationale-file", str(rules),
            "--encoder", str(tmp_path / "encoder"), "--method", "im-uniform", "--trials", "2", "--seeds", "1,2",
            "--max-epochs", "2", "--max-length", "32", "--batch-size", "8", "--lr", "1e-3", "--im-k", "2",
            "--out", str(tmp_path / "study"), "--results", str(results), "--no-progress", "--device", "cpu"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "chosen on dev" in printed and "tuned-im-uniform" in printed
    view = load_view(results)
    assert view.paired("tuned-im-uniform", "jsonl-full").n == 2
    assert "tuned-im-uniform" not in {view.dev_choice("jsonl-full", ("im",))}  # tuned rows do not compete on dev
    assert main(argv) == 0  # a rerun finds everything done
    assert "0 run, 2 skipped" in (tmp_path / "study" / "tune.log").read_text().splitlines()[-1]
    study = json.loads((tmp_path / "study" / "study.json").read_text())
    assert study["base"]["rationale_file"] == str(rules.resolve())


@pytest.mark.slow
def test_tune_on_ray_runs_tiny_trials(tmp_path, tiny_tokenizer):
    pytest.importorskip("ray.tune")
    from test_sweep import make_world

    make_world(tmp_path, tiny_tokenizer, max_epochs=2, n_train=16, n_eval=12)
    base = RunSpec(task="jsonl", encoder=str(tmp_path / "encoder"), seeds=[1], data_dir=str(tmp_path / "data"),
                   output_dir="", max_length=32, config=TrainConfig(max_epochs=2, batch_size=8, device="cpu"))
    study = Study(base=base, methods=["gb-huang-base"], trials=2, space={"lr": "1e-3"})
    outcome = tune(study, tmp_path / "s", use_ray=True, ray_num_cpus=2, progress=False)
    assert not outcome.failed and outcome.ran == 2
    assert all(t["status"] == "complete" for t in load_trials(tmp_path / "s"))
    assert Path(tmp_path / "s" / "sealed").is_dir()


@pytest.mark.integration
def test_killed_tune_resumes_without_rerunning_finished_trials(tmp_path, tiny_tokenizer):
    """SIGKILL mid-study (no chance to clean up), then the same command: finished trials are kept as they were."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from test_sweep import make_world

    make_world(tmp_path, tiny_tokenizer, max_epochs=3, n_train=24, n_eval=16)
    out = tmp_path / "study"
    command = [sys.executable, "-m", "uimer.cli", "tune", "--task", "jsonl", "--data-dir", str(tmp_path / "data"),
               "--encoder", str(tmp_path / "encoder"), "--method", "gb-huang-base", "--trials", "4",
               "--seeds", "1,2", "--max-epochs", "3", "--max-length", "32", "--batch-size", "8", "--lr", "1e-3",
               "--no-asha", "--device", "cpu", "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    complete: list[dict] = []
    while time.monotonic() < deadline and process.poll() is None:
        complete = [t for t in load_trials(out) if t.get("status") == "complete"] if (out / "trials").exists() else []
        if complete:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert complete, "no trial finished before the deadline"
    kept = {t["id"]: (out / "trials" / f"{t['id']}.json").read_bytes() for t in complete}

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = load_trials(out)
    assert len(trials) == 4 and all(t["status"] == "complete" for t in trials)
    for trial_id, data in kept.items():  # not rerun: byte for byte what the killed process wrote
        assert (out / "trials" / f"{trial_id}.json").read_bytes() == data
    starts = [line for line in (out / "tune.log").read_text().splitlines() if " start " in line]
    assert len(starts) <= 4 + 1  # each trial started once, plus at most the one cut off by the kill
    assert all(len(t["seeds"]) == 2 for t in trials)
    assert json.loads((out / "chosen.json").read_text())["trial"] in {t["id"] for t in trials}


def test_dry_run_counts_the_runs_left_and_prices_them_from_measured_runs(tmp_path, capsys):
    from uimer.cli import main
    from uimer.experiments.tune import estimate

    measured = tmp_path / "results" / "runs" / "jsonl" / "full" / "im-uniform" / "seed1.json"
    measured.parent.mkdir(parents=True)
    measured.write_text(json.dumps({"column": "jsonl-full", "variant": "im-uniform", "method": "im-uniform",
                                    "task": "jsonl", "wall_seconds": 100.0, "threads": 1}))
    study = make_study(trials=4, asha=False)
    rows = estimate(study, tmp_path / "s", [tmp_path / "results"])
    assert rows == [{"method": "im-uniform", "trials": 4, "runs": 8, "seconds_per_run": 100.0, "seconds": 800.0,
                     "column": "jsonl-full"}]
    fake = FakeSeeds(interrupt_at=2)  # one seed of the first trial done
    with pytest.raises(KeyboardInterrupt):
        tune(study, tmp_path / "s", progress=False, seed_fn=fake)
    assert estimate(study, tmp_path / "s", [tmp_path / "results"])[0]["runs"] == 7
    assert main(["tune", "--task", "jsonl", "--data-dir", str(tmp_path), "--method", "im-uniform", "--trials", "3",
                 "--out", str(tmp_path / "dry"), "--dry-run", "--cost-from", str(tmp_path / "results")]) == 0
    assert "runs left" in capsys.readouterr().out and not (tmp_path / "dry").exists()


def test_dm_trials_are_compared_on_their_rounds_not_on_the_baseline_warm_up(tmp_path):
    def dm_seed(spec, seed, on_epoch):
        for epoch in range(3):  # the warm-up: the baseline's own fit, no "round" key
            on_epoch({"epoch": epoch, "dev": 0.99})
        for epoch in range(2):
            on_epoch({"round": 1, "phase": "model", "epoch": epoch, "dev": 0.5 + 0.1 * epoch})
        return {"seed": seed, "dev": 0.99, "test": 0.5, "best_epoch": 2, "epochs_run": 5, "seconds": 0.0}

    study = make_study(methods=("dm-one-pass",), trials=1, seeds=(1,))
    assert tune(study, tmp_path / "s", progress=False, seed_fn=dm_seed).ran == 1
    trial = load_trials(tmp_path / "s")[0]
    # 3 warm-up + 2 round epochs would reach the first rung (5); the 2 round epochs alone do not
    assert trial["status"] == "complete" and trial["rungs"] == {}
