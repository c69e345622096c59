"""Shared fixtures: tiny in-memory BERT models and a word-level fast tokenizer (from `uimer.testing`), so tests run
offline in seconds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uimer.testing import WORDS  # noqa: F401 - re-exported for the tests that import it from here
from uimer.testing import tiny_encoder as make_tiny_encoder
from uimer.testing import tiny_tokenizer as make_tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("UIMER_TEST_DATA_DIR", REPO.parent / "shared" / "data"))

@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "snips").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set UIMER_TEST_DATA_DIR)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return make_tokenizer()


@pytest.fixture
def tiny_encoder(tiny_tokenizer):
    return make_tiny_encoder(len(tiny_tokenizer))


@pytest.fixture
def one_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP contention on the shared 2-core machine
    (test modules opt in with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
