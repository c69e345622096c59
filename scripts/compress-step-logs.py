"""Compress a results directory's plain per-step logs (`*-steps.jsonl`) into `*-steps.jsonl.gz`, in place.

One-off migration for results written before issue 29 (readers accept both forms). The gzip header carries
no time stamp, so the same log always gives the same bytes. Logs next to checkpoints (unfinished runs) are
left alone: a resumed run appends to them as plain text.

    python scripts/compress-step-logs.py benchmarks/results
"""

from __future__ import annotations

import sys
from pathlib import Path

from uimer.experiments.sweep import RUNS, read_step_log, write_step_log


def compress(results: Path) -> tuple[int, int, int]:
    """Returns (files converted, bytes before, bytes after)."""
    count = before = after = 0
    for plain in sorted((results / RUNS).rglob("*-steps.jsonl")):
        packed = plain.with_name(plain.name + ".gz")
        text = plain.read_text()
        write_step_log(packed, text)
        if read_step_log(packed) != text:
            raise SystemExit(f"{packed}: round trip failed; {plain} kept")
        count, before, after = count + 1, before + plain.stat().st_size, after + packed.stat().st_size
        plain.unlink()
    return count, before, after


if __name__ == "__main__":
    for arg in sys.argv[1:] or ["benchmarks/results"]:
        n, b, a = compress(Path(arg))
        print(f"{arg}: {n} step logs, {b / 1e6:.1f} MB -> {a / 1e6:.1f} MB")
