"""uimer.hf: a transformers.Trainer whose loss adds alpha * L_int, on a tiny in-memory BERT."""

from __future__ import annotations

import math

import pytest
import torch

from conftest import make_tokenizer
from test_hf_adapters import SENTENCES, hf_model
from uimer.data.alignment import encode_with_rationales
from uimer.data.types import TaskKind
from uimer.errors import ConfigError

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="uimer.hf needs the [hf] extra (accelerate)")
from uimer.hf import UimerTrainer  # noqa: E402 - after the importorskip

TOKENIZER = make_tokenizer()


def dataset(kind: TaskKind = TaskKind.CLASSIFICATION, rationales: bool = True) -> list[dict]:
    words = [s[0] for s in SENTENCES]
    flags = [s[2] or [0] * len(s[0]) for s in SENTENCES]
    enc = encode_with_rationales(TOKENIZER, words, word_rationales=flags)
    rows = []
    for i, (_, label, _, tags) in enumerate(SENTENCES):
        row = {k: enc[k][i] for k in enc.keys() if rationales or k != "rationale_mask"}
        if kind is TaskKind.TAGGING:
            previous, labels = None, []
            for w in enc.word_ids(i):
                labels.append(-100 if w is None or w == previous else tags[w])
                previous = w
            row["labels"] = labels
        else:
            row["labels"] = label
        rows.append(row)
    return rows


def training_args(tmp_path, **overrides):
    options = {"output_dir": str(tmp_path), "per_device_train_batch_size": 2, "max_steps": 2, "learning_rate": 1e-3,
               "remove_unused_columns": False, "report_to": [], "save_strategy": "no", "use_cpu": True,
               "seed": 5, "logging_strategy": "no", **overrides}
    return transformers.TrainingArguments(**options)


def trainer(tmp_path, method="gb-huang-base", kind=TaskKind.CLASSIFICATION, alpha=1.0, **overrides):
    model = hf_model(kind, attn="sdpa")
    return UimerTrainer(model=model, args=training_args(tmp_path, **overrides), train_dataset=dataset(kind),
                        eval_dataset=dataset(kind, rationales=False), processing_class=TOKENIZER,
                        method=method, alpha=alpha)


def one_batch(t: UimerTrainer) -> dict:
    return t._prepare_inputs(next(iter(t.get_train_dataloader())))


@pytest.mark.parametrize("kind", (TaskKind.CLASSIFICATION, TaskKind.TAGGING), ids=lambda k: k.value)
@pytest.mark.parametrize("method", ["gb-huang-base", "gb-ghaeini", "im-uniform", "im-mask"])
def test_training_runs_and_the_loss_adds_alpha_times_l_int(method, kind, tmp_path):
    t = trainer(tmp_path, method, kind)
    if method.startswith("gb"):
        assert t.model.config._attn_implementation == "eager"  # switched from sdpa for the double backward
    inputs = one_batch(t)
    t.model.eval()  # no dropout: the three losses see the same network
    total = float(t.compute_loss(t.model, dict(inputs)).detach())  # GB differentiates: no torch.no_grad here
    t.alpha = 0.0
    task = float(t.compute_loss(t.model, dict(inputs)).detach())
    t.alpha = 1.0
    with torch.no_grad():
        hf_task = float(t.model(**{k: v for k, v in inputs.items() if k != "uimer_batch"}).loss)
    assert math.isfinite(total) and abs(task - hf_task) < 1e-5  # alpha = 0: the HF model's own loss
    assert total >= task
    before = {n: p.detach().clone() for n, p in t.model.named_parameters()}
    result = t.train()
    assert math.isfinite(result.training_loss)
    changed = [n for n, p in t.model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("bert.embeddings") for n in changed)
    metrics = t.evaluate()  # evaluation data without rationales: plain HF
    assert math.isfinite(metrics["eval_loss"])


def test_im_uses_the_sets_built_for_the_training_set(tmp_path):
    t = trainer(tmp_path, "im-uniform")
    inputs = one_batch(t)
    batch = inputs["uimer_batch"]
    assert bool((batch.index >= 0).all())
    assert t.method._is_cached(batch)  # the batch's examples are found in the sets built before training
    assert t.method.sets.original.shape[0] == len(SENTENCES)


def test_gradient_accumulation_averages_batch_means(tmp_path):
    """The loss is a batch mean and the trainer divides it by the accumulation steps (no num_items_in_batch)."""
    t = trainer(tmp_path, "gb-huang-base", gradient_accumulation_steps=2)
    assert t.model_accepts_loss_kwargs is False and t.loss_is_scaled_for_ga is False
    inputs = one_batch(t)
    for module in t.model.modules():  # training_step switches to train mode: no dropout, so losses compare
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    t.current_gradient_accumulation_steps = 2  # what the training loop sets before its steps
    step = float(t.training_step(t.model, dict(inputs)))
    full = float(t.compute_loss(t.model, dict(inputs)).detach())
    assert abs(step - full / 2) < 1e-4 * max(1.0, abs(full))


def test_refusals_name_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="remove_unused_columns=False"):
        trainer(tmp_path, remove_unused_columns=True)
    with pytest.raises(ConfigError, match="warmup_epochs: dm-one-pass"):
        trainer(tmp_path, "dm-one-pass")  # the extractor needs a task model to interpret
    with pytest.raises(ConfigError, match="train_dataset.*rationale_mask"):
        UimerTrainer(model=hf_model(TaskKind.CLASSIFICATION), args=training_args(tmp_path),
                     train_dataset=dataset(rationales=False), processing_class=TOKENIZER)


def test_training_logs_carry_l_task_and_l_int_and_warmup_keeps_l_int_off(tmp_path):
    t = trainer(tmp_path, "gb-huang-base", max_steps=3, logging_strategy="steps", logging_steps=1)
    t.aligner.warmup_steps = 1  # what warmup_epochs sets: L_task only for the first optimizer step
    t.train()
    logs = [e for e in t.state.log_history if "loss" in e]
    assert len(logs) == 3 and "l_int" not in logs[0] and all(e["l_int"] > 0 for e in logs[1:])
    assert all(math.isfinite(e["l_task"]) for e in logs)
    with_warmup = UimerTrainer(model=hf_model(TaskKind.CLASSIFICATION), args=training_args(tmp_path),
                               train_dataset=dataset(), processing_class=TOKENIZER, warmup_epochs=1.5)
    assert with_warmup.aligner.warmup_steps == 3  # 4 examples at batch 2: 2 steps an epoch


def test_dev_selection_keeps_the_best_epoch_ties_to_the_later_and_stops_after_patience(tmp_path):
    from transformers import TrainerControl, TrainerState

    from uimer.hf import DevSelection

    model = torch.nn.Linear(2, 1)
    selection = DevSelection("eval_accuracy", patience=1)
    state, control = TrainerState(), TrainerControl()
    selection.on_train_begin(None, state, control)
    kept = {}
    for epoch, value in enumerate([0.5, 0.7, 0.7, 0.6, 0.6], start=1):
        state.epoch = float(epoch)
        with torch.no_grad():
            model.weight.fill_(epoch)
        selection.on_evaluate(None, state, control, metrics={"eval_accuracy": value}, model=model)
        kept[epoch] = control.should_training_stop
    assert selection.best == 0.7 and selection.best_epoch == 3.0  # the tie went to the later epoch
    assert kept == {1: False, 2: False, 3: False, 4: False, 5: True}  # more than 1 epoch below the best
    selection.on_train_end(None, state, control, model=model)
    assert float(model.weight.detach()[0, 0]) == 3.0
    with pytest.raises(ConfigError, match="eval_accuracy"):
        selection.on_train_begin(None, state, control)
        selection.on_evaluate(None, state, control, metrics={"eval_f1": 1.0}, model=model)


@pytest.mark.parametrize("kind", (TaskKind.CLASSIFICATION, TaskKind.TAGGING), ids=lambda k: k.value)
@pytest.mark.parametrize("name", ["dm-one-pass", "dm-multi-round"])
def test_dm_extractor_phases_run_between_the_trainers_epochs(name, kind, tmp_path):
    options = {"extractor_epochs": 1, "extractor_min_steps": 2, "rounds": 2, "model_epochs_per_round": 1,
               "dm_gate": "hidden"}
    t = UimerTrainer(model=hf_model(kind), args=training_args(tmp_path, max_steps=-1, num_train_epochs=4,
                                                               logging_strategy="epoch"),
                     train_dataset=dataset(kind), processing_class=TOKENIZER, method=name, alpha=1.0,
                     method_options=options, warmup_epochs=1)
    assert t.method.extractor is None
    t.train()
    epochs = [p["epoch"] for p in t.dm_schedule.phases]
    assert epochs == ([1, 2] if name == "dm-multi-round" else [1])  # after the warm-up epoch; rounds of 1 epoch
    assert t.method.extractor is not None
    logs = [e for e in t.state.log_history if "loss" in e]
    assert "l_int" not in logs[0]  # warm-up epoch: L_task only
    assert all("l_int" in e and math.isfinite(e["l_int"]) for e in logs[1:])
    assert any(e["l_int"] > 0 for e in logs[1:])
