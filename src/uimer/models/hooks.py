"""Reaching into an encoder's layers: the list of transformer layers and a hook replacing one layer's input.

DiffMask's hidden gate masks the input of one encoder layer; these helpers know where BERT-like encoders keep
their layers, so the interpretation code does not.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from uimer.errors import ConfigError


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's list of transformer layers (BERT/RoBERTa/DistilBERT-style), for the hidden gate's hook."""
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer"):
        obj: object = encoder
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, nn.ModuleList):
            return obj
    raise ConfigError("--dm-gate hidden needs an encoder with a list of layers (BERT-like); use --dm-gate input")


@contextmanager
def replace_layer_input(encoder: nn.Module, index: int, value: torch.Tensor) -> Iterator[None]:
    """Within the block, encoder layer `index` receives `value` as its hidden states (DiffMask's setter)."""
    layer = encoder_layers(encoder)[index]

    def hook(module, args, kwargs):
        if args:
            return (value, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": value}

    handle = layer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()
