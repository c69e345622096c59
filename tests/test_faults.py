"""Faults a run must survive: a full disk, an unwritable or foreign output folder, truncated checkpoints and result
files, and a second writer on the same output folder (locked, naming the holder's PID; a dead holder's lock is
taken over). Runs use the toy task and a tiny in-memory BERT (see test_trainer.offline_runner)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from test_trainer import offline_runner
from uimer import atomic
from uimer.atomic import DirLock
from uimer.cli import main
from uimer.errors import OutputError, UimerWarning
from uimer.training import runner
from uimer.training.trainer import TrainConfig

SRC = str(Path(__file__).resolve().parents[1] / "src")


def spec_for(out: Path, seeds=(1,), **config) -> runner.RunSpec:
    cfg = {"lr": 1e-3, "batch_size": 4, "max_epochs": 2, "patience": 5, **config}
    return runner.RunSpec(task="toy", seeds=list(seeds), output_dir=str(out), config=TrainConfig(**cfg))


def train_cli(out: Path, *extra: str) -> list[str]:
    return ["train", "--task", "snips-intent", "--seeds", "1", "--output-dir", str(out), "--device", "cpu",
            "--no-progress", "--lr", "1e-3", "--batch-size", "4", "--max-epochs", "2", *extra]


class DiskFull:
    """Every atomic write from now on gets half its bytes onto the disk, then ENOSPC (as a full disk does)."""

    def __init__(self, monkeypatch):
        real = atomic.os.fdopen

        class Handle:
            def __init__(self, inner):
                self.inner = inner

            def write(self, data):
                self.inner.write(data[: len(data) // 2])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            def __getattr__(self, name):
                return getattr(self.inner, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return self.inner.__exit__(*exc)

        monkeypatch.setattr(atomic.os, "fdopen", lambda fd, mode: Handle(real(fd, mode)))


def _tmp_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# -- output problems ---------------------------------------------------------------------------------------
def test_a_full_disk_is_a_user_error_and_previous_results_survive(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    assert main(train_cli(out)) == 0
    before = (out / "results.json").read_bytes()
    seed1 = (out / "seeds" / "seed1.json").read_bytes()
    capsys.readouterr()

    DiskFull(monkeypatch)
    code = main(train_cli(out, "--seeds", "1", "2"))  # seed 1 is reused, seed 2 trains, then its write fails
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    # the first write of seed 2 (its step log) fails; nothing of seed 2 counts, nothing earlier is touched
    assert err.strip().count("\n") == 0 and "No space left on device (ENOSPC)" in err and "seed2" in err
    assert (out / "results.json").read_bytes() == before  # the old results, whole
    assert (out / "seeds" / "seed1.json").read_bytes() == seed1
    assert not (out / "seeds" / "seed2.json").exists()
    assert not _tmp_files(out)
    assert json.loads(before)["per_seed"][0]["seed"] == 1


def test_a_full_disk_while_writing_results_json_keeps_the_old_file(tmp_path, tiny_tokenizer, monkeypatch):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    runner.run_experiment(spec_for(out, seeds=(1, 2)), progress=False)
    before = (out / "results.json").read_bytes()
    (out / "seeds" / "seed2.json").unlink()
    real = runner.write_json_atomic

    def full_at_results(path, data, *args, **kwargs):
        if Path(path).name == "results.json":
            DiskFull(monkeypatch)
        return real(path, data, *args, **kwargs)

    monkeypatch.setattr(runner, "write_json_atomic", full_at_results)
    with pytest.raises(OutputError, match=r"results.json: No space left on device \(ENOSPC\); its previous content"):
        runner.run_experiment(spec_for(out, seeds=(1, 2)), progress=False)
    assert (out / "results.json").read_bytes() == before and not _tmp_files(out)


def test_a_full_disk_while_appending_to_the_step_log_is_a_user_error(tmp_path, tiny_tokenizer, monkeypatch):
    offline_runner(monkeypatch, tiny_tokenizer)
    real = runner.open_step_log

    def filling(path, checkpoint):
        handle = real(path, checkpoint)

        class Full:
            def write(self, text):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

            def __getattr__(self, name):
                return getattr(handle, name)

        return Full()

    monkeypatch.setattr(runner, "open_step_log", filling)
    with pytest.raises(OutputError, match=r"seed1-steps.jsonl: No space left on device \(ENOSPC\); finished seeds"):
        runner.run_experiment(spec_for(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "results.json").exists()


def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    from uimer.training.checkpoint import SeedCheckpoint

    checkpoint = SeedCheckpoint(tmp_path / "seed1.pt", "fp/seed1")
    checkpoint.save({"next_epoch": 1, "seconds": 1.0})
    before = checkpoint.path.read_bytes()
    DiskFull(monkeypatch)
    with pytest.raises(OutputError, match="ENOSPC"):
        checkpoint.save({"next_epoch": 2, "seconds": 2.0})
    assert checkpoint.path.read_bytes() == before and not _tmp_files(tmp_path)


def test_an_unwritable_output_dir_is_refused_before_training(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    offline_runner(monkeypatch, tiny_tokenizer)
    monkeypatch.setattr(runner.os, "access", lambda path, mode: False)  # as for a folder of another user
    assert main(train_cli(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert "uimer: error: --output-dir" in err and "not writable" in err
    assert not (tmp_path / "run" / "results.json").exists()


def test_an_unreadable_results_file_is_a_user_error(tmp_path, tiny_tokenizer, monkeypatch):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    runner.run_experiment(spec_for(out), progress=False)
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "results.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(OutputError, match=r"cannot read .*results.json: Permission denied \(EACCES\)"):
        runner.run_experiment(spec_for(out), progress=False)


def test_an_output_dir_holding_another_runs_results_is_refused(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    assert main(train_cli(out)) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main(train_cli(out, "--lr", "2e-3")) == 2  # another configuration, same folder
    err = capsys.readouterr().err
    assert "holds another run's results" in err and "--overwrite" in err and "Traceback" not in err
    assert (out / "results.json").read_bytes() == before
    assert main(train_cli(out, "--lr", "2e-3", "--overwrite")) == 0
    assert json.loads((out / "results.json").read_text())["config"]["lr"] == 2e-3


# -- corrupt state -----------------------------------------------------------------------------------------
def test_a_truncated_seed_file_and_results_json_start_over_with_a_warning(tmp_path, tiny_tokenizer, monkeypatch):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    whole = runner.run_experiment(spec_for(out, seeds=(1, 2)), progress=False)
    for name in ("seeds/seed2.json", "results.json"):
        data = (out / name).read_bytes()
        (out / name).write_bytes(data[: len(data) // 2])  # a write cut off by a crash of something else
    with pytest.warns(UimerWarning, match=r"seed2.json is damaged"):
        again = runner.run_experiment(spec_for(out, seeds=(1, 2)), progress=False)
    assert again["per_seed"] == whole["per_seed"][:1] + again["per_seed"][1:]
    assert again["per_seed"][1]["test"] == whole["per_seed"][1]["test"]  # retrained: same seed, same numbers
    assert json.loads((out / "results.json").read_text())["test_mean"] == whole["test_mean"]


def test_a_truncated_checkpoint_starts_the_seed_over_with_a_warning(tmp_path, tiny_tokenizer, monkeypatch):
    from uimer.training import checkpoint as checkpoint_module

    offline_runner(monkeypatch, tiny_tokenizer)
    monkeypatch.setattr(checkpoint_module, "DEFAULT_EVERY_SECONDS", 0.0)
    whole = runner.run_experiment(spec_for(tmp_path / "a", max_epochs=3), progress=False)
    out = tmp_path / "b"
    from uimer.training.schedules import SCHEDULES

    real_fit = SCHEDULES["standard"]

    class Cut(Exception):
        pass

    def cut_after_two(context):
        def on_epoch(record):
            if record["epoch"] >= 1:
                raise Cut

        context.on_epoch = on_epoch
        return real_fit(context)

    monkeypatch.setitem(SCHEDULES, "standard", cut_after_two)
    with pytest.raises(Cut):
        runner.run_experiment(spec_for(out, max_epochs=3), progress=False)
    monkeypatch.setitem(SCHEDULES, "standard", real_fit)
    path = out / "checkpoints" / "seed1.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.warns(UimerWarning, match="unreadable checkpoint"):
        resumed = runner.run_experiment(spec_for(out, max_epochs=3), progress=False)
    assert resumed["per_seed"][0]["test"] == whole["per_seed"][0]["test"]
    assert resumed["per_seed"][0]["epochs_run"] == 3 and not path.exists()


def test_a_truncated_sweep_run_file_is_run_again_with_a_warning(tmp_path, tiny_tokenizer):
    from test_sweep import _fake_run, make_world
    from uimer.experiments.config import load_grid
    from uimer.experiments.sweep import plan_runs, run_status, sweep

    grid = load_grid(make_world(tmp_path, tiny_tokenizer))
    results = tmp_path / "results"
    sweep(grid, results, progress=False, run_fn=_fake_run)
    run = plan_runs(grid)[0]
    data = (results / run.relpath).read_bytes()
    (results / run.relpath).write_bytes(data[:40])
    assert run_status(results, run) == "damaged"
    with pytest.warns(UimerWarning, match="damaged"):
        outcome = sweep(grid, results, progress=False, run_fn=_fake_run)
    assert outcome.finished == [run.name] and run_status(results, run) == "done"


# -- two writers -------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent("""
    import sys, time
    from uimer.atomic import DirLock
    lock = DirLock(sys.argv[1], purpose="uimer train").acquire()
    print("locked", flush=True)
    time.sleep(60)
""")


def test_a_second_writer_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(
        tmp_path, tiny_tokenizer, monkeypatch, capsys):
    offline_runner(monkeypatch, tiny_tokenizer)
    out = tmp_path / "run"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(train_cli(out)) == 2
        err = capsys.readouterr().err
        assert f"is in use by pid {holder.pid} on" in err and "(uimer train)" in err
        assert not (out / "results.json").exists()
    finally:
        holder.kill()  # SIGKILL: the holder cannot clean up; its PID stays in the lock file
        holder.wait()
        holder.stdout.close()
    assert f"pid {holder.pid}" in (out / ".uimer.lock").read_text()
    assert main(train_cli(out)) == 0
    assert f"took over a stale lock of {out} (pid {holder.pid}" in (out / "train.log").read_text()
    assert (out / ".uimer.lock").read_text() == ""  # released


def test_dir_lock_in_one_process_blocks_a_second_handle(tmp_path):
    with DirLock(tmp_path, purpose="first"):
        with pytest.raises(OutputError, match=rf"in use by pid {os.getpid()} on .*\(first\)"):
            DirLock(tmp_path, purpose="second").acquire()
    with DirLock(tmp_path, purpose="third") as lock:
        assert lock.took_over is None
