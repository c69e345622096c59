"""The contract every registered method keeps, checked for each name in `METHODS` on tiny in-memory models.

A method registered later is covered without editing this file: the parameters are read from the registry,
and `uimer.testing.fast_options` gives any method the options that keep it to a few steps. Each method is
trained for one short seed under the schedule it declares (so a DM method has an extractor), then:
- L_int on a batch with rationales is a finite scalar, positive for every method but the baseline;
- L_int is exactly zero on the same batch without rationales;
- L_int alone sends gradient into the encoder's weights (for GB that path runs through the attribution,
  i.e. a second-order gradient);
- `attribute` in eval mode leaves the global RNG (torch, Python, NumPy) untouched;
- `state_dict` round-trips into a freshly prepared method, which then gives the same L_int;
- the same seed gives identical numbers (training result, L_int, attributions).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from uimer.data.types import TaskKind
from uimer.interpret import METHODS, create_method
from uimer.testing import fast_options, tiny_context, tiny_tokenizer, without_rationales
from uimer.training.schedules import run_schedule


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP contention on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("contract")


def trained(name: str, tokenizer, workdir, kind: TaskKind = TaskKind.CLASSIFICATION, seed: int = 3):
    """(context, method, seed result, a training batch with rationales) after one short seed of `name`."""
    method = create_method(name, fast_options(name, workdir, tokenizer))
    context = tiny_context(method, tokenizer, kind, seed=seed)
    result = run_schedule(context)
    batch = next(iter(context.train.batches(len(context.train))))  # all 8 training examples
    assert bool(batch.has_rationale.any())
    return context, method, result, batch


def alignment(method, model, batch) -> torch.Tensor:
    """L_int as the training step computes it: on the forward of the word embeddings, kept in the graph."""
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)
    return method.alignment_loss(model, batch, logits, model.task_loss(logits, batch), embeds)


def rng_states() -> tuple:
    return torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy()


NAMES = sorted(METHODS)


def test_the_registry_is_complete():
    """Every family is represented, so the parametrised checks below do cover them all."""
    assert {spec.family for spec in METHODS.values()} == {"baseline", "gb", "im", "dm"}
    assert len(NAMES) >= 12


@pytest.mark.parametrize("name", NAMES)
def test_method_contract(name, tokenizer, workdir):
    context, method, _, batch = trained(name, tokenizer, workdir)
    model = context.model.eval()  # dropout off: the numbers below must not depend on dropout draws

    loss = alignment(method, model, batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    if method.family == "baseline":
        assert float(loss) == 0.0
    else:
        assert float(loss.detach()) > 0, f"{name}: L_int is 0 on a batch with rationales; nothing would be learnt"

    empty = alignment(method, model, without_rationales(batch))
    assert empty.dim() == 0 and float(empty) == 0.0

    if method.family != "baseline":
        model.zero_grad(set_to_none=True)
        alignment(method, model, batch).backward()
        grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
        assert grads and any(bool(g.abs().sum() > 0) for g in grads), f"{name}: L_int does not reach the encoder"
        model.zero_grad(set_to_none=True)

    before = rng_states()
    if method.family == "baseline":
        with pytest.raises(NotImplementedError):
            method.attribute(model, batch)
    else:
        attribution = method.attribute(model, batch)
        assert attribution is not None
    after = rng_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])

    state = method.state_dict()
    again = create_method(name, method.options)
    again.prepare(context.method_setup())
    again.load_state_dict(state)
    assert _same(again.state_dict(), state)
    if state:  # stateful randomness (gate draws, replacement sets): the restored method continues identically
        assert torch.equal(alignment(again, model, batch), alignment(method, model, batch))


@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_identical_numbers(name, tokenizer, workdir):
    runs = []
    for _ in range(2):
        context, method, result, batch = trained(name, tokenizer, workdir, seed=11)
        model = context.model.eval()
        loss = float(alignment(method, model, batch).detach())
        scores = None
        if method.family != "baseline":
            attribution = method.attribute(model, batch)
            scores = [None if t is None else t.detach().clone()
                      for t in (attribution.scores, attribution.a_r, attribution.a_n)]
        runs.append((result.dev, result.test, result.best_epoch, result.history, loss, scores))
    first, second = runs
    assert first[:5] == second[:5]
    if first[5] is not None:
        assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(first[5], second[5], strict=True))


def _same(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    return all(torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a)
