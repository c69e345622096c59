"""One experiment = one task, setting and method over several seeds; results land in `DIR/results.json`.

Each finished seed is written atomically to `DIR/seeds/seed<S>.json`, so an interrupted run resumes at the
first unfinished seed; a seed that was cut off resumes at its last checkpoint (`DIR/checkpoints/seed<S>.pt`,
saved at an epoch boundary every few minutes), and is never half-counted.

Before anything loads, the spec is validated (`RunSpec.validate`: every value in its domain), the device is
checked and the output folder is prepared: it must be writable, may not hold another configuration's results
(`--overwrite` replaces them) and is locked (`DIR/.uimer.lock`, an flock naming the writer's PID; a dead
writer's lock is taken over). A damaged seed file or checkpoint is reported and that seed starts over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from uimer.atomic import DirLock
from uimer.checks import SEED, Domain, check_device  # noqa: F401 - check_device is re-exported
from uimer.data.encoding import encode_examples
from uimer.data.types import TaskData, TaskKind
from uimer.errors import ConfigError, DataError, OutputError, UimerWarning, describe_os_error
from uimer.interpret import create_method, options_for
from uimer.models.encoder import load_tokenizer
from uimer.models.task_model import build_model
from uimer.training.checkpoint import SeedCheckpoint, open_step_log
from uimer.training.schedules import run_schedule
from uimer.training.trainer import (
    TRAIN_FLAGS,
    TRAINER_VERSION,
    SeedResult,
    TrainConfig,
    TrainingContext,
    set_seed,
    train_config_problems,
    write_json_atomic,
)

log = logging.getLogger("uimer.run")

PAPER_SEEDS = (55, 1988, 12333, 42)
# A behaviour version that was never bumped; fingerprints leave it out, so results made before versions existed
# keep their fingerprints (they are version-1 results).
IMPLICIT_VERSION = "1"
SPEC_DOMAINS: dict[str, tuple[str, Domain]] = {
    "shot": ("--shot", Domain(int, 1, 100000)),
    "train_size": ("--train-size", Domain(int, 1, 10**9)),
    "dev_size": ("--dev-size", Domain(int, 1, 10**9)),
    "max_length": ("--max-length", Domain(int, 4, 8192)),
}


def behaviour_versions(method: str, task: str | None = None) -> dict[str, str]:
    """The code versions whose numbers a result depends on: the training loop's, the method's on this task and,
    for methods that read rationales, the task's rationale reader's."""
    from uimer.data.tasks import RATIONALE_VERSIONS
    from uimer.interpret import METHODS

    spec = METHODS.get(method)
    versions = {"trainer": TRAINER_VERSION, "method": IMPLICIT_VERSION}
    if spec is not None:
        versions["method"] = str(spec.factory.behaviour_version(task or ""))
    if method != "baseline" and task in RATIONALE_VERSIONS:
        versions["rationales"] = RATIONALE_VERSIONS[task]
    return versions


@dataclass
class RunSpec:
    task: str
    method: str = "baseline"
    encoder: str = "minilm"
    shot: int | None = None  # n-shot (SNIPS); None with train_size None = full data
    train_size: int | None = None  # k training pairs (e-SNLI, JSONL)
    seeds: list[int] = field(default_factory=lambda: list(PAPER_SEEDS))
    data_dir: str | None = None
    output_dir: str = "runs/latest"
    dev_size: int | None = None
    max_length: int = 128
    pooling: str = "cls"
    save_model: bool = False
    rationale_file: str | None = None
    config: TrainConfig = field(default_factory=TrainConfig)
    strict: bool = False  # rules that mark nothing are an error instead of a warning

    @property
    def setting(self) -> str:
        if self.shot is not None and self.shot > 0:
            return f"{self.shot}-shot"
        if self.train_size is not None and self.train_size > 0:
            return f"{self.train_size}-train"
        return "full"

    def versions(self) -> dict[str, str]:
        return behaviour_versions(self.method, self.task)

    def fingerprint(self, every_option: bool = False) -> str:
        """What must match for a stored seed result to be reused: the specification and the behaviour versions of
        the code that computes it (a version still at IMPLICIT_VERSION is left out, so a result from before
        versions existed keeps its fingerprint; a bump changes the fingerprint and the old result goes stale)."""
        data = asdict(self)
        for volatile in ("seeds", "output_dir", "save_model", "data_dir", "strict"):
            data.pop(volatile)
        data["config"].pop("device")
        # Only the options the chosen method reads. Grids never store another family's options, so their
        # fingerprints are what they were; `uimer train` used to store every family's flags.
        # `every_option`: all of them, for a spec that stands for several methods (a tuning study's base).
        if not every_option:
            data["config"]["method_options"] = options_for(self.method, self.config.method_options)
        if data["config"].get("precision") == "fp32":  # the default leaves fingerprints of fp32-era runs intact
            data["config"].pop("precision")
        bumped = {k: v for k, v in self.versions().items() if v != IMPLICIT_VERSION}
        if bumped:
            data["versions"] = bumped
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Every value in its meaningful domain, checked before any data or model loads (ConfigError names the
        flag and the allowed range)."""
        from uimer.interpret import METHODS

        if self.method not in METHODS:
            raise ConfigError(f"--method {self.method!r} is not one of {', '.join(sorted(METHODS))}")
        for name, (flag, domain) in SPEC_DOMAINS.items():
            value = getattr(self, name)
            problem = None if value is None else domain.problem(value)
            if problem:
                extra = " (omit it for the full data)" if name in ("shot", "train_size") else ""
                raise ConfigError(f"{flag} {problem}{extra}")
        if self.shot is not None and self.train_size is not None:
            raise ConfigError("--shot and --train-size exclude each other")
        if self.pooling not in ("cls", "mean"):
            raise ConfigError(f"--pooling must be cls or mean, got {self.pooling!r}")
        if not isinstance(self.encoder, str) or not self.encoder.strip():
            raise ConfigError("--encoder must be a name or a path, got an empty string")
        if not self.seeds:
            raise ConfigError("--seeds: give at least one seed")
        seen: set[int] = set()
        for seed in self.seeds:
            problem = SEED.problem(seed)
            if problem:
                raise ConfigError(f"--seeds: each seed {problem}")
            if seed in seen:
                raise ConfigError(f"--seeds: seed {seed} is given twice (it would be counted twice)")
            seen.add(seed)
        for name, problem in train_config_problems(self.config):
            raise ConfigError(f"{TRAIN_FLAGS.get(name, name)} {problem}")
        warmup = self.config.warmup_epochs
        if self.method != "baseline" and not isinstance(warmup, str) and warmup >= self.config.max_epochs:
            raise ConfigError(f"--warmup-epochs {warmup:g} >= --max-epochs {self.config.max_epochs}: L_int would "
                              "never be switched on")
        if self.rationale_file is not None and not Path(self.rationale_file).expanduser().is_file():
            raise ConfigError(f"--rationale-file {self.rationale_file}: no such file")
        if self.data_dir and not Path(self.data_dir).expanduser().is_dir():
            raise ConfigError(f"--data-dir {self.data_dir}: no such directory")
        create_method(self.method, self.config.method_options)  # the method's own option checks
        mlm = self.config.method_options.get("mlm")
        if self.method == "im-mlm":
            if not mlm:
                raise ConfigError("--method im-mlm needs --mlm NAME_OR_PATH (see `uimer mlm train`)")
            if isinstance(mlm, str) and (mlm.startswith((".", "/", "~")) and not Path(mlm).expanduser().is_dir()):
                raise ConfigError(f"--mlm {mlm}: no such directory (train one with `uimer mlm train --out {mlm}`)")


def select_train_indices(task: TaskData, shot: int | None, train_size: int | None, seed: int) -> list[int]:
    """The low-resource training subset for a seed (the reference's samplers), or everything."""
    from uimer.data import sampling

    if shot is not None and shot > 0:
        if task.kind is TaskKind.CLASSIFICATION:
            return sampling.sample_intent(task.train, task.labels, shot, seed)
        if task.kind is TaskKind.TAGGING:
            return sampling.sample_slot(task.train, task.labels, shot, seed)
        raise ConfigError(f"--shot is for SNIPS tasks; use --train-size for {task.name}")
    if train_size is not None and train_size > 0:
        if train_size > len(task.train):
            raise ConfigError(f"--train-size {train_size} exceeds the {len(task.train)} training examples of {task.name}")
        return sampling.sample_pairs(len(task.train), train_size, seed)
    return list(range(len(task.train)))


class EncodedTask:
    """A task tokenised once for an encoder and reused across seeds (train is subset per seed)."""

    def __init__(self, task: TaskData, tokenizer, max_length: int, dev_size: int | None = None, dev_seed: int = 0):
        from uimer.data import sampling

        self.task = task
        self.tokenizer = tokenizer
        self.train = encode_examples(task.train, tokenizer, task.kind, max_length)
        dev_examples = task.dev
        if dev_size is not None and 0 < dev_size < len(task.dev):
            keep = sampling.stratified_subset(task.dev, dev_size, dev_seed, labels=task.labels)
            dev_examples = [task.dev[i] for i in keep]
        self.dev = encode_examples(dev_examples, tokenizer, task.kind, max_length)
        self.test = encode_examples(task.test, tokenizer, task.kind, max_length)


def load_task_for(spec: RunSpec) -> TaskData:
    from uimer.data.paths import resolve_data_dir
    from uimer.data.tasks import load_task

    rationale_file = Path(spec.rationale_file) if spec.rationale_file else None
    if spec.task == "jsonl" and not spec.data_dir:
        raise ConfigError("--task jsonl needs --data-dir pointing at the folder with train/dev/test.jsonl")
    task = load_task(spec.task, resolve_data_dir(spec.data_dir), rationale_file)
    problem = task.extra.get("rationale_problem")
    if problem and rationale_file is not None:
        if spec.strict:
            raise DataError(rationale_file, problem + " (--strict)")
        warnings.warn(f"{rationale_file}: {problem}", UimerWarning, stacklevel=2)
        log.warning("%s: %s", rationale_file, problem)
    return task


def run_seed(
    spec: RunSpec,
    encoded: EncodedTask,
    seed: int,
    device: torch.device,
    on_epoch: Callable[[dict], None] = lambda record: None,
    steps_path: Path | None = None,
    checkpoint: SeedCheckpoint | None = None,
) -> SeedResult:
    """Train and evaluate one seed from the pretrained encoder; with a checkpoint, resume a cut-off seed at its
    last saved epoch (the step log is then continued, not restarted)."""
    task = encoded.task
    indices = select_train_indices(task, spec.shot, spec.train_size, seed)
    set_seed(seed)
    method = create_method(spec.method, spec.config.method_options)
    attn = "eager" if method.needs_double_backward else "sdpa"
    model = build_model(spec.encoder, task.kind, len(task.labels), spec.pooling, attn).to(device)
    model.set_precision(spec.config.precision)
    steps_file = open_step_log(steps_path, checkpoint) if steps_path else None

    def step_log(record: dict) -> None:
        if steps_file:
            steps_file.write(json.dumps(record) + "\n")
            if checkpoint is not None:
                checkpoint.log_lines += 1

    context = TrainingContext(
        model=model,
        task=task,
        train=encoded.train.subset(indices),
        dev=encoded.dev,
        test=encoded.test,
        config=spec.config,
        seed=seed,
        tokenizer=encoded.tokenizer,
        device=device,
        method=method,
        step_log=step_log,
        on_epoch=on_epoch,
        checkpoint=checkpoint,
    )
    try:
        result = run_schedule(context)
    finally:
        if steps_file:
            steps_file.close()
    if spec.save_model:
        directory = Path(spec.output_dir) / "models" / f"seed{seed}"
        meta = {
            "task": task.name, "labels": task.labels, "encoder": spec.encoder, "method": spec.method, "seed": seed,
            "shot": spec.shot, "train_size": spec.train_size, "max_length": spec.max_length,
        }
        model.save(directory, encoded.tokenizer, meta)
        extractor = getattr(method, "extractor", None)
        if extractor is not None:  # DM: keep the extractor the model was trained against, for explain/analysis
            from uimer.interpret.extractor import save_extractor

            save_extractor(extractor, directory / "extractor.pt")
    return result


def summarise(spec: RunSpec, task: TaskData, seed_results: list[dict]) -> dict:
    tests = [r["test"] for r in seed_results]
    return {
        "task": task.name,
        "method": spec.method,
        "encoder": spec.encoder,
        "setting": spec.setting,
        "metric": task.metric,
        "alpha": spec.config.alpha,
        "warmup_epochs": spec.config.warmup_epochs,
        "dev_size": spec.dev_size,
        "per_seed": [
            {k: r[k] for k in ("seed", "dev", "test", "best_epoch", "epochs_run", "seconds")} for r in seed_results
        ],
        "test_mean": statistics.fmean(tests) if tests else None,
        "test_std": statistics.stdev(tests) if len(tests) > 1 else 0.0,  # sample std (ddof=1), as the paper
        "config": asdict(spec.config),
        "fingerprint": spec.fingerprint(),
        "versions": spec.versions(),
    }


def _read_seed_file(path: Path) -> dict | None:
    """A stored seed result, or None when the file is damaged (truncated, not JSON, fields missing): the seed is
    then trained again, with a warning, instead of the run crashing on it."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        if isinstance(err, PermissionError):
            raise OutputError(f"cannot read {path}: {describe_os_error(err)}") from err
        stored = None
    if not isinstance(stored, dict) or not all(isinstance(stored.get(k), int | float) for k in ("seed", "dev", "test")):
        warnings.warn(f"{path} is damaged (not a complete seed result); that seed is trained again", UimerWarning,
                      stacklevel=2)
        log.warning("damaged seed file %s: the seed is trained again", path)
        return None
    return stored


def prepare_output_dir(out: Path, fingerprint: str, overwrite: bool = False) -> None:
    """Create the output folder and refuse one that cannot be written or holds another run's results (a different
    fingerprint: another configuration, or results made by an older version of the code)."""
    try:
        for sub in ("seeds", "logs"):
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--output-dir {out}: cannot create it: {describe_os_error(err)}") from err
    if not os.access(out, os.W_OK | os.X_OK) or not os.access(out / "seeds", os.W_OK | os.X_OK):
        raise OutputError(f"--output-dir {out}: not writable by this user")
    if overwrite:
        return
    others = []
    candidates = [out / "results.json", *sorted((out / "seeds").glob("seed*.json"))]
    for path in candidates:
        if not path.exists():
            continue
        try:
            stored = json.loads(path.read_text())
        except PermissionError as err:
            raise OutputError(f"cannot read {path}: {describe_os_error(err)}") from err
        except (OSError, ValueError):
            continue  # damaged: handled (retrained / rewritten) by the run itself
        if isinstance(stored, dict) and stored.get("fingerprint") not in (None, fingerprint):
            others.append((path, stored))
    if others:
        path, stored = others[0]
        what = ", ".join(f"{k} {stored[k]}" for k in ("task", "method", "setting") if stored.get(k))
        raise OutputError(
            f"--output-dir {out} holds another run's results ({path.name}{': ' + what if what else ''}; fingerprint "
            f"{stored.get('fingerprint')}, this run's is {fingerprint}: another configuration or an older uimer "
            "version); use another --output-dir, or --overwrite to replace them")


def run_experiment(spec: RunSpec, progress: bool = True, overwrite: bool = False) -> dict:
    """Run (or resume) every seed of a spec and write `results.json`."""
    from uimer.training.progress import EpochProgress

    spec.validate()
    device = torch.device(check_device(spec.config.device))
    out = Path(spec.output_dir)
    fingerprint = spec.fingerprint()
    prepare_output_dir(out, fingerprint, overwrite)
    lock = DirLock(out, purpose="uimer train").acquire()
    try:
        handler = logging.FileHandler(out / "train.log")
    except OSError as err:
        lock.release()
        raise OutputError(f"cannot write {out / 'train.log'}: {describe_os_error(err)}") from err
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("uimer").addHandler(handler)
    logging.getLogger("uimer").setLevel(logging.INFO)
    try:
        if lock.took_over:
            log.warning("took over a stale lock of %s (%s)", out, lock.took_over)
        task = load_task_for(spec)
        select_train_indices(task, spec.shot, spec.train_size, spec.seeds[0])  # reject a bad setting early
        tokenizer = load_tokenizer(spec.encoder)
        check_max_length(spec.max_length, tokenizer, spec.encoder)
        encoded = EncodedTask(task, tokenizer, spec.max_length, spec.dev_size)
        results: list[dict] = []
        with EpochProgress(enabled=progress, max_epochs=spec.config.max_epochs) as bar:
            for seed in spec.seeds:
                seed_file = out / "seeds" / f"seed{seed}.json"
                if seed_file.exists():
                    stored = _read_seed_file(seed_file)
                    if stored is not None and stored.get("fingerprint") == fingerprint:
                        log.info("seed %d already done, reusing %s", seed, seed_file)
                        results.append(stored)
                        bar.skip(seed, stored)
                        continue
                bar.start_seed(seed)
                checkpoint = SeedCheckpoint.for_run(out / "checkpoints" / f"seed{seed}.pt", fingerprint, seed)
                result = run_seed(spec, encoded, seed, device, bar.epoch_done, out / "logs" / f"seed{seed}-steps.jsonl",
                                  checkpoint)
                stored = {**asdict(result), "fingerprint": fingerprint, "versions": spec.versions()}
                write_json_atomic(seed_file, stored)
                checkpoint.clear()
                results.append(stored)
                bar.end_seed(seed, stored)
        summary = summarise(spec, task, results)
        write_json_atomic(out / "results.json", summary)
        return summary
    except OSError as err:  # e.g. the disk filled up while a step log was appended to
        where = err.filename or out
        raise OutputError(f"cannot write {where}: {describe_os_error(err)}; finished seeds are kept and a rerun "
                          "resumes") from err
    finally:
        logging.getLogger("uimer").removeHandler(handler)
        handler.close()
        lock.release()


def check_max_length(max_length: int, tokenizer, encoder: str) -> None:
    """--max-length beyond the encoder's positions fails deep in the model; say so before it loads."""
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**6 and max_length > limit:
        raise ConfigError(f"--max-length must be an integer in [4, {limit}] for encoder '{encoder}', got {max_length}")
