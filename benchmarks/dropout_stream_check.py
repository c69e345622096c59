"""How far a committed intent-1 run moves when only its dropout stream changes (CPU), to size GPU parity.

    python benchmarks/dropout_stream_check.py --variants baseline gb-huang-base im-mask --out FILE

A CUDA run draws its dropout masks from the GPU's Philox generator, a CPU run from the CPU's Mersenne
Twister: the same seed gives different masks, so CPU and GPU runs part ways at the first step whatever the
kernels do. This script reruns committed runs of benchmarks/gpu/gpu-parity.yaml (seed 55) on the CPU with
the same initialisation, subset, batch order and replacement sets, but the global torch stream (dropout)
reseeded right after the model is built, and writes each run's dev curve and test score next to the
committed ones. Differences of the size seen between CPU and GPU then need no other explanation.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from uimer.experiments.config import load_grid
from uimer.experiments.sweep import execute_run, make_payload, plan_runs
from uimer.training import runner

REPO = Path(__file__).resolve().parents[1]
DROPOUT_SALT = 1_000_003


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["baseline", "gb-huang-base", "im-mask"])
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    build = runner.build_model

    def build_then_reseed(*a, **k):
        model = build(*a, **k)
        torch.manual_seed(args.seed + DROPOUT_SALT)  # only the global stream (dropout) changes from here on
        return model

    runner.build_model = build_then_reseed
    grid = load_grid(str(REPO / "benchmarks" / "gpu" / "gpu-parity.yaml"))
    runs = [r for r in plan_runs(grid, only_seeds=[args.seed], only_methods=args.variants, device="cpu",
                                 data_dir=args.data_dir)]
    out = Path(args.out)
    rows = json.loads(out.read_text()) if out.exists() else {}
    for run in runs:
        if run.cell.variant in rows:
            continue
        start = time.perf_counter()
        record = execute_run(make_payload(run, args.threads))["record"]
        committed = json.loads((REPO / "benchmarks" / "results" / run.relpath).read_text())
        rows[run.cell.variant] = {
            "committed_test": committed["test"], "reseeded_test": record["test"],
            "test_diff_points": round(100 * (record["test"] - committed["test"]), 2),
            "committed_dev_curve": [h["dev"] for h in committed["history"]],
            "reseeded_dev_curve": [h["dev"] for h in record["history"]],
            "seconds": round(time.perf_counter() - start, 1),
        }
        print(f"{run.cell.variant}: committed {100 * committed['test']:.2f}, dropout reseeded "
              f"{100 * record['test']:.2f}", flush=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(rows, indent=1))
        tmp.replace(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
