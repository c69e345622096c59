"""Shared fixtures: tiny in-memory BERT models and a word-level fast tokenizer, so tests run offline in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UIMER_TEST_DATA_DIR", REPO.parent / "shared" / "data"))

WORDS = (
    "add play the a to my playlist song music weather in paris what is book rate find movie show "
    "kids smiling frowning children waving at camera are and of me stars out six five tomorrow"
).split()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set UIMER_TEST_DATA_DIR)")
    return SHARED_DATA


def make_tokenizer():
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, "##s", "##ing", "##er"]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


def make_tiny_encoder(vocab_size: int, seed: int = 0, attn: str = "eager"):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, attn_implementation=attn,
    )
    return BertModel(config, add_pooling_layer=False)


@pytest.fixture
def tiny_encoder(tiny_tokenizer):
    return make_tiny_encoder(len(tiny_tokenizer))
