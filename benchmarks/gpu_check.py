"""The GPU path, checked and measured in one go (issue 32): run on a CUDA machine, compare here.

    python benchmarks/gpu_check.py run --data-dir DATA --out OUT [--phases env,warm,speed,...] [--budget 480]
    python benchmarks/gpu_check.py compare OUT/gpu-check.json [...] --results benchmarks/results

`run` executes the phases in order, each as `uimer` / `step_cost.py` subprocesses (what a user runs), and
rewrites OUT/gpu-check.json after every phase, so a cut-off call keeps what it measured. A phase that would
not fit in what is left of `--budget` seconds is recorded as skipped, never half-run. Timed phases run alone.

Phases:
- env: device name, torch / CUDA / cuDNN / transformers versions, nvidia-smi.
- warm: one short `uimer train` so that later timings start warm (page cache, CUDA context, kernel JIT).
- speed: `uimer train --task snips-intent --shot 1` over the paper's 4 seeds for the baseline and one method
  of each family (CLI defaults), wall-clock per command and per seed.
- steps: benchmarks/step_cost.py --device cuda, fp32 and bf16 (per-step cost of every method).
- parity: benchmarks/gpu/gpu-parity.yaml (every method variant of the committed intent-1 column, seed 55,
  the committed runs' exact configuration) as one Ray sweep with 4 runs sharing the GPU; `compare` checks
  dev curves and test scores against the committed CPU runs.
- mlm: `uimer mlm train` for im-mlm (then `parity` again picks up the im-mlm variants).
- bf16: the speed phase's commands with `--precision bf16`.
- serial: the parity grid's first runs one at a time, for Ray's runs per hour against one run at a time.
- tasks: slot-1 and nli-100 with the baseline and one method of each family, 4 seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SEEDS = ("55", "1988", "12333", "42")
FAMILY_METHODS = ("baseline", "gb-huang-base", "im-mask", "dm-one-pass")
PARITY_GRID = REPO / "benchmarks" / "gpu" / "gpu-parity.yaml"
PHASES = ("env", "warm", "speed", "steps", "parity", "mlm", "bf16", "serial", "tasks")
# Seconds each phase took on an H200 (benchmarks/gpu/, 2026-12-04); a phase starts only if it fits in what is
# left. "tasks" took over 212 s without finishing (slot-1 alone); the parity phase's second pass (im-mlm) 32 s.
NEEDS = {"env": 5, "warm": 20, "speed": 126, "steps": 59, "parity": 60, "mlm": 33, "bf16": 140, "serial": 56,
         "tasks": 400}


class Check:
    def __init__(self, out: Path, data_dir: str, budget: float, device: str = "cuda"):
        self.out, self.data_dir, self.deadline = out, data_dir, time.monotonic() + budget
        self.device = device
        self.report_path = out / "gpu-check.json"
        self.report: dict = json.loads(self.report_path.read_text()) if self.report_path.exists() else {}
        self.log = open(out / "gpu-check.log", "a")
        self.work = Path(os.environ.get("UIMER_GPU_WORK", "/tmp/uimer-gpu-check"))
        self.work.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        tmp = self.report_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.report, indent=1))
        tmp.replace(self.report_path)

    def say(self, text: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {text}"
        print(line, flush=True)
        self.log.write(line + "\n")
        self.log.flush()

    def sh(self, args: list[str], timeout: float) -> dict:
        """Run a command; wall-clock, exit code and the output's tail (the log keeps all of it)."""
        self.say("$ " + " ".join(args))
        start = time.perf_counter()
        try:
            done = subprocess.run(args, capture_output=True, text=True, timeout=max(1.0, timeout), cwd=REPO)
            rc, out, err = done.returncode, done.stdout, done.stderr
        except OSError as exc:  # e.g. no nvidia-smi
            rc, out, err = "missing", "", str(exc)
        except subprocess.TimeoutExpired as exc:
            rc, out, err = "timeout", exc.stdout or "", exc.stderr or ""
            out = out.decode() if isinstance(out, bytes) else out
            err = err.decode() if isinstance(err, bytes) else err
        seconds = time.perf_counter() - start
        self.log.write(out + "\n" + err + "\n")
        self.log.flush()
        self.say(f"  rc {rc} in {seconds:.1f} s")
        return {"rc": rc, "seconds": round(seconds, 2), "stdout": out, "stderr_tail": err[-3000:]}

    def uimer(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "uimer.cli", *args]

    def train(self, task_args: list[str], method: str, out: Path, timeout: float, extra: tuple[str, ...] = ()) -> dict:
        shutil.rmtree(out, ignore_errors=True)
        ran = self.sh(self.uimer("train", *task_args, "--method", method, "--seeds", *SEEDS, "--device", self.device,
                                 "--no-progress", "--data-dir", self.data_dir, "--output-dir", str(out), *extra),
                      timeout)
        entry = {"method": method, "command_seconds": ran["seconds"], "rc": ran["rc"]}
        results = out / "results.json"
        if results.exists():
            summary = json.loads(results.read_text())
            entry["per_seed"] = [{k: s[k] for k in ("seed", "dev", "test", "epochs_run", "seconds")}
                                 for s in summary["per_seed"]]
            entry["test_mean"] = summary["test_mean"]
            entry["train_seconds"] = round(sum(s["seconds"] for s in summary["per_seed"]), 2)
        else:
            entry["error"] = ran["stderr_tail"][-1500:]
        return entry

    # -- phases ---------------------------------------------------------------------------------------
    def env(self) -> dict:
        probe = ("import json, torch, transformers; p = torch.cuda.get_device_properties(0); print(json.dumps({"
                 "'device': torch.cuda.get_device_name(0), 'capability': list(torch.cuda.get_device_capability(0)),"
                 "'memory_gib': round(p.total_memory / 2**30, 1), 'multiprocessors': p.multi_processor_count,"
                 "'torch': torch.__version__, 'cuda': torch.version.cuda, 'cudnn': torch.backends.cudnn.version(),"
                 "'transformers': transformers.__version__, 'bf16_supported': torch.cuda.is_bf16_supported(),"
                 "'tf32_matmul': torch.backends.cuda.matmul.allow_tf32, 'tf32_cudnn': torch.backends.cudnn.allow_tf32,"
                 "'python': __import__('sys').version.split()[0], 'cpus': __import__('os').cpu_count()}))")
        ran = self.sh([sys.executable, "-c", probe], 60)
        info = json.loads(ran["stdout"]) if ran["rc"] == 0 else {"error": ran["stderr_tail"]}
        smi = self.sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], 30)
        info["nvidia_smi"] = smi["stdout"].strip()
        return info

    def warm(self) -> dict:
        out = self.work / "warm"
        shutil.rmtree(out, ignore_errors=True)
        ran = self.sh(self.uimer("train", "--task", "snips-intent", "--shot", "1", "--seeds", "55", "--max-epochs",
                                 "2", "--device", self.device, "--no-progress", "--data-dir", self.data_dir,
                                 "--output-dir", str(out)), 120)
        return {"seconds": ran["seconds"], "rc": ran["rc"]}

    def speed(self, precision: str = "fp32") -> dict:
        extra = ("--precision", precision)
        runs = [self.train(["--task", "snips-intent", "--shot", "1"], m, self.work / f"speed-{precision}-{m}",
                           min(150, self.left()), extra) for m in FAMILY_METHODS]
        return {"setting": "intent-1, CLI defaults, seeds " + " ".join(SEEDS), "precision": precision, "runs": runs}

    def steps(self) -> dict:
        result = {}
        for precision in ("fp32", "bf16"):
            ran = self.sh([sys.executable, "benchmarks/step_cost.py", "--json", "--device", self.device, "--precision",
                           precision, "--data-dir", self.data_dir, "--steps", "15", "--warmup", "3"],
                          min(120, self.left()))
            lines = [line for line in ran["stdout"].splitlines() if line.startswith("{")]
            result[precision] = json.loads(lines[-1]) if lines else {"rc": ran["rc"], "error": ran["stderr_tail"]}
        return result

    def parity(self, serial: bool = False) -> dict:
        results = self.work / ("serial" if serial else "parity")
        args = ["sweep", str(PARITY_GRID), "--results", str(results), "--device", self.device, "--no-progress",
                "--data-dir", self.data_dir, "--only-seeds", "55"]
        if serial:
            args += ["--only-methods", *FAMILY_METHODS, "gb-huang-gate", "im-prior", "im-uniform", "dm-multi-round"]
        else:
            args += ["--ray", "--ray-num-cpus", str(min(16, os.cpu_count() or 4)), "--gpus-per-run", "0.25"]
            if not (REPO / "runs" / "mlm" / "minilm-snips-esnli").exists():
                args += ["--only-methods", *[m for m in _grid_variants() if "mlm" not in m]]
        ran = self.sh(self.uimer(*args), min(300, self.left()))
        records = {}
        for path in sorted(results.glob("runs/**/seed*.json")):
            record = json.loads(path.read_text())
            records[record["variant"]] = {
                k: record.get(k) for k in ("method", "seed", "dev", "test", "best_epoch", "epochs_run", "seconds",
                                           "wall_seconds", "fingerprint", "device")}
            records[record["variant"]]["dev_curve"] = [h.get("dev") for h in record.get("history", [])]
        entry = {"command_seconds": ran["seconds"], "rc": ran["rc"], "runs": records,
                 "mode": "serial" if serial else "ray, 4 runs per GPU (num_gpus 0.25, 2 CPUs each)",
                 "failed": ran["stderr_tail"][-2000:] if ran["rc"] != 0 else None}
        walls = [r["wall_seconds"] for r in records.values() if r.get("wall_seconds")]
        if walls:
            entry["runs_per_hour"] = round(3600 * len(walls) / ran["seconds"], 1)
            entry["mean_run_wall_seconds"] = round(statistics.fmean(walls), 2)
        return entry

    def mlm(self) -> dict:
        ran = self.sh(self.uimer("mlm", "train", "--task", "snips-intent", "--task", "esnli", "--base", "minilm",
                                 "--out", "runs/mlm/minilm-snips-esnli", "--device", self.device, "--no-progress",
                                 "--data-dir", self.data_dir), min(200, self.left()))
        return {"seconds": ran["seconds"], "rc": ran["rc"], "stdout": ran["stdout"][-600:],
                "error": ran["stderr_tail"][-1500:] if ran["rc"] != 0 else None}

    def tasks(self) -> dict:
        settings = {"slot-1": ["--task", "snips-slot", "--shot", "1"],
                    "nli-100": ["--task", "esnli", "--train-size", "100", "--dev-size", "1000"]}
        found = {}
        for name, task_args in settings.items():
            found[name] = [self.train(task_args, m, self.work / f"{name}-{m}", min(200, self.left()))
                           for m in FAMILY_METHODS if self.left() > 30]
        return found


def _grid_variants() -> list[str]:
    import yaml

    return list(yaml.safe_load(PARITY_GRID.read_text())["methods"])


def run(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    check = Check(out, args.data_dir, args.budget, args.device)
    for phase in args.phases.split(","):
        key = phase
        if phase == "parity" and "parity" in check.report and check.report["parity"].get("runs"):
            key = "parity-mlm"  # the second parity pass adds the im-mlm variants
        if check.left() < NEEDS.get(phase, 60):
            check.say(f"phase {phase}: skipped ({check.left():.0f} s left, needs ~{NEEDS.get(phase, 60)} s)")
            check.report.setdefault("skipped", []).append(phase)
            check.save()
            continue
        check.say(f"phase {phase} ({check.left():.0f} s left)")
        start = time.perf_counter()
        try:
            if phase == "bf16":
                result = check.speed("bf16")
            elif phase == "serial":
                result = check.parity(serial=True)
            else:
                result = getattr(check, phase)()
        except Exception as err:  # keep going: one broken phase must not hide the others' numbers
            result = {"error": f"{type(err).__name__}: {err}"}
        result["phase_seconds"] = round(time.perf_counter() - start, 1)
        check.report[key] = result
        check.save()
    check.say(f"done; report in {check.report_path}")
    return 0


# -- compare (on any machine): the GPU's parity runs against the committed CPU runs ----------------------
def compare(args) -> int:
    merged: dict = {}
    for path in args.reports:
        report = json.loads(Path(path).read_text())
        for key in ("parity", "parity-mlm"):
            merged.update(report.get(key, {}).get("runs", {}))
    rows = []
    for variant, gpu in sorted(merged.items()):
        cpu_path = Path(args.results) / "runs" / "snips-intent" / "1-shot" / variant / f"seed{gpu['seed']}.json"
        if not cpu_path.exists():
            continue
        cpu = json.loads(cpu_path.read_text())
        cpu_curve = [h.get("dev") for h in cpu.get("history", [])]
        shared = min(len(cpu_curve), len(gpu["dev_curve"]))
        same_prefix = next((i for i in range(shared) if cpu_curve[i] != gpu["dev_curve"][i]), shared)
        diffs = [abs(a - b) for a, b in zip(cpu_curve[:shared], gpu["dev_curve"][:shared], strict=True)
                 if a is not None and b is not None]
        rows.append({
            "variant": variant, "fingerprint_match": cpu["fingerprint"] == gpu["fingerprint"],
            "cpu_test": cpu["test"], "gpu_test": gpu["test"], "test_diff_points": round(100 * (gpu["test"] - cpu["test"]), 2),
            "cpu_dev": cpu["dev"], "gpu_dev": gpu["dev"], "cpu_best_epoch": cpu["best_epoch"],
            "gpu_best_epoch": gpu["best_epoch"], "cpu_epochs": len(cpu_curve), "gpu_epochs": len(gpu["dev_curve"]),
            "identical_dev_epochs": same_prefix,
            "max_dev_curve_diff_points": round(100 * max(diffs), 2) if diffs else None,
            "cpu_seconds": round(cpu.get("wall_seconds") or cpu["seconds"], 1), "gpu_seconds": gpu.get("wall_seconds"),
        })
    text = json.dumps(rows, indent=1)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(f"{'variant':22s} {'cpu test':>8s} {'gpu test':>8s} {'diff':>6s} {'same dev epochs':>15s} "
          f"{'max dev diff':>12s} {'epochs c/g':>10s}")
    for r in rows:
        print(f"{r['variant']:22s} {100 * r['cpu_test']:8.2f} {100 * r['gpu_test']:8.2f} {r['test_diff_points']:6.2f} "
              f"{r['identical_dev_epochs']:15d} {r['max_dev_curve_diff_points']!s:>12s} "
              f"{r['cpu_epochs']:>4d}/{r['gpu_epochs']:<4d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run the phases on a CUDA machine")
    r.add_argument("--data-dir", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--phases", default=",".join(PHASES))
    r.add_argument("--device", default="cuda", help="cuda; cpu only to try the script itself")
    r.add_argument("--budget", type=float, default=480.0, help="seconds; phases that would not fit are skipped")
    r.set_defaults(func=run)
    c = sub.add_parser("compare", help="parity of the GPU runs against the committed CPU runs")
    c.add_argument("reports", nargs="+")
    c.add_argument("--results", default=str(REPO / "benchmarks" / "results"))
    c.add_argument("--output", default=None, help="also write the rows as JSON here")
    c.set_defaults(func=compare)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
