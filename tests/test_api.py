"""The public API (`uimer.Aligner`, `uimer.alignment_loss`, the lazy exports) over every registered method, for
HF sequence and token classifiers and uimer's own TaskModel, on tiny in-memory BERTs."""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import replace

import pytest
import torch

import uimer
from conftest import make_tiny_encoder, make_tokenizer
from test_hf_adapters import CLASSES, KINDS, SENTENCES, features, hf_model, mlm_dir, relabelled  # noqa: F401
from uimer.data.collator import RationaleCollator
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.models.task_model import TaskModel

TOKENIZER = make_tokenizer()
DM_FAST = {"extractor_epochs": 1, "extractor_min_steps": 3}  # a few extractor steps: enough to exist and score


def options_for(name: str, mlm) -> dict:
    if name == "im-mlm":
        return {"mlm": str(mlm)}
    return dict(DM_FAST) if name.startswith("dm") else {}


def prepared_aligner(name: str, model, kind: TaskKind, mlm, **extra) -> uimer.Aligner:
    aligner = uimer.Aligner(name, alpha=1.0, **options_for(name, mlm), **extra)
    aligner.prepare(features(TOKENIZER, kind), TOKENIZER, seed=3, model=model)
    if aligner.family == "dm":
        stats = aligner.fit_extractor(model)
        assert set(stats) >= {"l_phi", "kl", "l0", "alpha"} and math.isfinite(stats["l_phi"])
    return aligner


def test_public_names_resolve_lazily():
    for name in uimer.__all__:
        assert getattr(uimer, name) is not None, name
    assert set(uimer.method_names()) == set(uimer.METHODS)
    assert uimer.method_names("im") == ["im-mask", "im-mlm", "im-prior", "im-uniform"]
    assert len(uimer.method_names("gb")) == 5 and len(uimer.method_names("dm")) == 2
    code = "import sys, uimer; assert 'torch' not in sys.modules and 'transformers' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)  # `import uimer` alone stays cheap
    with pytest.raises(AttributeError):
        uimer.not_a_name  # noqa: B018
    with pytest.raises(ConfigError, match="family"):
        uimer.method_names("xx")


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("name", sorted(n for n in uimer.METHODS if n != "baseline"))
def test_every_method_through_the_aligner_on_hf_models(name, kind, mlm_dir):  # noqa: F811
    torch.manual_seed(0)
    model = hf_model(kind, attn="sdpa")  # GB must switch it to eager itself
    aligner = prepared_aligner(name, model, kind, mlm_dir)
    if aligner.method.needs_double_backward:
        assert model.config._attn_implementation == "eager"
    inputs = RationaleCollator(TOKENIZER, kind)([{**f, "index": i} for i, f in enumerate(features(TOKENIZER, kind))])
    model.train()
    loss = None
    for shift in range(CLASSES):  # a gold output whose L_int is not 0 at this initialisation
        batch = relabelled(inputs["uimer_batch"], kind, shift)
        loss = aligner.loss(model, batch)
        if float(loss.detach()) > 0:
            break
    value = float(loss.detach())
    assert loss.dim() == 0 and math.isfinite(value) and value > 0, name
    model.zero_grad(set_to_none=True)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.base_model.parameters())

    out = aligner(model, inputs)  # the collated dict: its uimer_batch is read and left in place
    assert "uimer_batch" in inputs and out.active
    assert torch.allclose(out.loss, out.task_loss + aligner.alpha * out.alignment_loss)
    attribution = aligner.attribute(model, inputs)
    assert (attribution.scores if attribution.scores is not None else attribution.a_r) is not None


def test_aligner_on_uimer_taskmodel_and_alpha_zero_is_the_hf_loss():
    torch.manual_seed(1)
    task_model = TaskModel(make_tiny_encoder(len(TOKENIZER), seed=1, attn="sdpa"), TaskKind.CLASSIFICATION, CLASSES)
    examples = [Example(words=w, label=c, rationale=r) for w, c, r, _ in SENTENCES]
    split = encode_examples(examples, TOKENIZER, TaskKind.CLASSIFICATION)
    batch = split.collate(list(range(len(split))))
    aligner = uimer.Aligner("gb-huang-base").prepare(split, TOKENIZER, seed=0, model=task_model)
    assert task_model.encoder.config._attn_implementation == "eager"  # the TaskModel's encoder switched too
    task_model.eval()
    l_int = aligner.loss(task_model, batch)
    assert float(l_int.detach()) > 0
    functional = uimer.alignment_loss(task_model, batch, "gb-huang-base")
    torch.testing.assert_close(functional, l_int)

    hf = hf_model(TaskKind.CLASSIFICATION).eval()
    inputs = RationaleCollator(TOKENIZER)(features(TOKENIZER, TaskKind.CLASSIFICATION))
    off = uimer.Aligner("gb-huang-base", alpha=0.0)(hf, inputs)
    with torch.no_grad():
        hf_loss = hf(**{k: v for k, v in inputs.items() if k != "uimer_batch"}).loss
    assert not off.active and float(off.alignment_loss) == 0.0
    torch.testing.assert_close(off.loss.detach(), hf_loss)


def test_the_aligner_trains_on_the_clis_step_loss(monkeypatch):
    """The Aligner forms no loss of its own: `__call__` is `training.step.step_loss` (the CLI's L), bit for bit,
    both with L_int on and during warm-up."""
    import uimer.api
    from uimer.training.step import step_loss

    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["alignment"])
        return step_loss(*args, **kwargs)

    monkeypatch.setattr(uimer.api, "step_loss", spy)
    hf = hf_model(TaskKind.CLASSIFICATION).eval()
    inputs = RationaleCollator(TOKENIZER)(features(TOKENIZER, TaskKind.CLASSIFICATION))
    aligner = uimer.Aligner("gb-huang-base", alpha=0.7, warmup_steps=1).prepare(seed=0)
    off, on = aligner(hf, inputs, step=0), aligner(hf, inputs, step=1)
    assert calls == [False, True]
    terms = step_loss(aligner.view(hf), inputs["uimer_batch"], aligner.method, alpha=0.7, alignment=True)
    assert float(terms.l_int.detach()) > 0
    for mine, theirs in ((on.loss, terms.loss), (on.task_loss, terms.l_task), (on.alignment_loss, terms.l_int),
                         (on.logits, terms.logits), (off.loss, terms.l_task)):
        assert torch.equal(mine, theirs)
    assert not off.active and float(off.alignment_loss) == 0.0


def test_warmup_steps_switch_l_int_on_at_the_step():
    hf = hf_model(TaskKind.CLASSIFICATION).eval()
    inputs = RationaleCollator(TOKENIZER)(features(TOKENIZER, TaskKind.CLASSIFICATION))
    aligner = uimer.Aligner("gb-huang-base", warmup_steps=2)
    assert not aligner(hf, inputs, step=1).active
    assert aligner(hf, inputs, step=2).active
    with pytest.raises(ConfigError, match="step"):
        aligner(hf, inputs)


def test_functional_form_for_im_and_dm_and_its_refusals(tmp_path, mlm_dir):  # noqa: F811
    hf = hf_model(TaskKind.CLASSIFICATION).train()
    inputs = RationaleCollator(TOKENIZER)(features(TOKENIZER, TaskKind.CLASSIFICATION))
    with pytest.raises(ConfigError, match="tokenizer"):
        uimer.alignment_loss(hf, inputs, "im-uniform")
    loss = uimer.alignment_loss(hf, inputs, "im-mask", tokenizer=TOKENIZER, margin=4.0)  # wide margin: > 0
    assert float(loss.detach()) > 0
    with pytest.raises(ConfigError, match="extractor"):
        uimer.alignment_loss(hf, inputs, "dm-one-pass")
    aligner = prepared_aligner("dm-one-pass", hf, TaskKind.CLASSIFICATION, mlm_dir)
    path = aligner.save_extractor(tmp_path / "extractor.pt")
    hf.eval()
    from_file = uimer.alignment_loss(hf, inputs, "dm-one-pass", extractor=path)
    torch.testing.assert_close(from_file, aligner.loss(hf, inputs))
    with pytest.raises(ConfigError, match="RationaleCollator"):
        aligner.loss(hf, {"input_ids": inputs["input_ids"]})
    with pytest.raises(ConfigError, match="unknown method"):
        uimer.Aligner("gb-nope")
    with pytest.raises(ConfigError, match="option .margin. must be >= 0"):
        uimer.Aligner("im-mask", margin=-1)
    with pytest.raises(ConfigError, match="alpha"):
        uimer.Aligner("im-mask", alpha=-1)
    with pytest.raises(ConfigError, match="prepare"):
        uimer.Aligner("im-mask").loss(hf, inputs)
    with pytest.raises(ConfigError, match="fit_extractor"):
        uimer.Aligner("gb-huang-base").fit_extractor(hf)


def test_im_reuses_the_training_sets_only_for_training_batches():
    hf = hf_model(TaskKind.CLASSIFICATION)
    train = [{**f, "index": i} for i, f in enumerate(features(TOKENIZER, TaskKind.CLASSIFICATION))]
    aligner = uimer.Aligner("im-uniform").prepare(train, TOKENIZER, seed=0, model=hf)
    batch = uimer.as_batch(RationaleCollator(TOKENIZER)(train))
    assert aligner.method._is_cached(batch)
    other = replace(batch, input_ids=batch.input_ids.flip(0))
    assert not aligner.method._is_cached(other)
