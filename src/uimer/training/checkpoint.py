"""Mid-seed checkpoints, so that a seed cut off by a kill resumes at its last saved epoch, not at epoch 0.

A long seed (an nli-500 run is one to two hours on a CPU) is otherwise lost whole when the process dies. The
training loop saves its complete state at an epoch boundary, at most once every `every_seconds`: the weights,
the optimiser and LR schedule, the best-dev weights and early-stopping counters, the epoch history, every RNG
stream (Python, NumPy, torch, the data-order generator and the method's own) and the number of step-log lines
written so far. Resuming restores all of it, so a resumed seed gives the same numbers as one never interrupted
(on the same machine and thread count). A checkpoint carries a key (the run's fingerprint and seed); one from
another configuration is ignored. The file is written atomically and removed once the seed's result is stored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from uimer.atomic import open_atomic, write_text_atomic
from uimer.errors import UimerWarning

log = logging.getLogger("uimer.checkpoint")

SCHEMA = 1
DEFAULT_EVERY_SECONDS = 300.0  # a save of a MiniLM run (~350 MB) takes about a second; a few-shot epoch less


def capture_rng() -> dict:
    """Every global random stream the training loop draws from (dropout, shuffles, samplers)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(_as_tuple(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state((numpy_state["kind"], numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value):
    """random.setstate wants the nested tuples getstate gave (a round trip may turn them into lists)."""
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


class SeedCheckpoint:
    """Where one seed keeps its resumable state, and when it is due to save it again."""

    def __init__(self, path: Path, key: str, every_seconds: float | None = None):
        self.path = Path(path)
        self.key = key
        self.every_seconds = DEFAULT_EVERY_SECONDS if every_seconds is None else every_seconds
        self.log_lines = 0  # step-log lines written so far; the runner counts them, the checkpoint stores them
        self.log_handle = None  # the open step log, flushed before each save so its lines are on disk too
        self._last_save = time.monotonic()
        self._loaded: dict | None = None
        self.resumed: dict | None = None  # where a training loop resumed ("epoch 3", "round 2") and the seconds before

    @classmethod
    def for_run(cls, path: Path, fingerprint: str, seed: int) -> SeedCheckpoint:
        """The checkpoint of one seed of one configuration (the key a stored state must carry)."""
        return cls(path, f"{fingerprint}/seed{seed}")

    def load(self) -> dict | None:
        """The stored state for this key, or None (no file, another key, or an unreadable file); read once."""
        if self._loaded is None:
            self._loaded = self._read()
        return self._loaded

    def take(self) -> dict | None:
        """`load()`, and forget the state afterwards (the training loop takes it over)."""
        state, self._loaded = self.load(), None
        if state is not None:
            unit = "epoch" if "next_epoch" in state else "round"
            self.resumed = {"at": f"{unit} {int(state['next_' + unit])}", "seconds": float(state["seconds"])}
        return state

    def _read(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - a damaged checkpoint only costs the time it saved
            message = f"ignoring unreadable checkpoint {self.path} ({type(error).__name__}); the seed starts over"
            log.warning("%s: %s", message, error)
            warnings.warn(message, UimerWarning, stacklevel=2)
            return None
        if not isinstance(state, dict) or state.get("schema") != SCHEMA or state.get("key") != self.key:
            log.info("ignoring checkpoint %s: it belongs to another run", self.path)
            return None
        self.log_lines = int(state.get("log_lines", 0))
        return state

    def due(self) -> bool:
        return time.monotonic() - self._last_save >= self.every_seconds

    def save(self, state: dict) -> None:
        """Write atomically (temporary file in the same folder, fsync, rename)."""
        if self.log_handle is not None:
            self.log_handle.flush()
            os.fsync(self.log_handle.fileno())
        payload = {"schema": SCHEMA, "key": self.key, "log_lines": self.log_lines, **state}
        with open_atomic(self.path) as handle:
            torch.save(payload, handle)
        self._last_save = time.monotonic()

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def open_step_log(path: Path, checkpoint: SeedCheckpoint | None):
    """The step log to write: with a checkpoint to resume from, the old log cut back to the lines that checkpoint
    had seen (the steps after the last save are trained again, so they are not logged twice); else a new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = checkpoint.load() if checkpoint is not None else None
    kept: list[str] = []
    if state is not None and path.exists():
        with path.open() as old:
            kept = [line for _, line in zip(range(checkpoint.log_lines), old, strict=False)]
    # The cut-back log replaces the old one atomically and durably before anything is appended: truncating in place
    # and rewriting through a buffer lost the kept lines when a SIGKILL came before the next save's flush (the
    # checkpoint on disk still counted them), so the resumed seed's log then lacked its first epochs.
    write_text_atomic(path, "".join(kept))
    handle = path.open("a")
    if checkpoint is not None:
        checkpoint.log_lines = len(kept)
        checkpoint.log_handle = handle
    return handle


def resume_state(checkpoint: SeedCheckpoint | None) -> dict | None:
    """The state a training loop resumes from: the checkpoint's, taken over (see `SeedCheckpoint.take`), or None
    when the run keeps no checkpoint or has none stored. `fit` and the DM schedule both start here."""
    return checkpoint.take() if checkpoint is not None else None


def checkpoint_due(checkpoint: SeedCheckpoint | None, more_to_come: bool) -> bool:
    """Whether a training loop saves its state now: the run keeps a checkpoint, training goes on after this point
    (`more_to_come`; a seed about to finish writes its result instead) and the save interval has passed. The
    caller builds the state only then, because copying the weights and optimizer every epoch would cost what the
    interval saves. The one save rule of `fit` (after an epoch) and the DM schedule (after a round)."""
    return checkpoint is not None and more_to_come and checkpoint.due()
