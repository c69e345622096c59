"""The contract every registered method keeps, checked for each name in `METHODS` on each model backend.

A method registered later is covered without editing this file: the parameters are read from the registry and
from `uimer.testing.BACKENDS` (uimer's `TaskModel`, and tiny in-memory HF `BertForSequenceClassification` and
`BertForTokenClassification` models through `uimer.models.adapters.adapt`, which is how library users run the
methods), and `uimer.testing.fast_options` gives any method the options that keep it to a few steps. Each
method is trained for one short seed under the schedule it declares, with uimer's own `fit` on every backend
(so a DM method has an extractor), then:
- L_int on a batch with rationales is a finite scalar, positive for every method but the baseline;
- L_int is exactly zero on the same batch without rationales;
- L_int alone sends gradient into the encoder's weights (for GB that path runs through the attribution,
  i.e. a second-order gradient);
- `attribute` gives per-piece scores (zero off the real pieces) and, given word ids, per-word scores, for every
  family but the baseline (which has none), and in eval mode leaves the global RNG (torch, Python, NumPy)
  untouched;
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
from uimer.testing import BACKENDS, fast_options, tiny_context, tiny_tokenizer, without_rationales
from uimer.training.schedules import run_schedule

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("contract")


def trained(name: str, tokenizer, workdir, backend: str = "taskmodel", seed: int = 3):
    """(context, method, seed result, a training batch with rationales) after one short seed of `name` on the
    tiny model of `backend` (whose task kind `BACKENDS` fixes)."""
    method = create_method(name, fast_options(name, workdir, tokenizer))
    context = tiny_context(method, tokenizer, BACKENDS[backend], seed=seed, backend=backend)
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
BACKEND_NAMES = list(BACKENDS)


def test_the_registry_is_complete():
    """Every family is represented, so the parametrised checks below do cover them all."""
    assert {spec.family for spec in METHODS.values()} == {"baseline", "gb", "im", "dm"}
    assert len(NAMES) >= 12


def test_every_backend_is_covered():
    """uimer's head and both HF heads (sequence and token classification) are parameters of the checks below."""
    assert BACKENDS == {"taskmodel": TaskKind.CLASSIFICATION, "hf-sequence": TaskKind.CLASSIFICATION,
                        "hf-token": TaskKind.TAGGING}


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_method_contract(name, backend, tokenizer, workdir):
    context, method, _, batch = trained(name, tokenizer, workdir, backend)
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
        scores = attribution.scores
        assert scores is not None and scores.shape == batch.input_ids.shape and bool(torch.isfinite(scores).all())
        assert bool((scores[~batch.real_mask] == 0).all())  # specials and padding score 0
        # words: every real piece its own word here, so each word's score is its piece's
        positions = torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids)
        word_ids = torch.where(batch.real_mask, positions, -1)
        words = method.attribute(model, batch, word_ids=word_ids, n_words=batch.input_ids.shape[1]).words
        assert words is not None and words.shape == batch.input_ids.shape
        assert torch.allclose(words[batch.real_mask].detach(), scores[batch.real_mask].detach(), atol=1e-6)
        assert bool(torch.isinf(words[~batch.real_mask]).all())  # no piece: no word score
    after = rng_states()
    assert torch.equal(before[0], after[0]) and before[1] == after[1] and np.array_equal(before[2], after[2])

    state = method.state_dict()
    again = create_method(name, method.options)
    again.prepare(context.method_setup())
    again.load_state_dict(state)
    assert _same(again.state_dict(), state)
    if state:  # stateful randomness (gate draws, replacement sets): the restored method continues identically
        assert torch.equal(alignment(again, model, batch), alignment(method, model, batch))


@pytest.mark.parametrize("backend", BACKEND_NAMES)
@pytest.mark.parametrize("name", NAMES)
def test_the_same_seed_gives_identical_numbers(name, backend, tokenizer, workdir):
    runs = []
    for _ in range(2):
        context, method, result, batch = trained(name, tokenizer, workdir, backend, seed=11)
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


def _settings(method) -> dict:
    """What a method made of its options: its attributes (generators by state), less the raw options dict."""
    out = {}
    for key, value in vars(method).items():
        if key == "options":
            continue
        out[key] = value.get_state() if isinstance(value, torch.Generator) else value
    return out


@pytest.mark.parametrize("name", NAMES)
def test_flag_defaults_are_the_method_defaults(name):
    """`uimer train` now records only the flags set away from their defaults, and a grid cell only what it sets,
    so a method given no option must behave exactly as one given every flag's default."""
    from uimer.interpret import method_option_defaults, options_for

    defaults = options_for(name, method_option_defaults())
    if name == "im-mlm":
        defaults.pop("mlm")  # no default masked LM: `--mlm` is required for im-mlm, tested in test_mlm
        given = {"mlm": "x"}
    else:
        given = {}
    bare, full = create_method(name, given), create_method(name, {**defaults, **given})
    a, b = _settings(bare), _settings(full)
    assert a.keys() == b.keys()
    for key in a:
        same = torch.equal(a[key], b[key]) if isinstance(a[key], torch.Tensor) else a[key] == b[key]
        assert same, f"{name}: {key} is {a[key]!r} without options but {b[key]!r} with the flags' defaults"


def test_the_fingerprint_covers_only_the_chosen_methods_options():
    from uimer.interpret import method_option_defaults
    from uimer.training.runner import RunSpec
    from uimer.training.trainer import TrainConfig

    def fingerprint(**options) -> str:
        return RunSpec(task="snips-intent", method="im-mask", shot=1,
                       config=TrainConfig(method_options=options)).fingerprint()

    every = method_option_defaults()
    assert "dm_gate" in every and "im_k" in every
    assert fingerprint(margin=0.5) == fingerprint(margin=0.5, dm_gate="hidden", huang_gate_p=0.3, rounds=3)
    assert fingerprint(margin=0.5) != fingerprint(margin=1.5)  # the method's own options do count
    assert fingerprint(**{**every, "margin": 0.5}) == fingerprint(
        **{k: v for k, v in every.items() if k in ("im_k", "max_rationale_fraction", "im_resample", "log_odds_floor",
                                                   "im_chunk", "mlm")}, margin=0.5)


@pytest.mark.parametrize(("variant", "argv"), [
    ("dm-one-pass", ["--method", "dm-one-pass", "--lr", "2e-4", "--alpha", "0.8", "--dm-gate", "hidden",
                     "--lr-extractor", "5e-4"]),
    ("baseline", ["--method", "baseline", "--lr", "2e-4"]),
    ("gb-huang-base", ["--method", "gb-huang-base", "--lr", "2e-4"]),
])
def test_uimer_train_has_the_fingerprint_of_the_grid_run_it_repeats(variant, argv, tmp_path):
    """The committed intent-1 run files record the grid's fingerprint; `uimer train` with the same settings
    (the ones the grid cell sets) must carry the same one, whichever other families' flags it knows. (These three
    were made under today's behaviour versions; the IM files of that column predate IM's version 2.)"""
    import json
    from pathlib import Path

    from uimer.cli import build_parser, train_specs

    committed = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "runs" / "snips-intent" / "1-shot"
    stored = json.loads((committed / variant / "seed55.json").read_text())
    args = build_parser().parse_args(["train", "--task", "snips-intent", "--shot", "1", "--max-length", "50",
                                      "--seeds", "55", "--device", "cpu", "--output-dir", str(tmp_path), *argv])
    ((_, spec),), _ = train_specs(args)
    assert spec.fingerprint() == stored["fingerprint"]


@pytest.mark.parametrize(("grid", "run", "argv"), [
    ("im-minilm", "intent-1/im-mask/seed55", ["--method", "im-mask", "--lr", "2e-4", "--alpha", "4", "--margin", "1.0"]),
    ("lowresource-minilm", "intent-1/im-mask-warm/seed55",
     ["--method", "im-mask", "--lr", "4e-4", "--margin", "0.5", "--warmup-epochs", "3"]),
    ("lowresource-minilm", "intent-1/dm-multi-round/seed55",
     ["--method", "dm-multi-round", "--lr", "2e-4", "--alpha", "0.8", "--dm-no-test-curve", "--dm-gate", "hidden",
      "--lr-extractor", "1e-3", "--model-epochs-per-round", "1", "--rounds", "50"]),
])
def test_uimer_train_has_the_fingerprint_of_todays_grid_cell(grid, run, argv, tmp_path):
    """The same settings on the command line as in a grid cell give the cell's fingerprint, flags given at
    their default value (`--margin 1.0`, `--lr-extractor 1e-3`) included, since the cell writes them too."""
    from uimer.cli import build_parser, train_specs
    from uimer.experiments.config import load_grid
    from uimer.experiments.sweep import plan_runs

    planned = {r.name: r.fingerprint for r in plan_runs(load_grid(grid))}
    args = build_parser().parse_args(["train", "--task", "snips-intent", "--shot", "1", "--max-length", "50",
                                      "--seeds", "55", "--device", "cpu", "--output-dir", str(tmp_path), *argv])
    ((_, spec),), _ = train_specs(args)
    assert spec.fingerprint() == planned[run]


def test_the_committed_tuning_study_keeps_its_fingerprint():
    """A tuning study's base spec stands for all its methods, so its fingerprint still covers every option; the
    committed study (made when every fingerprint did) is the same study to `uimer tune`."""
    import json
    from pathlib import Path

    from uimer.experiments.tune import Study

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "tuning" / "intent-1" / "study.json"
    stored = json.loads(path.read_text())
    assert Study.from_dict(stored).fingerprint() == stored["fingerprint"]
