"""UIMER-GB: gradient-based interpretation methods (Ghaeini et al. 2019; Huang et al. 2021), paper §3.1.

Attribution scores are functions of the gradient of a per-example objective with respect to the input
*word embeddings* `inputs_embeds` (B, L, H) -- one gradient per example and position. Examples are
independent, so a single backward of the batch sum gives every example its own gradient; the reference's
differentiation w.r.t. rows of the embedding table mixed repeated tokens and examples and cost O(B) backward
passes. During training the gradient is taken through the training forward itself (`create_graph=True`), so
L_int adds one input-gradient pass and a double backward, never a second forward.

Design decisions (vs. the reference code, see the reference digest §4 and §9 items 13-16):
- Ghaeini: s_b is the gold-class logit (classification, NLI) or the gold tag sequence's CRF log-likelihood
  (slot filling). L_int = per example sum_{t in R_b} max(0, -a_{b,t}) -- the *sum* the paper describes (the
  reference averaged over violating positions, which makes one violation weigh as much as ten) -- then the
  mean over examples that have rationales.
  The paper's a_{b,t} = sum_h ds_b/de_{b,t,h} is *identically zero* for BERT-style encoders: the word
  embedding is added to position/segment embeddings and LayerNorm-ed, and LayerNorm is invariant to adding a
  constant to every dimension, so every input gradient sums to 0 over h (MiniLM: |sum| ~ 1e-7, float noise,
  against L1 norms ~ 3-20). The reference's table-row gradients are sums of such gradients, so its hinge
  trained on rounding noise. The default saliency is therefore gradient x input,
  a_{b,t} = sum_h e_{b,t,h} ds_b/de_{b,t,h}: still signed ("does this word push the gold output up?", the
  first-order effect of the word's embedding), per position and per example, and non-degenerate.
  `--ghaeini-saliency grad-sum` keeps the literal definition (only meaningful for encoders without
  LayerNorm right after the embeddings).
- Huang: g_{b,t} = ||dL_b/de_{b,t}||_1 with L_b example b's own task loss (CE or CRF NLL), s = g normalised
  over *real* word pieces only ([CLS]/[SEP]/padding excluded, also from the order loss's maximum).
  Reductions follow the reference (digest §4.2), because the only alpha we have for GB is the reference's
  --feng_weight default 1.0, which was set against them: base and order are *summed* over the batch; the
  gate variants are *averaged over the whole batch* (examples without rationales count, with 0). An earlier
  version averaged every variant over the examples with rationales: that left base/order about
  B * coverage (~20x at B = 24) weaker than alpha = 1 assumes (issue 29: in slot-1 L_int sat flat at ~0.24
  beside a CRF loss of 15-40), and the gate variants ~1/coverage (<= 1.25x) stronger.
- Huang's gate multiplies the *base* loss (target 1/k) by z_b ~ Bernoulli(1 - p_b): Huang et al.'s gate
  only decides *whether* an example's rationale loss is applied (to skip non-helpful rationales); it does
  not change what that loss is. The reference's target 1 in the gate variant has the same optimum (all mass
  spread evenly over R) but a different scale; `huang_base_terms(..., target="one")` reproduces it.
- The gate's Bernoulli draws come from the method's own generator, seeded from the run seed in `prepare`,
  so they never consume the global (dropout) RNG.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from uimer.data.encoding import Batch
from uimer.interpret.base import (
    Attribution,
    InterpretationMethod,
    MethodSetup,
    register_method,
    zero_loss,
)
from uimer.interpret.options import MethodOptions, option, register_options
from uimer.models.protocol import AttributableModel

HUANG_VARIANTS = ("base", "gate", "order", "gate-order")
GHAEINI_SALIENCIES = ("grad-x-input", "grad-sum")
ORDER_EPS = 1e-6  # below this the non-rationale maximum counts as 0: nothing to order against
_GATE_SEED_SALT = 0x6A7E_5EED  # decorrelates the gate stream from torch.manual_seed(seed)'s stream


# -- pure loss maths (tested on hand-set scores) -----------------------------------------------------
def rationale_positions(rationale: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: real word pieces marked as rationale (specials and padding never are)."""
    return (rationale > 0) & real_mask


def huang_reduce(variant: str, terms: torch.Tensor) -> torch.Tensor:
    """The reference's reduction of per-example Huang terms: a batch sum for base/order, a batch mean
    (every example counts) for the gate variants."""
    if variant.startswith("gate"):
        return terms.mean() if terms.numel() else terms.new_zeros(())
    return terms.sum()


def mean_over_rationale_examples(terms: torch.Tensor, rationale_mask: torch.Tensor) -> torch.Tensor:
    """Average per-example terms over the examples that have at least one rationale piece (0 if none)."""
    has = rationale_mask.any(1)
    count = has.sum()
    if int(count) == 0:
        return terms.new_zeros(())
    return (terms * has.to(terms.dtype)).sum() / count.to(terms.dtype)


def ghaeini_terms(scores: torch.Tensor, rationale_mask: torch.Tensor) -> torch.Tensor:
    """(B,) per example: sum over rationale pieces of max(0, -a): rationale gradients should be positive."""
    return (torch.relu(-scores) * rationale_mask.to(scores.dtype)).sum(1)


def normalise_scores(grad_norms: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """s_{b,t} = g_{b,t} / sum of g over real pieces of b; 0 on special and padding pieces."""
    g = grad_norms * real_mask.to(grad_norms.dtype)
    total = g.sum(1, keepdim=True)
    safe = torch.where(total > 0, total, torch.ones_like(total))  # no 0/0 (and no NaN gradient) if g == 0
    return g / safe


def huang_base_terms(
    scores: torch.Tensor, rationale_mask: torch.Tensor, target: str = "uniform"
) -> torch.Tensor:
    """(B,) sum_{t in R} (s_t - 1/k)^2: all attribution mass, spread evenly over the k rationale pieces.

    `target="one"` gives the reference's gate-variant term sum_{t in R} (s_t - 1)^2.
    """
    r = rationale_mask.to(scores.dtype)
    if target == "uniform":
        k = r.sum(1, keepdim=True).clamp_min(1.0)
        goal = 1.0 / k
    elif target == "one":
        goal = torch.ones_like(scores)
    else:
        raise ValueError(f"target must be 'uniform' or 'one', not {target!r}")
    return ((scores - goal) ** 2 * r).sum(1)


def huang_order_terms(
    scores: torch.Tensor, rationale_mask: torch.Tensor, real_mask: torch.Tensor, eps: float = ORDER_EPS
) -> torch.Tensor:
    """(B,) sum_{t in R} min(s_t / M - 1, 0)^2, M = max score of the real non-rationale pieces.

    Every rationale piece should score at least as high as the best non-rationale piece. Examples with no
    non-rationale piece, or whose non-rationale maximum is below `eps`, contribute 0.
    """
    non_rationale = real_mask & ~rationale_mask
    best = scores.masked_fill(~non_rationale, float("-inf")).amax(1)
    valid = non_rationale.any(1) & (best > eps)
    safe = torch.where(valid, best, torch.ones_like(best))
    shortfall = torch.clamp(scores / safe.unsqueeze(1) - 1.0, max=0.0)
    terms = (shortfall**2 * rationale_mask.to(scores.dtype)).sum(1)
    return terms * valid.to(scores.dtype)


def huang_gate_keep_probability(scores: torch.Tensor, rationale_mask: torch.Tensor) -> torch.Tensor:
    """(B,) 1 - p_b with p_b = attribution mass already on the rationales (no gradient; clamped to [0, 1])."""
    p = (scores.detach() * rationale_mask.to(scores.dtype)).sum(1)
    return (1.0 - p).clamp(0.0, 1.0)


def huang_loss(
    variant: str,
    scores: torch.Tensor,
    rationale_mask: torch.Tensor,
    real_mask: torch.Tensor,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_int of a Huang variant from normalised scores, reduced as the reference (`huang_reduce`); `gate` (B,)
    0/1 is required by the gate variants."""
    if variant in ("base", "gate"):
        terms = huang_base_terms(scores, rationale_mask)
    elif variant in ("order", "gate-order"):
        terms = huang_order_terms(scores, rationale_mask, real_mask)
    else:
        raise ValueError(f"unknown Huang variant {variant!r}; choose from {HUANG_VARIANTS}")
    if variant.startswith("gate"):
        if gate is None:
            raise ValueError(f"variant {variant!r} needs the gate samples z")
        terms = terms * gate.to(terms.dtype)
    return huang_reduce(variant, terms)


@register_options
@dataclass(frozen=True)
class GBOptions(MethodOptions):
    """The gradient-based methods' options."""

    title = "UIMER-GB (gradient-based methods)"
    family = "gb"

    ghaeini_saliency: str = option(
        GHAEINI_SALIENCIES[0], choices=GHAEINI_SALIENCIES, only=("gb-ghaeini",),
        help="gb-ghaeini attribution: gradient x input (default), or the paper's plain sum of gradients over "
             "embedding dimensions, which is identically 0 when LayerNorm follows the embeddings (BERT, MiniLM)",
    )


# -- methods -----------------------------------------------------------------------------------------
class GradientMethod(InterpretationMethod):
    """Shared machinery: per-example input gradients of an objective, taken through a given forward."""

    family = "gb"
    options_class = GBOptions
    unit = "normalised |gradient|"
    needs_double_backward = True

    def objective(self, model: AttributableModel, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        """(B,) the per-example quantity whose input gradient is the explanation."""
        raise NotImplementedError

    def scores_from_gradient(self, grad: torch.Tensor, inputs_embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B, L) attribution per piece from the (B, L, H) input gradient, zero on non-real pieces."""
        raise NotImplementedError

    def scores_through(
        self, model: AttributableModel, batch: Batch, logits: torch.Tensor, inputs_embeds: torch.Tensor, create_graph: bool
    ) -> torch.Tensor:
        """Scores from a forward that already ran on `inputs_embeds` (one backward for the whole batch)."""
        total = self.objective(model, batch, logits).sum()
        (grad,) = torch.autograd.grad(total, inputs_embeds, create_graph=create_graph)
        return self.scores_from_gradient(grad, inputs_embeds, batch)

    def piece_attribution(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False) -> Attribution:
        """A separate attribution pass, run without dropout and inside a forked RNG.

        Neither the dropout state of training nor the model's train/eval mode changes. With `create_graph`
        the scores stay differentiable w.r.t. every parameter, the embedding table included.
        """
        device = batch.input_ids.device
        devices = [device] if device.type == "cuda" else []
        was_training = model.training
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            model.eval()
            try:
                embeds = model.embed(batch.input_ids)
                if not create_graph:
                    embeds = embeds.detach()
                if not embeds.requires_grad:
                    embeds.requires_grad_(True)
                logits = model(batch, inputs_embeds=embeds)
                scores = self.scores_through(model, batch, logits, embeds, create_graph)
            finally:
                model.train(was_training)
        if not create_graph:
            scores = scores.detach()
        return Attribution(scores=scores, valid=batch.real_mask.any(1))

    def alignment_loss(
        self,
        model: AttributableModel,
        batch: Batch,
        logits: torch.Tensor,
        task_loss: torch.Tensor,
        inputs_embeds: torch.Tensor,
    ) -> torch.Tensor:
        rationale = rationale_positions(batch.rationale, batch.real_mask)
        if not bool(rationale.any()):
            return zero_loss(task_loss)
        if not inputs_embeds.requires_grad:
            raise ValueError("gradient methods need inputs_embeds attached to the graph of the training forward")
        scores = self.scores_through(model, batch, logits, inputs_embeds, create_graph=True)
        return self.loss_from_scores(scores, rationale, batch.real_mask)

    def loss_from_scores(
        self, scores: torch.Tensor, rationale: torch.Tensor, real_mask: torch.Tensor
    ) -> torch.Tensor:
        raise NotImplementedError


@register_method("gb-ghaeini", "gb", "UIMER-GB, Ghaeini et al. 2019: hinge keeping rationale gradients positive")
class Ghaeini(GradientMethod):
    """Saliency learning: every rationale word's saliency for the gold output should be positive.

    Saliency = gradient x input summed over embedding dimensions by default (see the module docstring for
    why the literal gradient sum is 0 under BERT's embedding LayerNorm).
    """

    name = "gb-ghaeini"
    unit = "gradient × input"

    def objective(self, model: AttributableModel, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return model.gold_score(logits, batch)

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.saliency = GBOptions.from_dict(self.options).ghaeini_saliency

    def scores_from_gradient(self, grad: torch.Tensor, inputs_embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
        per_dim = grad * inputs_embeds if self.saliency == "grad-x-input" else grad
        return per_dim.sum(-1) * batch.real_mask.to(grad.dtype)

    def loss_from_scores(self, scores, rationale, real_mask) -> torch.Tensor:
        return mean_over_rationale_examples(ghaeini_terms(scores, rationale), rationale)


class Huang(GradientMethod):
    """Huang et al. 2021: normalised L1 gradient norms of each example's own task loss."""

    # 2: the reference's reductions (base/order summed over the batch, gate variants a batch mean; issue 29, fix 2).
    version = "2"

    variant: ClassVar[str] = "base"

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.generator = torch.Generator().manual_seed(_GATE_SEED_SALT)

    def prepare(self, setup: MethodSetup) -> None:
        """Seed the gate's own generator from the run seed (reproducible, independent of dropout draws)."""
        self.generator = torch.Generator().manual_seed((int(setup.seed) * 1_000_003 + _GATE_SEED_SALT) % 2**63)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "generator" in state:
            self.generator.set_state(state["generator"])

    def objective(self, model: AttributableModel, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        return -model.gold_log_prob(logits, batch)  # cross-entropy, or the CRF negative log-likelihood

    def scores_from_gradient(self, grad: torch.Tensor, inputs_embeds: torch.Tensor, batch: Batch) -> torch.Tensor:
        return normalise_scores(grad.abs().sum(-1), batch.real_mask)

    def sample_gate(self, scores: torch.Tensor, rationale: torch.Tensor) -> torch.Tensor:
        """z_b ~ Bernoulli(1 - p_b), one draw per example of the batch from the method's generator."""
        keep = huang_gate_keep_probability(scores, rationale)
        z = torch.bernoulli(keep.to("cpu", torch.float64), generator=self.generator)
        return z.to(scores.device, scores.dtype)

    def loss_from_scores(self, scores, rationale, real_mask) -> torch.Tensor:
        gate = self.sample_gate(scores, rationale) if self.variant.startswith("gate") else None
        return huang_loss(self.variant, scores, rationale, real_mask, gate)


@register_method("gb-huang-base", "gb", "UIMER-GB, Huang et al. 2021: rationale pieces share all the attribution")
class HuangBase(Huang):
    name = "gb-huang-base"
    variant = "base"


@register_method("gb-huang-gate", "gb", "UIMER-GB, Huang et al. 2021: base loss behind a Bernoulli(1 - p) gate")
class HuangGate(Huang):
    name = "gb-huang-gate"
    variant = "gate"


@register_method("gb-huang-order", "gb", "UIMER-GB, Huang et al. 2021: rationales outrank every non-rationale")
class HuangOrder(Huang):
    name = "gb-huang-order"
    variant = "order"


@register_method("gb-huang-gate-order", "gb", "UIMER-GB, Huang et al. 2021: order loss behind the gate")
class HuangGateOrder(Huang):
    name = "gb-huang-gate-order"
    variant = "gate-order"
