"""Grids, resumable sweeps (sequential, killed, on Ray) and the report.

Real training runs use a tiny 2-layer BERT saved to tmp_path (`from_pretrained` by path, as any local
encoder) and a tiny JSONL task, so they take seconds and work in other processes (Ray workers, a killed
`uimer sweep` subprocess) where monkeypatching cannot reach.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from uimer.errors import ConfigError, UimerError
from uimer.experiments.config import column_name, load_grid, load_paper_results
from uimer.experiments.report import write_report
from uimer.experiments.results_view import load_view
from uimer.experiments.sweep import plan_runs, read_step_log, sweep
from uimer.training import runner
from uimer.training.runner import behaviour_versions

LOW_RESOURCE = ["intent-1", "intent-3", "intent-10", "slot-1", "slot-3", "slot-10", "nli-100", "nli-500"]
IM_STRATEGIES = ["im-mask", "im-mlm", "im-prior", "im-uniform"]


# -- a tiny world: encoder + JSONL task + grid -------------------------------------------------------------
def _write_tiny_task(folder: Path, n_train: int = 60, n_eval: int = 40) -> None:
    """Two intents told apart by a keyword (the rationale) among filler words."""
    rng = random.Random(0)
    filler = "the a to my in is of me and at are what show find".split()
    keywords = {"PlayMusic": ["play", "song", "music"], "GetWeather": ["weather", "tomorrow", "paris"]}
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("dev", n_eval), ("test", n_eval)):
        lines = []
        for i in range(n):
            label = "PlayMusic" if i % 2 == 0 else "GetWeather"
            words = [rng.choice(filler) for _ in range(rng.randint(3, 7))]
            at = rng.randrange(len(words) + 1)
            words.insert(at, rng.choice(keywords[label]))
            rationale = [int(j == at) for j in range(len(words))]
            lines.append(json.dumps({"words": words, "label": label, "rationale": rationale}))
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")


def make_world(root: Path, tokenizer, *, max_epochs: int = 3, n_train: int = 60, n_eval: int = 40,
               methods: dict | None = None, seeds: list[int] | None = None) -> Path:
    """Write encoder/, data/ and grid.yaml under root; returns the grid path."""
    from conftest import make_tiny_encoder

    encoder_dir = root / "encoder"
    if not encoder_dir.exists():
        make_tiny_encoder(len(tokenizer)).save_pretrained(encoder_dir)
        tokenizer.save_pretrained(encoder_dir)
    _write_tiny_task(root / "data", n_train, n_eval)
    grid = {
        "name": "tiny",
        "defaults": {"encoder": str(encoder_dir), "seeds": seeds or [1, 2], "device": "cpu", "max_length": 32,
                     "train": {"lr": 1.0e-3, "batch_size": 8, "max_epochs": max_epochs, "patience": 100},
                     "resources": {"num_cpus": 1}},
        "settings": {"tiny-full": {"task": "jsonl", "data_dir": "data"}},
        "methods": methods or {"baseline": {}},
    }
    path = root / "grid.yaml"
    path.write_text(yaml.safe_dump(grid, sort_keys=False))
    return path


def _files(results: Path) -> list[Path]:
    return sorted(p for p in results.rglob("*") if p.is_file())


# -- the paper's numbers and the packaged grids ------------------------------------------------------------
def test_paper_results_are_consistent():
    paper = load_paper_results()
    assert len(paper["methods"]) == 16
    for key, method in paper["methods"].items():
        assert set(method["mean"]) == set(paper["settings"]), key
        assert set(method["std"]) == set(paper["std_settings"]), key
        row_mean = statistics.fmean(method["mean"][s] for s in paper["settings"])
        assert row_mean == pytest.approx(method["paper_mean_column"], abs=0.006), key
    assert paper["methods"]["im-uniform-warm"]["mean"]["intent-1"] == 75.79
    assert paper["methods"]["baseline"]["std"]["nli-100"] == 13.66
    assert paper["methods"]["im-prior"]["mean"]["slot-3"] == 51.69  # Table 2, confirmed by the row mean


def test_paper_grid_cells_carry_table_hyperparameters():
    grid = load_grid("paper")
    cells = grid.cells()
    assert len(grid.settings) == 12 and len(grid.methods) == 16 and len(cells) == 192
    cell = grid.cell("im-uniform-warm", "intent-1")
    assert cell.method == "im-uniform" and cell.paper == "im-uniform-warm"
    assert cell.fields["train"] == {"batch_size": 24, "alpha": 4.0, "warmup_epochs": 1.0, "lr": 4e-4,
                                    "max_epochs": 70, "patience": 7}
    assert cell.fields["options"] == {"margin": 0.5}
    assert cell.fields["encoder"] == "bert-base-uncased" and cell.fields["max_length"] == 50
    multi = grid.cell("dm-multi-round", "slot-10").fields
    assert multi["train"]["lr"] == 1e-5 and multi["train"]["max_epochs"] == 70  # warm-up: the setting's epochs
    # the warm-up runs at the baseline's lr (issue 29), the rounds at the row's
    assert multi["options"] == {"lr_extractor": 1e-4, "model_epochs_per_round": 10, "rounds": 10,
                                "dm_warmup_lr": 1e-4}
    assert grid.cell("im-mlm-warm", "slot-3").fields["train"]["warmup_epochs"] == "task"
    assert grid.cell("im-mask-warm", "nli-100").fields["train"]["warmup_epochs"] == "0.1*"
    assert grid.cell("im-prior", "nli-500").fields["train"]["batch_size"] == 8
    assert grid.cell("baseline", "intent-full").fields["seeds"] == [55]
    assert grid.cell("gb-ghaeini", "nli-100").fields["train"] == {"batch_size": 32, "alpha": 1.0, "warmup_epochs": 0.0,
                                                                  "lr": 3e-4, "max_epochs": 50, "patience": 8}


def test_lowresource_grid_is_the_issue_grid():
    grid = load_grid("lowresource-minilm")
    assert list(grid.settings) == LOW_RESOURCE
    runs = plan_runs(grid)
    assert len(runs) == 8 * 9 * 4  # baseline, ghaeini, huang, 4 IM, 2 DM per setting; 4 seeds
    for run in runs:
        assert run.spec.encoder == "minilm" and run.spec.config.device == "cpu"
        assert run.resources == {"num_cpus": 1.0, "num_gpus": 0.0}
        assert run.spec.dev_size == (1000 if run.spec.task == "esnli" else None)
    # Each cell keeps the paper grid's hyper-parameters.
    paper = load_grid("paper")
    for setting in LOW_RESOURCE:
        for variant in ("im-prior-warm", "dm-one-pass", "baseline", "gb-huang-base", "im-mask"):
            if variant in [c.variant for c in grid.cells([setting])]:
                mine, theirs = grid.cell(variant, setting).fields, paper.cell(variant, setting).fields
                assert mine["train"] == theirs["train"]
                assert {k: v for k, v in mine["options"].items() if k != "dm_gate"} == theirs["options"]
    assert grid.cell("dm-multi-round", "slot-10").fields["options"]["dm_no_test_curve"] is False
    assert grid.cell("dm-multi-round", "nli-100").fields["options"] == {
        "lr_extractor": 1e-3, "model_epochs_per_round": 30, "rounds": 10, "dm_no_test_curve": True,
        "dm_gate": "hidden", "dm_warmup_batch_size": 32}  # the baseline's batch size for the warm-up
    assert all(c.fields["options"]["dm_gate"] == "hidden" for c in grid.cells(only_methods=["dm-one-pass"]))
    assert grid.cell("im-mlm-warm", "nli-100").fields["options"]["mlm"] == "runs/mlm/minilm-snips-esnli"
    assert grid.cell("im-mlm-warm", "slot-1").fields["options"]["mlm"] == "runs/mlm/minilm-snips-esnli"


@pytest.mark.parametrize(("name", "settings", "variants"), [
    ("im-minilm", ["intent-1", "intent-3", "slot-1", "slot-3"],
     ["baseline"] + [f"im-{s}{w}" for s in ("mask", "mlm", "prior", "uniform") for w in ("", "-warm")]),
    ("dm-minilm", ["intent-1", "intent-3", "slot-1", "slot-3"], ["baseline", "dm-one-pass", "dm-multi-round"]),
])
def test_issue_grids_keep_the_paper_cells(name, settings, variants):
    """The IM and DM acceptance grids: every (setting, variant) present, with the paper's hyper-parameters."""
    grid, paper = load_grid(name), load_grid("paper")
    assert {(c.variant, c.setting_key) for c in grid.cells()} == {(v, s) for v in variants for s in settings}
    for cell in grid.cells():
        theirs = paper.cell(cell.variant, cell.setting_key).fields
        assert cell.fields["train"] == theirs["train"]
        # The MiniLM MLM path; the Fig. 4-only test curve switch; the MiniLM grids' DM gate (diffmask.py).
        extra = {"mlm", "dm_no_test_curve", "dm_gate"}
        assert {k: v for k, v in cell.fields["options"].items() if k not in extra} == \
            {k: v for k, v in theirs["options"].items() if k not in extra}
        if cell.family == "dm":
            assert cell.fields["options"]["dm_gate"] == "hidden"
        assert cell.fields["encoder"] == "minilm"


def test_issue_grids_share_their_runs_with_the_lowresource_grid():
    """A run of the GB, IM, DM or headline-seeds grid is the same run (same fingerprint) in the issue-6 grid, so none
    is run twice; every headline cell's first four seeds are runs of the 4-seed grids."""
    fingerprints: dict[str, str] = {}
    for name in ("lowresource-minilm", "gb-minilm", "im-minilm", "dm-minilm"):
        for run in plan_runs(load_grid(name)):
            assert fingerprints.setdefault(run.name, run.fingerprint) == run.fingerprint, (name, run.name)
    for run in plan_runs(load_grid("headline-seeds")):
        if run.seed in (55, 1988, 12333, 42):
            assert fingerprints.get(run.name) == run.fingerprint, run.name
        else:
            assert run.name not in fingerprints


def test_gb_alpha_grid_changes_alpha_alone():
    """gb-alpha-minilm's second GB alpha: the same run as lowresource's gb-huang-base but for alpha, and its
    baseline seeds are the issue-6 grid's (and headline-seeds-style new seeds) so nothing runs twice."""
    low = {run.name: run for run in plan_runs(load_grid("lowresource-minilm"))}
    runs = plan_runs(load_grid("gb-alpha-minilm"))
    assert {(r.cell.variant, r.column) for r in runs} == {
        ("baseline", "nli-100"), ("baseline", "nli-500"), ("gb-huang-base-a0.03125", "nli-100"),
        ("gb-huang-base-a0.0625", "nli-500"), ("gb-huang-base-a0.25", "nli-500"),
        ("gb-huang-base-a0.015625", "nli-500")}
    search = ("gb-huang-base-a0.25", "gb-huang-base-a0.015625")  # dev-search neighbours: the grid's 4 shared seeds
    ten = [55, 1988, 12333, 42, 1, 2, 3, 4, 5, 6]
    assert sorted({r.seed for r in runs if r.column == "nli-100"}) == sorted(ten)
    # nli-500's dev choice and its baseline: ten fresh seeds (7-16) on top, the second look at 97.5 %
    for variant in ("baseline", "gb-huang-base-a0.0625"):
        assert sorted(r.seed for r in runs if r.column == "nli-500" and r.cell.variant == variant) == sorted(
            [*ten, *range(7, 17)])
    assert next(r for r in runs if r.cell.variant == "gb-huang-base-a0.0625").cell.confidence == 0.975
    for variant in search:
        assert sorted(r.seed for r in runs if r.cell.variant == variant) == [42, 55, 1988, 12333]
    headline = {run.name: run.fingerprint for run in plan_runs(load_grid("headline-seeds"))}
    for run in runs:
        if run.cell.variant == "baseline" and run.seed in (55, 1988, 12333, 42):
            assert low[run.name].fingerprint == run.fingerprint
        if run.cell.variant == "baseline" and run.column == "nli-100":
            assert headline[run.name] == run.fingerprint
        if run.cell.variant != "baseline":
            twin = next(r for r in low.values() if r.cell.variant == "gb-huang-base" and r.column == run.column)
            assert run.spec.method == twin.spec.method == "gb-huang-base" and run.cell.family == twin.cell.family
            # alpha 1 on the reference's batch sum, divided by the batch size (alpha 1 on a batch mean), or its
            # factor-4 neighbours at nli-500
            ratio = {"gb-huang-base-a0.25": 4, "gb-huang-base-a0.015625": 1 / 4}.get(run.cell.variant, 1)
            assert run.spec.config.alpha == ratio / run.spec.config.batch_size and twin.spec.config.alpha == 1.0
            assert dataclasses.replace(run.spec.config, alpha=1.0) == twin.spec.config  # all else equal


def test_intent3_grid_adds_ten_fresh_seeds_to_the_same_runs():
    """intent3-seeds-minilm: intent-3's baseline and gb-huang-order, seeds 7-16 new, the first ten the very runs
    of headline-seeds (same fingerprints, so nothing runs twice); only gb-huang-order is a second look."""
    headline = {run.name: run for run in plan_runs(load_grid("headline-seeds"))}
    runs = plan_runs(load_grid("intent3-seeds-minilm"))
    assert {(r.cell.variant, r.column) for r in runs} == {("baseline", "intent-3"), ("gb-huang-order", "intent-3")}
    for variant, level in (("baseline", 0.95), ("gb-huang-order", 0.975)):
        mine = [r for r in runs if r.cell.variant == variant]
        assert sorted(r.seed for r in mine) == [*range(1, 17), 42, 55, 1988, 12333]
        assert sorted(r.seed for r in mine if r.name not in headline) == list(range(7, 17))
        assert all(headline[r.name].fingerprint == r.fingerprint for r in mine if r.name in headline)
        assert len({r.fingerprint for r in mine}) == 1 and {r.cell.confidence for r in mine} == {level}


def test_im_lr_grid_changes_lr_alone():
    """im-lr-minilm's slot-10 im-mask: lowresource's im-mask run but for lr (Table 7's 1e-3 -> the baseline's 1e-4),
    on the column's 4 shared seeds and then, as slot-10's dev choice, on 10 and finally 20, with the baseline runs
    that lowresource-minilm and headline-seeds already have (nothing runs twice) and ten new ones."""
    low = {run.name: run for run in plan_runs(load_grid("lowresource-minilm"))}
    runs = plan_runs(load_grid("im-lr-minilm"))
    assert {(r.cell.variant, r.column) for r in runs} == {("baseline", "slot-10"), ("im-mask-lr1e-4", "slot-10")}
    seeds = [*range(1, 17), 42, 55, 1988, 12333]
    assert sorted(r.seed for r in runs if r.cell.variant == "im-mask-lr1e-4") == seeds
    assert sorted(r.seed for r in runs if r.cell.variant == "baseline") == seeds
    headline = {run.name: run.fingerprint for run in plan_runs(load_grid("headline-seeds"))}
    twin = next(r for r in low.values() if r.cell.variant == "im-mask" and r.column == "slot-10")
    baseline = next(r for r in low.values() if r.cell.variant == "baseline" and r.column == "slot-10")
    new = sorted(r.seed for r in runs if r.cell.variant == "baseline" and r.name not in headline)
    assert new == list(range(7, 17))  # seeds 1-6 and the grid's four are headline-seeds' runs
    for run in runs:
        if run.cell.variant == "baseline":
            assert headline.get(run.name, run.fingerprint) == run.fingerprint == baseline.fingerprint
            continue
        assert run.spec.method == twin.spec.method == "im-mask" and run.cell.family == twin.cell.family
        assert twin.spec.config.lr == 1e-3 and run.spec.config.lr == baseline.spec.config.lr == 1e-4
        assert dataclasses.replace(run.spec.config, lr=1e-3) == twin.spec.config  # all else equal (options too)


def test_lowresource_warmup_choice_is_the_papers_better_mean():
    grid, paper = load_grid("lowresource-minilm"), load_paper_results()["methods"]
    for setting in LOW_RESOURCE:
        variants = {c.variant for c in grid.cells([setting])}
        for strategy in IM_STRATEGIES:
            present = variants & {strategy, strategy + "-warm"}
            assert len(present) == 1, (setting, strategy, present)
            better = max((strategy, strategy + "-warm"), key=lambda k: paper[k]["mean"][setting])
            assert present == {better}, (setting, strategy)
        huang = [v for v in variants if v.startswith("gb-huang")]
        assert huang == ["gb-huang-base"]


def test_companion_grids_load():
    smoke = plan_runs(load_grid("smoke"))
    assert [(r.cell.variant, r.seed) for r in smoke] == [
        ("baseline", 55), ("im-uniform", 55), ("im-uniform-warm", 55), ("dm-multi-round", 55)]
    assert all(r.spec.config.max_epochs == 3 and r.spec.dev_size == 70 for r in smoke)
    figures = plan_runs(load_grid("figures-minilm"))
    assert {(r.cell.variant, r.column) for r in figures} >= {("im-uniform", "intent-1")}
    uniform = next(r for r in figures if r.cell.variant == "im-uniform")
    assert uniform.spec.config.warmup_epochs == 0 and uniform.spec.config.alpha == 0.6


# -- loader errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("patch", "expected"), [
    ({"methods": {"baseline": {"train": {"lrr": 1}}}}, "methods.baseline.train.lrr: unknown training field"),
    ({"methods": {"baseline": {"options": {"margn": 1}}}}, "methods.baseline.options.margn: unknown method option"),
    ({"methods": {"baseline": {"options": {"im_resample": "often"}}}}, "methods.baseline.options.im_resample"),
    ({"methods": {"x": {"method": "im-nope"}}}, "methods.x.method: unknown method 'im-nope'"),
    ({"methods": {"baseline": {"only_settings": ["s9"]}}}, "methods.baseline.only_settings: no setting 's9'"),
    ({"methods": {"baseline": {"task": "esnli"}}}, "methods.baseline.task: unknown key (task/shot/train_size belong"),
    ({"settings": {"s": {"shot": 1}}}, "settings.s.task: missing"),
    ({"settings": {"s": {"task": "snips"}}}, "settings.s.task: 'snips' is not one of"),
    ({"defaults": {"train": {"max_epochs": 2.5}}}, "defaults.train.max_epochs: must be an integer in [1, 100000], got 2.5"),
    ({"defaults": {"train": {"warmup_epochs": -1}}}, "defaults.train.warmup_epochs: must be a number in [0, 100000], got -1"),
    ({"defaults": {"resources": {"gpus": 1}}}, "defaults.resources.gpus: unknown resource"),
    ({"methods": {"baseline": {"paper": "nope"}}}, "methods.baseline.paper: 'nope' is not in paper_results.yaml"),
    ({"methods": {"baseline": {"confidence": 1.2}}}, "methods.baseline.confidence: must be a level in [0.95, 1)"),
    ({"methods": {"baseline": {"confidence": 0.9}}}, "methods.baseline.confidence: must be a level in [0.95, 1)"),
    ({"methods": {"baseline": {"confidence": True}}}, "methods.baseline.confidence: must be a level in [0.95, 1)"),
    ({"colour": "blue"}, "colour: unknown top-level key"),
    ({"cost": {"budget": {"hours": 0}}}, "cost.budget.hours: must be a positive number"),
    ({"cost": {"budget": {"workers": 2}}}, "cost.budget: must be {hours: H, workers: W}"),
])
def test_bad_grid_is_a_clear_error_naming_file_and_key(tmp_path, patch, expected):
    grid = {"settings": {"s": {"task": "snips-intent", "shot": 1}}, "methods": {"baseline": {}}}
    for section, value in patch.items():
        grid[section] = {**grid[section], **value} if isinstance(grid.get(section), dict) else value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(grid))
    with pytest.raises(ConfigError) as err:
        load_grid(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_extends_selects_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "defaults": {"train": {"lr": 1e-4}},
        "settings": {"a": {"task": "snips-intent", "shot": 1}, "b": {"task": "snips-slot", "shot": 3}},
        "methods": {"baseline": {}, "im-mask": {"settings": {"a": {"train": {"alpha": 4}}, "b": {"train": {"alpha": 2}}}}},
    }))
    (tmp_path / "derived.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml", "settings": ["b"], "methods": {"im-mask": {"train": {"lr": 3e-4}}},
        "overrides": {"train": {"max_epochs": 2}},
    }))
    grid = load_grid(tmp_path / "derived.yaml")
    assert list(grid.settings) == ["b"] and list(grid.methods) == ["im-mask"]
    cell = grid.cell("im-mask", "b").fields["train"]
    assert cell == {"lr": 3e-4, "alpha": 2.0, "max_epochs": 2}
    # A variant the middle grid left out still means the top grid's entry, rows included (not a new, bare one).
    (tmp_path / "leaf.yaml").write_text(yaml.safe_dump({
        "extends": "derived.yaml", "methods": {"baseline": {"only_settings": ["b"]}}}))
    leaf = load_grid(tmp_path / "leaf.yaml")
    assert leaf.cell("baseline", "b").fields["train"] == {"lr": 1e-4, "max_epochs": 2}
    (tmp_path / "leaf.yaml").write_text(yaml.safe_dump({"extends": "derived.yaml", "methods": ["im-mask", "baseline"]}))
    assert list(load_grid(tmp_path / "leaf.yaml").methods) == ["im-mask", "baseline"]
    (tmp_path / "middle.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "methods": ["baseline"]}))
    (tmp_path / "leaf.yaml").write_text(yaml.safe_dump({
        "extends": "middle.yaml", "methods": {"im-mask": {"only_settings": ["a"]}}}))
    assert load_grid(tmp_path / "leaf.yaml").cell("im-mask", "a").fields["train"] == {"lr": 1e-4, "alpha": 4.0}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({"extends": "base.yaml", "settings": ["c"]}))
    with pytest.raises(ConfigError, match=r"bad\.yaml: settings\.c: not defined in the base grid"):
        load_grid(tmp_path / "bad.yaml")
    (tmp_path / "loop.yaml").write_text(yaml.safe_dump({"extends": "loop.yaml"}))
    with pytest.raises(ConfigError, match="circular"):
        load_grid(tmp_path / "loop.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_grid(tmp_path / "nope.yaml")


def test_like_makes_a_twin_that_keeps_the_other_variants_rows(tmp_path):
    """An ablation twin (`like: im-mask`, alpha 0) runs im-mask's per-setting values with only alpha changed,
    in every setting; without `like` the same entry would silently lose them (the pitfall `like` exists for)."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({
        "settings": {"a": {"task": "snips-intent", "shot": 1}, "b": {"task": "snips-slot", "shot": 3}},
        "methods": {"baseline": {}, "im-mask": {"options": {"margin": 0.5}, "settings": {
            "a": {"train": {"alpha": 4, "lr": 4e-4}, "options": {"im_k": 3}}, "b": {"train": {"alpha": 2}}}}},
    }))
    (tmp_path / "derived.yaml").write_text(yaml.safe_dump({
        "extends": "base.yaml", "methods": {
            "baseline": {},
            "twin": {"like": "im-mask", "label": "alpha 0", "train": {"alpha": 0},
                     "settings": {"b": {"train": {"lr": 1e-3}}}},
            "bare": {"method": "im-mask", "train": {"alpha": 0}}}}))
    grid = load_grid(tmp_path / "derived.yaml")
    base = load_grid(tmp_path / "base.yaml")
    assert "im-mask" not in grid.methods  # `like` reaches the base grid's variants without selecting them
    twin = grid.cell("twin", "a")
    assert (twin.method, twin.paper, twin.label) == ("im-mask", "im-mask", "alpha 0")
    expected = base.cell("im-mask", "a").fields
    assert twin.fields == {**expected, "train": {**expected["train"], "alpha": 0.0}}
    assert grid.cell("twin", "b").fields["train"] == {"alpha": 0.0, "lr": 1e-3}
    assert grid.cell("bare", "a").fields["train"] == {"alpha": 0.0}  # no lr 4e-4, no im_k: the pitfall
    (tmp_path / "beside.yaml").write_text(yaml.safe_dump({  # beside im-mask, the sweep warns about `bare`
        "extends": "base.yaml", "methods": {"im-mask": {}, "bare": {"method": "im-mask", "train": {"alpha": 0}},
                                            "twin": {"like": "im-mask", "train": {"alpha": 0}}}}))
    beside = load_grid(tmp_path / "beside.yaml")
    warnings = beside.unshared_values(beside.cells())
    assert warnings == [
        "bare in a does not set train.lr, options.margin, options.im_k, which im-mask sets there (it runs with the "
        "grid's defaults); `like: im-mask` copies them",
        "bare in b does not set options.margin, which im-mask sets there (it runs with the grid's defaults); "
        "`like: im-mask` copies them"]
    for like, message in (("nope", "methods.twin.like: 'nope' is no variant of this grid"),
                          ("twin", "methods.twin.like: circular (twin -> twin)")):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump({
            "settings": {"a": {"task": "snips-intent", "shot": 1}}, "methods": {"twin": {"like": like}}}))
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_grid(tmp_path / "bad.yaml")


def test_confidence_is_planned_per_variant_and_changes_no_fingerprint(tmp_path, tiny_tokenizer):
    """A second look's stricter level lives in the grid, travels with the plan, and leaves the runs (and so
    their resume and staleness) alone; an ablation twin is its own comparison and does not inherit it."""
    methods = {"baseline": {}, "second": {"method": "baseline", "confidence": 0.975},
               "twin": {"like": "second"}}
    runs = {r.cell.variant: r for r in plan_runs(load_grid(make_world(tmp_path, tiny_tokenizer, methods=methods)),
                                                seeds=[7])}
    assert runs["second"].cell.confidence == 0.975 and runs["second"].meta()["confidence"] == 0.975
    assert runs["twin"].cell.confidence == runs["baseline"].cell.confidence == 0.95
    assert runs["second"].fingerprint == runs["twin"].fingerprint == runs["baseline"].fingerprint


def test_report_judges_a_second_look_at_its_planned_level(tmp_path):
    """Deltas of 0.5/2/3.5/2 points: the 95 % interval excludes 0 (t 3.18), the 97.5 % one does not (t 4.18).
    Planned at 0.975, the variant is shown with that interval and neither marked nor counted as a gain."""
    results = tmp_path / "results"
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60, 0.60, 0.60, 0.60],
        ("im-uniform", "im-uniform", "intent-1"): [0.605, 0.62, 0.635, 0.62],
    })
    assert load_view(results).paired("im-uniform", "intent-1").significant_gain  # at 95 %
    plan = json.loads((results / "plans" / "fake.json").read_text())
    for run in plan["runs"]:
        run["confidence"] = 0.975 if run["variant"] == "im-uniform" else 0.95
    (results / "plans" / "fake.json").write_text(json.dumps(plan))
    delta = load_view(results).paired("im-uniform", "intent-1")
    assert delta.level == 0.975 and delta.low < 0 < delta.mean and not delta.significant_gain
    text = write_report(results, figures=False)[1]
    line = next(line for line in text.splitlines() if line.startswith("- **intent-1**"))
    assert "Δ +2.00 [97.5 %: -0.56, +4.56] 4–0 ❌" in line and "†" not in line
    assert "with a significant gain in 0/1 columns" in text
    # A later plan that lists the variant at the default level does not loosen it: the strictest stated wins.
    later = [{**run, "confidence": 0.95} for run in plan["runs"] if run["variant"] == "im-uniform"]
    (results / "plans" / "later.json").write_text(json.dumps({"written_at": "2025", "runs": later}))
    view = load_view(results)
    assert view.level("im-uniform", "intent-1") == 0.975 and view.level("baseline", "intent-1") == 0.95
    # The same comparison the other way round (`--against` the second-look variant) is judged at 97.5 % too.
    assert view.paired_against("baseline", "im-uniform", "intent-1").level == 0.975


def test_a_second_look_binds_only_the_column_it_was_planned_for(tmp_path):
    """A variant given more seeds in one column (`confidence: 0.975` in a grid limited to it) keeps the default
    level in its other columns, where nobody looked twice."""
    results = tmp_path / "results"
    scores = [0.605, 0.62, 0.635, 0.62]
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60] * 4, ("baseline", "baseline", "intent-3"): [0.60] * 4,
        ("im-uniform", "im-uniform", "intent-1"): scores, ("im-uniform", "im-uniform", "intent-3"): scores,
    })
    plan = json.loads((results / "plans" / "fake.json").read_text())
    second = [{**run, "confidence": 0.975} for run in plan["runs"]
              if run["variant"] == "im-uniform" and run["column"] == "intent-1"]
    (results / "plans" / "second-look.json").write_text(json.dumps({"written_at": "2025", "runs": second}))
    view = load_view(results)
    assert view.level("im-uniform", "intent-1") == 0.975 and view.level("im-uniform", "intent-3") == 0.95
    assert not view.paired("im-uniform", "intent-1").significant_gain
    assert view.paired("im-uniform", "intent-3").significant_gain


def test_plan_layout_and_fingerprints(tmp_path, tiny_tokenizer):
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, methods={"baseline": {}, "b2": {"method": "baseline"}}))
    runs = plan_runs(grid, seeds=[7])
    assert [str(r.relpath) for r in runs] == ["runs/jsonl/full/baseline/seed7.json", "runs/jsonl/full/b2/seed7.json"]
    assert runs[0].column == "jsonl-full" and column_name("esnli", "100-train") == "nli-100"
    assert runs[0].fingerprint == runs[1].fingerprint  # same configuration, different rows
    other = make_world(tmp_path, tiny_tokenizer, max_epochs=4)
    assert plan_runs(load_grid(other), seeds=[7])[0].fingerprint != runs[0].fingerprint
    with pytest.raises(ConfigError, match="no setting 'nope'"):
        plan_runs(grid, only_settings=["nope"])
    # Method filters: a variant key selects that variant; a registry name every variant of that method.
    assert [r.cell.variant for r in plan_runs(grid, seeds=[7], only_methods=["b2"])] == ["b2"]
    assert [r.cell.variant for r in plan_runs(grid, seeds=[7], only_methods=["baseline"])] == ["baseline"]
    other = load_grid(make_world(tmp_path, tiny_tokenizer, methods={"x": {"method": "baseline"}, "y": {"method": "baseline"}}))
    assert [r.cell.variant for r in plan_runs(other, seeds=[7], only_methods=["baseline"])] == ["x", "y"]
    with pytest.raises(ConfigError, match="no method 'im-mask'"):
        plan_runs(other, only_methods=["im-mask"])


# -- sweeping ------------------------------------------------------------------------------------------------
def _fake_run(payload: dict) -> dict:
    """A stand-in run: test score derived from the seed, no training."""
    meta = payload["meta"]
    return {"record": {**meta, "seed": payload["seed"], "dev": 0.5, "test": payload["seed"] / 100, "best_epoch": 0,
                       "epochs_run": 1, "seconds": 1.0, "wall_seconds": 2.0, "history": [],
                       "spec": payload["spec"]},
            "steps": json.dumps({"epoch": 0, "step": 0, "l_task": 1.0, "l_int": None, "lr": 0.1}) + "\n"}


def test_sweep_skips_done_reruns_stale_and_records_failures(tmp_path, tiny_tokenizer):
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, methods={"baseline": {}, "b2": {"method": "baseline"}}))
    results = tmp_path / "results"
    first = sweep(grid, results, seeds=[1, 2], progress=False, run_fn=_fake_run)
    assert len(first.finished) == 4 and first.skipped == 0 and not first.failed
    stored = json.loads((results / "runs/jsonl/full/b2/seed2.json").read_text())
    assert stored["test"] == 0.02 and stored["variant"] == "b2" and stored["column"] == "jsonl-full"
    assert read_step_log(results / "runs/jsonl/full/b2/logs/seed2-steps.jsonl.gz").count("\n") == 1
    again = sweep(grid, results, seeds=[1, 2], progress=False, run_fn=_fake_run)
    assert again.skipped == 4 and not again.finished

    def flaky(payload):
        if payload["seed"] == 3:
            raise RuntimeError("boom")
        return _fake_run(payload)

    third = sweep(grid, results, seeds=[1, 2, 3], progress=False, run_fn=flaky)
    assert third.skipped == 4 and third.failed == [("jsonl-full/baseline/seed3", "RuntimeError: boom"),
                                                   ("jsonl-full/b2/seed3", "RuntimeError: boom")]
    failure = json.loads((results / "failed/jsonl/full/baseline/seed3.json").read_text())
    assert failure["error"] == "RuntimeError: boom" and "Traceback" in failure["traceback"]
    fourth = sweep(grid, results, seeds=[1, 2, 3], progress=False, run_fn=_fake_run)
    assert len(fourth.finished) == 2 and not (results / "failed/jsonl/full/baseline/seed3.json").exists()

    changed = load_grid(make_world(tmp_path, tiny_tokenizer, max_epochs=5,
                                   methods={"baseline": {}, "b2": {"method": "baseline"}}))
    fifth = sweep(changed, results, seeds=[1], only_methods=["b2"], progress=False, run_fn=_fake_run)
    assert fifth.finished == ["jsonl-full/b2/seed1"] and fifth.skipped == 0
    assert not [p for p in _files(results) if p.name.endswith(".tmp")]
    sessions = [json.loads(line) for line in (results / "sweeps.jsonl").read_text().splitlines()]
    assert [(s["finished_runs"], s["failed_runs"]) for s in sessions] == [(4, 0), (0, 0), (0, 2), (2, 0), (1, 0)]


def test_sweep_lock_refuses_a_second_sweep(tmp_path, tiny_tokenizer):
    from uimer.experiments.sweep import sweep_lock

    grid = load_grid(make_world(tmp_path, tiny_tokenizer))
    with sweep_lock(tmp_path / "r"), pytest.raises(UimerError, match="in use by another sweep"):
        sweep(grid, tmp_path / "r", progress=False, run_fn=_fake_run)


def test_sessions_record_interrupts_and_fatal_errors(tmp_path, tiny_tokenizer):
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, seeds=[1]))
    results = tmp_path / "r"
    for exc in (KeyboardInterrupt(), SystemExit("cluster gone")):
        def stop(payload, exc=exc):
            raise exc

        with pytest.raises(type(exc)):
            sweep(grid, results, progress=False, run_fn=stop)
    first, second = (json.loads(line) for line in (results / "sweeps.jsonl").read_text().splitlines())
    assert first["interrupted"] and "error" not in first
    assert not second["interrupted"] and second["error"] == "SystemExit: cluster gone"
    assert not list(results.rglob("seed*.json"))  # nothing half-counted
    assert sweep(grid, results, progress=False, run_fn=_fake_run).finished == ["jsonl-full/baseline/seed1"]


def test_ray_missing_is_a_clear_error(tmp_path, tiny_tokenizer, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    grid = load_grid(make_world(tmp_path, tiny_tokenizer))
    with pytest.raises(UimerError, match=r"pip install 'ray>=2.9'"):
        sweep(grid, tmp_path / "r", use_ray=True, progress=False, run_fn=_fake_run)
    assert not list((tmp_path / "r").rglob("seed*.json"))


def test_sequential_sweep_trains_tiny_models(tmp_path, tiny_tokenizer):
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, max_epochs=2, n_train=24, n_eval=16,
                                methods={"baseline": {}, "im-uniform": {"train": {"warmup_epochs": 1}}}))
    results = tmp_path / "results"
    outcome = sweep(grid, results, seeds=[3], progress=False)
    assert not outcome.failed and len(outcome.finished) == 2
    record = json.loads((results / "runs/jsonl/full/im-uniform/seed3.json").read_text())
    assert record["method"] == "im-uniform" and record["family"] == "im" and record["epochs_run"] == 2
    assert 0.0 <= record["test"] <= 1.0 and record["spec"]["config"]["warmup_epochs"] == 1.0
    steps = [json.loads(line) for line in
             read_step_log(results / "runs/jsonl/full/im-uniform/logs/seed3-steps.jsonl.gz").splitlines()]
    assert len(steps) == 2 * 3  # 24 examples / batch 8 = 3 steps, 2 epochs
    assert all(s["l_int"] is None for s in steps[:3]) and all(s["l_int"] is not None for s in steps[3:])


def test_ray_task_prints_a_line_per_epoch(tmp_path, tiny_tokenizer, capsys):
    """What a Ray worker runs: without a progress bar, each epoch is a printed line naming the run."""
    from uimer.experiments.sweep import _ray_entry, make_payload

    grid = load_grid(make_world(tmp_path, tiny_tokenizer, max_epochs=2, n_train=24, n_eval=16,
                                methods={"im-uniform": {}}))
    run = plan_runs(grid, seeds=[3])[0]
    output = _ray_entry(make_payload(run, 1))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "jsonl-full/im-uniform/seed3: started"
    epochs = [line for line in lines if line.startswith("jsonl-full/im-uniform/seed3: epoch ")]
    assert [line.split()[2] for line in epochs] == ["0", "1"]
    history = output["record"]["history"]
    assert all(f"dev {entry['dev']:.4f}" in line and "l_int" in line for entry, line in zip(history, epochs, strict=True))


def test_dry_run_lists_runs_with_estimates(tmp_path, tiny_tokenizer, capsys):
    from uimer.cli import main

    grid_path = make_world(tmp_path, tiny_tokenizer)
    results = tmp_path / "results"
    sweep(load_grid(grid_path), results, seeds=[1], progress=False, run_fn=_fake_run)
    assert main(["sweep", str(grid_path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 runs: 1 done, 1 to run" in out and "measured" in out
    assert not (results / "runs/jsonl/full/baseline/seed2.json").exists()


# -- the report ------------------------------------------------------------------------------------------------
def _fabricate(results: Path, tests: dict[tuple[str, str, str], list[float]], expected_seeds: int = 4,
               devs: dict[tuple[str, str, str], list[float]] | None = None) -> None:
    """Plan + run files: tests[(variant, method, column)] = test scores (fractions) of seeds 1..n; dev scores
    from `devs` (default: dev = test, so the dev-chosen variant is also the test-best one)."""
    families = {"baseline": "baseline", "gb-huang-base": "gb", "im-uniform": "im", "dm-multi-round": "dm"}
    task_of = {"intent": ("snips-intent", "shot"), "nli": ("esnli", "train")}
    plan = []
    for (variant, method, column), scores in tests.items():
        prefix, size = column.split("-")
        task, kind = task_of[prefix]
        setting = f"{size}-{kind}"
        warm = 1.0 if variant.endswith("-warm") else 0.0
        for seed in range(1, expected_seeds + 1):
            relpath = f"runs/{task}/{setting}/{variant}/seed{seed}.json"
            meta = {"variant": variant, "method": method, "family": families[method], "label": variant,
                    "paper": variant, "setting_key": column, "column": column, "task": task, "setting": setting,
                    "encoder": "minilm", "seed": seed, "fingerprint": f"fp-{variant}", "relpath": relpath}
            plan.append(meta)
            if seed > len(scores):
                continue
            history = [{"round": r, "phase": "round", "dev": 0.5 + r / 100, "test": 0.4 + r / 100} for r in range(3)]
            dev = (devs or {}).get((variant, method, column), scores)[seed - 1]
            record = {**meta, "versions": behaviour_versions(method, task),  # made by today's code
                      "dev": dev, "test": scores[seed - 1], "best_epoch": 1, "epochs_run": 3,
                      "seconds": 10.0 * seed, "wall_seconds": 12.0 * seed,
                      "history": history if method == "dm-multi-round" else [],
                      "spec": {"dev_size": 1000 if task == "esnli" else None,
                               "config": {"warmup_epochs": warm}}}
            path = results / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record))
            logs = path.parent / "logs"
            logs.mkdir(exist_ok=True)
            (logs / f"seed{seed}-steps.jsonl").write_text("\n".join(
                json.dumps({"epoch": s, "step": s, "l_task": 1.0, "l_int": None if s < warm else 2.0 / (s + 1),
                            "lr": 1e-4}) for s in range(5)))
    (results / "plans").mkdir(parents=True, exist_ok=True)
    (results / "plans" / "fake.json").write_text(json.dumps({"written_at": "2024", "runs": plan}))


def test_report_tables_deltas_missing_cells_and_figures(tmp_path):
    results = tmp_path / "results"
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60, 0.62, 0.64, 0.66],
        ("gb-huang-base", "gb-huang-base", "intent-1"): [0.60, 0.60, 0.61, 0.63],
        ("im-uniform", "im-uniform", "intent-1"): [0.70, 0.72, 0.74, 0.76],
        ("im-uniform-warm", "im-uniform", "intent-1"): [0.75, 0.77],
        ("dm-multi-round", "dm-multi-round", "intent-1"): [0.66, 0.68, 0.70, 0.72],
        ("baseline", "baseline", "nli-100"): [0.50, 0.52, 0.54, 0.56],
        ("im-uniform", "im-uniform", "nli-100"): [0.50, 0.50, 0.50, 0.50],
    })
    # A failed run and a stale run (written under another configuration).
    (results / "failed/snips-intent/1-shot/im-uniform-warm").mkdir(parents=True)
    (results / "failed/snips-intent/1-shot/im-uniform-warm/seed3.json").write_text(json.dumps(
        {"relpath": "runs/snips-intent/1-shot/im-uniform-warm/seed3.json", "error": "RuntimeError: boom"}))
    stale = results / "runs/snips-intent/1-shot/im-uniform-warm/seed4.json"
    stale.write_text(json.dumps({**json.loads((results / "runs/snips-intent/1-shot/im-uniform-warm/seed1.json")
                                              .read_text()), "seed": 4, "fingerprint": "old", "test": 0.99}))

    view = load_view(results)
    assert [r.variant for r in view.rows] == ["baseline", "gb-huang-base", "im-uniform", "im-uniform-warm",
                                              "dm-multi-round"]
    assert view.columns == ["intent-1", "nli-100"]
    cell = view.cell("im-uniform-warm", "intent-1")
    assert (cell.n, cell.expected, cell.mean) == (2, 4, pytest.approx(76.0)) and not cell.complete
    assert view.cell("baseline", "intent-1").std == pytest.approx(statistics.stdev([60, 62, 64, 66]))
    assert len(view.stale) == 1
    missing = {(m["variant"], m["column"]): m for m in view.missing}
    assert set(missing) == {("im-uniform-warm", "intent-1")}
    assert missing[("im-uniform-warm", "intent-1")]["failed"] == {3: "RuntimeError: boom"}
    assert missing[("im-uniform-warm", "intent-1")]["stale"] == [4]

    path, text = write_report(results)
    assert path == results / "REPORT.md" and path.read_text() == text
    # Table 2: our mean (paper) delta vs our baseline (63.00).
    assert "| im-uniform | 73.00 (73.32) +10.00 | 50.00 (64.34) -3.00 |" in text
    assert "76.00* (75.79) +13.00" in text
    assert "| baseline | 63.00 (65.71) | 53.00 (54.03) |" in text
    # Table 9: mean ± sample std (seeds) [paper].
    assert f"63.00 ± {statistics.stdev([60, 62, 64, 66]):.2f} (4) [65.71 ± 7.30]" in text
    assert "76.00 ± 1.41 (2/4) [75.79 ± 4.94]" in text
    assert "- intent-1 × im-uniform-warm: 2/4 seeds; missing seeds 3, 4; failed: seed 3 (RuntimeError: boom); " \
           "stale (config changed): seeds 4" in text
    # Targets: variants chosen by dev (= test here); paired deltas with the 95 % t-interval over 4 seeds.
    intent_line = next(line for line in text.splitlines() if line.startswith("- **intent-1**"))
    assert "UIMER-GB gb-huang-base (dev 61.00) test 61.00, Δ -2.00 [-4.25, +0.25] 0–3–1 ❌" in intent_line
    # im-uniform-warm (76.00) has 2 of 4 seeds: not comparable, so im-uniform (73.00) is the IM choice.
    assert "UIMER-IM im-uniform (dev 73.00) test 73.00, Δ +10.00 [+10.00, +10.00] 4–0 † ✅" in intent_line
    assert "UIMER-DM dm-multi-round (dev 69.00) test 69.00, Δ +6.00" in intent_line
    assert "best UIMER by dev: im-uniform; its gain +10.00 vs required +5.04" in intent_line
    assert "(incomplete cells, not compared: im-uniform-warm)" in intent_line
    nli_line = next(line for line in text.splitlines() if line.startswith("- **nli-100**"))
    assert "UIMER-IM im-uniform (dev 50.00) test 50.00, Δ -3.00 [-7.11, +1.11] 0–3–1 ❌" in nli_line
    assert "UIMER-GB: no complete cell" in nli_line
    assert "margin target (significant and ≥ half the paper's margin) met in 1/2 columns" in text
    assert "dev-chosen best UIMER with a significant gain in 1/2 columns" in text
    assert "| im-uniform | +10.00 [+10.00, +10.00] 4–0 † ◆ ★ | -3.00 [-7.11, +1.11] 0–3–1 ◆ ★ |" in text
    assert "Model selection in nli-100 used a seeded, label-stratified subset of 1000 dev examples" in text
    # Cost per method: sum and mean of per-run seconds (12 s x seed).
    assert "| baseline | 8 | 4.0 min | 30 | 25 | 1.00 |" in text
    assert "| im-uniform-warm | 18 |  |" in text  # mean seconds per run per column (seeds 1, 2: 12 and 24 s)
    # Figures: Fig. 3 (im-uniform with and without warm-up in intent-1), Fig. 4 (dm-multi-round rounds).
    assert (results / "fig3-lint-intent-1.png").stat().st_size > 1000
    assert (results / "fig4-rounds-intent-1.png").stat().st_size > 1000
    assert not (results / "fig3-lint-nli-100.png").exists()
    assert "![L_int with and without warm-up, intent-1 (paper Fig. 3)](fig3-lint-intent-1.png)" in text
    _, moved = write_report(results, output=tmp_path / "docs" / "REPORT.md")
    assert "(../results/fig4-rounds-intent-1.png)" in moved


def test_report_chooses_variants_on_dev_not_test(tmp_path):
    """The test-best variant loses the choice to the dev-best one; its own delta is still listed."""
    results = tmp_path / "results"
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60, 0.62, 0.64, 0.66],
        ("im-uniform", "im-uniform", "intent-1"): [0.70, 0.72, 0.74, 0.76],  # test-best, dev-worse
        ("im-uniform-warm", "im-uniform", "intent-1"): [0.61, 0.64, 0.65, 0.66],
        ("gb-huang-base", "gb-huang-base", "intent-1"): [0.61, 0.63, 0.65, 0.67],
    }, devs={
        ("im-uniform", "im-uniform", "intent-1"): [0.50, 0.50, 0.50, 0.50],
        ("im-uniform-warm", "im-uniform", "intent-1"): [0.90, 0.90, 0.90, 0.90],
        ("gb-huang-base", "gb-huang-base", "intent-1"): [0.80, 0.80, 0.80, 0.80],
    })
    view = load_view(results)
    assert view.dev_choice("intent-1", ("im",)) == "im-uniform-warm"
    assert view.dev_choice("intent-1", ("gb", "im", "dm")) == "im-uniform-warm"
    text = write_report(results, figures=False)[1]
    line = next(line for line in text.splitlines() if line.startswith("- **intent-1**"))
    assert "UIMER-IM im-uniform-warm (dev 90.00) test 64.00, Δ +1.00 [-0.30, +2.30] 3–0–1 ❌" in line
    assert "best UIMER by dev: im-uniform-warm" in line
    # gb-huang-base: +1 on every seed, a significant gain with a zero-width interval.
    assert "UIMER-GB gb-huang-base (dev 80.00) test 64.00, Δ +1.00 [+1.00, +1.00] 4–0 † ✅" in line
    assert "| im-uniform | +10.00 [+10.00, +10.00] 4–0 † |" in text  # listed, but neither ◆ nor ★
    (results / "NOTES.md").write_text("Calibration changed since these runs.\n")
    text = write_report(results, figures=False)[1]
    assert "## Notes on these runs (NOTES.md)\n\nCalibration changed since these runs." in text


def test_report_against_pairs_rows_with_a_control(tmp_path, capsys):
    """`--against TWIN` pairs every row with the twin on test and dev: a variant that beats the baseline but
    not its alpha-0 twin shows it; an unknown row is an error naming the flag."""
    from uimer.cli import main

    results = tmp_path / "results"
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60, 0.62, 0.64, 0.66],
        ("dm-multi-round", "dm-multi-round", "intent-1"): [0.62, 0.64, 0.66, 0.68],
        ("dm-multi-round-alpha0", "dm-multi-round", "intent-1"): [0.63, 0.64, 0.67, 0.68],
    }, devs={("dm-multi-round-alpha0", "dm-multi-round", "intent-1"): [0.60, 0.60, 0.60, 0.60]})
    text = write_report(results, figures=False, against=("dm-multi-round-alpha0",))[1]
    section = text.split("## Paired deltas against dm-multi-round-alpha0 (test and dev, %)")[1].split("\n## ")[0]
    assert "| baseline (test) | -2.50 [-3.42, -1.58] 0–4 † |" in section
    assert "| dm-multi-round (test) | -0.50 [-1.42, +0.42] 0–2–2 |" in section
    assert "| dm-multi-round (dev) | +5.00 [+0.89, +9.11] 4–0 † |" in section
    assert "dm-multi-round-alpha0 (" not in section
    assert "| dm-multi-round | +2.00 [+2.00, +2.00] 4–0 †" in text  # the baseline table is unchanged
    assert main(["report", str(results), "--no-figures", "--quiet", "--against", "dm-alpha0"]) == 2
    assert "--against dm-alpha0: no such row" in capsys.readouterr().err


def test_report_checks_the_grid_time_budget(tmp_path, tiny_tokenizer):
    grid_path = make_world(tmp_path, tiny_tokenizer, seeds=[1, 2])
    grid = yaml.safe_load(grid_path.read_text())
    results = tmp_path / "results"

    def budget_line(budget: dict) -> str:
        grid_path.write_text(yaml.safe_dump({**grid, "cost": {"budget": budget}}, sort_keys=False))
        _, text = write_report(results, figures=False)
        return next(line for line in text.splitlines() if line.startswith("- **time, grid tiny**"))

    # One of two runs done (the fake run's wall clock is 2 s); the other is estimated from it: 4 s of run time.
    sweep(load_grid(grid_path), results, seeds=[1], progress=False, run_fn=_fake_run)
    line = budget_line({"hours": 0.001, "workers": 2})  # 3.6 s budget, two runs at a time: 2 s
    assert "1/2 runs done in 0.0 min of run time; the other 1 estimated" in line
    assert "≈ 0.0 h of wall-clock with 2 run(s) in parallel, budget 0.001 h ✅" in line
    assert budget_line({"hours": 0.001}).endswith("budget 0.001 h ❌")  # one at a time: 4 s > 3.6 s
    # The sweep wall-clock sentence follows the seconds table: a blank line keeps Markdown from reading it as a row.
    lines = write_report(results, figures=False)[1].splitlines()
    wall = next(i for i, line in enumerate(lines) if line.startswith("Wall-clock of the 1 sweep invocation(s)"))
    assert lines[wall - 1] == "" and lines[wall - 2].startswith("|")


def test_report_cli_prints_and_rejects_missing_dir(tmp_path, capsys):
    from uimer.cli import main

    results = tmp_path / "results"
    _fabricate(results, {("baseline", "baseline", "intent-1"): [0.6]}, expected_seeds=1)
    assert main(["report", str(results), "--no-figures"]) == 0
    assert "## Table 2 layout" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "nope")]) == 2
    elsewhere = tmp_path / "docs" / "REPORT.md"
    assert main(["report", str(results), "--output", str(elsewhere), "--quiet"]) == 0
    assert "## Table 9 layout" in elsewhere.read_text() and not capsys.readouterr().out


# -- end to end: Ray, and a sweep killed by a real signal ------------------------------------------------------
@pytest.mark.integration
def test_ray_sweep_runs_two_tiny_runs(tmp_path, tiny_tokenizer, monkeypatch):
    import uimer.experiments.sweep as sweep_module

    ray = pytest.importorskip("ray")
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, max_epochs=2, seeds=[11, 12]))
    results = tmp_path / "results"

    def polite_stop(signum, frame):  # what `uimer sweep` installs: SIGTERM stops the sweep like Ctrl-C
        raise KeyboardInterrupt

    handlers_while_running = []  # ray.init installs its own SIGTERM handler; the sweep must put ours back
    log_line = sweep_module._log_line
    monkeypatch.setattr(sweep_module, "_log_line", lambda where, line: (
        handlers_while_running.append(signal.getsignal(signal.SIGTERM)), log_line(where, line)))
    previous = signal.signal(signal.SIGTERM, polite_stop)
    start = time.perf_counter()
    try:
        outcome = sweep(grid, results, use_ray=True, ray_num_cpus=2, progress=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    elapsed = time.perf_counter() - start
    assert len(handlers_while_running) >= 4 and all(h is polite_stop for h in handlers_while_running)
    assert not ray.is_initialized()  # the local instance this sweep started is shut down again
    assert not outcome.failed and sorted(outcome.finished) == ["jsonl-full/baseline/seed11", "jsonl-full/baseline/seed12"]
    for seed in (11, 12):
        record = json.loads((results / f"runs/jsonl/full/baseline/seed{seed}.json").read_text())
        assert record["seed"] == seed and record["epochs_run"] == 2 and 0.0 <= record["test"] <= 1.0
        assert record["threads"] == 1 and record["fingerprint"] == plan_runs(grid)[0].fingerprint
        assert read_step_log(results / f"runs/jsonl/full/baseline/logs/seed{seed}-steps.jsonl.gz").count("\n") == 2 * 8
    # Same numbers as the same seed trained in this process (determinism across workers).
    local = sweep(grid, tmp_path / "local", seeds=[11], progress=False)
    assert local.finished
    here = json.loads((tmp_path / "local/runs/jsonl/full/baseline/seed11.json").read_text())
    there = json.loads((results / "runs/jsonl/full/baseline/seed11.json").read_text())
    assert here["test"] == there["test"] and here["dev"] == there["dev"]
    print(f"ray sweep of 2 tiny runs: {elapsed:.1f}s")


@pytest.mark.integration
def test_killed_sweep_resumes_without_duplicates_or_loss(tmp_path, tiny_tokenizer):
    grid_path = make_world(tmp_path, tiny_tokenizer, max_epochs=8, n_train=160, n_eval=160,
                           methods={"baseline": {}, "b2": {"method": "baseline"}}, seeds=[1, 2])
    results = tmp_path / "results"
    expected = {f"runs/jsonl/full/{v}/seed{s}.json" for v in ("baseline", "b2") for s in (1, 2)}
    command = [sys.executable, "-m", "uimer.cli", "sweep", str(grid_path), "--results", str(results), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    log = (tmp_path / "first-sweep.log").open("w")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=env)
    deadline = time.monotonic() + 120
    first: Path | None = None
    while time.monotonic() < deadline and process.poll() is None:
        done = [p for p in (results / "runs").rglob("seed*.json")] if (results / "runs").exists() else []
        if done:
            first = done[0]
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    log.close()
    assert first is not None, (tmp_path / "first-sweep.log").read_text()
    at_kill = {str(p.relative_to(results)) for p in (results / "runs").rglob("seed*.json")}
    assert 1 <= len(at_kill) < 4, "the kill should land while runs remain"
    first_bytes, first_mtime = first.read_bytes(), first.stat().st_mtime_ns

    rerun = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    runs = sorted(str(p.relative_to(results)) for p in (results / "runs").rglob("seed*.json"))
    assert runs == sorted(expected)  # every run exactly once, nothing else
    assert first.read_bytes() == first_bytes and first.stat().st_mtime_ns == first_mtime  # skipped, not redone
    assert f"{len(at_kill)} already done, {4 - len(at_kill)} finished now, 0 failed" in rerun.stderr
    assert not [p for p in _files(results) if p.name.endswith(".tmp")]
    for relpath in expected:
        record = json.loads((results / relpath).read_text())
        assert record["epochs_run"] == 8 and len(record["history"]) == 8
        steps = read_step_log(results / Path(relpath).parent / "logs" / f"seed{record['seed']}-steps.jsonl.gz")
        assert steps.count("\n") == 8 * 20  # whole logs only: 160 examples / batch 8 = 20 steps per epoch


def test_cost_estimate_carries_a_variants_ratio_over_from_other_columns_of_the_task(tmp_path):
    """An unmeasured (column, variant) costs the column's baseline times the variant's ratio elsewhere in
    the task; a column of another task falls back to the method's fixed factor."""
    from types import SimpleNamespace

    from uimer.experiments.sweep import DEFAULT_FACTORS, estimate_seconds, measured_seconds

    def record(task, column, variant, seed, seconds):
        path = tmp_path / "runs" / task / column / variant / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"task": task, "column": column, "variant": variant, "method": variant,
                                    "wall_seconds": seconds}))

    record("esnli", "nli-100", "baseline", 1, 90.0)
    record("esnli", "nli-100", "baseline", 2, 110.0)
    record("esnli", "nli-100", "im-uniform-warm", 1, 300.0)
    record("esnli", "nli-500", "baseline", 1, 1000.0)
    record("snips-intent", "intent-1", "baseline", 1, 50.0)
    measured = measured_seconds([tmp_path])
    grid = SimpleNamespace(cost={})
    cell = SimpleNamespace(variant="im-uniform-warm", method="im-uniform", family="im")

    def run(task, column):
        return SimpleNamespace(column=column, cell=cell, spec=SimpleNamespace(task=task))

    seconds, source = estimate_seconds(grid, run("esnli", "nli-500"), measured)
    assert seconds == pytest.approx(1000.0 * 3.0) and source == "baseline x 3.0 (task)"
    seconds, source = estimate_seconds(grid, run("snips-intent", "intent-1"), measured)
    assert seconds == pytest.approx(50.0 * DEFAULT_FACTORS["im-uniform"]) and source == "baseline x 3.5"


def test_a_run_with_two_threads_counts_twice_its_wall_clock_in_the_cost_model(tmp_path):
    """A run sped up with `--threads 2` holds two one-core workers, so its wall-clock must not make the
    method look cheaper to the cost model (and the report's budget line) than it is."""
    from uimer.experiments.sweep import measured_seconds

    for seed, seconds, threads in ((1, 100.0, 1), (2, 70.0, 2), (3, 90.0, None)):
        path = tmp_path / "runs" / "esnli" / "nli-500" / "im-mlm-warm" / f"seed{seed}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"task": "esnli", "column": "nli-500", "variant": "im-mlm-warm", "method": "im-mlm",
                  "wall_seconds": seconds}
        if threads is not None:
            record["threads"] = threads
        path.write_text(json.dumps(record))
    measured = measured_seconds([tmp_path])
    assert sorted(measured[("nli-500", "im-mlm-warm")]) == [90.0, 100.0, 140.0]


def test_only_seeds_runs_a_subset_and_keeps_the_grids_plan(tmp_path, tiny_tokenizer):
    """`--only-seeds` is a filter: the plan (what the report expects per cell) still lists every grid seed,
    whereas `--seeds` replaces the seeds and the plan with them."""
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, seeds=[1, 2, 3]))
    results = tmp_path / "results"
    outcome = sweep(grid, results, only_seeds=[2], progress=False, run_fn=_fake_run)
    assert outcome.finished == ["jsonl-full/baseline/seed2"]
    plan = json.loads((results / "plans/tiny.json").read_text())
    assert sorted(run["seed"] for run in plan["runs"]) == [1, 2, 3]
    view = load_view(results)
    assert view.cells[("baseline", "jsonl-full")].expected == 3
    with pytest.raises(ConfigError, match="--only-seeds 7: no selected cell plans that seed"):
        sweep(grid, results, only_seeds=[7], progress=False, run_fn=_fake_run)


def test_a_run_cut_off_mid_training_resumes_at_its_checkpoint(tmp_path, tiny_tokenizer, monkeypatch):
    """A kill during a long run costs at most the epochs since its last checkpoint, and the resumed run scores as
    one that was never interrupted."""
    from uimer.experiments.sweep import execute_run, make_payload
    from uimer.training import checkpoint as checkpoint_module

    monkeypatch.setattr(checkpoint_module, "DEFAULT_EVERY_SECONDS", 0.0)  # save after every epoch
    grid = load_grid(make_world(tmp_path, tiny_tokenizer, max_epochs=4, n_train=24, n_eval=16,
                                methods={"im-uniform": {"train": {"warmup_epochs": 1}}}))
    whole = tmp_path / "whole"
    sweep(grid, whole, seeds=[3], progress=False)

    class Killed(Exception):
        pass

    def killed_in_epoch_2(record: dict) -> None:
        if record["epoch"] == 2:
            raise Killed

    results = tmp_path / "results"
    run = plan_runs(grid, seeds=[3])[0]
    with pytest.raises(Killed):
        execute_run(make_payload(run, 1, results), killed_in_epoch_2)
    checkpoint = results / "checkpoints/jsonl/full/im-uniform/seed3.pt"
    assert checkpoint.exists() and (checkpoint.parent / "seed3-steps.jsonl").exists()
    outcome = sweep(grid, results, seeds=[3], progress=False)
    assert outcome.finished == ["jsonl-full/im-uniform/seed3"]
    record = json.loads((results / "runs/jsonl/full/im-uniform/seed3.json").read_text())
    reference = json.loads((whole / "runs/jsonl/full/im-uniform/seed3.json").read_text())
    assert record["resumed_at"] == "epoch 2" and reference["resumed_at"] is None
    assert (record["test"], record["dev"], record["history"]) == (reference["test"], reference["dev"], reference["history"])
    steps = "runs/jsonl/full/im-uniform/logs/seed3-steps.jsonl.gz"
    assert (results / steps).read_bytes() == (whole / steps).read_bytes()  # no step logged twice or lost
    assert read_step_log(results / steps).count("\n") > 0
    assert not checkpoint.exists() and not (checkpoint.parent / "seed3-steps.jsonl").exists()


def test_gpus_per_run_sets_the_ray_share_without_touching_fingerprints(tmp_path, tiny_tokenizer):
    grid = load_grid(make_world(tmp_path, tiny_tokenizer))
    plain = plan_runs(grid, seeds=[3])
    shared = plan_runs(grid, seeds=[3], gpus_per_run=0.25)
    assert [r.resources["num_gpus"] for r in plain] == [0.0] * len(plain)
    assert [r.resources["num_gpus"] for r in shared] == [0.25] * len(shared)
    assert [r.fingerprint for r in plain] == [r.fingerprint for r in shared]
    for bad in (-1.0, 1.5):
        with pytest.raises(ConfigError, match="--gpus-per-run"):
            plan_runs(grid, seeds=[3], gpus_per_run=bad)


def test_cuda_on_ray_without_a_gpu_share_is_a_clear_error(tmp_path, tiny_tokenizer):
    """Ray hides every GPU from a task that asks for none, so such a sweep would fail run by run."""
    grid = load_grid(make_world(tmp_path, tiny_tokenizer))
    with pytest.raises(ConfigError, match="--gpus-per-run"):
        sweep(grid, tmp_path / "r", seeds=[3], device="cuda", use_ray=True, progress=False, run_fn=_fake_run)
    assert not list((tmp_path / "r").rglob("seed*.json"))


def test_the_gpu_parity_grid_is_the_committed_intent_1_column(monkeypatch):
    """benchmarks/gpu/gpu-parity.yaml reruns every committed intent-1 run with its exact configuration."""
    repo = Path(__file__).resolve().parents[1]
    runs = plan_runs(load_grid(str(repo / "benchmarks/gpu/gpu-parity.yaml")), only_seeds=[55])
    committed = repo / "benchmarks/results"
    assert len(runs) == 16
    for run in runs:
        assert run.resources["num_gpus"] == 0.25 and run.spec.config.device == "cuda"
    # The committed run is the pre-issue-29 one the GPU runs were compared with, or its rerun under today's
    # versions: either way the same configuration.
    today = {run.name: run.spec.fingerprint() for run in runs}
    monkeypatch.setattr(runner, "behaviour_versions", lambda method, task=None: {"trainer": "1", "method": "1"})
    for run in runs:
        stored = json.loads((committed / run.relpath).read_text())
        assert stored["fingerprint"] in (run.spec.fingerprint(), today[run.name]), run.name


def test_step_logs_are_stored_compressed_and_read_in_either_form(tmp_path):
    """Issue 29: step logs are kept as reproducible .jsonl.gz; readers accept old plain .jsonl files too."""
    from uimer.experiments.sweep import write_step_log

    text = "".join(json.dumps({"step": s, "l_task": 1.0 / (s + 1)}) + "\n" for s in range(500))
    packed = tmp_path / "a" / "seed1-steps.jsonl.gz"
    write_step_log(packed, text)
    again = tmp_path / "b" / "seed1-steps.jsonl.gz"
    write_step_log(again, text)
    assert packed.read_bytes() == again.read_bytes()  # no time stamp: the same log, the same bytes
    assert packed.stat().st_size < len(text) / 4
    assert read_step_log(packed) == text == read_step_log(tmp_path / "a" / "seed1-steps.jsonl")
    plain = tmp_path / "c" / "seed1-steps.jsonl"
    plain.parent.mkdir()
    plain.write_text(text)
    assert read_step_log(plain) == text == read_step_log(tmp_path / "c" / "seed1-steps.jsonl.gz")
    assert read_step_log(tmp_path / "missing.jsonl.gz") == ""


def test_dev_choice_compares_cells_on_the_seeds_they_share(tmp_path):
    """A cell given six more seeds (new, harder subsets) is compared with its rivals on the four they share,
    not on a mean over other data."""
    results = tmp_path / "results"
    _fabricate(results, {
        ("baseline", "baseline", "intent-1"): [0.60, 0.62, 0.64, 0.66],
        ("im-uniform", "im-uniform", "intent-1"): [0.70, 0.70, 0.70, 0.70],
        ("im-uniform-warm", "im-uniform", "intent-1"): [0.70, 0.70, 0.70, 0.70],
    }, devs={
        ("im-uniform", "im-uniform", "intent-1"): [0.78, 0.78, 0.78, 0.78],
        ("im-uniform-warm", "im-uniform", "intent-1"): [0.79, 0.79, 0.79, 0.79],
    })
    folder = results / "runs/snips-intent/1-shot/im-uniform-warm"
    template = json.loads((folder / "seed1.json").read_text())
    extra = []
    for seed in range(5, 11):
        record = {**template, "seed": seed, "dev": 0.50, "test": 0.55,
                  "relpath": f"runs/snips-intent/1-shot/im-uniform-warm/seed{seed}.json"}
        (folder / f"seed{seed}.json").write_text(json.dumps(record))
        extra.append({k: v for k, v in record.items() if k not in ("dev", "test", "history", "spec")})
    (results / "plans" / "more-seeds.json").write_text(json.dumps({"written_at": "2025", "runs": extra}))
    view = load_view(results)
    warm = view.cell("im-uniform-warm", "intent-1")
    assert warm.n == warm.expected == 10 and warm.dev_mean == pytest.approx(61.6)  # below im-uniform's 78
    assert view.dev_choice("intent-1", ("im",)) == "im-uniform-warm"  # 79 > 78 on seeds 1-4
    assert view.shared_dev_mean("im-uniform-warm", "intent-1", ("im",)) == pytest.approx(79.0)


def test_readme_like_example_loads_as_described(tmp_path):
    """The README's `like` grid loads: the twin is dm-multi-round's slot-1 cell with alpha 0."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    (snippet,) = re.findall(r"```yaml\n(extends: lowresource-minilm.*?)```", readme, flags=re.S)
    (tmp_path / "ablation.yaml").write_text(snippet)
    grid = load_grid(tmp_path / "ablation.yaml")
    twin, original = grid.cell("dm-multi-round-alpha0", "slot-1"), grid.cell("dm-multi-round", "slot-1")
    assert twin.method == "dm-multi-round" and twin.fields["train"]["alpha"] == 0
    assert original.fields["train"]["alpha"] > 0
    assert {**twin.fields, "train": None} == {**original.fields, "train": None}
    assert {k: v for k, v in twin.fields["train"].items() if k != "alpha"} == \
        {k: v for k, v in original.fields["train"].items() if k != "alpha"}
