"""The paper's grids as config files, the sweep runner and the report.

The packaged grid names live here, not in `config`, so that the CLI can list them in its help without importing
torch.
"""

from __future__ import annotations

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


def packaged_configs() -> list[str]:
    """Names of the grid configs shipped with uimer (what `uimer sweep NAME` accepts without a path)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
