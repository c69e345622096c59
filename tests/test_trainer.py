import json
import math
from dataclasses import replace

import pytest
import torch

from conftest import make_tiny_encoder
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import UimerWarning
from uimer.interpret import create_method
from uimer.models.task_model import TaskModel
from uimer.training import runner
from uimer.training.trainer import TrainConfig, TrainingContext, WarmupGate, evaluate, fit, set_seed


def toy_task() -> TaskData:
    pos = [["play", "music"], ["play", "song"], ["play", "the", "music"], ["play", "a", "song"]]
    neg = [["weather", "in", "paris"], ["what", "is", "the", "weather"], ["weather", "tomorrow"], ["the", "weather"]]
    train = [Example(words=w, label=1, rationale=[int(x == "play") for x in w]) for w in pos[:3]]
    train += [Example(words=w, label=0, rationale=[int(x == "weather") for x in w]) for w in neg[:3]]
    dev = [Example(words=pos[3], label=1), Example(words=neg[3], label=0)]
    return TaskData("toy", TaskKind.CLASSIFICATION, ["weather", "music"], train, dev, list(dev))


def make_context(tokenizer, seed=0, method="baseline", **config) -> TrainingContext:
    task = toy_task()
    set_seed(seed)
    model = TaskModel(make_tiny_encoder(len(tokenizer), seed), task.kind, 2)
    cfg = TrainConfig(lr=1e-3, batch_size=4, max_epochs=config.pop("max_epochs", 6), patience=2, **config)
    return TrainingContext(
        model=model, task=task, train=encode_examples(task.train, tokenizer, task.kind),
        dev=encode_examples(task.dev, tokenizer, task.kind), test=encode_examples(task.test, tokenizer, task.kind),
        config=cfg, seed=seed, tokenizer=tokenizer, device=torch.device("cpu"), method=create_method(method),
    )


def test_fit_is_deterministic_and_scores_test_at_best_dev(tiny_tokenizer):
    a = fit(make_context(tiny_tokenizer, seed=3))
    b = fit(make_context(tiny_tokenizer, seed=3))
    assert (a.dev, a.test, a.best_epoch) == (b.dev, b.test, b.best_epoch)
    assert [h["l_task"] for h in a.history] == [h["l_task"] for h in b.history]
    assert a.history[a.best_epoch]["dev"] == a.dev == max(h["dev"] for h in a.history)
    assert 0.0 <= a.test <= 1.0


def test_best_weights_are_restored_before_test(tiny_tokenizer):
    context = make_context(tiny_tokenizer, seed=1)
    result = fit(context)
    assert evaluate(context.model, context.dev, context.task, context.device) == result.dev


def test_warmup_gate_fractional_integer_and_task_trained():
    fractional = WarmupGate(0.1, steps_per_epoch=40)
    assert [fractional.active(s) for s in (0, 3, 4)] == [False, False, True]
    whole = WarmupGate(2, steps_per_epoch=3)
    assert [whole.active(s) for s in (5, 6)] == [False, True]
    task = WarmupGate("task", steps_per_epoch=3)
    assert not task.active(100)
    assert task.release_on_early_stop() is True
    assert task.active(0) and task.release_on_early_stop() is False
    assert WarmupGate(0, 5).active(0)


def test_warmup_share_of_all_batches_is_the_papers_nli_setting():
    """Issue 29 fix 4: "0.1*" = 10 % of all training batches (nli-100: 4 batches x 50 epochs -> 20), not of one
    epoch's (-> 1 batch, the old reading of 0.1)."""
    share = WarmupGate("0.1*", steps_per_epoch=4, max_epochs=50)
    assert share.off_steps == 20 and not share.active(19) and share.active(20)
    assert WarmupGate(0.1, steps_per_epoch=4, max_epochs=50).off_steps == 1  # the plain fraction: one epoch's
    from uimer.experiments.config import load_grid

    for grid_name in ("paper", "lowresource-minilm"):
        grid = load_grid(grid_name)
        for cell in grid.cells(only_settings=["nli-100"]):
            if cell.variant.endswith("-warm"):
                train = cell.fields["train"]
                assert train["warmup_epochs"] == "0.1*"
                gate = WarmupGate(train["warmup_epochs"], math.ceil(100 / train["batch_size"]), train["max_epochs"])
                assert gate.off_steps == 20


def test_warmup_values_parse_in_cli_and_grids():
    from uimer.training.trainer import parse_warmup

    assert parse_warmup("0.1*") == "0.1*" and parse_warmup(" 0.10* ") == "0.1*"
    assert parse_warmup("task-trained") == "task" and parse_warmup(2) == 2.0
    for bad in ("1.5*", "-1", "x*"):
        with pytest.raises(ValueError):
            parse_warmup(bad)


def offline_runner(monkeypatch, tokenizer) -> None:
    """The runner on the toy task and a tiny encoder, with no data directory or model hub."""
    monkeypatch.setattr(runner, "load_task_for", lambda spec: toy_task())
    monkeypatch.setattr(runner, "load_tokenizer", lambda name: tokenizer)
    monkeypatch.setattr(
        runner, "build_model", lambda name, kind, n, pooling, attn: TaskModel(make_tiny_encoder(len(tokenizer)), kind, n)
    )
    monkeypatch.setattr(runner, "select_train_indices", lambda task, shot, size, seed: list(range(len(task.train))))


def test_runner_resumes_finished_seeds(tmp_path, tiny_tokenizer, monkeypatch):
    offline_runner(monkeypatch, tiny_tokenizer)
    spec = runner.RunSpec(task="toy", seeds=[1, 2], output_dir=str(tmp_path),
                          config=TrainConfig(lr=1e-3, batch_size=4, max_epochs=2, patience=1))
    first = runner.run_experiment(spec, progress=False)
    assert [r["seed"] for r in first["per_seed"]] == [1, 2]
    seed1 = tmp_path / "seeds" / "seed1.json"
    stamp = seed1.stat().st_mtime_ns
    (tmp_path / "seeds" / "seed2.json").unlink()  # as if the run was killed during seed 2
    second = runner.run_experiment(spec, progress=False)
    assert seed1.stat().st_mtime_ns == stamp
    assert second["per_seed"] == first["per_seed"][:1] + second["per_seed"][1:]
    assert second["per_seed"][1]["test"] == first["per_seed"][1]["test"]  # same seed, same numbers
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) >= {"task", "method", "encoder", "setting", "metric", "per_seed", "test_mean", "test_std"}
    assert saved["test_std"] == pytest.approx(
        torch.tensor([r["test"] for r in saved["per_seed"]], dtype=torch.float64).std().item()
    )


class Interrupt(Exception):
    """Stands in for a kill at an epoch boundary."""


def interrupt_after(epochs: int):
    def on_epoch(record: dict) -> None:
        if record["epoch"] + 1 >= epochs:
            raise Interrupt

    return on_epoch


@pytest.mark.parametrize(("method", "options", "warmup"), [
    ("baseline", {}, 0.0),
    ("gb-huang-gate", {}, 0.5),  # the gate's own generator and a warm-up gate
    ("im-uniform", {"im_resample": "epoch"}, 0.0),  # sets redrawn every epoch from the method's generator
])
def test_a_seed_cut_off_mid_training_resumes_from_its_checkpoint_with_the_same_numbers(
        tmp_path, tiny_tokenizer, method, options, warmup):
    from uimer.training.checkpoint import SeedCheckpoint

    def context(**extra):
        ctx = replace(make_context(tiny_tokenizer, seed=5, method=method, max_epochs=5, warmup_epochs=warmup),
                      method=create_method(method, options), **extra)
        ctx.method.prepare(ctx.method_setup())
        return ctx

    whole = fit(context())
    path = tmp_path / "seed5.pt"
    with pytest.raises(Interrupt):
        fit(context(checkpoint=SeedCheckpoint(path, "fp/seed5", every_seconds=0), on_epoch=interrupt_after(3)))
    assert path.exists()
    checkpoint = SeedCheckpoint(path, "fp/seed5", every_seconds=0)
    resumed = fit(context(checkpoint=checkpoint))
    assert checkpoint.resumed["at"] == "epoch 2"  # cut off while finishing epoch 2: the last save was after epoch 1
    assert (resumed.dev, resumed.test, resumed.best_epoch, resumed.epochs_run) == (
        whole.dev, whole.test, whole.best_epoch, whole.epochs_run)
    assert resumed.history == whole.history  # losses of the resumed epochs match to the last bit


def test_a_checkpoint_of_another_run_is_ignored(tmp_path, tiny_tokenizer):
    from uimer.training.checkpoint import SeedCheckpoint

    path = tmp_path / "seed5.pt"
    ctx = make_context(tiny_tokenizer, seed=5, max_epochs=4)
    ctx.checkpoint, ctx.on_epoch = SeedCheckpoint(path, "old-config/seed5", every_seconds=0), interrupt_after(2)
    with pytest.raises(Interrupt):
        fit(ctx)
    other = SeedCheckpoint(path, "new-config/seed5", every_seconds=0)
    assert other.load() is None
    result = fit(replace(make_context(tiny_tokenizer, seed=5, max_epochs=4), checkpoint=other))
    assert other.resumed is None and result.epochs_run >= 1
    path.write_bytes(b"not a checkpoint")
    with pytest.warns(UimerWarning, match="unreadable checkpoint"):
        assert SeedCheckpoint(path, "old-config/seed5").load() is None  # a damaged file costs only the time it saved


def test_runner_resumes_a_cut_off_seed_and_continues_its_step_log(tmp_path, tiny_tokenizer, monkeypatch):
    from uimer.training import checkpoint as checkpoint_module

    offline_runner(monkeypatch, tiny_tokenizer)
    monkeypatch.setattr(checkpoint_module, "DEFAULT_EVERY_SECONDS", 0.0)
    config = TrainConfig(lr=1e-3, batch_size=4, max_epochs=4, patience=10)
    whole = runner.run_experiment(runner.RunSpec(task="toy", seeds=[1], output_dir=str(tmp_path / "a"), config=config),
                                  progress=False)
    steps_whole = (tmp_path / "a" / "logs" / "seed1-steps.jsonl").read_text().splitlines()

    spec = runner.RunSpec(task="toy", seeds=[1], output_dir=str(tmp_path / "b"), config=config)
    from uimer.training.schedules import SCHEDULES

    real_fit = SCHEDULES["standard"]

    def fit_cut_after_two_epochs(context):
        context.on_epoch = interrupt_after(2)
        return real_fit(context)

    monkeypatch.setitem(SCHEDULES, "standard", fit_cut_after_two_epochs)
    with pytest.raises(Interrupt):
        runner.run_experiment(spec, progress=False)
    assert (tmp_path / "b" / "checkpoints" / "seed1.pt").exists()
    monkeypatch.setitem(SCHEDULES, "standard", real_fit)
    resumed = runner.run_experiment(spec, progress=False)
    assert resumed["per_seed"][0]["test"] == whole["per_seed"][0]["test"]
    assert resumed["per_seed"][0]["epochs_run"] == 4
    assert (tmp_path / "b" / "logs" / "seed1-steps.jsonl").read_text().splitlines() == steps_whole
    assert not (tmp_path / "b" / "checkpoints" / "seed1.pt").exists()  # removed once the seed is stored
