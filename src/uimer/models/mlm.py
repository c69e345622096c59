"""Masked language models for UIMER-IM's BERT strategy (`im-mlm`): loading a trained one, and building a fresh
one from an encoder (its weights, a new MLM head tied to the word embeddings) for `uimer mlm train`, whose
training and CLI live in `uimer.training.mlm`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

from uimer.errors import ConfigError


# -- loading ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars (a missing head is our error to report)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_masked_lm(name_or_path: str, tokenizer=None) -> nn.Module:
    """A masked LM by Hugging Face name, local directory or embedded short name, in eval mode.

    Raises ConfigError when it cannot be loaded, has no trained LM head (e.g. the bare packaged MiniLM), or
    its tokenizer's vocabulary differs from `tokenizer`'s (proposals are token ids of the encoder).
    """
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    from uimer.models.encoder import resolve_encoder

    path = resolve_encoder(name_or_path)
    if tokenizer is not None:
        try:
            mlm_tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
        except (OSError, ValueError) as err:
            raise ConfigError(f"cannot load the tokenizer of masked LM '{name_or_path}' ({path}): {err}") from err
        if mlm_tokenizer.get_vocab() != tokenizer.get_vocab():
            raise ConfigError(f"masked LM '{name_or_path}' has a different tokenizer vocabulary from the encoder's; "
                              "its proposals would be the wrong word pieces (train one with `uimer mlm train`)")
    try:
        with quiet_transformers():
            model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load masked LM '{name_or_path}' ({path}): {err}") from err
    missing = sorted(info.get("missing_keys", []))
    if missing:
        raise ConfigError(f"'{name_or_path}' has no trained masked-LM head (missing {', '.join(missing[:3])}); "
                          "train one with `uimer mlm train --task T --base minilm --out DIR` and pass --mlm DIR")
    return model.eval()


def build_fresh_mlm(base: str) -> tuple[nn.Module, object]:
    """A masked LM from `base`'s config with `base`'s encoder weights and a fresh head tied to the embeddings."""
    from transformers import AutoConfig, AutoModelForMaskedLM

    from uimer.models.encoder import load_encoder, load_tokenizer, resolve_encoder

    path = resolve_encoder(base)
    tokenizer = load_tokenizer(base)
    config = AutoConfig.from_pretrained(path)
    config.tie_word_embeddings = True
    with quiet_transformers():
        model = AutoModelForMaskedLM.from_config(config)
        encoder = load_encoder(base)
    target = model.base_model
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    result = target.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"encoder '{base}' does not fit its masked-LM architecture "
                          f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})")
    model.tie_weights()
    return model, tokenizer
