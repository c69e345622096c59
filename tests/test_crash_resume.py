"""Crash-resume under load: a real `uimer sweep` subprocess is killed with SIGKILL at several points (at random
moments during training, in the middle of a checkpoint write, in the middle of a run-file write) and resumed after
each kill; the final results must equal an uninterrupted sweep's, with no run lost or duplicated.

Marked slow (about a minute on two cores): `pytest -m slow tests/test_crash_resume.py -s` prints the kill log.
`UIMER_CRASH_SEED` changes the random kill moments (the seed used is printed).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_sweep import make_world
from uimer.experiments.sweep import read_step_log

SRC = str(Path(__file__).resolve().parents[1] / "src")

# Runs `uimer sweep` with a checkpoint at every epoch; KILL_AT=checkpoint:N / results:N SIGKILLs this process in the
# middle of its N-th checkpoint / run-file write (half of the bytes in the temporary file, before the rename).
DRIVER = textwrap.dedent("""
    import contextlib, os, signal, sys
    from pathlib import Path
    import uimer.atomic as atomic
    import uimer.training.checkpoint as checkpoint
    checkpoint.DEFAULT_EVERY_SECONDS = 0.0
    kill = os.environ.get("KILL_AT")
    if kill:
        what, nth = kill.split(":")
        seen = [0]
        real = atomic.open_atomic

        @contextlib.contextmanager
        def killing(path, suffix=".tmp"):
            p = Path(path)
            hit = (what == "checkpoint" and p.suffix == ".pt") or (
                what == "results" and "runs" in p.parts and p.name.startswith("seed") and p.suffix == ".json")
            seen[0] += hit
            with real(path, suffix) as handle:
                yield handle
                if hit and seen[0] == int(nth):
                    handle.flush()
                    handle.truncate(handle.tell() // 2)
                    os.kill(os.getpid(), signal.SIGKILL)

        atomic.open_atomic = killing
        checkpoint.open_atomic = killing
    from uimer.cli import main
    sys.exit(main(sys.argv[1:]))
""")

COMPARED = ("seed", "dev", "test", "best_epoch", "epochs_run", "history", "fingerprint")


def _run_files(results: Path) -> dict[str, dict]:
    runs = results / "runs"
    return {str(p.relative_to(results)): json.loads(p.read_text()) for p in runs.rglob("seed*.json")} if runs.exists() \
        else {}


def _starts(sweep_log: Path) -> int:
    return sweep_log.read_text().count(" start ") if sweep_log.exists() else 0


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_equals_an_uninterrupted_sweep(tmp_path, tiny_tokenizer):
    seed = int(os.environ.get("UIMER_CRASH_SEED", "31"))
    rng = random.Random(seed)
    grid = make_world(tmp_path, tiny_tokenizer, max_epochs=6, n_train=160, n_eval=80,
                      methods={"baseline": {}, "im-uniform": {}}, seeds=[1, 2])
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    env.pop("KILL_AT", None)

    def command(results: Path) -> list[str]:
        return [sys.executable, str(driver), "sweep", str(grid), "--results", str(results), "--no-progress"]

    t0 = time.monotonic()
    reference = tmp_path / "reference"
    done = subprocess.run(command(reference), capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    uninterrupted_s = time.monotonic() - t0
    expected = _run_files(reference)
    assert len(expected) == 4

    results = tmp_path / "killed"
    schedule = [("checkpoint", 2), ("time", None), ("results", 1), ("time", None), ("checkpoint", 3), ("time", None),
                ("results", 1)]
    log = []
    for what, nth in schedule:
        if len(_run_files(results)) == 4:
            break
        before = len(_run_files(results))
        if what == "time":
            sweep_log = results / "sweep.log"
            starts = _starts(sweep_log)
            process = subprocess.Popen(command(results), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
            while process.poll() is None and _starts(sweep_log) == starts:  # imports take seconds: wait for a run
                time.sleep(0.01)
            delay = rng.uniform(0.05, 1.5)  # then a random moment of its training (a run takes about a second)
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
            where = f"{delay:.2f} s into a run"
        else:
            process = subprocess.run(command(results), capture_output=True, text=True,
                                     env={**env, "KILL_AT": f"{what}:{nth}"}, timeout=600)
            where = f"mid {what} write #{nth}"
        checkpoints = sorted(p.name for p in (results / "checkpoints").rglob("*.pt")) if (
            results / "checkpoints").exists() else []
        temporaries = [p.name for p in results.rglob(".*.tmp")]
        log.append(f"kill {where}: exit {process.returncode}, run files {before} -> {len(_run_files(results))}, "
                   f"checkpoints {len(checkpoints)}, torn temporary files {len(temporaries)}")
    final = subprocess.run(command(results), capture_output=True, text=True, env=env, timeout=600)
    assert final.returncode == 0, final.stderr
    log.append("final: " + next(line for line in final.stderr.splitlines() if "runs planned" in line))
    print(f"\ncrash seed {seed}; uninterrupted sweep {uninterrupted_s:.1f} s; total {time.monotonic() - t0:.1f} s")
    print("\n".join(log))

    kills = [line for line in log if "exit -9" in line]
    for kind in ("mid checkpoint write", "mid results write", "into a run"):  # each kind of kill really happened
        assert any(kind in line for line in kills), log
    got = _run_files(results)
    assert sorted(got) == sorted(expected)  # no run lost, none extra
    for relpath, record in expected.items():
        assert {k: got[relpath][k] for k in COMPARED} == {k: record[k] for k in COMPARED}, relpath
        steps = Path(relpath).parent / "logs" / f"seed{record['seed']}-steps.jsonl.gz"
        ours, theirs = read_step_log(results / steps), read_step_log(reference / steps)
        assert ours
        assert [json.loads(x)["l_task"] for x in ours.splitlines()] == [json.loads(x)["l_task"] for x in
                                                                           theirs.splitlines()]  # none duplicated
    assert not list(results.rglob(".*.tmp")) and not list((results / "checkpoints").rglob("*.pt"))
