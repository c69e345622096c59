"""Where the datasets live: one rule shared by the CLI, the loaders and `uimer data fetch`."""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "UIMER_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/uimer/data")


def resolve_data_dir(flag: str | os.PathLike[str] | None = None) -> Path:
    """Return the data root: the `--data-dir` flag, else `$UIMER_DATA_DIR`, else `~/.cache/uimer/data`.

    The root holds one folder per dataset (`snips/`, `esnli/`), the layout `uimer data fetch` writes.
    `~` is expanded; the directory is not created or checked here (fetch creates it, loaders report it missing).
    """
    if flag is not None and str(flag) != "":
        return Path(flag).expanduser()
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return DEFAULT_DATA_DIR.expanduser()
