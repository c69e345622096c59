"""UIMER inside a `transformers.Trainer`: L = L_task + alpha * L_int for gradient (gb-*) and IM (im-*) methods.

    from uimer.data.alignment import encode_with_rationales
    from uimer.hf import UimerTrainer

    args = TrainingArguments(output_dir="out", remove_unused_columns=False)  # keep `rationale_mask`
    trainer = UimerTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                           method="gb-huang-base", alpha=1.0)
    trainer.train()

What the trainer does around the HF loop (one loop: it only overrides `compute_loss`):
- the default data collator is uimer's `RationaleCollator`, which passes the rationale mask through as a uimer
  `Batch`; `remove_unused_columns=True` would drop that column before any collator sees it, so it is refused;
- the training forward runs on the word embeddings through the adapter (`uimer.models.adapters`), so GB methods
  differentiate through that very forward; GB switches the model to eager attention (double backward);
- IM builds its replacement sets once from the whole training set, before training, seeded by `args.seed`;
  each training example gets an `index` so a batch finds its own sets, as in the CLI;
- the loss is uimer's per-batch mean, so the trainer divides it by the gradient-accumulation steps itself:
  `num_items_in_batch` (a token count meant for models that sum their loss) is not used;
- evaluation and prediction are plain HF (task loss and logits).

DM (`dm-*`) needs its extractor phases scheduled inside the trainer; that is not here yet and is refused.
The loss runs the model through the adapter (on the unwrapped `self.model`), so this first version is for
single-process training; under DDP the wrapped model's gradient hooks would be bypassed.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch.utils.data import Dataset
from transformers import Trainer

from uimer.data.collator import BATCH_KEY, RATIONALE_FIELD, RationaleCollator, pop_batch
from uimer.data.types import TaskKind
from uimer.errors import ConfigError
from uimer.interpret import METHODS, InterpretationMethod, MethodSetup, create_method
from uimer.models.adapters import HFAdapter, adapt, use_eager_attention
from uimer.training.step import step_loss

SUPPORTED_FAMILIES = ("baseline", "gb", "im")


class _Indexed(Dataset):
    """A dataset whose features also carry their position, so UIMER-IM finds each example's replacement sets."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return {**self.dataset[i], "index": i}


class UimerTrainer(Trainer):
    """A `transformers.Trainer` whose training loss adds alpha * L_int of a uimer method (see the module doc)."""

    loss_is_scaled_for_ga = False  # transformers >= 5: our loss is a batch mean, the trainer scales it for GA

    def __init__(self, *args, method: str | InterpretationMethod = "gb-huang-base", alpha: float = 1.0,
                 method_options: Mapping | None = None, kind: TaskKind | str | None = None, **kwargs):
        self.method = create_method(method, dict(method_options or {})) if isinstance(method, str) else method
        if self.method.family not in SUPPORTED_FAMILIES:
            raise ConfigError(f"method {self.method.name!r}: uimer.hf runs {', '.join(SUPPORTED_FAMILIES)} methods; "
                              "DM's extractor schedule inside the Trainer is not available yet")
        self.alpha = float(alpha)
        model = kwargs.get("model", args[0] if args else None)
        if model is None:
            raise ConfigError("model: UimerTrainer needs the model itself (model_init is not supported)")
        if self.method.needs_double_backward and self.alpha != 0:
            use_eager_attention(model)
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is None or training_args.remove_unused_columns:
            raise ConfigError(f"remove_unused_columns: set TrainingArguments(remove_unused_columns=False); the "
                              f"Trainer otherwise drops '{RATIONALE_FIELD}' before the collator sees it")
        tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
        if tokenizer is None:
            raise ConfigError("processing_class: UimerTrainer needs the (fast) tokenizer")
        self.adapter: HFAdapter = adapt(model, kind)
        # Evaluation data may have no rationales; the training set is checked for them below.
        kwargs.setdefault("data_collator", RationaleCollator(tokenizer, self.adapter.kind, require_rationale=False))
        train = kwargs.get("train_dataset")
        if train is not None:
            if len(train) and RATIONALE_FIELD not in train[0]:
                raise ConfigError(f"train_dataset: its features have no '{RATIONALE_FIELD}' column "
                                  "(uimer.data.alignment.encode_with_rationales adds it)")
            kwargs["train_dataset"] = _Indexed(train)
        super().__init__(*args, **kwargs)
        self.model_accepts_loss_kwargs = False  # transformers 4.46-4.x: no num_items_in_batch, scale for GA
        self._prepare_method(tokenizer, train)

    def _prepare_method(self, tokenizer, train) -> None:
        if self.method.family == "baseline":
            return
        collator = RationaleCollator(tokenizer, self.adapter.kind, require_rationale=False)
        split = collator.split([train[i] for i in range(len(train))] if train is not None else [])
        self.method.prepare(MethodSetup(self.adapter, tokenizer, split, int(self.args.seed), self.args.device))

    def compute_loss(self, model, inputs, return_outputs: bool = False, num_items_in_batch=None):
        """L_task + alpha * L_int on a uimer-collated batch; anything else is HF's own loss."""
        if BATCH_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        batch = pop_batch(inputs)
        loss, losses = step_loss(self.adapter, batch, self.method, alpha=self.alpha,
                                 alignment=self.alpha != 0 and self.method.family != "baseline")
        return (loss, {"logits": losses.logits}) if return_outputs else loss

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """Plain HF evaluation: the uimer batch is dropped before the model's forward."""
        inputs = {k: v for k, v in inputs.items() if k != BATCH_KEY}
        return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)


def method_names() -> list[str]:
    """The methods `UimerTrainer` runs today."""
    return sorted(name for name, spec in METHODS.items() if spec.family in SUPPORTED_FAMILIES)
