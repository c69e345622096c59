"""UIMER-IM: hand-computed a_R, a_N and L_int, the clamp, the replacement rules and the batched forward."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from conftest import make_tiny_encoder
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskData, TaskKind
from uimer.errors import ConfigError
from uimer.interpret import create_method
from uimer.interpret.base import MethodSetup
from uimer.interpret.marginalization import LN2, log2_odds, log_marginal
from uimer.interpret.replacement import (
    PriorProposer,
    Proposer,
    UniformProposer,
    build_replacement_sets,
    distinct_draws,
    real_vocabulary,
    special_ids,
    unigram_prior,
)
from uimer.models.task_model import TaskModel


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def lo(m: float) -> float:
    return math.log2(m / (1.0 - m))


class EvidenceModel(nn.Module):
    """A stand-in task model with hand-set outputs: p(gold | x) = sigmoid(theta * sum_t evidence[t]).

    Its log-odds are exactly theta * z / ln 2 bits, so every a_R, a_N can be worked out by hand.
    """

    def __init__(self, tokenizer, evidence: dict[str, float], theta: float = 1.0):
        super().__init__()
        table = torch.zeros(len(tokenizer))
        for token, value in evidence.items():
            table[tokenizer.convert_tokens_to_ids(token)] = value
        self.register_buffer("evidence", table)
        self.theta = nn.Parameter(torch.tensor(theta))
        self.calls: list[int] = []

    def forward(self, batch, inputs_embeds=None):
        self.calls.append(batch.size)
        z = (self.evidence[batch.input_ids] * batch.attention_mask).sum(1) * self.theta
        return torch.stack([torch.zeros_like(z), z], dim=1)

    def gold_log_prob(self, logits, batch):
        return torch.log_softmax(logits, dim=-1)[:, 1]

    def gold_log_complement(self, logits, batch):
        return torch.log_softmax(logits, dim=-1)[:, 0]


def split_of(tokenizer, examples, kind=TaskKind.CLASSIFICATION):
    return encode_examples(examples, tokenizer, kind)


def im(name: str, tokenizer, split, seed: int = 0, model=None, **options):
    method = create_method(name, options)
    method.prepare(MethodSetup(model, tokenizer, split, seed))
    return method


class FixedProposer(Proposer):
    """Candidates c[r] = `tokens[r]` everywhere; w_j = weights keyed by the original piece at j."""

    def __init__(self, tokenizer, tokens: list[str], weight_of: dict[str, float]):
        self.k = len(tokens)
        self.ids = torch.tensor(tokenizer.convert_tokens_to_ids(tokens))
        self.first = torch.full((len(tokenizer),), 0.5)
        for token, w in weight_of.items():
            self.first[tokenizer.convert_tokens_to_ids(token)] = w

    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        originals = input_ids[positions]
        w0 = self.first[originals]
        return self.ids.expand(len(originals), -1).clone(), torch.stack([w0, 1 - w0], dim=1)


# -- the numbers ---------------------------------------------------------------------------------------
def test_log2_odds_definition_and_clamp():
    m = torch.tensor([0.1, 0.5, 0.9, 1e-20])
    assert torch.allclose(log2_odds(m.log()), torch.tensor([lo(0.1), 0.0, lo(0.9), lo(1e-20)]), atol=1e-4)
    extreme = log2_odds(torch.tensor([float("-inf"), -1e6, 0.0, 1e-3]))
    assert torch.isfinite(extreme).all()
    assert extreme[0] == pytest.approx(-83.0, abs=1e-3) and extreme[1] == pytest.approx(-83.0, abs=1e-3)
    assert extreme[2] == pytest.approx(math.log2(1e7), abs=1e-2) and extreme[3] == extreme[2]  # m capped at 1-1e-7
    # log m is a q-weighted average of the p's.
    log_m = log_marginal(torch.tensor([0.25, 0.75]).log(), torch.tensor([0.2, 0.6]).log())
    assert log_m.exp().item() == pytest.approx(0.25 * 0.2 + 0.75 * 0.6)


def test_log_odds_keep_their_gradient_when_the_model_is_confident():
    """Issue 29 fix 6: with p within 1e-7 of 1 the capped LO(m) is constant (zero gradient); computing
    log(1 - m) from the other classes' logits keeps LO = the logit margin in bits, gradient 1/ln 2."""
    from uimer.interpret.marginalization import gold_log_odds

    logits = torch.tensor([[20.0, 0.0, 0.0], [30.0, 1.0, -2.0]], requires_grad=True)
    log_p = torch.log_softmax(logits, -1)[:, 0:1]
    log_1mp = (torch.logsumexp(logits[:, 1:], -1) - torch.logsumexp(logits, -1)).unsqueeze(1)
    zero = torch.zeros(2, 1)
    capped = gold_log_odds(zero, log_p, None)  # the old computation
    (grad_capped,) = torch.autograd.grad(capped.sum(), logits, retain_graph=True)
    assert grad_capped.abs().max() == 0.0 and capped[0].item() == pytest.approx(math.log2(1e7), abs=0.01)
    exact = gold_log_odds(zero, log_p, log_1mp)
    assert exact[0].item() == pytest.approx((20 - math.log(2)) / LN2, abs=1e-3)
    (grad,) = torch.autograd.grad(exact.sum(), logits)
    assert grad[0, 0].item() == pytest.approx(1 / LN2, rel=1e-4) and grad[1, 0].item() == pytest.approx(1 / LN2, rel=1e-4)
    # K > 1: 1 - m = sum_r q_r (1 - p_r), exactly
    log_q = torch.tensor([[0.3, 0.7]]).log()
    p = torch.tensor([[0.2, 0.9]])
    lo = gold_log_odds(log_q, p.log(), (1 - p).log())
    m = 0.3 * 0.2 + 0.7 * 0.9
    assert lo.item() == pytest.approx(math.log2(m / (1 - m)), abs=1e-5)


def test_confident_model_still_gets_an_im_gradient(tiny_tokenizer):
    """Issue 29 fix 6 through the method: p = sigmoid(40) and sigmoid(20) both round to 1 in float32. The capped
    log-odds made a_R = a_N, L_int = eps and its gradient 0; the exact ones see the 20-nat difference."""
    split = split_of(tiny_tokenizer, [Example(words=["play", "music"], label=1, rationale=[1, 0])])
    # x'_R = [MASK] music -> z = 40 theta; x'_N = play [MASK] -> z = 20 theta: the rationale matters *less*
    model = EvidenceModel(tiny_tokenizer, {"play": 20.0, "music": 40.0, "[MASK]": 0.0})
    method = im("im-mask", tiny_tokenizer, split, margin=1.0)
    batch = split.collate([0])
    loss = method.alignment_loss(model, batch, None, torch.zeros(()))
    assert loss.item() == pytest.approx((40 - 20) / LN2 + 1.0, rel=1e-4)
    (grad,) = torch.autograd.grad(loss, model.theta)
    assert grad.item() == pytest.approx(20 / LN2, rel=1e-4)


def test_task_model_complement_is_exact_where_softmax_saturates(tiny_tokenizer):
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer), 0), TaskKind.CLASSIFICATION, 3)
    batch = SimpleNamespace(labels=torch.tensor([0, 2]))
    logits = torch.tensor([[40.0, 0.0, 1.0], [0.0, 1.0, 2.0]])
    log_1mp = model.gold_log_complement(logits, batch)
    assert log_1mp[0].item() == pytest.approx(math.log(math.exp(-40) + math.exp(-39)), rel=1e-5)
    p = torch.softmax(logits[1], -1)[2].item()
    assert log_1mp[1].item() == pytest.approx(math.log(1 - p), rel=1e-5)
    tagger = TaskModel(make_tiny_encoder(len(tiny_tokenizer), 0), TaskKind.TAGGING, 3)
    assert tagger.gold_log_complement(logits, batch) is None


def test_mask_strategy_hand_computed(tiny_tokenizer):
    # [CLS] play music [SEP], rationale "play": x'_R = [MASK] music, x'_N = play [MASK], q = 1.
    split = split_of(tiny_tokenizer, [Example(words=["play", "music"], label=1, rationale=[1, 0])])
    model = EvidenceModel(tiny_tokenizer, {"play": 2.0, "music": 0.5, "[MASK]": -1.0})
    method = im("im-mask", tiny_tokenizer, split, margin=3.0)
    batch = split.collate([0])
    ids, log_q, rows = method.replacements(batch)
    mask = tiny_tokenizer.mask_token_id
    play, music = tiny_tokenizer.convert_tokens_to_ids(["play", "music"])
    cls, sep = tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id
    assert ids.tolist() == [[[[cls, mask, music, sep]], [[cls, play, mask, sep]]]]
    assert log_q.tolist() == [[[0.0], [0.0]]] and rows.tolist() == [0]

    z, z_r, z_n = 2.5, -0.5, 1.0
    attribution = method.attribute(model, batch)
    assert attribution.a_r.item() == pytest.approx((z - z_r) / LN2, abs=1e-4)  # 4.328 bits
    assert attribution.a_n.item() == pytest.approx((z - z_n) / LN2, abs=1e-4)  # 2.164 bits
    loss = method.alignment_loss(model, batch, model(batch), torch.tensor(0.0))
    expected = max((z - z_n) / LN2 - (z - z_r) / LN2 + 3.0, 0.0)  # 0.836
    assert loss.item() == pytest.approx(expected, abs=1e-4)
    loss.backward()  # d/dtheta of (theta z_R - theta z_N) / ln 2
    assert model.theta.grad.item() == pytest.approx((z_r - z_n) / LN2, abs=1e-4)


def test_k2_weighted_marginal_hand_computed(tiny_tokenizer):
    # Two rationale pieces (add, playlist) with w_j[0] = 0.8 and 0.6 -> q_R = (0.7, 0.3); q_N = (0.5, 0.5).
    example = Example(words="add song to my playlist".split(), label=1, rationale=[1, 0, 0, 0, 1])
    split = split_of(tiny_tokenizer, [example])
    evidence = {"add": 1.0, "playlist": 2.0, "song": 0.3, "to": 0.3, "my": 0.3, "weather": 0.4, "paris": -0.6}
    model = EvidenceModel(tiny_tokenizer, evidence)
    method = im("im-uniform", tiny_tokenizer, split, max_rationale_fraction=1.0, margin=0.5)
    method._train_proposer = FixedProposer(tiny_tokenizer, ["weather", "paris"], {"add": 0.8, "playlist": 0.6})
    method._regenerate()
    batch = split.collate([0])
    ids, log_q, rows = method.replacements(batch)
    assert torch.allclose(log_q.exp(), torch.tensor([[[0.7, 0.3], [0.5, 0.5]]]))
    assert method.sets.replaced.sum(-1).tolist() == [[2, 2]]

    z = 3.9
    m_r = 0.7 * sigmoid(0.4 + 0.9 + 0.4) + 0.3 * sigmoid(-0.6 + 0.9 - 0.6)
    m_n = 0.5 * sigmoid(3.0 + 0.3 + 0.8) + 0.5 * sigmoid(3.0 + 0.3 - 1.2)
    a_r, a_n = z / LN2 - lo(m_r), z / LN2 - lo(m_n)
    attribution = method.attribute(model, batch)
    assert attribution.a_r.item() == pytest.approx(a_r, abs=1e-4)
    assert attribution.a_n.item() == pytest.approx(a_n, abs=1e-4)
    loss = method.alignment_loss(model, batch, model(batch), torch.tensor(0.0))
    assert loss.item() == pytest.approx(max(a_n - a_r + 0.5, 0.0), abs=1e-4)


def test_loss_is_zero_once_the_margin_holds(tiny_tokenizer):
    examples = [Example(words="play the song tomorrow".split(), label=1, rationale=[1, 0, 1, 0]),
                Example(words="what is the weather".split(), label=1, rationale=[0, 0, 0, 1])]
    split = split_of(tiny_tokenizer, examples)
    # Rationale words carry all the evidence: replacing them drops p far more than replacing others.
    model = EvidenceModel(tiny_tokenizer, {"play": 4.0, "song": 4.0, "weather": 6.0})
    batch = split.collate([0, 1])
    for name in ("im-mask", "im-uniform"):
        methods = []
        for margin in (1.0, 100.0):
            method = im(name, tiny_tokenizer, split, margin=margin)
            if name == "im-uniform":  # neutral candidates, so the evidence is gone from S^R
                method._train_proposer = FixedProposer(tiny_tokenizer, ["a", "of"], {})
                method._regenerate()
            methods.append(method)
        attribution = methods[0].attribute(model, batch)
        assert (attribution.a_r - attribution.a_n > 1.0).all()
        loss = methods[0].alignment_loss(model, batch, model(batch), torch.tensor(0.0))
        assert loss.item() == 0.0
        loss.backward()
        assert model.theta.grad.item() == 0.0
        model.theta.grad = None
        gap = (attribution.a_n - attribution.a_r + 100.0).mean().item()
        big = methods[1].alignment_loss(model, batch, model(batch), torch.tensor(0.0))
        assert big.item() == pytest.approx(gap, abs=1e-3)


class SaturatedModel(EvidenceModel):
    """log p = 0 (p = 1) when the sentence has positive evidence, else -inf (p = 0)."""

    def gold_log_prob(self, logits, batch):
        z = logits[:, 1]
        return torch.where(z > 0, z * 0.0, torch.full_like(z, float("-inf")))


@pytest.mark.parametrize("model_cls", [EvidenceModel, SaturatedModel])
def test_clamp_keeps_p0_and_p1_finite(tiny_tokenizer, model_cls):
    examples = [Example(words="play the song".split(), label=1, rationale=[1, 0, 0]),
                Example(words="what is the weather".split(), label=1, rationale=[0, 0, 0, 1])]
    split = split_of(tiny_tokenizer, examples)
    # Evidence of +-1e4: log_softmax gives log p = 0 exactly (p = 1) or -1e4 (p ~ 0).
    model = model_cls(tiny_tokenizer, {"play": 1e4, "weather": -1e4, "the": 1e4, "[MASK]": 1e4, "what": 1e4})
    batch = split.collate([0, 1])
    for name in ("im-mask", "im-uniform", "im-prior"):
        method = im(name, tiny_tokenizer, split)
        attribution = method.attribute(model, batch)
        assert torch.isfinite(attribution.a_r).all() and torch.isfinite(attribution.a_n).all()
        loss = method.alignment_loss(model, batch, model(batch), torch.tensor(0.0))
        assert torch.isfinite(loss)
        loss.backward()
        assert torch.isfinite(model.theta.grad)
        model.theta.grad = None


# -- replacement rules ---------------------------------------------------------------------------------
def rule_examples():
    return [
        Example(words="play songs tomorrow".split(), label=0, rationale=[1, 1, 0]),
        Example(words="add the song to my playlist in paris".split(), label=1, rationale=[1, 1, 1, 0, 1, 1, 0, 0]),
        Example(words="play music".split(), label=0, rationale=[1, 1]),  # no non-rationale piece
        Example(words="kids smiling".split(), pair_words="kids frowning at camera".split(), label=2,
                rationale=[0, 1, 0, 1, 0, 0]),
        Example(words="book a movie".split(), label=1, rationale=None),
    ]


def test_special_positions_never_replaced_over_many_seeds(tiny_tokenizer):
    pair = split_of(tiny_tokenizer, rule_examples()[3:4], TaskKind.PAIR)
    single = split_of(tiny_tokenizer, rule_examples()[:3] + rule_examples()[4:])
    specials = torch.tensor(sorted(special_ids(tiny_tokenizer)))
    for split in (single, pair):
        batch = split.collate(list(range(len(split))))
        for name in ("im-mask", "im-uniform", "im-prior"):
            for seed in range(40):
                sets = im(name, tiny_tokenizer, split, seed=seed).sets
                real = batch.real_mask[:, None, :]
                assert not (sets.replaced & ~real).any()
                changed = sets.input_ids != batch.input_ids[:, None, None, :]
                assert not (changed & ~sets.replaced[:, :, None, :]).any()
                # No special token is proposed except [MASK] by the mask strategy.
                proposed = sets.input_ids[sets.replaced[:, :, None, :].expand_as(sets.input_ids)]
                if name != "im-mask":
                    assert not torch.isin(proposed, specials).any()
                else:
                    assert (proposed == tiny_tokenizer.mask_token_id).all()


def test_fraction_cap_and_equal_counts(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples()[:3] + rule_examples()[4:])
    batch = split.collate(list(range(len(split))))
    lengths = batch.attention_mask.sum(1)
    n_rationale = (batch.rationale > 0).sum(1)
    n_other = (batch.real_mask & (batch.rationale == 0)).sum(1)
    for fraction in (0.1, 0.3, 0.5, 1.0):
        for seed in range(10):
            sets = im("im-uniform", tiny_tokenizer, split, seed=seed, max_rationale_fraction=fraction).sets
            counts = sets.replaced.sum(-1)
            cap = torch.clamp(torch.floor(lengths * fraction + 1e-9), min=1).long()
            assert (counts[:, 0] == torch.minimum(n_rationale, cap)).all()
            assert (counts[:, 1] == torch.minimum(counts[:, 0], n_other)).all()
            assert sets.valid.tolist() == [True, True, False, False]
            # S^N never touches a rationale piece, capped or not.
            assert not (sets.replaced[:, 1] & (batch.rationale > 0)).any()
    # "add the song to my playlist in paris": L = 10, cap 3 of 5 rationale pieces, 3 non-rationale pieces.
    sets = im("im-uniform", tiny_tokenizer, split).sets
    assert sets.replaced[1].sum(-1).tolist() == [3, 3]
    # The mask strategy is uncapped unless asked: all 5 rationale pieces, and all 3 others there are.
    assert im("im-mask", tiny_tokenizer, split).sets.replaced[1].sum(-1).tolist() == [5, 3]
    assert im("im-mask", tiny_tokenizer, split, max_rationale_fraction=0.3).sets.replaced[1].sum(-1).tolist() == [3, 3]


def test_prior_is_a_distribution_over_training_pieces(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples())
    batch = split.collate(list(range(len(split))))
    prior = unigram_prior(batch.input_ids, batch.real_mask, len(tiny_tokenizer), special_ids(tiny_tokenizer))
    assert prior.sum().item() == pytest.approx(1.0)
    seen = set(batch.input_ids[batch.real_mask].tolist())
    assert set(prior.nonzero().squeeze(1).tolist()) == seen
    song = tiny_tokenizer.convert_tokens_to_ids("song")
    assert prior[song].item() == pytest.approx(2 / int(batch.real_mask.sum()))  # "songs" -> song ##s, "song"
    proposer = PriorProposer(prior, k=3)
    positions = batch.real_mask.clone()
    ids, w = proposer.propose(batch.input_ids, None, None, positions, torch.Generator().manual_seed(0))
    assert set(ids.flatten().tolist()) <= seen
    assert torch.allclose(w.sum(1), torch.ones(len(w)))
    assert torch.allclose(w, prior[ids] / prior[ids].sum(1, keepdim=True))


def test_uniform_never_proposes_special_or_unused_tokens():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[unused0]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "##d"]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert real_vocabulary(tokenizer).tolist() == [7, 8, 9, 10]
    assert real_vocabulary(tokenizer, limit=9).tolist() == [7, 8]
    proposer = UniformProposer(real_vocabulary(tokenizer), k=3)
    positions = torch.ones(50, 20, dtype=torch.bool)
    ids, w = proposer.propose(None, None, None, positions, torch.Generator().manual_seed(1))
    assert set(ids.flatten().tolist()) == {7, 8, 9, 10}
    assert (ids.sort(1).values.diff(dim=1) > 0).all()  # K distinct ids per position
    assert torch.allclose(w, torch.full_like(w, 1 / 3))
    draws = distinct_draws(4, 2000, 4, torch.Generator().manual_seed(0))
    assert (draws.sort(1).values == torch.arange(4)).all()
    with pytest.raises(ConfigError):
        distinct_draws(3, 1, 4, torch.Generator())


def test_sets_are_deterministic_per_seed_and_resampling(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples())
    for name in ("im-uniform", "im-prior"):
        a = im(name, tiny_tokenizer, split, seed=7).sets
        b = im(name, tiny_tokenizer, split, seed=7).sets
        c = im(name, tiny_tokenizer, split, seed=8).sets
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.log_q, b.log_q)
        assert not torch.equal(a.input_ids, c.input_ids)
    never = im("im-uniform", tiny_tokenizer, split, seed=7)
    before = never.sets.input_ids.clone()
    never.on_epoch_start(1)
    assert torch.equal(never.sets.input_ids, before)
    epoch = im("im-uniform", tiny_tokenizer, split, seed=7, im_resample="epoch")
    assert torch.equal(epoch.sets.input_ids, before)  # epoch 0 uses the prepare() draw
    epoch.on_epoch_start(1)
    assert not torch.equal(epoch.sets.input_ids, before)
    again = im("im-uniform", tiny_tokenizer, split, seed=7, im_resample="epoch")
    again.on_epoch_start(1)
    assert torch.equal(again.sets.input_ids, epoch.sets.input_ids)


def test_batches_with_zero_and_one_rationale_example(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples())
    model = EvidenceModel(tiny_tokenizer, {"play": 1.0, "playlist": 2.0})
    method = im("im-uniform", tiny_tokenizer, split)
    none = split.collate([2, 4])  # no non-rationale piece / no rationale: nothing to compare
    logits = model(none)
    loss = method.alignment_loss(model, none, logits, torch.tensor(0.3))
    assert loss.shape == () and loss.item() == 0.0
    assert method.attribute(model, none).valid.tolist() == [False, False]
    one = split.collate([4, 0])
    model.calls.clear()
    loss = method.alignment_loss(model, one, model(one), torch.tensor(0.3))
    assert loss.shape == () and torch.isfinite(loss) and loss.requires_grad
    assert model.calls == [2, 4]  # the task forward, then ONE forward over the 2K = 4 replaced sentences
    loss.backward()
    assert method.attribute(model, one).valid.tolist() == [False, True]


def test_lookup_uses_batch_index_and_falls_back_for_other_splits(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples())
    method = im("im-uniform", tiny_tokenizer, split)
    ids, log_q, rows = method.replacements(split.collate([1, 0, 3]))
    assert rows.tolist() == [0, 1, 2]
    assert torch.equal(ids[0], method.sets.input_ids[1, :, :, : ids.shape[-1]])
    # A batch from another split (indices collide) gets its own, reproducible sets.
    other = split_of(tiny_tokenizer, [Example(words="rate the movie five stars".split(), label=0,
                                              rationale=[1, 0, 0, 0, 1])])
    batch = other.collate([0])
    first, _, rows = method.replacements(batch)
    second, _, _ = method.replacements(batch)
    assert rows.tolist() == [0] and torch.equal(first, second)
    assert first.shape == (1, 2, 2, batch.input_ids.shape[1])


def test_attribute_leaves_the_rng_alone(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples()[:2])
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.CLASSIFICATION, 2)
    method = im("im-uniform", tiny_tokenizer, split, model=model)
    batch = split.collate([0, 1])
    state = torch.get_rng_state()
    model.train()
    method.attribute(model, batch)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize("kind", [TaskKind.CLASSIFICATION, TaskKind.TAGGING, TaskKind.PAIR])
def test_batched_forward_matches_one_sentence_at_a_time(tiny_tokenizer, kind):
    if kind is TaskKind.PAIR:
        examples = [Example(words="kids smiling".split(), pair_words="kids frowning at camera".split(), label=2,
                            rationale=[0, 1, 0, 1, 0, 0]),
                    Example(words="children waving".split(), pair_words="kids are waving at me".split(), label=0,
                            rationale=[1, 0, 1, 0, 0, 0, 0])]
    else:
        examples = [Example(words="play the songs tomorrow".split(), label=1, tags=[1, 0, 2, 3],
                            rationale=[1, 0, 1, 0]),
                    Example(words="what is the weather in paris".split(), label=0, tags=[0, 0, 0, 1, 0, 2],
                            rationale=[0, 0, 0, 1, 0, 0])]
    if kind is not TaskKind.TAGGING:
        for e in examples:
            e.tags = None
    split = split_of(tiny_tokenizer, examples, kind)
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer), seed=3), kind, 4).eval()
    method = im("im-uniform", tiny_tokenizer, split, model=model, im_k=3)
    batch = split.collate([0, 1])
    ids, log_q, rows = method.replacements(batch)
    lo_batched = method.marginal_log_odds(model, batch, ids, log_q, rows)
    for i, row in enumerate(rows.tolist()):
        single = split.collate([row])
        length = single.input_ids.shape[1]
        for side in range(2):
            log_p = []
            for r in range(3):
                replaced = split.collate([row])
                replaced.input_ids = ids[i, side, r, :length].unsqueeze(0)
                log_p.append(model.gold_log_prob(model(replaced), replaced).item())
            m = sum(math.exp(lq + lp) for lq, lp in zip(log_q[i, side].tolist(), log_p, strict=True))
            assert lo_batched[i, side].item() == pytest.approx(lo(min(m, 1 - 1e-7)) if m > 2**-83 else -83.0,
                                                               rel=1e-4, abs=1e-4)
    # Chunked (checkpointed) forward: same values, same gradients.
    chunked = im("im-uniform", tiny_tokenizer, split, model=model, im_k=3, im_chunk=4)
    lo_chunked = chunked.marginal_log_odds(model, batch, ids, log_q, rows)
    assert torch.allclose(lo_batched, lo_chunked, atol=1e-5)
    grads = []
    for values in (lo_batched, lo_chunked):
        model.zero_grad()
        values.sum().backward()
        grads.append(model.head.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_fit_runs_with_im(tiny_tokenizer):
    from uimer.training.trainer import TrainConfig, TrainingContext, fit

    examples = rule_examples()[:3] + rule_examples()[4:]
    task = TaskData("toy", TaskKind.CLASSIFICATION, ["a", "b"], examples, examples, examples)
    split = split_of(tiny_tokenizer, examples)
    torch.manual_seed(0)
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.CLASSIFICATION, 2)
    method = create_method("im-uniform", {"im_resample": "epoch"})
    config = TrainConfig(lr=1e-3, batch_size=2, max_epochs=2, alpha=1.0)
    context = TrainingContext(model=model, task=task, train=split, dev=split, test=split, config=config, seed=1,
                              tokenizer=tiny_tokenizer, device=torch.device("cpu"), method=method)
    method.prepare(context.method_setup())
    result = fit(context)
    assert all(h["l_int"] is not None and math.isfinite(h["l_int"]) for h in result.history)


def test_options_and_cli(tiny_tokenizer):
    from uimer.cli import build_parser

    args = build_parser().parse_args(["train", "--task", "snips-intent", "--method", "im-prior", "--im-k", "3",
                                      "--margin", "0.5", "--im-resample", "epoch", "--log-odds-floor", "-60"])
    options = {dest: getattr(args, dest) for dest in args.method_dests}
    method = create_method("im-prior", options)
    assert (method.k, method.margin, method.resample, method.floor_bits, method.fraction) == (3, 0.5, "epoch", -60, 0.3)
    assert create_method("im-mask", options).k == 1
    defaults = create_method("im-uniform", {})
    assert (defaults.k, defaults.margin, defaults.fraction, defaults.resample) == (2, 1.0, 0.3, "never")
    for bad in ({"im_k": 0}, {"margin": -1}, {"max_rationale_fraction": 0}, {"im_resample": "always"},
                {"log_odds_floor": 5}):
        with pytest.raises(ConfigError):
            create_method("im-uniform", bad)
    split = split_of(tiny_tokenizer, rule_examples()[:1])
    with pytest.raises(ConfigError, match="--mlm"):
        im("im-mlm", tiny_tokenizer, split)


def test_build_sets_q_sums_to_one(tiny_tokenizer):
    split = split_of(tiny_tokenizer, rule_examples())
    batch = split.collate(list(range(len(split))))
    prior = unigram_prior(batch.input_ids, batch.real_mask, len(tiny_tokenizer), special_ids(tiny_tokenizer))
    sets = build_replacement_sets(batch.input_ids, batch.attention_mask, batch.token_type_ids, batch.real_mask,
                                  batch.rationale, PriorProposer(prior, 4), 0.3, torch.Generator().manual_seed(0))
    q = sets.log_q.exp()[sets.valid]
    assert torch.allclose(q.sum(-1), torch.ones_like(q[..., 0]))
