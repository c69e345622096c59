"""Temporary module modes: dropout off, or parameters frozen, within a block and restored afterwards.

The DiffMask schedule trains the extractor on a frozen, dropout-free task model and the task model against
a frozen extractor; the same context managers serve training, scoring and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Dropout off within the block, the previous mode restored afterwards (the graph is unaffected)."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


@contextmanager
def frozen(*modules: nn.Module) -> Iterator[None]:
    """requires_grad off for every parameter within the block: no gradient, hence no optimizer update."""
    params = [p for m in modules for p in m.parameters()]
    flags = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
