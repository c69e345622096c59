"""Training one seed: L = L_task + alpha * L_int, warm-up, early stopping on dev, test at the best dev epoch.

Evaluation is kept cheap because it dominates few-shot runs: dev/test are tokenised once, scored under
inference mode in large length-sorted batches, the best-dev weights stay in memory and test is scored once.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from uimer.atomic import write_json_atomic  # noqa: F401 - re-exported for callers
from uimer.checks import Domain
from uimer.data.encoding import EncodedSplit
from uimer.data.types import TaskData, TaskKind
from uimer.interpret.base import InterpretationMethod, MethodSetup
from uimer.models.task_model import TaskModel
from uimer.training.checkpoint import SeedCheckpoint, capture_rng, checkpoint_due, restore_rng, resume_state
from uimer.training.metrics import accuracy, slot_f1
from uimer.training.step import train_step

log = logging.getLogger("uimer.train")


@dataclass
class TrainConfig:
    lr: float = 1e-4
    batch_size: int = 24
    max_epochs: int = 70
    patience: int = 7  # stop after more than this many epochs in a row below the best dev score
    alpha: float = 1.0
    # Epochs of L_task only: a number of epochs (a fraction counts an epoch's batches); "F*" = the fraction F of
    # *all* training batches (max_epochs x batches per epoch), the paper's NLI "0.1*"; "task" = until early stop.
    warmup_epochs: float | str = 0.0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    lr_warmup_ratio: float = 0.0
    eval_batch_size: int = 256
    shuffle: bool = True
    device: str = "cpu"
    precision: str = "fp32"  # "bf16": the encoder under autocast (TaskModel.autocast); losses stay fp32
    method_options: dict = field(default_factory=dict)


# Bumped whenever the training loop's numbers change for the same configuration (see RunSpec.fingerprint):
# results made by an older version are then listed as stale instead of counted.
TRAINER_VERSION = "1"

# The meaningful range of every numeric TrainConfig field (flags, grid YAML and RunSpec.validate share it).
TRAIN_DOMAINS: dict[str, Domain] = {
    "lr": Domain(float, 0, 1, low_open=True),
    "batch_size": Domain(int, 1, 65536),
    "max_epochs": Domain(int, 1, 100000),
    "patience": Domain(int, 0, 100000),
    "alpha": Domain(float, 0, 1e6),
    "warmup_epochs": Domain(float, 0, 100000),
    "weight_decay": Domain(float, 0, 1),
    "max_grad_norm": Domain(float, 0, None, low_open=True),
    "lr_warmup_ratio": Domain(float, 0, 1, high_open=True),
    "eval_batch_size": Domain(int, 1, 1 << 20),
}
TRAIN_FLAGS = {name: "--" + name.replace("_", "-") for name in TRAIN_DOMAINS}


def train_config_problems(config: TrainConfig) -> list[tuple[str, str]]:
    """(field, message) for every TrainConfig value outside its domain."""
    problems = []
    for name, domain in TRAIN_DOMAINS.items():
        value = getattr(config, name)
        if name == "warmup_epochs" and isinstance(value, str):  # "task" or "F*", checked by parse_warmup
            continue
        problem = domain.problem(value)
        if problem:
            problems.append((name, problem))
    if not isinstance(config.shuffle, bool):
        problems.append(("shuffle", f"must be true or false, got {config.shuffle!r}"))
    return problems


@dataclass
class SeedResult:
    seed: int
    dev: float
    test: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)  # per epoch: dev, mean l_task, mean l_int


@dataclass
class TrainingContext:
    """Everything a method may need while preparing or running its own schedule."""

    model: TaskModel
    task: TaskData
    train: EncodedSplit
    dev: EncodedSplit
    test: EncodedSplit
    config: TrainConfig
    seed: int
    tokenizer: object
    device: torch.device
    method: InterpretationMethod
    step_log: Callable[[dict], None] = lambda record: None
    on_epoch: Callable[[dict], None] = lambda record: None
    extra: dict = field(default_factory=dict)
    checkpoint: SeedCheckpoint | None = None  # where the loop saves its state to resume a cut-off seed

    def method_setup(self) -> MethodSetup:
        """What the method is prepared from: this seed's model, tokenizer, training split, seed and device (the
        eval batch size for its gradient-free passes over the training split)."""
        return MethodSetup(self.model, self.tokenizer, self.train, self.seed, self.device,
                           self.config.eval_batch_size)


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def evaluate(model: TaskModel, split: EncodedSplit, task: TaskData, device: torch.device, batch_size: int = 256) -> float:
    """The task metric on a split (accuracy, or slot F1 over all words of each sentence)."""
    if len(split) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    predictions: dict[int, object] = {}
    with torch.inference_mode():
        for batch in split.length_sorted_batches(batch_size):
            batch = batch.to(device)
            logits = model(batch)
            for i, pred in zip(batch.index.tolist(), model.predict(logits, batch), strict=True):
                predictions[i] = pred
    model.train(was_training)
    if task.kind is TaskKind.TAGGING:
        gold_tags, pred_tags = [], []
        for i, example in enumerate(split.examples):
            gold = [task.labels[t] for t in example.tags or []]
            pred = ["O"] * len(gold)
            for word, tag in zip(split.encoded[i].kept_words.tolist(), predictions[i], strict=False):
                pred[word] = task.labels[tag]
            gold_tags.append(gold)
            pred_tags.append(pred)
        return slot_f1(pred_tags, gold_tags)
    return accuracy([predictions[i] for i in range(len(split))], [e.label for e in split.examples])


def adamw(named_params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW without decay on biases and LayerNorm; the fused kernel when available, because on CPU the
    unfused update of the 30k x H embedding matrix costs as much as a few-shot step's forward and backward."""
    named = [(n, p) for n, p in named_params if p.requires_grad]
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in named if not any(k in n for k in no_decay)], "weight_decay": weight_decay},
        {"params": [p for n, p in named if any(k in n for k in no_decay)], "weight_decay": 0.0},
    ]
    try:
        return torch.optim.AdamW(groups, lr=lr, eps=1e-8, fused=True)
    except (RuntimeError, TypeError):  # pragma: no cover - devices or builds without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, eps=1e-8)


def make_optimizer(model: torch.nn.Module, params, config: TrainConfig, total_steps: int):
    """AdamW and a linear schedule (with optional LR warm-up)."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = adamw(params, config.lr, config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.lr_warmup_ratio * total_steps), max(total_steps, 1)
    )
    return optimizer, scheduler


def parse_warmup(value: float | str) -> float | str:
    """A warm-up setting in canonical form: "task", "F*" (a fraction of all batches) or epochs >= 0."""
    if value in ("task", "task-trained"):
        return "task"
    if isinstance(value, str) and value.strip().endswith("*"):
        fraction = float(value.strip()[:-1])
        if not 0 <= fraction <= 1:
            raise ValueError(f"a warm-up share of all batches must be in [0, 1], got {value!r}")
        return f"{fraction:g}*"
    number = float(value)
    if number < 0:
        raise ValueError(f"warm-up epochs must be >= 0, got {value!r}")
    return number


class WarmupGate:
    """Decides, step by step, whether L_int is on (paper §3: train on L_task first).

    The paper's NLI warm-up "0.1*" is "10 % of the whole mini-batches" (Table 8): `"0.1*"` takes 10 % of
    max_epochs x steps_per_epoch batches (nli-100: 20 of 200). A plain 0.1 is a tenth of *one* epoch's batches
    (nli-100: 1 batch), which is what the grid used before issue 29.
    """

    def __init__(self, warmup: float | str, steps_per_epoch: int, max_epochs: int = 1):
        warmup = parse_warmup(warmup)
        self.until_early_stop = warmup == "task"
        if self.until_early_stop:
            self.off_steps = 0
        elif isinstance(warmup, str):  # "F*"
            self.off_steps = math.ceil(float(warmup[:-1]) * steps_per_epoch * max(1, max_epochs))
        else:
            self.off_steps = math.ceil(float(warmup) * steps_per_epoch)
        self.released = not self.until_early_stop and self.off_steps == 0

    def active(self, global_step: int) -> bool:
        if self.until_early_stop:
            return self.released
        return global_step >= self.off_steps

    def release_on_early_stop(self) -> bool:
        """True if warm-up ends here instead of training ending."""
        if self.until_early_stop and not self.released:
            self.released = True
            return True
        return False


def state_copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class EarlyStopping:
    """Model selection on dev with patience: the one rule `fit` and DM's model phases share.

    A dev score at least as good as the best so far is a new best (ties go to the later epoch, as in the
    reference) and resets the count of bad epochs; any other adds one, and training stops once the count passes
    `patience`. The caller keeps the best state, since what a state is differs (`fit`: the model; DM: the model
    and its extractor). `best_dev` starts where the run's selection stands (DM: the best over earlier rounds and
    the warm-up), so patience counts epochs below the global best.
    """

    def __init__(self, patience: int, best_dev: float = -math.inf, bad_epochs: int = 0):
        self.patience = patience
        self.best_dev = best_dev
        self.bad_epochs = bad_epochs

    def offer(self, dev: float) -> bool:
        """Count an epoch's dev score; True when it is a new best (keep the state that produced it)."""
        if dev >= self.best_dev:
            self.best_dev, self.bad_epochs = dev, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def exhausted(self) -> bool:
        """Whether the bad epochs have run past the patience (stop, unless the warm-up gate turns L_int on)."""
        return self.bad_epochs > self.patience

    def restart(self) -> None:
        """Patience starts over (the L_task warm-up has ended: L_int gets its own patience)."""
        self.bad_epochs = 0


def fit(context: TrainingContext) -> SeedResult:
    """The standard loop shared by the baseline, GB and IM (one code path, alpha = 0 for the baseline)."""
    model, config, method, device = context.model, context.config, context.method, context.device
    start = time.perf_counter()
    train = context.train
    steps_per_epoch = max(1, math.ceil(len(train) / config.batch_size))
    optimizer, scheduler = make_optimizer(model, model.named_parameters(), config, steps_per_epoch * config.max_epochs)
    gate = WarmupGate(config.warmup_epochs, steps_per_epoch, config.max_epochs)
    shuffler = torch.Generator().manual_seed(context.seed)
    uses_l_int = method.family != "baseline" and config.alpha != 0

    stopping = EarlyStopping(config.patience)
    best_epoch, best_state = -1, None
    history: list[dict] = []
    global_step = 0
    first_epoch, seconds_before = 0, 0.0
    saved = resume_state(context.checkpoint)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        shuffler.set_state(saved["shuffler"])
        gate.released = saved["gate_released"]
        stopping = EarlyStopping(config.patience, saved["best_dev"], saved["bad_epochs"])
        best_epoch, best_state = saved["best_epoch"], saved["best_state"]
        history, global_step, first_epoch = saved["history"], saved["global_step"], saved["next_epoch"]
        seconds_before = saved["seconds"]
        method.load_state_dict(saved["method"])
        restore_rng(saved["rng"])
        log.info("seed %d resumes at epoch %d from %s", context.seed, first_epoch, context.checkpoint.path)
    epoch = first_epoch - 1
    for epoch in range(first_epoch, config.max_epochs):
        method.on_epoch_start(epoch)
        model.train()
        order = torch.randperm(len(train), generator=shuffler).tolist() if config.shuffle else list(range(len(train)))
        task_losses, int_losses = [], []
        for batch in train.batches(config.batch_size, order):
            losses = train_step(model, batch.to(device), method, optimizer, scheduler, alpha=config.alpha,
                                max_grad_norm=config.max_grad_norm,
                                alignment=uses_l_int and gate.active(global_step))
            task_losses.append(losses.l_task)
            if losses.l_int is not None:
                int_losses.append(losses.l_int)
            context.step_log(
                {"epoch": epoch, "step": global_step, "l_task": losses.l_task, "l_int": losses.l_int,
                 "lr": scheduler.get_last_lr()[0]}
            )
            global_step += 1
        dev = evaluate(model, context.dev, context.task, device, config.eval_batch_size)
        history.append(
            {"epoch": epoch, "dev": dev, "l_task": float(np.mean(task_losses)) if task_losses else None,
             "l_int": float(np.mean(int_losses)) if int_losses else None}
        )
        log.info("seed %d epoch %d dev %.4f l_task %.4f", context.seed, epoch, dev, history[-1]["l_task"] or 0.0)
        context.on_epoch(history[-1])
        if stopping.offer(dev):
            best_epoch, best_state = epoch, state_copy(model)
        elif stopping.exhausted:
            if gate.release_on_early_stop():
                stopping.restart()
            else:
                break
        if checkpoint_due(context.checkpoint, epoch + 1 < config.max_epochs):
            context.checkpoint.save({
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "shuffler": shuffler.get_state(), "gate_released": gate.released, "best_dev": stopping.best_dev,
                "best_epoch": best_epoch, "best_state": best_state, "bad_epochs": stopping.bad_epochs,
                "history": history, "global_step": global_step, "next_epoch": epoch + 1,
                "seconds": seconds_before + time.perf_counter() - start, "method": method.state_dict(),
                "rng": capture_rng(),
            })
    if best_state is not None:
        model.load_state_dict(best_state)
    test = evaluate(model, context.test, context.task, device, config.eval_batch_size)
    seconds = seconds_before + time.perf_counter() - start
    return SeedResult(context.seed, stopping.best_dev, test, best_epoch, epoch + 1, seconds, history)


def seed_result_dict(result: SeedResult) -> dict:
    data = asdict(result)
    return data
