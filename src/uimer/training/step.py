"""The training steps: one optimizer step of the task model (shared by every schedule and the step-cost
benchmark), and one of the DiffMask extractor.

`step_loss` is the only place where L = L_task + alpha * L_int is formed, and `train_step` the only place it is
stepped: `fit` calls it for the baseline, GB and IM, the DiffMask model phase for DM (with the extractor
frozen), and `benchmarks/step_cost.py` times it, so what is measured is what trains; `uimer.api.Aligner` (and
through it `uimer.hf.UimerTrainer`) takes `step_loss` and leaves the step to its caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from uimer.data.encoding import Batch
from uimer.interpret.base import InterpretationMethod
from uimer.interpret.extractor import ALPHA_MAX, DiffMaskExtractor, extractor_loss
from uimer.models.protocol import AttributableModel


@dataclass
class StepLosses:
    """The losses of one step, as floats (L_int is None when it was not computed: baseline, warm-up, alpha 0),
    and the step's logits (still in the graph until the step is taken)."""

    l_task: float
    l_int: float | None
    logits: torch.Tensor | None = None


@dataclass
class StepTerms:
    """L and its parts as tensors, still in the graph: `loss` is what to back-propagate. Kept as tensors (not
    floats) so that a caller that only backpropagates, like `uimer.api.Aligner` inside a HF Trainer, does not
    pay a device sync per step; `losses()` gives the floats a training log wants."""

    loss: torch.Tensor
    l_task: torch.Tensor
    l_int: torch.Tensor | None  # None when L_int was not computed
    logits: torch.Tensor

    def losses(self) -> StepLosses:
        """The parts as floats (a sync on an accelerator), with the logits."""
        l_int = None if self.l_int is None else float(self.l_int.detach())
        return StepLosses(float(self.l_task.detach()), l_int, self.logits)


def step_loss(model: AttributableModel, batch: Batch, method: InterpretationMethod, *, alpha: float,
              alignment: bool) -> StepTerms:
    """L = L_task + alpha * L_int for a training batch (L_int only when `alignment`): forward on the word
    embeddings, kept in the graph, so gradient methods differentiate through this very forward. Returns the
    loss to back-propagate with its parts. `train_step` and `uimer.api.Aligner` (hence `uimer.hf.UimerTrainer`)
    both use it, so the CLI and the library train on the same L."""
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)
    l_task = model.task_loss(logits, batch)
    if not alignment:
        return StepTerms(l_task, l_task, None, logits)
    l_int = method.alignment_loss(model, batch, logits, l_task, embeds)
    return StepTerms(l_task + alpha * l_int, l_task, l_int, logits)


def train_step(model: AttributableModel, batch: Batch, method: InterpretationMethod, optimizer, scheduler, *,
               alpha: float, max_grad_norm: float, alignment: bool) -> StepLosses:
    """One step on theta: `step_loss`, backward, clipping over the parameters that train, optimizer and
    scheduler step. The caller sets the model's mode."""
    terms = step_loss(model, batch, method, alpha=alpha, alignment=alignment)
    losses = terms.losses()
    optimizer.zero_grad(set_to_none=True)
    terms.loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return losses


def make_extractor_optimizers(extractor: DiffMaskExtractor, lr: float, lr_alpha: float):
    """Adam on gates + placeholder (constant LR, as DiffMask); plain SGD on alpha, ascended (gradient negated)
    so that alpha moves in proportion to the constraint violation (see `uimer.interpret.diffmask`)."""
    gates = torch.optim.Adam(extractor.gate_parameters(), lr=lr)
    alpha = torch.optim.SGD([extractor.alpha], lr=lr_alpha)
    return gates, alpha


def extractor_step(model: AttributableModel, extractor: DiffMaskExtractor, batch: Batch, optimizers, eps: float,
                   generator: torch.Generator | None = None, max_grad_norm: float = 1.0) -> dict:
    """One L_phi step; call with the model frozen and in eval mode. Alpha ascends and stays in [0, 200]."""
    opt_gates, opt_alpha = optimizers
    loss, stats = extractor_loss(model, extractor, batch, eps, generator)
    opt_gates.zero_grad(set_to_none=True)
    opt_alpha.zero_grad(set_to_none=True)
    loss.backward()
    if extractor.alpha.grad is not None:
        extractor.alpha.grad.neg_()  # maximise the Lagrangian w.r.t. alpha
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(extractor.gate_parameters(), max_grad_norm)
    opt_gates.step()
    opt_alpha.step()
    with torch.no_grad():
        extractor.alpha.clamp_(0.0, ALPHA_MAX)
    stats["alpha"] = float(extractor.alpha.detach())
    return stats
