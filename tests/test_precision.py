"""`--precision bf16`: the encoder runs under autocast, every loss stays fp32, and fp32 runs are unchanged."""

import math

import pytest
import torch

from conftest import make_tiny_encoder
from test_diffmask import _task  # the tiny intent/slot task with rationales
from uimer.data.encoding import encode_examples
from uimer.data.types import TaskKind
from uimer.interpret import METHODS, create_method
from uimer.models.task_model import TaskModel
from uimer.training.runner import RunSpec
from uimer.training.schedules import run_schedule
from uimer.training.trainer import TrainConfig, TrainingContext, set_seed

# im-mlm needs a trained masked LM (a path option); the other strategies share its code path.
NEEDS_EXTERNAL_MODEL = {"im-mlm"}
SMALL_DM = {"rounds": 2, "extractor_epochs": 1, "extractor_min_steps": 1, "model_epochs_per_round": 1}


def _run(tokenizer, method_name: str, kind: TaskKind, precision: str):
    task = _task(kind)
    set_seed(0)
    model = TaskModel(make_tiny_encoder(len(tokenizer), 0), kind, len(task.labels)).set_precision(precision)
    options = dict(SMALL_DM) if METHODS[method_name].family == "dm" else {}
    config = TrainConfig(lr=1e-3, batch_size=4, max_epochs=2, patience=1, eval_batch_size=16, precision=precision,
                         method_options=options)
    method = create_method(method_name, options)
    context = TrainingContext(
        model=model, task=task, train=encode_examples(task.train, tokenizer, kind),
        dev=encode_examples(task.dev, tokenizer, kind), test=encode_examples(task.test, tokenizer, kind),
        config=config, seed=0, tokenizer=tokenizer, device=torch.device("cpu"), method=method,
    )
    return run_schedule(context)


@pytest.mark.parametrize("kind", [TaskKind.CLASSIFICATION, TaskKind.TAGGING])
@pytest.mark.parametrize("method", sorted(set(METHODS) - NEEDS_EXTERNAL_MODEL))
def test_every_method_trains_in_bf16_with_finite_fp32_losses(tiny_tokenizer, method, kind):
    result = _run(tiny_tokenizer, method, kind, "bf16")
    losses = [h[k] for h in result.history for k in ("l_task", "l_int") if h.get(k) is not None]
    assert losses and all(math.isfinite(x) for x in losses)
    if METHODS[method].family in ("gb", "im"):
        assert any(h.get("l_int") is not None for h in result.history)  # the alignment loss really ran
    assert 0.0 <= result.test <= 1.0


def test_bf16_runs_the_encoder_in_bf16_and_returns_fp32(tiny_tokenizer):
    task = _task(TaskKind.CLASSIFICATION)
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer), 0), task.kind, len(task.labels)).eval()
    batch = next(iter(encode_examples(task.train, tiny_tokenizer, task.kind).batches(4)))
    seen: list[torch.dtype] = []
    model.encoder.encoder.layer[0].intermediate.dense.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    fp32 = model(batch)
    bf16 = model.set_precision("bf16")(batch)
    assert seen == [torch.float32, torch.bfloat16]
    assert fp32.dtype == bf16.dtype == torch.float32
    assert not torch.equal(fp32, bf16) and torch.allclose(fp32, bf16, atol=0.1)


def test_fp32_is_the_default_and_leaves_fingerprints_alone():
    spec = RunSpec(task="snips-intent", shot=1)
    assert spec.config.precision == "fp32"
    legacy = RunSpec(task="snips-intent", shot=1)
    bf16 = RunSpec(task="snips-intent", shot=1, config=TrainConfig(precision="bf16"))
    assert spec.fingerprint() == legacy.fingerprint() != bf16.fingerprint()
    with pytest.raises(ValueError, match="precision"):
        TaskModel(make_tiny_encoder(10), TaskKind.CLASSIFICATION, 2).set_precision("fp16")
