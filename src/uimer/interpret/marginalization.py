"""UIMER-IM (paper §3.2): input-marginalization attribution of whole rationale sets and its margin loss.

For an example x with gold y, S^R holds K sentences with the rationale pieces replaced and S^N K sentences
with as many non-rationale pieces replaced (`uimer.interpret.replacement`). With q the replacement weights
(sum_r q_r = 1 per side):

    m_R = sum_r q_r p(y | x'_R(r)),   a_R = LO(p(y|x)) - LO(m_R),   LO(m) = log2(m / (1 - m))   (Eq. 4)
    L_int = mean over examples with rationales of max(a_N - a_R + eps, 0)                        (Eq. 5)

and a_N - a_R = LO(m_R) - LO(m_N), so the loss needs no p(y|x). p(y|x') is the gold-class probability
(intent, NLI) or the CRF probability of the whole gold tag sequence (slots), always taken as a log
probability from `AttributableModel.gold_log_prob`.

Numerics (the reference's m could round to >= 1 and crash with NaN, digest §5.3): everything stays in log
space, log m = logsumexp_r(log q_r + log p_r). Classification and NLI also get 1 - m exactly,
log(1 - m) = logsumexp_r(log q_r + log(1 - p_r)) with log(1 - p) = logsumexp(other logits) - logsumexp(all)
(`AttributableModel.gold_log_complement`), so LO(m) never saturates: for one sentence it is the gold logit's margin
over the other classes, in bits, with a gradient of 1/ln 2 however confident the model is. (Before issue 29,
log(1 - m) was log(-expm1(log m)) with log m capped at log(1 - 1e-7): once the model was confident -- p
within 1e-7 of 1, which few-shot training reaches within a few epochs -- the cap made LO constant and L_int's
gradient exactly 0.) The clamps:
- each log p and log(1 - p) is floored at `--log-odds-floor` bits (default -83, i.e. >= 2^-83 ~ 1e-25, the
  reference's lower_bound), so p = 0 (log p = -inf) gives a finite value with zero gradient, as the
  reference's constant floor did; LO stays within +-83 bits;
- slot filling keeps log(1 - m) = log(-expm1(log m)) with the cap m <= 1 - 1e-7 (the complement of a whole
  tag sequence's CRF probability has no closed form, and p(y|x) of a sequence rarely nears 1).

Cost: all 2K replaced sentences of the batch's rationale examples go through the model in one forward
(train mode, so with dropout like the task forward), and the loss joins the task loss's graph, so the
trainer's single backward covers both. `--im-chunk R` splits that forward into pieces of R sentences, each
under activation checkpointing, which bounds memory at the price of recomputing those forwards in the
backward. Replacement sets are built once per seed in `prepare()` for the whole training split (or again each
epoch with `--im-resample epoch`) and looked up by `Batch.index`, so a step only gathers tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import torch
from torch.utils.checkpoint import checkpoint

from uimer.checks import Domain
from uimer.data.encoding import Batch
from uimer.errors import ConfigError
from uimer.interpret.base import (
    Attribution,
    InterpretationMethod,
    MethodSetup,
    register_method,
    zero_loss,
)
from uimer.interpret.options import MethodOptions, OptionError, option, register_options
from uimer.interpret.replacement import (
    MIN_Q,
    MaskProposer,
    MLMProposer,
    PriorProposer,
    Proposer,
    ReplacementSets,
    TableProposer,
    UniformProposer,
    build_replacement_sets,
    derive_seed,
    real_vocabulary,
    special_ids,
    unigram_prior,
)
from uimer.interpret.words import chunked, index_batch, word_membership, words_to_pieces
from uimer.models.protocol import AttributableModel

LN2 = math.log(2.0)
EVAL_CHUNK = 512  # replaced sentences per forward when scoring units (evaluation's batches, not training's)
_PER_UNIT_SALT = 0x3E7A_11ED  # the per-unit proposals' own stream (the value evaluation used before)
DEFAULT_K = 2  # the reference README's replace_repeat
DEFAULT_MARGIN = 1.0  # paper Table 6, 1-shot intent, +Uniform and +MASK (no warm-up)
DEFAULT_FRACTION = 0.3  # the reference's max_rationale_percentage
DEFAULT_FLOOR_BITS = -83.0  # log2(1e-25): the reference's lower_bound for intent and slots
CEILING_LOG_M = math.log1p(-1e-7)  # m <= 1 - 1e-7
RESAMPLE_CHOICES = ("never", "epoch")
_TRAIN_SALT, _FRESH_SALT = 0x1A5E, 0xF4E5


# -- the numbers of Eq. 4-5 ------------------------------------------------------------------------------
def log2_odds(log_m: torch.Tensor, floor_bits: float = DEFAULT_FLOOR_BITS) -> torch.Tensor:
    """LO(m) = log2(m / (1 - m)) from log m, clamped to m in [2^floor, 1 - 1e-7] (finite value and gradient)."""
    lm = log_m.clamp(min=floor_bits * LN2, max=CEILING_LOG_M)
    return (lm - torch.log(-torch.expm1(lm))) / LN2


def log_marginal(log_q: torch.Tensor, log_p: torch.Tensor, floor_bits: float = DEFAULT_FLOOR_BITS) -> torch.Tensor:
    """log m = log sum_r q_r p_r over the last dim; log p floored first so p = 0 stays finite."""
    return torch.logsumexp(log_q + log_p.clamp(min=floor_bits * LN2), dim=-1)


def log2_odds_exact(log_m: torch.Tensor, log_1mm: torch.Tensor, floor_bits: float = DEFAULT_FLOOR_BITS) -> torch.Tensor:
    """LO(m) = log2(m / (1 - m)) from log m and an exactly computed log(1 - m), each floored at 2^floor: no cap
    near m = 1, so the gradient never vanishes there (see the module docstring)."""
    floor = floor_bits * LN2
    return (log_m.clamp(min=floor) - log_1mm.clamp(min=floor)) / LN2


def gold_log_odds(log_q: torch.Tensor, log_p: torch.Tensor, log_1mp: torch.Tensor | None,
                  floor_bits: float = DEFAULT_FLOOR_BITS) -> torch.Tensor:
    """LO of m = sum_r q_r p_r over the last dim: exact when log(1 - p) is known, else the capped form."""
    log_m = log_marginal(log_q, log_p, floor_bits)
    if log_1mp is None:
        return log2_odds(log_m, floor_bits)
    return log2_odds_exact(log_m, log_marginal(log_q, log_1mp, floor_bits), floor_bits)


def margin_loss(lo_r: torch.Tensor, lo_n: torch.Tensor, margin: float) -> torch.Tensor:
    """mean max(a_N - a_R + eps, 0), with a_N - a_R = LO(m_R) - LO(m_N)."""
    return torch.relu(lo_r - lo_n + margin).mean()


def _slice_batch(batch: Batch, start: int, stop: int) -> Batch:
    return Batch(**{f.name: getattr(batch, f.name)[start:stop] for f in fields(batch)})


def _gold_log_probs(model: AttributableModel, batch: Batch) -> torch.Tensor:
    """(N, 2) log p and log(1 - p) of the gold output, or (N, 1) log p where the complement is not exact."""
    logits = model(batch)
    log_p = model.gold_log_prob(logits, batch)
    complement = getattr(model, "gold_log_complement", None)  # stand-in models may not have it
    log_1mp = complement(logits, batch) if complement is not None else None
    return log_p.unsqueeze(1) if log_1mp is None else torch.stack([log_p, log_1mp], dim=1)


def _split(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    return pair[:, 0], (pair[:, 1] if pair.shape[1] > 1 else None)


# -- the method ------------------------------------------------------------------------------------------
@register_options
@dataclass(frozen=True)
class IMOptions(MethodOptions):
    """The input-marginalization methods' options."""

    title = "input marginalization (im-*)"
    family = "im"

    im_k: int = option(DEFAULT_K, domain=Domain(int, 1, 10000), metavar="K",
                       help=f"replaced sentences per side, |S^R| = |S^N| (default {DEFAULT_K}; im-mask uses 1)")
    margin: float = option(DEFAULT_MARGIN, domain=Domain(float, 0, 1e6), metavar="EPS",
                           help=f"epsilon of max(a_N - a_R + eps, 0), in bits (default {DEFAULT_MARGIN})")
    max_rationale_fraction: float | None = option(
        None, domain=Domain(float, 0, 1, low_open=True), metavar="F",
        help="replace at most max(1, floor(F*L)) rationale pieces and as many non-rationale "
             f"ones (default {DEFAULT_FRACTION}; im-mask: no cap unless given)")
    im_resample: str = option("never", choices=RESAMPLE_CHOICES,
                              help="draw replacement sets once per seed (the reference) or afresh every epoch")
    mlm: str | None = option(None, only=("im-mlm",), metavar="NAME_OR_PATH",
                             help="masked LM for im-mlm, sharing the encoder's tokenizer (see `uimer mlm train`)")
    log_odds_floor: float = option(
        DEFAULT_FLOOR_BITS, domain=Domain(float, -1000, 0, high_open=True), metavar="BITS",
        help=f"clamp p and m to >= 2^BITS so p = 0 stays finite (default {DEFAULT_FLOOR_BITS:g}, "
             "~1e-25 as the reference); m is also capped at 1 - 1e-7")
    im_chunk: int = option(0, domain=Domain(int, 0, 1 << 20), metavar="ROWS",
                           help="run the replaced sentences in checkpointed chunks of ROWS to bound memory "
                                "(default 0: one forward)")

    def validate(self) -> None:
        super().validate()
        if self.im_k < 1:
            raise OptionError("im_k", f"must be >= 1, got {self.im_k}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise OptionError("margin", f"must be >= 0, got {self.margin}")
        if self.max_rationale_fraction is not None and not 0 < self.max_rationale_fraction <= 1:
            raise OptionError("max_rationale_fraction", f"must be in (0, 1], got {self.max_rationale_fraction}")
        if not self.log_odds_floor < 0:
            raise OptionError("log_odds_floor", f"must be negative (bits), got {self.log_odds_floor}")
        if self.im_chunk < 0:
            raise OptionError("im_chunk", f"must be >= 0, got {self.im_chunk}")


class InputMarginalization(InterpretationMethod):
    """UIMER-IM with one replacement strategy (set by the registered subclasses)."""

    # 2: exact log(1 - m) from the other classes' logits, so LO(m) keeps its gradient when the model is confident
    # (issue 29, fix 6); slot filling keeps the capped form, so its numbers are those of version 1.
    version = "2"

    @classmethod
    def behaviour_version(cls, task: str) -> str:
        return "1" if task == "snips-slot" else cls.version

    family = "im"
    options_class = IMOptions
    unit = "bits (log-odds drop, word replaced)"
    strategy: ClassVar[str] = ""

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        o = IMOptions.from_dict(self.options)
        self.k = 1 if self.strategy == "mask" else o.im_k
        self.margin = o.margin
        # The reference's mask strategy replaces every rationale piece (no cap); an explicit value applies.
        default_fraction = None if self.strategy == "mask" else DEFAULT_FRACTION
        self.fraction = default_fraction if o.max_rationale_fraction is None else o.max_rationale_fraction
        self.resample = o.im_resample
        self.mlm_name = o.mlm
        self.floor_bits = o.log_odds_floor
        self.chunk = o.im_chunk
        self.seed = 0
        self.device = torch.device("cpu")
        self.proposer: Proposer | None = None  # for batches outside the training split
        self.sets: ReplacementSets | None = None  # the training split's, indexed by Batch.index
        self._train: Batch | None = None
        self._train_proposer: Proposer | None = None
        self._generator: torch.Generator | None = None

    # -- preparation -------------------------------------------------------------------------------
    def prepare(self, setup: MethodSetup) -> None:
        """Build the proposer and the training split's replacement sets; loading an MLM or drawing the sets
        never shifts the global RNG the training run (or an explanation) uses afterwards."""
        with torch.random.fork_rng(devices=_rng_devices(setup.device)):
            self.seed = int(setup.seed)
            self.device = torch.device(setup.device)
            train = setup.train
            self._train = train.collate(list(range(len(train)))) if len(train) else None
            self.proposer = self._make_proposer(setup.tokenizer, _embedding_rows(setup.model))
            self._train_proposer = self.proposer
            if self.strategy == "mlm" and self.resample == "epoch" and self._train is not None:
                t = self._train  # the MLM's proposals do not change between epochs; only the positions do
                self._train_proposer = TableProposer.precompute(
                    self.proposer, t.input_ids, t.attention_mask, t.token_type_ids, t.real_mask, torch.Generator())
            self._generator = torch.Generator().manual_seed(derive_seed(self.seed, _TRAIN_SALT))
            self._regenerate()

    def on_epoch_start(self, epoch: int) -> None:
        if self.resample == "epoch" and epoch > 0:
            self._regenerate()

    def state_dict(self) -> dict:
        """The replacement-set generator; the next epoch's sets are drawn from it."""
        return {"generator": self._generator.get_state()} if self._generator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self._generator is not None and "generator" in state:
            self._generator.set_state(state["generator"])

    def _make_proposer(self, tokenizer, embedding_rows: int | None) -> Proposer:
        if self.strategy == "mask":
            return MaskProposer(tokenizer.mask_token_id)
        if self.strategy == "uniform":
            return UniformProposer(real_vocabulary(tokenizer, embedding_rows), self.k)
        if self.strategy == "prior":
            if self._train is None:
                raise ConfigError("the prior strategy needs a non-empty training split")
            t = self._train
            size = max(len(tokenizer), int(t.input_ids.max()) + 1)
            return PriorProposer(unigram_prior(t.input_ids, t.real_mask, size, special_ids(tokenizer)), self.k)
        if self.strategy == "mlm":
            from uimer.models.mlm import load_masked_lm

            if not self.mlm_name:
                raise ConfigError("im-mlm needs --mlm NAME_OR_PATH: a masked LM sharing the encoder's tokenizer "
                                  "(`uimer mlm train --task T --out DIR` builds one from the packaged encoder)")
            mlm = load_masked_lm(str(self.mlm_name), tokenizer).to(self.device)
            size = mlm.get_input_embeddings().num_embeddings
            allowed = torch.zeros(size, dtype=torch.bool)
            allowed[real_vocabulary(tokenizer, size)] = True
            return MLMProposer(mlm, allowed, tokenizer.mask_token_id, self.k, self.device)
        raise ConfigError(f"unknown replacement strategy {self.strategy!r}")

    def _regenerate(self) -> None:
        t = self._train
        if t is None or self._train_proposer is None or self._generator is None:
            self.sets = None
            return
        sets = build_replacement_sets(t.input_ids, t.attention_mask, t.token_type_ids, t.real_mask, t.rationale,
                                      self._train_proposer, self.fraction, self._generator)
        self.sets = sets.to(self.device)

    # -- lookup -------------------------------------------------------------------------------------
    def _is_cached(self, batch: Batch) -> bool:
        """Whether the batch comes from the split the sets were built for (ids at `index` match)."""
        sets = self.sets
        if sets is None:
            return False
        length = batch.input_ids.shape[1]
        index = batch.index.to(sets.original.device)
        if length > sets.original.shape[1] or index.numel() == 0:
            return index.numel() == 0
        if int(index.min()) < 0 or int(index.max()) >= sets.original.shape[0]:
            return False
        return torch.equal(sets.original[index, :length], batch.input_ids.to(sets.original.device))

    def _fresh_sets(self, batch: Batch) -> ReplacementSets:
        """Sets for a batch outside the training split; the same batch always gets the same sets."""
        if self.proposer is None:
            raise RuntimeError(f"{self.name}: call prepare(MethodSetup(...)) before using the method")
        b = batch.to("cpu")
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _FRESH_SALT))
        sets = build_replacement_sets(b.input_ids, b.attention_mask, b.token_type_ids, b.real_mask, b.rationale,
                                      self.proposer, self.fraction, generator)
        return sets.to(batch.input_ids.device)

    def replacements(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Replaced ids (n, 2, K, L), log q (n, 2, K) and the batch rows (n,) of the examples scored."""
        if self._is_cached(batch):
            sets, index = self.sets, batch.index.to(self.sets.original.device)
        else:
            sets = self._fresh_sets(batch)
            index = torch.arange(batch.size, device=sets.original.device)
        valid = sets.valid[index] & batch.has_rationale.to(index.device)
        rows = valid.nonzero().squeeze(1)
        take = index[rows]
        length = batch.input_ids.shape[1]
        device = batch.input_ids.device
        return sets.input_ids[take, :, :, :length].to(device), sets.log_q[take].to(device), rows.to(device)

    # -- scores -------------------------------------------------------------------------------------
    def marginal_log_odds(self, model: AttributableModel, batch: Batch, ids: torch.Tensor, log_q: torch.Tensor,
                          rows: torch.Tensor) -> torch.Tensor:
        """(n, 2): LO(m_R), LO(m_N) for the batch rows `rows`, all 2K sentences each in one forward."""
        n, sides, k, length = ids.shape
        repeated = index_batch(batch, rows.repeat_interleave(sides * k))
        replaced = replace(repeated, input_ids=ids.reshape(n * sides * k, length))
        log_p, log_1mp = _split(self._rows_log_prob(model, replaced))
        log_p = log_p.view(n, sides, k)
        log_1mp = None if log_1mp is None else log_1mp.view(n, sides, k)
        return gold_log_odds(log_q.to(log_p.dtype), log_p, log_1mp, self.floor_bits)

    def _rows_log_prob(self, model: AttributableModel, batch: Batch) -> torch.Tensor:
        """(N, 2) log p, log(1 - p) per replaced sentence ((N, 1) for the CRF), chunked if asked."""
        total = batch.size
        if self.chunk <= 0 or total <= self.chunk:
            return _gold_log_probs(model, batch)
        parts = []
        for start in range(0, total, self.chunk):
            part = _slice_batch(batch, start, start + self.chunk)
            if torch.is_grad_enabled():
                parts.append(checkpoint(_gold_log_probs, model, part, use_reentrant=False))
            else:
                parts.append(_gold_log_probs(model, part))
        return torch.cat(parts)

    def attribute(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False,
                  word_ids: torch.Tensor | None = None, n_words: int | None = None) -> Attribution:
        """Per unit, a word when `word_ids` are given and else a word piece: LO(p) - LO(m) in bits, m the
        q-weighted marginal over the unit replaced by the strategy's proposals (Eq. 4 for a single unit); every
        piece carries its unit's score. And a_R, a_N per example: Eq. 4 over the rationale and over the
        rest (`valid` marks the examples with both). Deterministic and RNG-neutral."""
        a_r, a_n, valid = self._multi_token(model, batch, create_graph)
        if word_ids is None:
            positions = torch.arange(batch.input_ids.shape[1], device=batch.input_ids.device)
            units = torch.where(batch.real_mask, positions.expand_as(batch.input_ids), -1)
            n_units = batch.input_ids.shape[1]
        else:
            units, n_units = word_ids.to(batch.input_ids.device), int(n_words if n_words is not None else 0)
        with torch.random.fork_rng(devices=_rng_devices(batch.input_ids.device)), \
                torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
            unit_scores = self._unit_scores(model, batch, units, n_units)
        return Attribution(scores=words_to_pieces(unit_scores, units), a_r=a_r, a_n=a_n, valid=valid,
                           words=unit_scores if word_ids is not None else None)

    def piece_attribution(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False) -> Attribution:
        return self.attribute(model, batch, create_graph=create_graph)

    def _multi_token(self, model: AttributableModel, batch: Batch,
                     create_graph: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """a_R, a_N (log2 odds drops, Eq. 4) and which examples have both sides."""
        size = batch.size
        with torch.random.fork_rng(devices=_rng_devices(batch.input_ids.device)), torch.set_grad_enabled(create_graph):
            ids, log_q, rows = self.replacements(batch)
            log_p, log_1mp = _split(_gold_log_probs(model, batch))
            zero = torch.zeros_like(log_p).unsqueeze(-1)  # q = 1: LO of p itself
            lo_p = gold_log_odds(zero, log_p.unsqueeze(-1), None if log_1mp is None else log_1mp.unsqueeze(-1),
                                 self.floor_bits)
            a_r = torch.zeros_like(lo_p)
            a_n = torch.zeros_like(lo_p)
            if rows.numel():
                lo = self.marginal_log_odds(model, batch, ids, log_q, rows)
                a_r = a_r.index_put((rows,), lo_p[rows] - lo[:, 0])
                a_n = a_n.index_put((rows,), lo_p[rows] - lo[:, 1])
        valid = torch.zeros(size, dtype=torch.bool, device=batch.input_ids.device)
        valid[rows] = True
        return a_r, a_n, valid

    def _unit_scores(self, model: AttributableModel, batch: Batch, unit_ids: torch.Tensor, n_units: int,
                     chunk: int = EVAL_CHUNK) -> torch.Tensor:
        """(B, U) LO(p) - LO(m) in bits per unit (a word, or a piece), the target being `batch.labels`/`tags`;
        -inf for absent units. Proposals come from the method's own generator, seeded from its seed."""
        proposer = self.proposer
        if proposer is None:
            raise RuntimeError(f"{self.name}: call prepare(MethodSetup(...)) before attributing")
        device = batch.input_ids.device
        cpu = batch.to("cpu")
        unit_ids = unit_ids.to("cpu")
        real = cpu.real_mask & (unit_ids >= 0)
        k = proposer.k
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _PER_UNIT_SALT))
        proposals, weights_flat = proposer.propose(cpu.input_ids, cpu.attention_mask, cpu.token_type_ids, real,
                                                   generator)
        b, length = cpu.input_ids.shape
        candidates = cpu.input_ids.unsqueeze(-1).expand(b, length, k).clone()
        weights = torch.zeros(b, length, k)
        candidates[real] = proposals.to(torch.long)
        weights[real] = weights_flat.float()
        member = word_membership(unit_ids, n_units) & real.unsqueeze(1)  # (B, U, L)
        rows, units = member.any(-1).nonzero(as_tuple=True)
        scores = torch.full((b, n_units), -math.inf)
        if rows.numel() == 0:
            return scores.to(device)
        chosen = member[rows, units]  # (n, L)
        replaced = torch.where(chosen.unsqueeze(1), candidates[rows].permute(0, 2, 1), cpu.input_ids[rows].unsqueeze(1))
        q = torch.einsum("nl,nlk->nk", chosen.float(), weights[rows]) / chosen.sum(1, keepdim=True)
        log_q = q.clamp_min(MIN_Q).log()
        n = rows.numel()
        perturbed = index_batch(batch, rows.to(device).repeat_interleave(k))
        perturbed = replace(perturbed, input_ids=replaced.reshape(n * k, length).to(device))
        log_p = chunked(lambda part: model.gold_log_prob(model(part), part), perturbed, chunk).view(n, k).cpu()
        floor = self.floor_bits
        lo_m = log2_odds(log_marginal(log_q, log_p, floor), floor)
        lo_x = log2_odds(model.gold_log_prob(model(batch), batch).cpu(), floor)
        scores[rows, units] = lo_x[rows] - lo_m
        return scores.to(device)

    def alignment_loss(self, model: AttributableModel, batch: Batch, logits: torch.Tensor, task_loss: torch.Tensor,
                       inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        ids, log_q, rows = self.replacements(batch)
        if rows.numel() == 0:
            return zero_loss(task_loss)
        lo = self.marginal_log_odds(model, batch, ids, log_q, rows)
        return margin_loss(lo[:, 0], lo[:, 1], self.margin)


def _rng_devices(device: torch.device | str) -> list[int]:
    device = torch.device(device)
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def _embedding_rows(model: torch.nn.Module | None) -> int | None:
    """How many input-embedding rows the task model has (replacements must index into them)."""
    encoder = getattr(model, "encoder", None)
    getter = getattr(encoder, "get_input_embeddings", None)
    if getter is None:
        return None
    embeddings = getter()
    return getattr(embeddings, "num_embeddings", None)


@register_method("im-mask", "im", "UIMER-IM, replacing with [MASK] (q = 1, one sentence per side)")
class IMMask(InputMarginalization):
    name = "im-mask"
    strategy = "mask"


@register_method("im-mlm", "im", "UIMER-IM, top-K proposals of a masked LM (the paper's BERT; needs --mlm)")
class IMMaskedLM(InputMarginalization):
    name = "im-mlm"
    strategy = "mlm"


@register_method("im-prior", "im", "UIMER-IM, word pieces drawn from the training text's unigram prior")
class IMPrior(InputMarginalization):
    name = "im-prior"
    strategy = "prior"


@register_method("im-uniform", "im", "UIMER-IM, word pieces drawn uniformly from the real vocabulary")
class IMUniform(InputMarginalization):
    name = "im-uniform"
    strategy = "uniform"


