"""Hard-concrete gates (Louizos et al. 2018, as DiffMask uses them): sampling, closed-form L0, test-time gate.

Pure tensor maths, shared by the DiffMask extractor's objective and its scores; see `uimer.interpret.diffmask`
for why the temperature and stretch are what they are.
"""

from __future__ import annotations

import math

import torch

from uimer.errors import ConfigError

TEMPERATURE = 0.2
STRETCH_L = -0.2
STRETCH_R = 1.0
SCORES = ("keep-prob", "gate")


def hard_concrete_sample(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = TEMPERATURE,
    low: float = STRETCH_L,
    high: float = STRETCH_R,
) -> torch.Tensor:
    """A reparameterised sample z in [0, 1]: exactly 0 with positive probability (DiffMask's RectifiedStreched)."""
    u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    u = u.clamp(1e-6, 1 - 1e-6)
    y = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / temperature)
    return (low + (high - low) * y).clamp(0.0, 1.0)


def keep_logits(
    logits: torch.Tensor, temperature: float = TEMPERATURE, low: float = STRETCH_L, high: float = STRETCH_R
) -> torch.Tensor:
    """logit(P(z != 0)): z > 0 iff the concrete y > -l/(r-l), i.e. iff logit - T*log(-l/r) wins."""
    return logits - temperature * math.log(-low / high)


def expected_l0(
    logits: torch.Tensor, temperature: float = TEMPERATURE, low: float = STRETCH_L, high: float = STRETCH_R
) -> torch.Tensor:
    """P(z != 0) in closed form: sigmoid(logit - T*log(-l/r))."""
    return torch.sigmoid(keep_logits(logits, temperature, low, high))


def deterministic_gate(logits: torch.Tensor, low: float = STRETCH_L, high: float = STRETCH_R) -> torch.Tensor:
    """Louizos et al.'s test-time gate: the stretched, clamped sigmoid of the logit (no noise)."""
    return (low + (high - low) * torch.sigmoid(logits)).clamp(0.0, 1.0)


def gate_scores(gate_logits: torch.Tensor, mode: str = "keep-prob") -> torch.Tensor:
    """(B, L) piece scores from (B, L, K) stacked gate logits: the product over the stack."""
    if mode == "keep-prob":
        return expected_l0(gate_logits).prod(-1)
    if mode == "gate":
        return deterministic_gate(gate_logits).prod(-1)
    raise ConfigError(f"--dm-score must be one of {', '.join(SCORES)}, not {mode!r}")
