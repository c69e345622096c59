"""The DiffMask extractor (De Cao et al. 2020): its nn modules, their persistence, and its own objective L_phi.

`DiffMaskExtractor` holds the gate MLPs, the placeholder and the Lagrange multiplier; `read_states` runs the
task model once on the clean input for it, `extractor_loss` is L_phi, `piece_scores` are its deterministic
scores. Training it (the optimizer steps and the schedule) lives in `uimer.training.schedules`; the method
that uses it for L_int is `uimer.interpret.diffmask`, whose docstring gives the design decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from uimer.data.encoding import Batch
from uimer.errors import ConfigError
from uimer.interpret.hard_concrete import expected_l0, gate_scores, hard_concrete_sample, keep_logits
from uimer.models.hooks import replace_layer_input
from uimer.models.modes import eval_mode
from uimer.models.task_model import TaskModel

GATE_BIAS_INIT = 5.0
ALPHA_INIT = 1.0
ALPHA_MAX = 200.0
GATES = ("input", "hidden")


def _uniform(shape: tuple[int, ...], bound: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(shape, generator=generator) * 2 - 1) * bound


class GateStack(nn.Module):
    """K independent DiffMask gate MLPs evaluated together.

    MLP_k(x) = 10 * tanh(WN-Linear(tanh(WN-Linear(x)))) + b_k with b_k initialised to 5 (gates start open).
    Input k is [shared; each_k]; the first layer's weight is split in two so [h_0; h_i] is never concatenated.
    Weight norm is per output row over the whole input, like `torch.nn.utils.weight_norm(Linear)`.
    """

    def __init__(self, num_gates: int, in_each: int, in_shared: int, hidden: int,
                 generator: torch.Generator | None = None):
        super().__init__()
        generator = generator or torch.Generator().manual_seed(0)
        fan_in = in_each + in_shared
        bound1 = 1.0 / math.sqrt(fan_in)
        self.v_each = nn.Parameter(_uniform((num_gates, hidden, in_each), bound1, generator))
        self.v_shared = (
            nn.Parameter(_uniform((num_gates, hidden, in_shared), bound1, generator)) if in_shared else None
        )
        self.g1 = nn.Parameter(self._norm1().detach().clone())
        self.b1 = nn.Parameter(_uniform((num_gates, hidden), bound1, generator))
        bound2 = 1.0 / math.sqrt(hidden)
        self.v2 = nn.Parameter(_uniform((num_gates, hidden), bound2, generator))
        self.g2 = nn.Parameter(self.v2.detach().norm(dim=-1).clone())
        self.b2 = nn.Parameter(_uniform((num_gates,), bound2, generator))
        self.bias = nn.Parameter(torch.full((num_gates,), GATE_BIAS_INIT))

    def _norm1(self) -> torch.Tensor:
        squared = self.v_each.pow(2).sum(-1)
        if self.v_shared is not None:
            squared = squared + self.v_shared.pow(2).sum(-1)
        return squared.sqrt()

    def forward(self, each: torch.Tensor, shared: torch.Tensor | None = None) -> torch.Tensor:
        """each (B, L, K, E), shared (B, L, S) or None -> gate logits (B, L, K) in [b - 10, b + 10]."""
        scale1 = self.g1 / self._norm1()  # (K, D)
        x = torch.einsum("blke,kde->blkd", each, self.v_each)
        if self.v_shared is not None:
            x = x + torch.einsum("bls,kds->blkd", shared, self.v_shared)
        x = torch.tanh(x * scale1 + self.b1)
        w2 = self.v2 * (self.g2 / self.v2.norm(dim=-1)).unsqueeze(-1)
        return 10.0 * torch.tanh((x * w2).sum(-1) + self.b2) + self.bias


@dataclass
class Reading:
    """What one forward of the clean input gives the extractor."""

    each: torch.Tensor  # (B, L, K, H) states read by the K gates
    shared: torch.Tensor | None  # (B, L, H) h_0 for the input gate
    target: torch.Tensor  # (B, L, H) the tensor that masking replaces (h_0 or h_k)
    logits: torch.Tensor  # the model's clean prediction


class DiffMaskExtractor(nn.Module):
    """Gates + placeholder + the Lagrange multiplier alpha (kept outside the task model's state)."""

    def __init__(self, gate: str, hidden_size: int, num_layers: int, placeholder: torch.Tensor,
                 hidden_layer: int | None = None, generator: torch.Generator | None = None):
        super().__init__()
        if gate not in GATES:
            raise ConfigError(f"--dm-gate must be one of {', '.join(GATES)}, not {gate!r}")
        self.gate = gate
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.hidden_layer = num_layers // 2 if hidden_layer is None else int(hidden_layer)
        if gate == "hidden" and not 0 <= self.hidden_layer < num_layers:
            raise ConfigError(f"--dm-hidden-layer must be in 0..{num_layers - 1} for this encoder")
        width = max(8, hidden_size // 4)  # the reference's hidden_attention = 768 // 4
        if gate == "input":
            self.gates = GateStack(num_layers + 2, hidden_size, hidden_size, width, generator)
        else:
            self.gates = GateStack(1, hidden_size, 0, width, generator)
        self.placeholder = nn.Parameter(placeholder.detach().reshape(hidden_size).clone())
        self.alpha = nn.Parameter(torch.tensor(ALPHA_INIT))

    def gate_parameters(self) -> list[nn.Parameter]:
        """Everything the gates' optimizer trains (alpha has its own, ascending one)."""
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def gate_logits(self, reading: Reading) -> torch.Tensor:
        return self.gates(reading.each, reading.shared)

    def config_dict(self) -> dict:
        return {"gate": self.gate, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "hidden_layer": self.hidden_layer}


def save_extractor(extractor: DiffMaskExtractor, path: Path) -> None:
    """Persist a trained extractor next to a saved model (for `uimer explain`)."""
    state = {k: v.detach().cpu() for k, v in extractor.state_dict().items()}
    torch.save({"config": extractor.config_dict(), "state": state}, Path(path))


def load_extractor(path: Path, device: torch.device | str = "cpu") -> DiffMaskExtractor:
    data = torch.load(Path(path), weights_only=True, map_location="cpu")
    cfg = data["config"]
    extractor = DiffMaskExtractor(cfg["gate"], cfg["hidden_size"], cfg["num_layers"],
                                  torch.zeros(cfg["hidden_size"]), cfg["hidden_layer"])
    extractor.load_state_dict(data["state"])
    return extractor.to(device)


def read_states(model: TaskModel, batch: Batch, extractor: DiffMaskExtractor) -> Reading:
    """One clean forward recording the states the gates read (DiffMask's getter) and the clean prediction."""
    embeds = model.embed(batch.input_ids)
    with model.autocast():
        out = model.encoder(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                            token_type_ids=batch.token_type_ids, output_hidden_states=True)
    hidden = tuple(h.to(embeds.dtype) for h in out.hidden_states)  # the gates read fp32 states under bf16 too
    logits = model.head_logits(out.last_hidden_state.to(embeds.dtype), batch.attention_mask, batch.word_starts)
    if extractor.gate == "input":
        return Reading(torch.stack([embeds, *hidden], dim=2), embeds, embeds, logits)
    state = hidden[extractor.hidden_layer]
    return Reading(state.unsqueeze(2), None, state, logits)


def masked_logits(model: TaskModel, batch: Batch, extractor: DiffMaskExtractor, reading: Reading,
                  gates: torch.Tensor) -> torch.Tensor:
    """The prediction with every real piece's state blended towards the placeholder by (1 - gate)."""
    keep = torch.where(batch.real_mask, gates, torch.ones_like(gates)).unsqueeze(-1)
    masked = keep * reading.target + (1 - keep) * extractor.placeholder
    if extractor.gate == "input":
        return model(batch, inputs_embeds=masked)
    with replace_layer_input(model.encoder, extractor.hidden_layer, masked):
        return model(batch)


def prediction_kl(clean: torch.Tensor, masked: torch.Tensor, batch: Batch) -> torch.Tensor:
    """(B,) KL(p_clean || p_masked): over classes, or per kept word over emission softmaxes, word-averaged."""
    log_p = torch.log_softmax(clean, dim=-1)
    log_q = torch.log_softmax(masked, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    if kl.dim() == 2:  # tagging: (B, W)
        words = batch.word_mask.to(kl.dtype)
        kl = (kl * words).sum(1) / words.sum(1).clamp_min(1.0)
    return kl


def real_mean(values: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """(B,) mean of (B, L) values over each example's real word pieces."""
    real = real_mask.to(values.dtype)
    return (values * real).sum(1) / real.sum(1).clamp_min(1.0)


def extractor_loss(model: TaskModel, extractor: DiffMaskExtractor, batch: Batch, eps: float,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
    """L_phi = mean_b[alpha * (KL_b - eps)] + mean_b[expected L0 over real pieces]; theta must be frozen."""
    with torch.no_grad():
        reading = read_states(model, batch, extractor)
    logits = extractor.gate_logits(reading)
    gates = revivable(hard_concrete_sample(logits, generator).prod(-1), logits)
    kl = prediction_kl(reading.logits, masked_logits(model, batch, extractor, reading, gates), batch)
    l0 = real_mean(expected_l0(logits).prod(-1), batch.real_mask).mean()
    constraint = (kl - eps).mean()
    loss = extractor.alpha * constraint + l0
    stats = {"l_phi": float(loss.detach()), "kl": float(kl.detach().mean()), "l0": float(l0.detach())}
    return loss, stats


def revivable(gates: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """The sampled piece gates unchanged in value, with a gradient path that never dies: + (log p - log p.detach()),
    p = P(piece kept) (the product of the stack's P(z != 0)).

    A rectified sample of exactly 0 passes no gradient, and a piece's gate is a product of N+2 of them, so once
    the L0 term has closed a piece the KL constraint can never reopen it (measured: the extractor ended with
    every piece masked and KL far above eps however large alpha grew). Through log p a closed gate receives
    dKL/dz * (1 - p_k) per stack member, i.e. a unit-scale signal exactly where the reparameterised one
    vanishes, and ~0 for open gates, where the usual path dominates. Forward values are DiffMask's."""
    log_keep = torch.nn.functional.logsigmoid(keep_logits(logits)).sum(-1)
    return gates + (log_keep - log_keep.detach())


def piece_scores(model: TaskModel, batch: Batch, extractor: DiffMaskExtractor, mode: str) -> torch.Tensor:
    """(B, L) extractor scores of the clean input (dropout off), zero on [CLS]/[SEP]/padding."""
    with eval_mode(model):
        reading = read_states(model, batch, extractor)
    scores = gate_scores(extractor.gate_logits(reading), mode)
    return scores * batch.real_mask.to(scores.dtype)
