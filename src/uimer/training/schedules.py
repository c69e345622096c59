"""Schedules for extractor-based methods: UIMER-DM one-pass and multi-round (paper §3.3.3, §5.2).

Both start with a warm-up: `fit()` with the baseline, i.e. L_task until early stopping with the best-dev
weights kept ("round 0"). The paper trains this phase as a separate task model, so it runs with the
baseline's lr, batch size, max epochs and patience (--dm-warmup-*, which grids fill in from the baseline
cell); only the rounds use the DM row's. (Before issue 29 the warm-up used the row's settings: slot-10
dm-multi-round's lr 1e-5 left its warm-up at dev F1 0.0 and the cell 19 points below the baseline.)
Then rounds r = 1..R, each
1. an extractor phase: --extractor-epochs epochs of L_phi with theta frozen (requires_grad off, outside
   every optimizer, model in eval mode so the extractor explains the deterministic model); a freshly built
   extractor runs whole epochs until at least --extractor-min-steps steps;
2. a model phase: L_task + alpha * L_int with the extractor frozen (dropout on for L_task), fresh AdamW
   with a linear schedule over the phase, dev evaluated after every epoch.
`dm-one-pass` is R = 1 with a model phase of up to --max-epochs and early stopping (--patience); `dm-multi-round`
is R = --rounds with --model-epochs-per-round epochs each. Round r trains at LR * decay^(r-1).

Protocol kept from the reference (digest §6.6, §9.10): model selection is over every dev evaluation of every
round *including the warm-up model* (ties go to the later state, as `fit()`), so a run that never beats the
warm-up dev reports the warm-up model's test score; patience counts epochs below that global best; and a round
r >= 2 restarts from the best (model, extractor) so far once some DM epoch has become the best (before that
it continues from the current weights). Unlike the reference, all R rounds run (its round-level early stop
never fired anyway), the extractor LR is constant within a phase (DiffMask), and dropout is on.

The best (model, extractor) state is kept in memory and test is scored once at the end for it. With the test
curve on (default), test is also scored after every round's model phase, on that round's final state, so
the per-round dev/test curve of Fig. 4 comes for free in `SeedResult.history`; that costs one test
evaluation per round (for SNIPS: 700 sentences, about the cost of one dev evaluation).
History records all carry "round", "phase", "epoch", "dev", "test", "l_task", "l_int", "l_phi":
phase "warmup" (per warm-up epoch), "extractor" (per extractor epoch, plus kl, l0, alpha), "model" (per model
epoch) and "round" (one per round: the round's final dev/test, mean l_int of the model phase, l_phi/kl/l0 of
the last extractor epoch, alpha, best_dev so far). Every record is also sent to `context.step_log`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from statistics import fmean

import torch

from uimer.data.encoding import EncodedSplit
from uimer.interpret.base import Baseline
from uimer.interpret.diffmask import DiffMaskMethod
from uimer.interpret.extractor import DiffMaskExtractor
from uimer.models.modes import eval_mode, frozen
from uimer.models.protocol import AttributableModel
from uimer.training.checkpoint import capture_rng, checkpoint_due, restore_rng, resume_state
from uimer.training.step import extractor_step, make_extractor_optimizers, train_step
from uimer.training.trainer import (
    EarlyStopping,
    SeedResult,
    TrainingContext,
    evaluate,
    fit,
    make_optimizer,
    state_copy,
)


def record(round_index: int, phase: str, **values) -> dict:
    """A history record with every common key present (None where it does not apply)."""
    base = {"round": round_index, "phase": phase, "epoch": None, "dev": None, "test": None,
            "l_task": None, "l_int": None, "l_phi": None}
    base.update(values)
    return base


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return fmean(kept) if kept else None


@dataclass
class BestState:
    """The best dev score so far with the (model, extractor) state that produced it, kept in memory."""

    dev: float
    model_state: dict
    extractor_state: dict | None
    round: int
    epoch: int

    def keep(self, dev: float, model: torch.nn.Module, extractor: DiffMaskExtractor, round_index: int,
             epoch: int) -> None:
        """Make this state the best: the caller's `EarlyStopping` (the rule `fit` uses) found a new best dev."""
        self.dev, self.round, self.epoch = dev, round_index, epoch
        self.model_state = state_copy(model)
        self.extractor_state = state_copy(extractor)


def _fields(instance) -> dict:
    """A dataclass's fields, shallow (asdict would deep-copy the weight tensors of a BestState)."""
    return {f.name: getattr(instance, f.name) for f in fields(instance)}


def _order(n: int, shuffle: bool, generator: torch.Generator) -> list[int]:
    return torch.randperm(n, generator=generator).tolist() if shuffle else list(range(n))


def warm_up(context: TrainingContext, overrides: dict | None = None) -> SeedResult:
    """L_task until early stopping, best-dev weights loaded: exactly the baseline's `fit()`, with the
    baseline's training settings (`overrides`, from DMOptions.warmup_overrides) where they differ."""
    config = replace(context.config, warmup_epochs=0.0, **(overrides or {}))

    def step_log(entry: dict) -> None:
        context.step_log({"round": 0, "phase": "warmup", **entry})

    # The DM schedule checkpoints at round boundaries itself; a seed cut off during its warm-up restarts it.
    return fit(replace(context, method=Baseline(), config=config, step_log=step_log, checkpoint=None))


def train_extractor(model: AttributableModel, method: DiffMaskMethod, extractor: DiffMaskExtractor,
                    train: EncodedSplit, *, batch_size: int, shuffle: bool, max_grad_norm: float,
                    device: torch.device, lr: float, shuffler: torch.Generator, noise: torch.Generator,
                    fresh: bool = True, round_index: int = 1, history: list[dict] | None = None,
                    step_log: Callable[[dict], None] = lambda record: None) -> dict:
    """--extractor-epochs epochs of L_phi with theta frozen (a fresh extractor: also at least
    --extractor-min-steps steps); returns the last epoch's mean statistics. Used by the schedule's extractor
    phase and by `uimer explain`/analysis to fit an extractor for a saved model."""
    dm = method.dm
    optimizers = make_extractor_optimizers(extractor, lr, dm.lr_alpha)
    steps_per_epoch = max(1, math.ceil(len(train) / batch_size))
    epochs = dm.extractor_epochs
    if fresh and len(train) > 0:
        epochs = max(epochs, math.ceil(dm.extractor_min_steps / steps_per_epoch))
    last: dict = {}
    step = 0
    extractor.train()
    with frozen(model), eval_mode(model):
        for epoch in range(epochs):
            epoch_stats: list[dict] = []
            for batch in train.batches(batch_size, _order(len(train), shuffle, shuffler)):
                stats = extractor_step(model, extractor, batch.to(device), optimizers, dm.eps, noise, max_grad_norm)
                epoch_stats.append(stats)
                step_log({"round": round_index, "phase": "extractor", "epoch": epoch, "step": step, **stats})
                step += 1
            last = {key: _mean([s[key] for s in epoch_stats]) for key in ("l_phi", "kl", "l0")}
            last["alpha"] = float(extractor.alpha.detach())
            if history is not None:
                history.append(record(round_index, "extractor", epoch=epoch, **last))
    return last


def train_extractor_phase(context: TrainingContext, method: DiffMaskMethod, extractor: DiffMaskExtractor,
                          round_index: int, lr: float, shuffler: torch.Generator, noise: torch.Generator,
                          history: list[dict], fresh: bool = True) -> dict:
    """The schedule's extractor phase: `train_extractor` with the run's batches, clipping and step log."""
    config = context.config
    return train_extractor(context.model, method, extractor, context.train, batch_size=config.batch_size,
                           shuffle=config.shuffle, max_grad_norm=config.max_grad_norm, device=context.device,
                           lr=lr, shuffler=shuffler, noise=noise, fresh=fresh, round_index=round_index,
                           history=history, step_log=context.step_log)


def train_model_phase(context: TrainingContext, method: DiffMaskMethod, extractor: DiffMaskExtractor,
                      round_index: int, lr: float, epochs: int, best: BestState, epoch_offset: int,
                      shuffler: torch.Generator, history: list[dict]) -> dict:
    """Up to `epochs` epochs of L_task + alpha * L_int with the extractor frozen (`method.extractor`), dev after
    each epoch; every step is the shared `train_step`."""
    model, config, device = context.model, context.config, context.device
    steps_per_epoch = max(1, math.ceil(len(context.train) / config.batch_size))
    optimizer, scheduler = make_optimizer(model, model.named_parameters(), replace(config, lr=lr),
                                          steps_per_epoch * epochs)
    stopping = EarlyStopping(config.patience, best.dev)  # patience counts epochs below the global best
    epochs_run, dev, step = 0, None, 0
    phase_l_int: list[float | None] = []
    with frozen(extractor):
        for epoch in range(epochs):
            task_losses, int_losses = [], []
            model.train()  # dropout on for L_task; L_int reads the states with dropout off (Eq. 7's scores)
            for batch in context.train.batches(config.batch_size, _order(len(context.train), config.shuffle, shuffler)):
                losses = train_step(model, batch.to(device), method, optimizer, scheduler, alpha=config.alpha,
                                    max_grad_norm=config.max_grad_norm, alignment=config.alpha != 0)
                task_losses.append(losses.l_task)
                int_losses.append(losses.l_int)
                context.step_log({"round": round_index, "phase": "model", "epoch": epoch, "step": step,
                                  "l_task": losses.l_task, "l_int": losses.l_int, "lr": scheduler.get_last_lr()[0]})
                step += 1
            phase_l_int += int_losses
            epochs_run += 1
            dev = evaluate(model, context.dev, context.task, device, config.eval_batch_size)
            if stopping.offer(dev):
                best.keep(dev, model, extractor, round_index, epoch_offset + epoch)
            entry = record(round_index, "model", epoch=epoch, dev=dev, l_task=_mean(task_losses),
                           l_int=_mean(int_losses))
            history.append(entry)
            context.on_epoch(entry)
            if stopping.exhausted:
                break
    return {"epochs": epochs_run, "dev": dev, "l_int": _mean(phase_l_int)}


def run_dm_schedule(context: TrainingContext, method: DiffMaskMethod, multi_round: bool) -> SeedResult:
    """Warm-up, then one round (until early stopping) or --rounds short rounds; see the module docstring.
    With `context.checkpoint`, the state is saved after a round (when due) and a cut-off seed resumes at the
    next round with the same numbers; a seed cut off in its warm-up or first round starts again."""
    start = time.perf_counter()
    model, config, device, dm = context.model, context.config, context.device, method.dm
    shuffler = torch.Generator().manual_seed(context.seed + 1)
    noise = method.noise_generator(context.seed, device)
    extractor: DiffMaskExtractor | None = None
    rounds = dm.rounds if multi_round else 1
    saved = resume_state(context.checkpoint)
    if saved is None:
        history: list[dict] = []
        warm = warm_up(context, dm.warmup_overrides())
        for entry in warm.history:
            history.append(record(0, "warmup", epoch=entry["epoch"], dev=entry["dev"], l_task=entry["l_task"]))
        history.append(record(0, "round", dev=warm.dev, test=warm.test, best_dev=warm.dev))
        context.step_log(history[-1])
        best = BestState(warm.dev, state_copy(model), None, 0, warm.best_epoch)
        epochs_done, first_round, seconds_before = warm.epochs_run, 1, 0.0
    else:
        history, warm, best = saved["history"], SeedResult(**saved["warm"]), BestState(**saved["best"])
        epochs_done, first_round, seconds_before = saved["epochs_done"], saved["next_round"], saved["seconds"]
        model.load_state_dict(saved["model"])
        shuffler.set_state(saved["shuffler"])
        noise.set_state(saved["noise"])
        extractor = method.build_extractor(saved["extractor_round"])
        extractor.load_state_dict(saved["extractor"])
        restore_rng(saved["rng"])
    extractor_round = saved["extractor_round"] if saved is not None else 0
    for round_index in range(first_round, rounds + 1):
        if round_index > 1 and best.round >= 1:  # restart from the best (model, extractor) so far
            model.load_state_dict(best.model_state)
            if extractor is not None and best.extractor_state is not None:
                extractor.load_state_dict(best.extractor_state)
        fresh = extractor is None or dm.reinit_extractor
        if fresh:
            extractor = method.build_extractor(round_index)
            extractor_round = round_index
        method.extractor = extractor
        decay = dm.round_lr_decay ** (round_index - 1)
        ext = train_extractor_phase(context, method, extractor, round_index, dm.lr_extractor * decay, shuffler,
                                    noise, history, fresh=fresh)
        if best.extractor_state is None:  # the round-1 extractor was trained on the warm-up model itself
            best.extractor_state = state_copy(extractor)
        epochs = dm.model_epochs_per_round if multi_round else config.max_epochs
        phase = train_model_phase(context, method, extractor, round_index, config.lr * decay, epochs, best,
                                  epochs_done, shuffler, history)
        epochs_done += phase["epochs"]
        test = evaluate(model, context.test, context.task, device, config.eval_batch_size) if dm.test_curve else None
        history.append(record(round_index, "round", dev=phase["dev"], test=test, l_int=phase["l_int"],
                              l_phi=ext.get("l_phi"), kl=ext.get("kl"), l0=ext.get("l0"),
                              alpha=float(extractor.alpha.detach()), best_dev=best.dev))
        context.step_log(history[-1])
        if checkpoint_due(context.checkpoint, round_index < rounds):
            context.checkpoint.save({
                "history": history, "warm": _fields(warm), "best": _fields(best), "epochs_done": epochs_done,
                "next_round": round_index + 1, "seconds": seconds_before + time.perf_counter() - start,
                "model": model.state_dict(), "extractor": extractor.state_dict(), "extractor_round": extractor_round,
                "shuffler": shuffler.get_state(), "noise": noise.get_state(), "rng": capture_rng(),
            })

    model.load_state_dict(best.model_state)
    if extractor is not None and best.extractor_state is not None:
        extractor.load_state_dict(best.extractor_state)
    method.extractor = extractor
    if best.round == 0:
        test = warm.test  # the warm-up model was scored by fit() already
    else:
        test = evaluate(model, context.test, context.task, device, config.eval_batch_size)
    seconds = seconds_before + time.perf_counter() - start
    return SeedResult(context.seed, best.dev, test, best.epoch, epochs_done, seconds, history)


def run_dm(context: TrainingContext) -> SeedResult:
    """The "diffmask" schedule: one round until early stopping, or --rounds short rounds (`multi_round`)."""
    method = context.method
    if not isinstance(method, DiffMaskMethod):
        raise TypeError(f"the diffmask schedule needs a DiffMask method, not {type(method).__name__}")
    return run_dm_schedule(context, method, multi_round=method.multi_round)


# A method's declared `schedule` -> the function that trains one seed with it.
SCHEDULES: dict[str, Callable[[TrainingContext], SeedResult]] = {"standard": fit, "diffmask": run_dm}


def run_schedule(context: TrainingContext) -> SeedResult:
    """Prepare `context.method` for this seed and train it under the schedule it declares."""
    method = context.method
    schedule = SCHEDULES.get(method.schedule)
    if schedule is None:
        raise ValueError(f"{method.name}: unknown schedule {method.schedule!r}; known: {', '.join(SCHEDULES)}")
    method.prepare(context.method_setup())
    return schedule(context)


def dm_phase_steps(context: TrainingContext) -> dict[str, Callable[[], None]]:
    """One training step of each DM phase on a fixed batch (the first training batch), exactly as the schedule
    takes them (the model step is the shared `train_step`), for `benchmarks/step_cost.py`. The method must be
    prepared; an extractor is built for round 1 when it has none."""
    method = context.method
    if not isinstance(method, DiffMaskMethod):
        raise TypeError(f"DM phase steps need a DiffMask method, not {type(method).__name__}")
    model, config, device, dm = context.model, context.config, context.device, method.dm
    extractor = method.extractor if method.extractor is not None else method.build_extractor(1)
    method.extractor = extractor
    batch = next(iter(context.train.batches(config.batch_size))).to(device)
    ext_opts = make_extractor_optimizers(extractor, dm.lr_extractor, dm.lr_alpha)
    optimizer, scheduler = make_optimizer(model, model.named_parameters(), config, 10**6)
    noise = method.noise_generator(context.seed, device)

    def dm_extractor_step() -> None:
        with frozen(model), eval_mode(model):
            extractor_step(model, extractor, batch, ext_opts, dm.eps, noise, config.max_grad_norm)

    def dm_model_step() -> None:
        model.train()
        with frozen(extractor):
            train_step(model, batch, method, optimizer, scheduler, alpha=config.alpha,
                       max_grad_norm=config.max_grad_norm, alignment=config.alpha != 0)

    return {"dm-extractor-step": dm_extractor_step, "dm-model-step": dm_model_step}
