"""The model contract every interpretation method is written against.

uimer's own `TaskModel` satisfies it, and so do the adapters that wrap a Hugging Face model: methods never
reach past these members, so one implementation of each method serves both. Everything is per example and
differentiable, because GB methods take gradients of `gold_score` w.r.t. the input embeddings (and
differentiate those gradients again), IM compares `gold_log_prob` of replaced sentences, and DM hooks the
layers of `encoder`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from uimer.data.encoding import Batch
from uimer.data.types import TaskKind


@runtime_checkable
class AttributableModel(Protocol):
    """A task model seen as the methods see it; a `Batch` carries ids, masks, gold labels and rationales."""

    kind: TaskKind
    encoder: nn.Module  # the transformer, whose input embeddings and layers the methods use

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings (B, L, H) of the ids, without position or segment embeddings."""

    def __call__(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Logits from the batch, run on `inputs_embeds` when given (the graph back to them stays)."""

    def gold_score(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) the score saliency is taken of: the gold logit, or the gold sequence log-likelihood."""

    def gold_log_prob(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B,) log p(gold | x)."""

    def gold_log_complement(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """(B,) log(1 - p(gold | x)) computed stably, or None where it has no closed form (a CRF)."""

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The scalar task loss of the batch (mean over examples)."""
