"""One experiment = one task, setting and method over several seeds; results land in `DIR/results.json`.

Each finished seed is written atomically to `DIR/seeds/seed<S>.json`, so an interrupted run resumes at the
first unfinished seed; a seed that was cut off resumes at its last checkpoint (`DIR/checkpoints/seed<S>.pt`,
saved at an epoch boundary every few minutes), and is never half-counted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from uimer.data.encoding import encode_examples
from uimer.data.types import TaskData, TaskKind
from uimer.errors import ConfigError
from uimer.interpret import create_method
from uimer.models.encoder import load_tokenizer
from uimer.models.task_model import build_model
from uimer.training.checkpoint import SeedCheckpoint, open_step_log
from uimer.training.trainer import SeedResult, TrainConfig, TrainingContext, fit, set_seed, write_json_atomic

log = logging.getLogger("uimer.run")

PAPER_SEEDS = (55, 1988, 12333, 42)


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

    @property
    def setting(self) -> str:
        if self.shot is not None and self.shot > 0:
            return f"{self.shot}-shot"
        if self.train_size is not None and self.train_size > 0:
            return f"{self.train_size}-train"
        return "full"

    def fingerprint(self) -> str:
        """What must match for a stored seed result to be reused."""
        data = asdict(self)
        for volatile in ("seeds", "output_dir", "save_model", "data_dir"):
            data.pop(volatile)
        data["config"].pop("device")
        if data["config"].get("precision") == "fp32":  # the default leaves fingerprints of fp32-era runs intact
            data["config"].pop("precision")
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


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
    return load_task(spec.task, resolve_data_dir(spec.data_dir), rationale_file)


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
        method.prepare(context)
        result = method.run_schedule(context) if method.owns_schedule else fit(context)
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
            from uimer.interpret.diffmask import save_extractor

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
    }


def run_experiment(spec: RunSpec, progress: bool = True) -> dict:
    """Run (or resume) every seed of a spec and write `results.json`."""
    from uimer.training.progress import EpochProgress

    out = Path(spec.output_dir)
    (out / "seeds").mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    logging.getLogger("uimer").addHandler(handler)
    logging.getLogger("uimer").setLevel(logging.INFO)
    try:
        device = torch.device(spec.config.device)
        task = load_task_for(spec)
        select_train_indices(task, spec.shot, spec.train_size, spec.seeds[0])  # reject a bad setting early
        tokenizer = load_tokenizer(spec.encoder)
        encoded = EncodedTask(task, tokenizer, spec.max_length, spec.dev_size)
        fingerprint = spec.fingerprint()
        results: list[dict] = []
        with EpochProgress(enabled=progress, max_epochs=spec.config.max_epochs) as bar:
            for seed in spec.seeds:
                seed_file = out / "seeds" / f"seed{seed}.json"
                if seed_file.exists():
                    stored = json.loads(seed_file.read_text())
                    if stored.get("fingerprint") == fingerprint:
                        log.info("seed %d already done, reusing %s", seed, seed_file)
                        results.append(stored)
                        bar.skip(seed, stored)
                        continue
                bar.start_seed(seed)
                checkpoint = SeedCheckpoint.for_run(out / "checkpoints" / f"seed{seed}.pt", fingerprint, seed)
                result = run_seed(spec, encoded, seed, device, bar.epoch_done, out / "logs" / f"seed{seed}-steps.jsonl",
                                  checkpoint)
                stored = {**asdict(result), "fingerprint": fingerprint}
                write_json_atomic(seed_file, stored)
                checkpoint.clear()
                results.append(stored)
                bar.end_seed(seed, stored)
        summary = summarise(spec, task, results)
        write_json_atomic(out / "results.json", summary)
        return summary
    finally:
        logging.getLogger("uimer").removeHandler(handler)
        handler.close()
