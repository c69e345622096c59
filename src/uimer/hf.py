"""UIMER inside a `transformers.Trainer`: L = L_task + alpha * L_int for every registered method.

    from uimer import UimerTrainer, encode_with_rationales

    args = TrainingArguments(output_dir="out", remove_unused_columns=False)  # keep `rationale_mask`
    trainer = UimerTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                           method="gb-huang-base", alpha=1.0)
    trainer.train()

What the trainer does around the HF loop (one loop: it overrides `compute_loss` and adds callbacks):
- the default data collator is uimer's `RationaleCollator`, which passes the rationale mask through as a uimer
  `Batch`; `remove_unused_columns=True` would drop that column before any collator sees it, so it is refused;
- the loss is `uimer.api.Aligner`'s: one forward on the word embeddings through the adapter
  (`uimer.models.adapters`), so GB methods differentiate through that very forward; GB switches the model to
  eager attention (double backward);
- IM builds its replacement sets once from the whole training set, before training, seeded by `args.seed`;
  each training example gets an `index` so a batch finds its own sets, as in the CLI;
- `warmup_epochs` (IM's "+warm" variants): L_task only for that many epochs (a fraction counts that share of one
  epoch's optimizer steps), as the CLI's `--warmup-epochs N`;
- DM: `DiffMaskSchedule` (added automatically) trains the extractor between epochs -- at the start of epoch
  `warmup_epochs` (>= 1: the extractor interprets a task model), and for `dm-multi-round` again every
  `model_epochs_per_round` epochs, `rounds` times -- with uimer's own extractor phase; the model's training stays
  the Trainer's loop. Unlike the CLI, the warm-up is a fixed number of epochs (not until early stopping), and a
  round neither restarts from the best (model, extractor) so far nor restarts (or decays, `round_lr_decay`) the
  model's LR schedule -- the extractor's LR does decay per round;
- the loss is uimer's per-batch mean, so the trainer divides it by the gradient-accumulation steps itself:
  `num_items_in_batch` (a token count meant for models that sum their loss) is not used;
- evaluation and prediction are plain HF (task loss and logits); `DevSelection` is the CLI's model selection
  (best dev epoch kept in memory, ties to the later epoch, early stopping after more than `patience` epochs
  below the best), which `EarlyStoppingCallback` + `load_best_model_at_end` do not reproduce (they keep the
  earlier epoch on ties and need a checkpoint on disk each epoch).

The loss runs the model through the adapter (on the unwrapped `self.model`), so this is for single-process
training; under DDP the wrapped model's gradient hooks would be bypassed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from uimer.api import Aligner, method_names
from uimer.data.collator import BATCH_KEY, RATIONALE_FIELD, RationaleCollator, pop_batch
from uimer.data.types import TaskKind
from uimer.errors import ConfigError
from uimer.interpret import InterpretationMethod

__all__ = ["UimerTrainer", "DevSelection", "DiffMaskSchedule", "method_names"]


class _Indexed(Dataset):
    """A dataset whose features also carry their position, so UIMER-IM finds each example's replacement sets."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "index": i}


class DevSelection(TrainerCallback):
    """uimer's model selection inside a Trainer: keep the weights of the best `metric` epoch (in memory; ties go
    to the later epoch, as the reference and the CLI), stop after more than `patience` evaluations in a row below
    the best, and load the best weights when training ends. Needs an evaluation per epoch
    (`eval_strategy="epoch"`). `best`, `best_epoch` and `history` say what happened."""

    def __init__(self, metric: str = "eval_accuracy", patience: int = 7):
        if not (isinstance(patience, int) and patience >= 0):
            raise ConfigError(f"patience must be an integer >= 0, got {patience!r}")
        self.metric = metric
        self.patience = patience
        self.best = -math.inf
        self.best_epoch: float | None = None
        self.bad = 0
        self.history: list[dict] = []
        self._state: dict[str, torch.Tensor] | None = None
        self._training = False

    def on_train_begin(self, args, state, control, **kwargs):
        self._training = True
        return control

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        if not self._training:  # evaluate() after training (a test set): not a model-selection step
            return control
        if not metrics or self.metric not in metrics:
            raise ConfigError(f"metric: DevSelection reads {self.metric!r}, but the evaluation gave "
                              f"{sorted(metrics or {})} (compute_metrics names it without the 'eval_' prefix)")
        value = float(metrics[self.metric])
        self.history.append({"epoch": state.epoch, self.metric: value})
        if value >= self.best:
            self.best, self.best_epoch, self.bad = value, state.epoch, 0
            if model is not None:
                self._state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad += 1
            if self.bad > self.patience:
                control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._training = False
        if model is not None and self._state is not None:
            model.load_state_dict(self._state)
        return control


class DiffMaskSchedule(TrainerCallback):
    """DM's extractor phases between the Trainer's epochs (see the module doc): `Aligner.fit_extractor` at the
    start of epoch `warmup_epochs` and, for multi-round, every `model_epochs_per_round` epochs after, `rounds`
    phases in all. `phases` records each phase's epoch and statistics."""

    def __init__(self, trainer: UimerTrainer, warmup_epochs: int):
        self.trainer = trainer
        dm = trainer.aligner.method.dm
        self.first = int(warmup_epochs)
        self.every = dm.model_epochs_per_round if trainer.aligner.method.multi_round else 0
        self.rounds = dm.rounds if self.every else 1
        self.phases: list[dict] = []

    def due(self, epoch: int) -> bool:
        """Whether an extractor phase runs before model epoch `epoch` (0-based)."""
        if epoch < self.first:
            return False
        if not self.every:
            return epoch == self.first
        done, offset = divmod(epoch - self.first, self.every)
        return offset == 0 and done < self.rounds

    def on_epoch_begin(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        if self.due(epoch):
            t = self.trainer
            dm = t.aligner.method.dm
            lr = dm.lr_extractor * dm.round_lr_decay ** len(self.phases)  # round r: decay^(r-1), as the CLI
            stats = t.aligner.fit_extractor(t.adapter, lr=lr)
            self.phases.append({"epoch": epoch, "lr": lr, **stats})
        return control


class UimerTrainer(Trainer):
    """A `transformers.Trainer` whose training loss adds alpha * L_int of a uimer method (see the module doc).

    `method` is a registered name (or a method instance), `method_options` its settings under the CLI flag
    names with '_' (`{"margin": 1.0, "im_k": 2}`); `kind` ('classification', 'pair', 'tagging') is read from the
    model's class when None."""

    loss_is_scaled_for_ga = False  # transformers >= 5: our loss is a batch mean, the trainer scales it for GA

    def __init__(self, *args, method: str | InterpretationMethod = "gb-huang-base", alpha: float = 1.0,
                 method_options: Mapping | None = None, kind: TaskKind | str | None = None,
                 warmup_epochs: float = 0.0, **kwargs):
        options = dict(method_options or {})
        self.aligner = Aligner(method, alpha, kind=kind, **options) if isinstance(method, str) else \
            Aligner(method, alpha, kind=kind)
        model = kwargs.get("model", args[0] if args else None)
        if model is None:
            raise ConfigError("model: UimerTrainer needs the model itself (model_init is not supported)")
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is None or training_args.remove_unused_columns:
            raise ConfigError(f"remove_unused_columns: set TrainingArguments(remove_unused_columns=False); the "
                              f"Trainer otherwise drops '{RATIONALE_FIELD}' before the collator sees it")
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tokenizer is None:
            raise ConfigError("processing_class: UimerTrainer needs the (fast) tokenizer")
        if not (isinstance(warmup_epochs, int | float) and warmup_epochs >= 0):
            raise ConfigError(f"warmup_epochs must be a number of epochs >= 0, got {warmup_epochs!r}")
        if self.aligner.family == "dm" and (warmup_epochs < 1 or warmup_epochs != int(warmup_epochs)):
            raise ConfigError(f"warmup_epochs: {self.aligner.name} trains its extractor on a task model; give a "
                              f"whole number of warm-up epochs >= 1, got {warmup_epochs!r}")
        self.adapter = self.aligner.view(model)
        # Evaluation data may have no rationales; the training set is checked for them below.
        kwargs.setdefault("data_collator", RationaleCollator(tokenizer, self.adapter.kind, require_rationale=False))
        train = kwargs.get("train_dataset")
        if train is not None:
            if len(train) and RATIONALE_FIELD not in train[0]:
                raise ConfigError(f"train_dataset: its features have no '{RATIONALE_FIELD}' column "
                                  "(uimer.encode_with_rationales adds it)")
            kwargs["train_dataset"] = _Indexed(train)
        elif self.aligner.family in ("im", "dm"):
            raise ConfigError(f"train_dataset: {self.aligner.name} prepares from the training set; give it")
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # transformers 4.46-4.x: no num_items_in_batch, scale for GA
        self.warmup_epochs = float(warmup_epochs)
        if self.aligner.family != "dm" and warmup_epochs > 0 and train is not None:
            per_step = self.args.per_device_train_batch_size * max(1, self.args.gradient_accumulation_steps)
            self.aligner.warmup_steps = math.ceil(warmup_epochs * math.ceil(len(train) / per_step))
        if self.aligner.family != "baseline":
            self.aligner.prepare(train, tokenizer, int(self.args.seed), model=self.adapter, device=self.args.device,
                                 batch_size=self.args.per_device_train_batch_size)
        self._loss_sums: dict[str, list[float]] = {"l_task": [], "l_int": []}
        self.dm_schedule: DiffMaskSchedule | None = None
        if self.aligner.family == "dm":
            self.dm_schedule = DiffMaskSchedule(self, int(warmup_epochs))
            self.add_callback(self.dm_schedule)

    # The method and alpha live in the aligner; these keep the trainer's attributes readable and settable.
    @property
    def method(self) -> InterpretationMethod:
        return self.aligner.method

    @property
    def alpha(self) -> float:
        return self.aligner.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        self.aligner.alpha = float(value)

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """L_task + alpha * L_int on a uimer-collated batch; anything else is HF's own loss."""
        if BATCH_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        batch = pop_batch(inputs)
        out = self.aligner(self.adapter, batch, step=self.state.global_step)
        if model.training:  # the logged means (see `log`)
            self._loss_sums["l_task"].append(out.task_loss.item())
            if out.active:
                self._loss_sums["l_int"].append(out.alignment_loss.item())
        return (out.loss, {"logits": out.logits}) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        """Training logs also carry the means of L_task and L_int (unweighted) since the last log, so a run
        shows what the alignment term does; L_int is absent while it is off (warm-up, before DM's extractor)."""
        if "loss" in logs:
            for key, values in self._loss_sums.items():
                if values:
                    logs[key] = round(sum(values) / len(values), 6)
                values.clear()
        super().log(logs, *args, **kwargs)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Plain HF evaluation: the uimer batch is dropped before the model's forward."""
        inputs = {k: v for k, v in inputs.items() if k != BATCH_KEY}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
