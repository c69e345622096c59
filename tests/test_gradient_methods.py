"""UIMER-GB: exact gradients (finite differences), RNG hygiene, hand-computed Huang losses, independence."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from conftest import make_tiny_encoder
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import ConfigError
from uimer.interpret import METHODS, create_method
from uimer.interpret.gradient import (
    ghaeini_terms,
    huang_base_terms,
    huang_gate_keep_probability,
    huang_loss,
    huang_order_terms,
    normalise_scores,
)
from uimer.models.task_model import TaskModel

GB_METHODS = ("gb-ghaeini", "gb-huang-base", "gb-huang-gate", "gb-huang-order", "gb-huang-gate-order")

CLASS_EXAMPLES = [
    Example(words=["play", "the", "song", "tomorrow"], label=1, rationale=[1, 0, 1, 0]),
    Example(words=["what", "is", "the", "weather", "in", "paris"], label=0, rationale=[0, 0, 0, 1, 0, 1]),
    Example(words=["book", "a", "movie"], label=2),  # no rationale: L_task only
]
TAG_EXAMPLES = [
    Example(words=["play", "songs", "tomorrow"], tags=[1, 2, 3], rationale=[0, 1, 1]),
    Example(words=["weather", "in", "paris"], tags=[1, 0, 3], rationale=[1, 0, 1]),
]
PAIR_EXAMPLES = [
    Example(words=["kids", "smiling"], pair_words=["kids", "frowning"], label=2, rationale=[0, 1, 0, 1]),
    Example(words=["children", "waving"], pair_words=["kids", "waving", "at", "camera"], label=0,
            rationale=[1, 0, 1, 0, 0, 0]),
]


def make_model(tokenizer, kind: TaskKind, num_labels: int, seed: int = 0, double: bool = False) -> TaskModel:
    torch.manual_seed(seed)
    model = TaskModel(make_tiny_encoder(len(tokenizer), seed), kind, num_labels)
    return model.double() if double else model


def make_batch(tokenizer, examples, kind: TaskKind):
    return encode_examples(examples, tokenizer, kind).collate(list(range(len(examples))))


def l_int(method, model: TaskModel, batch) -> torch.Tensor:
    """L_int exactly as the trainer computes it: through the training forward on the word embeddings."""
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)
    return method.alignment_loss(model, batch, logits, model.task_loss(logits, batch), embeds)


# -- 1. exact gradients --------------------------------------------------------------------------------
def _parameter_entries(model: TaskModel, batch) -> list[tuple[str, tuple[int, ...]]]:
    # word embedding rows of the first word of the first two examples (a row only moves L_int if its
    # example's hinge is active, so at least one of the two must be non-zero)
    entries = [
        ("encoder.embeddings.word_embeddings.weight", (int(batch.input_ids[0, 1]), 3)),
        ("encoder.embeddings.word_embeddings.weight", (int(batch.input_ids[1, 1]), 5)),
        ("encoder.encoder.layer.0.attention.self.query.weight", (1, 2)),
        ("encoder.encoder.layer.1.output.dense.weight", (0, 5)),
        ("head.weight", (0, 7)),
        ("head.weight", (1, 7)),
    ]
    if model.crf is not None:
        entries.append(("crf.transitions", (1, 3)))
    return entries


@pytest.mark.parametrize(
    ("method_name", "kind"),
    [
        ("gb-ghaeini", TaskKind.CLASSIFICATION),
        ("gb-huang-base", TaskKind.CLASSIFICATION),
        pytest.param("gb-huang-order", TaskKind.CLASSIFICATION, marks=pytest.mark.slow),
        ("gb-ghaeini", TaskKind.TAGGING),
        ("gb-huang-base", TaskKind.TAGGING),
    ],
)
def test_l_int_gradient_matches_finite_differences(tiny_tokenizer, method_name, kind):
    examples = TAG_EXAMPLES if kind is TaskKind.TAGGING else CLASS_EXAMPLES
    batch = make_batch(tiny_tokenizer, examples, kind)
    model = make_model(tiny_tokenizer, kind, num_labels=4, seed=3, double=True).eval()  # dropout off
    method = create_method(method_name)
    params = dict(model.named_parameters())
    entries = _parameter_entries(model, batch)

    loss = l_int(method, model, batch)
    assert loss.item() > 0  # a zero loss would make the check vacuous
    grads = torch.autograd.grad(loss, [params[name] for name, _ in entries])

    h = 1e-6
    moved: dict[str, float] = {}
    for (name, index), grad in zip(entries, grads, strict=True):
        p = params[name]
        with torch.no_grad():
            original = p[index].item()
            p[index] = original + h
        up = l_int(method, model, batch).item()
        with torch.no_grad():
            p[index] = original - h
        down = l_int(method, model, batch).item()
        with torch.no_grad():
            p[index] = original
        numeric = (up - down) / (2 * h)
        assert grad[index].item() == pytest.approx(numeric, rel=1e-5, abs=1e-9), name
        moved[name] = max(moved.get(name, 0.0), abs(numeric))
    assert min(moved.values()) > 1e-7, moved  # every checked parameter really moves L_int


def test_plain_gradient_sum_is_degenerate_under_layernorm(tiny_tokenizer):
    # LayerNorm right after the embeddings is shift-invariant, so every input gradient sums to 0 over the
    # embedding dimensions: the paper's literal Ghaeini saliency is 0 for BERT-style encoders, gradient x input
    # is not.
    batch = make_batch(tiny_tokenizer, CLASS_EXAMPLES, TaskKind.CLASSIFICATION)
    model = make_model(tiny_tokenizer, TaskKind.CLASSIFICATION, 3, double=True).eval()
    literal = create_method("gb-ghaeini", {"ghaeini_saliency": "grad-sum"}).attribute(model, batch).scores
    default = create_method("gb-ghaeini").attribute(model, batch).scores
    assert literal.abs().max().item() < 1e-12
    assert default[batch.real_mask].abs().mean().item() > 1e-5
    with pytest.raises(ConfigError):
        create_method("gb-ghaeini", {"ghaeini_saliency": "nonsense"})


# -- 2. the attribution pass does not touch the training RNG ---------------------------------------------
@pytest.mark.parametrize("method_name", GB_METHODS)
def test_attribution_pass_keeps_rng_and_mode(tiny_tokenizer, method_name):
    batch = make_batch(tiny_tokenizer, CLASS_EXAMPLES, TaskKind.CLASSIFICATION)
    model = make_model(tiny_tokenizer, TaskKind.CLASSIFICATION, 3).train()  # dropout on
    method = create_method(method_name)
    before = torch.get_rng_state()
    attribution = method.attribute(model, batch, create_graph=True)
    assert torch.equal(before, torch.get_rng_state())
    assert model.training  # the mode is restored
    assert attribution.scores.requires_grad
    assert attribution.valid.tolist() == [True, True, True]
    # the scores are defined on real pieces only
    assert torch.all(attribution.scores[~batch.real_mask] == 0)


@pytest.mark.parametrize("method_name", GB_METHODS)
def test_alignment_loss_draws_nothing_from_the_global_rng(tiny_tokenizer, method_name):
    batch = make_batch(tiny_tokenizer, CLASS_EXAMPLES, TaskKind.CLASSIFICATION)
    model = make_model(tiny_tokenizer, TaskKind.CLASSIFICATION, 3).train()
    method = create_method(method_name)
    method.prepare(SimpleNamespace(seed=55))
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)  # the training forward consumes dropout draws
    before = torch.get_rng_state()
    loss = method.alignment_loss(model, batch, logits, model.task_loss(logits, batch), embeds)
    assert torch.equal(before, torch.get_rng_state())
    assert torch.isfinite(loss)
    loss.backward()  # the double backward runs


def test_gate_draws_are_seeded_by_the_run_seed():
    scores = torch.tensor([[0.0, 0.3, 0.2, 0.5]] * 64)
    rationale = torch.tensor([[False, True, False, False]] * 64)  # p = 0.3, keep probability 0.7

    def draws(seed: int) -> torch.Tensor:
        method = create_method("gb-huang-gate")
        method.prepare(SimpleNamespace(seed=seed))
        return torch.cat([method.sample_gate(scores, rationale) for _ in range(10)])

    assert torch.equal(draws(55), draws(55))
    assert not torch.equal(draws(55), draws(42))
    assert draws(55).mean().item() == pytest.approx(0.7, abs=0.05)


# -- 3. Huang variants, by hand --------------------------------------------------------------------------
# Two 5-piece examples, rationale on pieces 1 and 2 (k = 2), every piece real:
#   A: s = [0.1, 0.4, 0.2, 0.2, 0.1]
#      base  = (0.4 - 1/2)^2 + (0.2 - 1/2)^2 = 0.01 + 0.09 = 0.10
#      order: M = max(0.1, 0.2, 0.1) = 0.2; 0.4/0.2 - 1 = 1 -> 0, 0.2/0.2 - 1 = 0 -> 0; order = 0
#      p = 0.4 + 0.2 = 0.6 -> keep probability 0.4
#      reference gate target 1: (0.4 - 1)^2 + (0.2 - 1)^2 = 0.36 + 0.64 = 1.00
#   B: s = [0.1, 0.4, 0.15, 0.25, 0.1]
#      base  = (0.4 - 0.5)^2 + (0.15 - 0.5)^2 = 0.01 + 0.1225 = 0.1325
#      order: M = 0.25; 0.4/0.25 - 1 = 0.6 -> 0, 0.15/0.25 - 1 = -0.4 -> 0.16; order = 0.16
#      p = 0.55 -> keep probability 0.45
#   C: s = [0.2] * 5 without rationale: excluded from every mean.
S = torch.tensor([[0.1, 0.4, 0.2, 0.2, 0.1], [0.1, 0.4, 0.15, 0.25, 0.1], [0.2] * 5], dtype=torch.float64)
R = torch.tensor([[False, True, True, False, False]] * 2 + [[False] * 5])
REAL = torch.ones(3, 5, dtype=torch.bool)


def test_huang_terms_by_hand():
    assert huang_base_terms(S, R).tolist() == pytest.approx([0.10, 0.1325, 0.0])
    assert huang_base_terms(S, R, target="one").tolist()[0] == pytest.approx(1.00)
    assert huang_order_terms(S, R, REAL).tolist() == pytest.approx([0.0, 0.16, 0.0])
    assert huang_gate_keep_probability(S, R).tolist() == pytest.approx([0.4, 0.45, 1.0])


def test_huang_losses_by_hand():
    # the reference's reductions (issue 29 fix 2): base/order summed over the batch (C adds 0) ...
    assert huang_loss("base", S, R, REAL).item() == pytest.approx(0.10 + 0.1325)  # the old mean: 0.11625
    assert huang_loss("order", S, R, REAL).item() == pytest.approx(0.0 + 0.16)  # the old mean: 0.08
    # ... the gate variants averaged over the whole batch, C included
    z = torch.tensor([1.0, 0.0, 1.0])
    assert huang_loss("gate", S, R, REAL, z).item() == pytest.approx((0.10 * 1 + 0.1325 * 0 + 0.0) / 3)
    z = torch.tensor([0.0, 1.0, 1.0])
    assert huang_loss("gate-order", S, R, REAL, z).item() == pytest.approx((0.0 * 0 + 0.16 * 1 + 0.0) / 3)
    with pytest.raises(ValueError):
        huang_loss("gate", S, R, REAL)
    assert huang_loss("base", S, torch.zeros_like(R), REAL).item() == 0.0


def test_huang_base_and_order_grow_with_the_batch():
    """Issue 29 fix 2: repeating the batch doubles base/order L_int (a mean would not change it)."""
    for variant in ("base", "order"):
        one = huang_loss(variant, S[1:2], R[1:2], REAL[1:2]).item()
        two = huang_loss(variant, S[1:2].repeat(2, 1), R[1:2].repeat(2, 1), REAL[1:2].repeat(2, 1)).item()
        assert one > 0 and two == pytest.approx(2 * one)


def test_special_and_padding_pieces_are_excluded():
    # [CLS] w1 w2 w3 w4 w5 [SEP] [PAD]: gradient norms g, only the 5 words are real.
    g = torch.tensor([[5.0, 2.0, 8.0, 4.0, 4.0, 2.0, 7.0, 9.0]], dtype=torch.float64)
    real = torch.tensor([[False, True, True, True, True, True, False, False]])
    s = normalise_scores(g, real)
    assert s.tolist()[0] == pytest.approx([0.0, 0.1, 0.4, 0.2, 0.2, 0.1, 0.0, 0.0])  # g / 20 on real pieces
    rationale = torch.tensor([[False, False, True, True, False, False, False, False]])  # words 2 and 3
    assert huang_base_terms(s, rationale).item() == pytest.approx(0.10)  # = example A above
    assert huang_order_terms(s, rationale, real).item() == pytest.approx(0.0)  # M = 0.2, as in A
    # the order maximum ignores non-real pieces even when they carry a (large) score: counting [CLS] = 0.9
    # would give (0.4/0.9 - 1)^2 + (0.2/0.9 - 1)^2 > 0
    s_leaky = s.clone()
    s_leaky[0, 0] = 0.9
    assert huang_order_terms(s_leaky, rationale, real).item() == pytest.approx(0.0)


def test_order_guards_without_non_rationales_or_tiny_maximum():
    s = torch.tensor([[0.5, 0.5, 0.0], [0.6, 0.4, 0.0]], dtype=torch.float64, requires_grad=True)
    rationale = torch.tensor([[True, True, False], [True, False, False]])
    real = torch.tensor([[True, True, False], [True, True, True]])
    # example 0 has no non-rationale piece; example 1: M = 0.4 -> 0.6/0.4 - 1 > 0 -> 0
    terms = huang_order_terms(s, rationale, real)
    assert terms.tolist() == [0.0, 0.0]
    zero = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = huang_order_terms(zero, torch.tensor([[True, False, False]]), torch.ones(1, 3, dtype=torch.bool))
    assert t.item() == 0.0  # M = 0 below the guard, not inf or NaN
    (grad,) = torch.autograd.grad(t, zero)
    assert torch.all(torch.isfinite(grad))


def test_ghaeini_hinge_sums_violations():
    a = torch.tensor([[0.5, -0.2, -0.3, 0.1], [-1.0, 2.0, 0.0, 0.0]])
    rationale = torch.tensor([[True, True, True, False], [False, True, False, False]])
    # example 0: max(0, -0.5) + max(0, 0.2) + max(0, 0.3) = 0.5; example 1: its rationale is positive -> 0
    assert ghaeini_terms(a, rationale).tolist() == pytest.approx([0.5, 0.0])


# -- 4. per-example independence ---------------------------------------------------------------------
@pytest.mark.parametrize("method_name", ["gb-ghaeini", "gb-huang-base"])
def test_attribution_of_an_example_ignores_its_batch_mates(tiny_tokenizer, method_name):
    model = make_model(tiny_tokenizer, TaskKind.CLASSIFICATION, 3, seed=1)
    method = create_method(method_name)
    first = CLASS_EXAMPLES[0]
    others = [
        Example(words=["book", "a", "movie"], label=2, rationale=[1, 0, 1]),
        Example(words=["show", "me", "the", "weather", "in", "paris", "tomorrow", "and", "play", "music"], label=0),
    ]
    n = len(make_batch(tiny_tokenizer, [first], TaskKind.CLASSIFICATION).input_ids[0])
    alone = method.attribute(model, make_batch(tiny_tokenizer, [first], TaskKind.CLASSIFICATION)).scores[0]
    for other in others:
        batch = make_batch(tiny_tokenizer, [first, other], TaskKind.CLASSIFICATION)
        scores = method.attribute(model, batch).scores
        assert torch.allclose(scores[0, :n], alone, rtol=1e-4, atol=1e-7)
        assert torch.all(scores[0, n:] == 0)
    assert alone.abs().sum() > 0
    if method_name.startswith("gb-huang"):
        assert alone.sum().item() == pytest.approx(1.0)


# -- 5. every task kind, batches without rationales, the trainer ----------------------------------------
@pytest.mark.parametrize("method_name", GB_METHODS)
@pytest.mark.parametrize(
    ("kind", "examples", "num_labels"),
    [(TaskKind.CLASSIFICATION, CLASS_EXAMPLES, 3), (TaskKind.TAGGING, TAG_EXAMPLES, 4),
     (TaskKind.PAIR, PAIR_EXAMPLES, 3)],
)
def test_every_task_kind_and_rationale_free_batches(tiny_tokenizer, method_name, kind, examples, num_labels):
    model = make_model(tiny_tokenizer, kind, num_labels)
    method = create_method(method_name)
    method.prepare(SimpleNamespace(seed=1))
    loss = l_int(method, model, make_batch(tiny_tokenizer, examples, kind))
    assert torch.isfinite(loss) and loss.item() >= 0
    loss.backward()
    bare = [Example(**{**e.__dict__, "rationale": None}) for e in examples]
    zero = l_int(method, model, make_batch(tiny_tokenizer, bare, kind))
    assert zero.item() == 0.0 and not zero.requires_grad


def test_fit_logs_l_int_for_gb(tiny_tokenizer):
    from uimer.training.trainer import TrainConfig, TrainingContext, fit

    task = TaskData("toy", TaskKind.CLASSIFICATION, ["a", "b", "c"], CLASS_EXAMPLES, CLASS_EXAMPLES, CLASS_EXAMPLES)
    split = encode_examples(CLASS_EXAMPLES, tiny_tokenizer, TaskKind.CLASSIFICATION)
    records: list[dict] = []
    method = create_method("gb-huang-gate-order")
    context = TrainingContext(
        model=make_model(tiny_tokenizer, TaskKind.CLASSIFICATION, 3), task=task, train=split, dev=split, test=split,
        config=TrainConfig(max_epochs=2, batch_size=2, warmup_epochs=0.5), seed=55, tokenizer=tiny_tokenizer,
        device=torch.device("cpu"), method=method, step_log=records.append,
    )
    method.prepare(context.method_setup())
    result = fit(context)
    assert result.epochs_run == 2
    # warm-up 0.5 epoch = the first of the two batches per epoch runs on L_task only
    assert records[0]["l_int"] is None
    assert all(r["l_int"] is not None and math.isfinite(r["l_int"]) for r in records[1:])


# -- registry and CLI ---------------------------------------------------------------------------------
def test_registry_and_cli_list_the_gb_methods(capsys, monkeypatch):
    from uimer.cli import main

    monkeypatch.setenv("COLUMNS", "1000")  # argparse would otherwise wrap names at their hyphens

    for name in GB_METHODS:
        assert METHODS[name].family == "gb"
        method = create_method(name)
        assert method.name == name and method.needs_double_backward and method.schedule == "standard"
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for name in GB_METHODS:
        assert name in out
