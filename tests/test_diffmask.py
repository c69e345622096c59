"""UIMER-DM: hard-concrete maths, Eq. 7, the Lagrangian, frozen phases, a learnable toy, and both schedules."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import make_tiny_encoder
from uimer.data.encoding import Batch, encode_examples
from uimer.data.types import TaskKind
from uimer.interpret import METHODS, create_method
from uimer.interpret.diffmask import DMOptions, dm_margin_loss
from uimer.interpret.extractor import ALPHA_MAX, DiffMaskExtractor, extractor_loss, piece_scores, read_states
from uimer.interpret.hard_concrete import deterministic_gate, expected_l0, gate_scores, hard_concrete_sample
from uimer.models.modes import eval_mode, frozen
from uimer.models.task_model import TaskModel
from uimer.testing import tiny_task
from uimer.training.schedules import dm_phase_steps, run_schedule, train_extractor_phase, train_model_phase
from uimer.training.step import extractor_step, make_extractor_optimizers
from uimer.training.trainer import TrainConfig, TrainingContext

pytestmark = pytest.mark.usefixtures("one_thread")


# -- hard concrete --------------------------------------------------------------------------------------
def test_expected_l0_closed_form_and_monte_carlo():
    logits = torch.tensor([-3.0, -1.0, 0.0, 0.5, 2.0])
    # P(z > 0) = P(concrete y > 1/6) = sigmoid(logit - 0.2 * log(0.2)) = sigmoid(logit + 0.2 ln 5)
    closed = torch.sigmoid(logits + 0.2 * math.log(5.0))
    assert torch.allclose(expected_l0(logits), closed)
    assert expected_l0(torch.tensor(0.0)).item() == pytest.approx(0.57978, abs=1e-5)  # sigmoid(0.2 ln 5 = 0.32189)
    samples = hard_concrete_sample(logits.expand(200_000, -1), torch.Generator().manual_seed(0))
    assert samples.min() >= 0 and samples.max() <= 1
    monte_carlo = (samples > 0).float().mean(0)
    assert torch.allclose(monte_carlo, closed, atol=0.01)


def test_deterministic_gate_and_scores():
    logits = torch.tensor([[[-5.0, 0.0], [math.log(5.0), -math.log(5.0)]]])  # (B=1, L=2, K=2)
    gate = deterministic_gate(logits)
    # clamp(-0.2 + 1.2 sigmoid(x), 0, 1): x = -5 -> 0 (clamped); x = 0 -> 0.4; x = ln 5 -> -0.2 + 1.2 * 5/6 = 0.8;
    # x = -ln 5 -> -0.2 + 1.2 * 1/6 = 0 exactly (r = 1: the gate approaches 1 but never reaches it)
    assert gate[0, 0].tolist() == pytest.approx([0.0, 0.4])
    assert gate[0, 1].tolist() == pytest.approx([0.8, 0.0], abs=1e-6)
    assert gate_scores(logits, "gate")[0].tolist() == pytest.approx([0.0, gate[0, 1].prod().item()])
    keep = gate_scores(logits, "keep-prob")
    assert keep[0, 0].item() == pytest.approx((expected_l0(torch.tensor(-5.0)) * expected_l0(torch.tensor(0.0))).item())


# -- Eq. 7 ----------------------------------------------------------------------------------------------
def test_margin_loss_hand_computed():
    # positions: [CLS] p1 p2 p3 p4 [SEP] pad
    scores = torch.tensor([
        [0.95, 0.8, 0.4, 0.5, 0.2, 0.9, 0.99],  # R = {p1, p2}; M = max(0.5, 0.2) = 0.5 (specials/pad ignored)
        [0.95, 0.1, 0.4, 0.2, 0.0, 0.9, 0.0],   # R = {p1}; M = max(0.4, 0.2) = 0.4 (p4 is padding here)
        [0.95, 0.1, 0.9, 0.3, 0.2, 0.9, 0.0],   # no rationale: excluded from the average
    ])
    real = torch.tensor([
        [0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 1, 0, 0, 0],
        [0, 1, 1, 1, 1, 0, 0],
    ], dtype=torch.bool)
    rationale = torch.tensor([
        [0, 1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0],
    ], dtype=torch.float)
    # example 1: min(0.8/0.5 - 1, 0)^2 + min(0.4/0.5 - 1, 0)^2 = 0 + 0.2^2 = 0.04
    # example 2: min(0.1/0.4 - 1, 0)^2 = 0.75^2 = 0.5625
    # summed over the batch, as the reference (the paper's alphas were tuned on the sum): 0.04 + 0.5625
    loss = dm_margin_loss(scores, rationale, real)
    assert loss.item() == pytest.approx(0.6025, abs=1e-6)  # the old mean over rationale examples gave 0.30125
    # were [CLS] (0.95) counted as a non-rationale, example 1 would give (0.8/0.95-1)^2 + (0.4/0.95-1)^2 instead
    assert dm_margin_loss(scores, torch.zeros_like(rationale), real).item() == 0.0
    # an all-rationale example has nothing to rank against and contributes 0 (but counts as having rationales)
    all_r = dm_margin_loss(scores[1:2], real[1:2].float(), real[1:2])
    assert all_r.item() == 0.0


def test_margin_loss_is_a_batch_sum_that_grows_with_the_batch():
    """Issue 29 fix 1: repeating a batch doubles L_int (a mean would leave it unchanged)."""
    scores = torch.tensor([[0.0, 0.1, 0.4, 0.2, 0.0]])
    real = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    rationale = torch.tensor([[0, 1, 0, 0, 0]], dtype=torch.float)
    one = dm_margin_loss(scores, rationale, real)
    two = dm_margin_loss(scores.repeat(2, 1), rationale.repeat(2, 1), real.repeat(2, 1))
    assert one.item() == pytest.approx(0.75**2) and two.item() == pytest.approx(2 * one.item())
    # examples without rationales add nothing and do not dilute it
    padded = dm_margin_loss(torch.cat([scores, scores]), torch.cat([rationale, torch.zeros_like(rationale)]),
                            real.repeat(2, 1))
    assert padded.item() == pytest.approx(one.item())


def test_margin_loss_gradient_pushes_rationale_up_and_max_down():
    scores = torch.tensor([[0.0, 0.3, 0.6, 0.1, 0.0]], requires_grad=True)
    real = torch.tensor([[0, 1, 1, 1, 0]], dtype=torch.bool)
    rationale = torch.tensor([[0, 1, 0, 0, 0]], dtype=torch.float)
    dm_margin_loss(scores, rationale, real).backward()
    grad = scores.grad[0]
    assert grad[1] < 0 and grad[2] > 0  # raise a_R, lower the non-rationale maximum
    assert grad[0] == 0 and grad[3] == 0 and grad[4] == 0


# -- tiny task helpers ----------------------------------------------------------------------------------
_task = tiny_task  # the tiny intent/slot task with rationales (test_precision imports it from here)


def _context(tokenizer, kind=TaskKind.CLASSIFICATION, method="dm-one-pass", seed=0, options=None, **config):
    task = _task(kind)
    torch.manual_seed(seed)
    model = TaskModel(make_tiny_encoder(len(tokenizer), seed), kind, len(task.labels))
    config = {"batch_size": 4, "max_epochs": 2, "patience": 1, "lr": 1e-3, "eval_batch_size": 16, **config}
    cfg = TrainConfig(method_options=dict(options or {}), **config)
    dm = create_method(method, cfg.method_options)
    context = TrainingContext(
        model=model, task=task, train=encode_examples(task.train, tokenizer, kind),
        dev=encode_examples(task.dev, tokenizer, kind), test=encode_examples(task.test, tokenizer, kind),
        config=cfg, seed=seed, tokenizer=tokenizer, device=torch.device("cpu"), method=dm,
    )
    dm.prepare(context.method_setup())
    return context, dm


def _snapshot(module: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _all_equal(module: nn.Module, snapshot: dict) -> bool:
    return all(torch.equal(v, snapshot[k]) for k, v in module.state_dict().items())


# -- frozen sides ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "gate"), [(TaskKind.CLASSIFICATION, "input"), (TaskKind.TAGGING, "hidden")])
def test_each_phase_leaves_the_frozen_side_bit_identical(tiny_tokenizer, kind, gate):
    # Weight decay on: frozen parameters must not be decayed either.
    context, dm = _context(tiny_tokenizer, kind, options={"dm_gate": gate, "extractor_epochs": 2, "dm_eps": -1.0},
                           weight_decay=0.1, alpha=5.0)
    extractor = dm.build_extractor(1)
    dm.extractor = extractor
    model = context.model
    shuffler, noise = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)

    model_before, ext_before = _snapshot(model), _snapshot(extractor)
    train_extractor_phase(context, dm, extractor, 1, 1e-2, shuffler, noise, [])
    assert _all_equal(model, model_before)
    assert not _all_equal(extractor, ext_before)  # the extractor did learn
    assert all(p.requires_grad for p in model.parameters())  # flags restored

    from uimer.training.schedules import BestState

    best = BestState(-1.0, _snapshot(model), None, 0, 0)
    model_before, ext_before = _snapshot(model), _snapshot(extractor)
    history: list[dict] = []
    train_model_phase(context, dm, extractor, 1, 1e-3, 1, best, 0, shuffler, history)
    assert _all_equal(extractor, ext_before)
    assert not _all_equal(model, model_before)
    assert history[-1]["l_int"] is not None and history[-1]["l_int"] >= 0


def test_model_phase_l_int_reaches_theta_through_hidden_states(tiny_tokenizer):
    context, dm = _context(tiny_tokenizer)
    extractor = dm.build_extractor(1)
    with torch.no_grad():
        extractor.gates.bias.fill_(-1.0)  # unsaturated gates, so scores differ between pieces
    batch = next(iter(context.train.batches(8))).to("cpu")
    model = context.model
    with frozen(extractor):
        from uimer.interpret.diffmask import dm_alignment_loss

        loss = dm_alignment_loss(model, batch, extractor, "keep-prob")
        loss.backward()
    assert loss.item() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert model.encoder.encoder.layer[-1].output.dense.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in extractor.parameters())


@pytest.mark.parametrize("gate", ["input", "hidden"])
def test_tagging_constraint_is_per_word_kl(tiny_tokenizer, gate):
    context, dm = _context(tiny_tokenizer, TaskKind.TAGGING, options={"dm_gate": gate})
    extractor = dm.build_extractor(1)
    batch = next(iter(context.train.batches(8)))
    model = context.model.eval()
    with torch.no_grad():
        extractor.gates.bias.fill_(100.0)  # every gate open (logits >= 90): masked == clean, KL = 0
        _, stats = extractor_loss(model, extractor, batch, eps=0.1)
        assert stats["kl"] == pytest.approx(0.0, abs=1e-6)
        extractor.gates.bias.fill_(-100.0)  # every real piece replaced by the placeholder
        _, stats = extractor_loss(model, extractor, batch, eps=0.1)
        assert stats["kl"] > 1e-4 and stats["l0"] < 1e-30


# -- the Lagrange multiplier ----------------------------------------------------------------------------
def test_alpha_ascends_when_kl_exceeds_eps_and_stays_clamped(tiny_tokenizer):
    context, dm = _context(tiny_tokenizer)
    model = context.model.eval()
    extractor = dm.build_extractor(1)
    batch = next(iter(context.train.batches(8)))
    noise = torch.Generator().manual_seed(0)
    with frozen(model), eval_mode(model):
        # KL >= 0 > eps = -1: the constraint is violated, so alpha must increase.
        optimizers = make_extractor_optimizers(extractor, 1e-3, 0.3)
        start = extractor.alpha.item()
        for _ in range(3):
            extractor_step(model, extractor, batch, optimizers, eps=-1.0, generator=noise)
        assert extractor.alpha.item() > start
        # A huge step cannot leave [0, 200] in either direction.
        optimizers = make_extractor_optimizers(extractor, 1e-3, 1e4)
        extractor_step(model, extractor, batch, optimizers, eps=-1.0, generator=noise)
        assert extractor.alpha.item() == ALPHA_MAX
        extractor_step(model, extractor, batch, optimizers, eps=1e3, generator=noise)  # KL << eps: descend
        assert extractor.alpha.item() == 0.0


def test_alpha_moves_in_proportion_to_the_violation(tiny_tokenizer):
    # Plain gradient ascent: alpha' = alpha + lr * (mean KL - eps). RMSprop would step ~10 x lr whatever the
    # violation, which zeroed alpha at step 1 of a few-shot run and let every gate close for good.
    context, dm = _context(tiny_tokenizer)
    model = context.model.eval()
    extractor = dm.build_extractor(1)
    batch = next(iter(context.train.batches(8)))
    with frozen(model), eval_mode(model):
        optimizers = make_extractor_optimizers(extractor, 1e-3, 0.3)
        stats = extractor_step(model, extractor, batch, optimizers, eps=0.05, generator=torch.Generator().manual_seed(0))
    assert stats["alpha"] == pytest.approx(1.0 + 0.3 * (stats["kl"] - 0.05), abs=1e-6)


@pytest.mark.parametrize("fresh", [True, False])
def test_a_fresh_extractor_trains_at_least_min_steps(tiny_tokenizer, fresh):
    context, dm = _context(tiny_tokenizer, options={"extractor_epochs": 1, "extractor_min_steps": 5})
    steps_per_epoch = math.ceil(len(context.train) / context.config.batch_size)
    assert steps_per_epoch < 5  # otherwise one epoch would already satisfy the minimum
    # fresh: whole epochs until >= 5 steps; a continued (multi-round) extractor: the --extractor-epochs only
    epochs = math.ceil(5 / steps_per_epoch) if fresh else 1
    extractor = dm.build_extractor(1)
    logged: list[dict] = []
    context.step_log = logged.append
    history: list[dict] = []
    train_extractor_phase(context, dm, extractor, 1, 1e-3, torch.Generator().manual_seed(0),
                          torch.Generator().manual_seed(1), history, fresh=fresh)
    assert len([e for e in logged if e.get("phase") == "extractor"]) == epochs * steps_per_epoch
    assert len(history) == epochs


# -- a toy whose prediction depends on one token only ---------------------------------------------------
class _PositionEncoder(nn.Module):
    """h = word embedding + position embedding, with no mixing between positions (one identity 'layer')."""

    def __init__(self, vocab: int, hidden: int, length: int):
        super().__init__()
        self.config = SimpleNamespace(hidden_size=hidden, num_hidden_layers=1)
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Parameter(torch.randn(length, hidden))

    def get_input_embeddings(self) -> nn.Embedding:
        return self.word

    def forward(self, inputs_embeds, attention_mask=None, token_type_ids=None, output_hidden_states=False):
        h = inputs_embeds + self.position[: inputs_embeds.shape[1]]
        return SimpleNamespace(last_hidden_state=h, hidden_states=(h, h))


class _SecondPieceModel(TaskModel):
    """Logits from position 1 only: the only piece whose masking can change the prediction."""

    def head_logits(self, hidden, attention_mask, word_starts):
        return self.head(hidden[:, 1])


def _toy_batch(generator: torch.Generator, size: int = 32, length: int = 7, vocab: int = 20) -> Batch:
    ids = torch.randint(4, vocab, (size, length), generator=generator)
    ids[:, 0], ids[:, -1] = 1, 2  # [CLS] ... [SEP]
    real = torch.zeros(size, length, dtype=torch.bool)
    real[:, 1:-1] = True
    zeros = torch.zeros(size, dtype=torch.long)
    return Batch(ids, torch.ones(size, length, dtype=torch.long), torch.zeros(size, length, dtype=torch.long),
                 torch.zeros(size, length), real, zeros.bool(), zeros, torch.zeros(size, 1, dtype=torch.long),
                 torch.ones(size, 1, dtype=torch.bool), torch.zeros(size, 1, dtype=torch.long), torch.arange(size))


def test_trained_extractor_keeps_the_one_informative_token():
    torch.manual_seed(0)
    model = _SecondPieceModel(_PositionEncoder(20, 16, 7), TaskKind.CLASSIFICATION, 4).eval()
    with torch.no_grad():
        model.head.weight.mul_(3.0)  # confident predictions, so masking position 1 moves them
    mask_row = model.embed(torch.tensor(3)).detach()
    extractor = DiffMaskExtractor("input", 16, 1, mask_row, generator=torch.Generator().manual_seed(0))
    optimizers = make_extractor_optimizers(extractor, 1e-2, 1.0)  # the --dm-lr-alpha default
    data, noise = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    before = _snapshot(model)
    with frozen(model):
        for _ in range(300):
            # a tight KL budget: masking position 1 is affordable only where it barely moves the prediction
            extractor_step(model, extractor, _toy_batch(data), optimizers, eps=0.01, generator=noise)
    assert _all_equal(model, before)
    batch = _toy_batch(data, size=64)
    scores = piece_scores(model, batch, extractor, "keep-prob").detach()
    assert scores[:, 0].eq(0).all() and scores[:, -1].eq(0).all()  # [CLS]/[SEP]: never scored
    others = scores[:, 2:-1]
    assert others.max() < 0.05  # every uninformative piece is masked
    # Position 1 is kept, except where the placeholder happens to give the same prediction (KL ~ 0 then).
    assert scores[:, 1].mean() > 0.6
    assert (scores[:, 1] > others.max(1).values).float().mean() > 0.9


def test_closed_gates_still_learn_from_the_constraint():
    # Every gate shut (logits ~ -70): the samples are exactly 0 and carry no reparameterised gradient, yet the
    # KL term must still push the gates open through the log-keep-probability path.
    torch.manual_seed(0)
    model = _SecondPieceModel(_PositionEncoder(20, 16, 7), TaskKind.CLASSIFICATION, 4).eval()
    with torch.no_grad():
        model.head.weight.mul_(3.0)
    extractor = DiffMaskExtractor("input", 16, 1, model.embed(torch.tensor(3)).detach(),
                                  generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        extractor.gates.bias.fill_(-80.0)
        extractor.alpha.fill_(10.0)
    batch = _toy_batch(torch.Generator().manual_seed(1))
    with frozen(model):
        loss, stats = extractor_loss(model, extractor, batch, eps=0.0, generator=torch.Generator().manual_seed(2))
        loss.backward()
    assert stats["l0"] < 1e-30 and stats["kl"] > 1e-3  # all masked, and that changes the prediction
    grad = extractor.gates.bias.grad
    assert grad is not None and (grad < -1e-4).all()  # descending the loss opens the gates


# -- schedules end to end -------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "kind", "gate"), [
    ("dm-one-pass", TaskKind.CLASSIFICATION, "input"),
    ("dm-multi-round", TaskKind.TAGGING, "hidden"),
    ("dm-multi-round", TaskKind.CLASSIFICATION, "input"),
])
def test_schedule_runs_end_to_end(tiny_tokenizer, method, kind, gate):
    options = {"dm_gate": gate, "rounds": 2, "extractor_epochs": 1, "model_epochs_per_round": 1,
               "round_lr_decay": 0.5, "reinit_extractor": method == "dm-multi-round"}
    context, dm = _context(tiny_tokenizer, kind, method, options=options, alpha=1.0)
    logged: list[dict] = []
    context.step_log = logged.append
    result = run_schedule(context)

    rounds = [r for r in result.history if r["phase"] == "round"]
    expected_rounds = 3 if method == "dm-multi-round" else 2  # round 0 = warm-up
    assert [r["round"] for r in rounds] == list(range(expected_rounds))
    for r in result.history:
        assert {"round", "phase", "dev", "test", "l_int", "l_phi"} <= set(r)
    assert all(r["test"] is not None and r["dev"] is not None for r in rounds)
    assert all(r["l_phi"] is not None for r in rounds[1:])
    model_devs = [r["dev"] for r in result.history if r["phase"] in ("warmup", "model")]
    assert result.dev == max(model_devs)  # selection over all rounds, warm-up included
    assert any(e.get("phase") == "extractor" and "alpha" in e for e in logged)
    assert any(e.get("phase") == "round" for e in logged) and any(e.get("phase") == "warmup" for e in logged)
    assert 0.0 <= result.test <= 1.0 and result.epochs_run >= 3

    # attribute(): the stored extractor, zero off real pieces, deterministic and RNG-neutral.
    batch = next(iter(context.test.batches(4)))
    state = torch.get_rng_state()
    first = dm.attribute(context.model, batch).scores
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, dm.attribute(context.model, batch).scores)
    assert first[~batch.real_mask].eq(0).all() and (first[batch.real_mask] > 0).all()


def test_schedule_is_deterministic(tiny_tokenizer):
    options = {"rounds": 1, "extractor_epochs": 1}
    results = []
    for _ in range(2):
        context, dm = _context(tiny_tokenizer, method="dm-one-pass", options=options, alpha=1.0)
        results.append(run_schedule(context))
    assert results[0].history == results[1].history and results[0].test == results[1].test


def test_warm_up_uses_the_baselines_settings_and_the_rounds_the_rows(tiny_tokenizer):
    """Issue 29 fix 3: the warm-up trains at --dm-warmup-lr (the baseline's) for its own max epochs; the
    rounds keep the row's lr. Before, the warm-up ran at the row's lr (slot-10 multi-round: 1e-5, dev 0)."""
    options = {"rounds": 1, "extractor_epochs": 1, "dm_warmup_lr": 5e-3, "dm_warmup_max_epochs": 3,
               "dm_warmup_patience": 5}
    context, dm = _context(tiny_tokenizer, method="dm-multi-round", options=options, alpha=1.0, lr=1e-5)
    logged: list[dict] = []
    context.step_log = logged.append
    result = run_schedule(context)
    warm = [e for e in logged if e.get("phase") == "warmup" and "lr" in e]
    model = [e for e in logged if e.get("phase") == "model" and "lr" in e]
    assert warm and model
    assert max(e["lr"] for e in warm) == pytest.approx(5e-3, rel=0.5)  # linear decay from 5e-3
    assert max(e["lr"] for e in model) <= 1e-5
    assert len([h for h in result.history if h["phase"] == "warmup"]) == 3  # its own max epochs (row: 2)
    assert dm.dm.warmup_overrides() == {"lr": 5e-3, "max_epochs": 3, "patience": 5}
    assert DMOptions.from_options({}).warmup_overrides() == {}  # without the options: the row's settings


def test_grid_dm_cells_warm_up_with_the_baseline_cell(tmp_path):
    """The paper grid fills --dm-warmup-* from the baseline where the DM row differs (issue 29 fix 3)."""
    from uimer.experiments.config import load_grid

    grid = load_grid("paper")
    slot10 = grid.cell("dm-multi-round", "slot-10").fields
    assert slot10["train"]["lr"] == 1e-5 and slot10["options"]["dm_warmup_lr"] == 1e-4
    nli = grid.cell("dm-one-pass", "nli-500").fields["options"]
    assert (nli["dm_warmup_lr"], nli["dm_warmup_max_epochs"], nli["dm_warmup_patience"]) == (1e-4, 50, 5)
    assert nli.get("dm_warmup_batch_size") is None  # 16 = 16
    same = grid.cell("dm-one-pass", "intent-1").fields["options"]
    assert not any(k.startswith("dm_warmup") for k in same)  # nothing differs: options (and fingerprint) unchanged
    assert not any(k.startswith("dm_warmup") for k in grid.cell("im-mask", "slot-10").fields["options"])


# -- registry, options, benchmark hook ------------------------------------------------------------------
def test_registry_and_options():
    assert METHODS["dm-one-pass"].family == "dm" and METHODS["dm-multi-round"].family == "dm"
    method = create_method("dm-multi-round", {"dm_gate": "hidden", "rounds": 3, "dm_eps": 0.05, "margin": 1.0})
    assert method.schedule == "diffmask" and method.dm.gate == "hidden" and method.dm.rounds == 3 and method.dm.eps == 0.05
    assert DMOptions.from_options({}) == DMOptions()
    from uimer.errors import ConfigError

    with pytest.raises(ConfigError):
        DMOptions.from_options({"dm_gate": "attention"})


def test_bad_hidden_layer_fails_before_training(tiny_tokenizer):
    from uimer.errors import ConfigError

    with pytest.raises(ConfigError, match="dm-hidden-layer"):
        _context(tiny_tokenizer, options={"dm_gate": "hidden", "dm_hidden_layer": 2})  # the tiny BERT has 2 layers


def test_cli_flags_reach_options():
    from uimer.cli import build_parser

    args = build_parser().parse_args([
        "train", "--task", "snips-slot", "--method", "dm-multi-round", "--dm-gate", "hidden", "--rounds", "4",
        "--extractor-epochs", "3", "--model-epochs-per-round", "1", "--lr-extractor", "5e-4",
        "--round-lr-decay", "0.99", "--reinit-extractor", "--dm-eps", "0.2", "--dm-hidden-layer", "1",
        "--dm-warmup-lr", "1e-4", "--dm-warmup-patience", "7",
    ])
    options = {dest: getattr(args, dest) for dest in args.method_dests}
    dm = DMOptions.from_options(options)
    assert (dm.gate, dm.rounds, dm.extractor_epochs, dm.model_epochs_per_round) == ("hidden", 4, 3, 1)
    assert (dm.lr_extractor, dm.round_lr_decay, dm.reinit_extractor, dm.eps, dm.hidden_layer) == (5e-4, 0.99, True, 0.2, 1)
    assert dm.warmup_overrides() == {"lr": 1e-4, "patience": 7}


def test_dm_phase_steps_run_one_step_each(tiny_tokenizer):
    context, dm = _context(tiny_tokenizer, method="dm-multi-round", alpha=1.0)
    steps = dm_phase_steps(context)
    assert set(steps) == {"dm-extractor-step", "dm-model-step"}
    model, extractor = context.model, dm.extractor
    model_before, ext_before = _snapshot(model), _snapshot(extractor)
    steps["dm-extractor-step"]()
    assert _all_equal(model, model_before) and not _all_equal(extractor, ext_before)
    ext_before = _snapshot(extractor)
    steps["dm-model-step"]()
    assert _all_equal(extractor, ext_before) and not _all_equal(model, model_before)


def test_read_states_shapes(tiny_tokenizer):
    context, dm = _context(tiny_tokenizer)
    extractor = dm.build_extractor(1)
    batch = next(iter(context.train.batches(3)))
    reading = read_states(context.model, batch, extractor)
    n_layers = context.model.encoder.config.num_hidden_layers
    assert reading.each.shape == (3, batch.input_ids.shape[1], n_layers + 2, 16)
    assert torch.equal(extractor.placeholder.detach(), dm._mask_embedding)  # the pretrained [MASK] row


@pytest.mark.parametrize("gate", ["input", "hidden"])
def test_a_multi_round_seed_cut_off_between_rounds_resumes_with_the_same_numbers(tmp_path, tiny_tokenizer, gate):
    from uimer.training.checkpoint import SeedCheckpoint

    class Killed(Exception):
        pass

    options = {"dm_gate": gate, "rounds": 3, "extractor_epochs": 1, "model_epochs_per_round": 1,
               "reinit_extractor": False}
    context, dm = _context(tiny_tokenizer, method="dm-multi-round", options=options, alpha=1.0)
    whole = run_schedule(context)

    path = tmp_path / "seed0.pt"
    context, dm = _context(tiny_tokenizer, method="dm-multi-round", options=options, alpha=1.0)
    context.checkpoint = SeedCheckpoint(path, "fp/seed0", every_seconds=0)

    def killed_in_round_3(entry: dict) -> None:
        if entry.get("round") == 3:
            raise Killed

    context.on_epoch = killed_in_round_3
    with pytest.raises(Killed):
        run_schedule(context)
    context, dm = _context(tiny_tokenizer, method="dm-multi-round", options=options, alpha=1.0)
    context.checkpoint = checkpoint = SeedCheckpoint(path, "fp/seed0", every_seconds=0)
    resumed = run_schedule(context)
    assert checkpoint.resumed["at"] == "round 3"
    assert resumed.history == whole.history
    assert (resumed.dev, resumed.test, resumed.best_epoch, resumed.epochs_run) == (
        whole.dev, whole.test, whole.best_epoch, whole.epochs_run)
