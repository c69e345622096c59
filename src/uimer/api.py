"""uimer as a library: L = L_task + alpha * L_int for uimer's own models and for any Hugging Face classifier.

Two forms, in the spirit of Captum's functional/class split:

    import uimer

    # one call: L_int of a batch (a fresh method each time; fine for a look, not for training)
    l_int = uimer.alignment_loss(model, inputs, method="gb-huang-base", tokenizer=tokenizer)

    # training: a method prepared once (IM's replacement sets, GB's gate stream, DM's extractor) and reused
    aligner = uimer.Aligner("im-mask", alpha=1.0).prepare(train_features, tokenizer, seed=55, model=model)
    out = aligner(model, inputs)          # one forward: out.loss = L_task + alpha * L_int
    out.loss.backward()

`model` is a uimer `TaskModel`, an adapter, or a HF `*ForSequenceClassification` / `*ForTokenClassification`
(wrapped by `uimer.models.adapters.adapt` on the fly; the adapter owns no weights, so the optimizer and
`save_pretrained` stay the user's). `inputs` is a uimer `Batch` or the dict a `RationaleCollator` returns
(the `uimer_batch` entry inside it is read, not removed, so the same dict can still be popped and fed to the
model). Why a class at all: IM draws its replacement sets from the whole training set once (the paper's
protocol, and what the CLI does), GB's gate variants draw from their own seeded stream, and DM's L_int reads an
extractor that has to be trained first (`Aligner.fit_extractor`) -- state a stateless function cannot hold.

What each family needs before `loss`:
- GB (`gb-*`): nothing but eager attention (switched on the HF model here; fused SDPA has no double backward);
  `prepare(seed=...)` seeds the gate variants' Bernoulli stream (else seed 0).
- IM (`im-*`): `prepare(train, tokenizer, seed, model=...)`; batches whose examples come from that training set
  (features carrying their `index`, as `UimerTrainer` adds) reuse their sets, other batches get sets drawn for
  themselves (the same batch always the same sets). `im-mlm` also needs `mlm=` (a masked LM directory).
- DM (`dm-*`): `prepare(...)` *before* fine-tuning (it keeps the pretrained [MASK] embedding), then
  `fit_extractor(model, train)` whenever the schedule trains the extractor (after a warm-up, and every round of
  `dm-multi-round`); `loss` is 0 until an extractor exists. `load_extractor` takes one saved by
  `uimer train --save-model` (`DIR/models/seedS/extractor.pt`).
- warm-up ("train on L_task first", IM's `+warm` variants): `Aligner(..., warmup_steps=N)` and pass `step=`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from uimer.data.collator import BATCH_KEY, RationaleCollator
from uimer.data.encoding import Batch, EncodedSplit
from uimer.data.types import TaskKind
from uimer.errors import ConfigError
from uimer.interpret import METHODS, Attribution, InterpretationMethod, MethodSetup, create_method
from uimer.models.adapters import HFAdapter, adapt, use_eager_attention
from uimer.models.protocol import AttributableModel
from uimer.training.step import step_loss

FAMILIES = ("baseline", "gb", "im", "dm")
BatchLike = Batch | Mapping[str, Any]


def method_names(family: str | None = None) -> list[str]:
    """Every registered method (`family`: 'gb', 'im', 'dm' or 'baseline' narrows it), sorted."""
    if family is not None and family not in FAMILIES:
        raise ConfigError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return sorted(name for name, spec in METHODS.items() if family is None or spec.family == family)


def as_attributable(model: nn.Module, kind: TaskKind | str | None = None) -> AttributableModel:
    """The model as the methods see it: a uimer model or adapter as it is, a HF classifier through `adapt`."""
    if isinstance(model, AttributableModel):
        return model
    return adapt(model, kind)


def _attention_owner(model: nn.Module) -> nn.Module:
    """The transformers model whose attention implementation a view runs: the HF model under an adapter, the
    encoder of a uimer `TaskModel`."""
    if isinstance(model, HFAdapter):
        return model.model
    encoder = getattr(model, "encoder", None)
    return encoder if hasattr(encoder, "config") else model


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without any)."""
    for parameter in model.parameters():
        return parameter.device
    return torch.device("cpu")


def as_batch(batch: BatchLike, device: torch.device | str | None = None) -> Batch:
    """A uimer `Batch` from a `Batch` or a `RationaleCollator` dict (its `uimer_batch`, left in place), on `device`."""
    if isinstance(batch, Batch):
        found = batch
    elif isinstance(batch, Mapping) and BATCH_KEY in batch:
        found = batch[BATCH_KEY]
    else:
        what = type(batch).__name__
        keys = f" with keys {sorted(batch)}" if isinstance(batch, Mapping) else ""
        raise ConfigError(f"batch: a {what}{keys} carries no rationales; pass a uimer Batch or the dict that "
                          f"uimer.RationaleCollator returns (it adds '{BATCH_KEY}')")
    return found if device is None else found.to(device)


@dataclass
class SetupConfig:
    """The training settings a method's preparation and DM's extractor phase read (a `TrainConfig` subset)."""

    batch_size: int = 24
    shuffle: bool = True
    max_grad_norm: float = 1.0
    eval_batch_size: int = 256


@dataclass
class AlignmentOutput:
    """One training forward's losses: `loss` (= task_loss + alpha * alignment_loss) is what to backward."""

    loss: torch.Tensor
    task_loss: torch.Tensor
    alignment_loss: torch.Tensor  # L_int, unweighted (0 during warm-up, for the baseline, or with alpha 0)
    logits: torch.Tensor
    active: bool  # whether L_int was computed for this step


def training_split(train: EncodedSplit | Sequence[Mapping] | None, tokenizer, kind: TaskKind | None) -> EncodedSplit:
    """A uimer split from a uimer split or from HF features (what IM draws its sets from, DM its batches)."""
    if isinstance(train, EncodedSplit):
        return train
    if train is None:
        pad = getattr(tokenizer, "pad_token_id", None) if tokenizer is not None else None
        return EncodedSplit([], [], int(pad or 0))
    if tokenizer is None:
        raise ConfigError("tokenizer: turning HF features into a training split needs the (fast) tokenizer")
    collator = RationaleCollator(tokenizer, kind, require_rationale=False)
    return collator.split([train[i] for i in range(len(train))])


class Aligner:
    """A registered interpretation method plus alpha: L_int for a batch, and L_task + alpha * L_int in one forward.

    `options` are the method's settings under the CLI flag names with '_' (`margin=1.0`, `im_k=2`, `mlm=DIR`,
    `dm_gate="hidden"`, `ghaeini_saliency=...`); a wrong value is a ConfigError naming the flag.
    """

    def __init__(self, method: str | InterpretationMethod = "gb-huang-base", alpha: float = 1.0, *,
                 kind: TaskKind | str | None = None, warmup_steps: int = 0, **options: Any):
        if isinstance(method, InterpretationMethod):
            if options:
                raise ConfigError("options: pass them to create_method, not beside a method instance")
            self.method = method
        else:
            self.method = create_method(method, options)
        if not (isinstance(alpha, int | float) and alpha >= 0 and alpha == alpha):
            raise ConfigError(f"alpha must be a number >= 0, got {alpha!r}")
        if not (isinstance(warmup_steps, int) and warmup_steps >= 0):
            raise ConfigError(f"warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.alpha = float(alpha)
        self.kind = None if kind is None else TaskKind(kind)
        self.warmup_steps = warmup_steps
        self.seed = 0
        self.prepared = False
        self._noise: torch.Generator | None = None
        self._adapters: dict[int, AttributableModel] = {}
        self._dm_rounds = 0

    # -- what it is ---------------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.method.name

    @property
    def family(self) -> str:
        return self.method.family

    def __repr__(self) -> str:
        return f"Aligner({self.name!r}, alpha={self.alpha:g})"

    # -- models and batches ---------------------------------------------------------------------------------
    def view(self, model: nn.Module) -> AttributableModel:
        """The model as the methods see it (one adapter per HF model, reused), ready for this method: a
        gradient method switches a HF model to eager attention, or says how to load it that way."""
        if isinstance(model, AttributableModel):
            view = model
        else:
            key = id(model)
            view = self._adapters.get(key)
            if view is None or getattr(view, "model", None) is not model:
                view = adapt(model, self.kind)
                self._adapters = {key: view}
        if self.method.needs_double_backward and self.alpha != 0:
            use_eager_attention(_attention_owner(view))
        return view

    # -- preparation --------------------------------------------------------------------------------------------
    def prepare(self, train: EncodedSplit | Sequence[Mapping] | None = None, tokenizer=None, seed: int = 0, *,
                model: nn.Module | None = None, device: torch.device | str | None = None,
                batch_size: int = 24) -> Aligner:
        """Once per run, before training: IM builds the training set's replacement sets, GB seeds its gate
        stream, DM checks the encoder and keeps the pretrained [MASK] embedding. `train` is a uimer split or a
        sequence of HF features (dicts with `rationale_mask`); IM and DM need it, the tokenizer and the model.
        Does not consume the global RNG (dropout and shuffling draws stay those of a run without uimer).
        Returns self."""
        family = self.family
        if family in ("im", "dm") and (model is None or tokenizer is None):
            raise ConfigError(f"prepare: method {self.name} needs model= and tokenizer= (and the training set)")
        view = self.view(model) if model is not None else None
        if device is None:
            device = model_device(view) if view is not None else torch.device("cpu")
        kind = view.kind if view is not None else self.kind
        split = training_split(train, tokenizer, kind)
        if family == "im" and len(split) == 0:
            raise ConfigError(f"train: {self.name} builds its replacement sets from the training set; give it")
        self.seed = int(seed)
        self._config = SetupConfig(batch_size=int(batch_size))
        setup = MethodSetup(view, tokenizer, split, self.seed, torch.device(device), self._config.eval_batch_size)
        self._setup = setup
        if family != "baseline":
            with torch.random.fork_rng(devices=_cuda_devices(setup.device)):
                self.method.prepare(setup)
        if family == "dm":  # the CLI's two DM streams: gate noise, and the extractor phases' shuffling
            self._noise = self.method.noise_generator(self.seed, setup.device)
            self._shuffler = torch.Generator().manual_seed(self.seed + 1)
            self._dm_rounds = 0
        self.prepared = True
        return self

    # -- DM ---------------------------------------------------------------------------------------------------------
    def fit_extractor(self, model: nn.Module, train: EncodedSplit | Sequence[Mapping] | None = None, *,
                      tokenizer=None, fresh: bool | None = None, lr: float | None = None,
                      step_log: Callable[[dict], None] | None = None) -> dict:
        """DM's extractor phase: train the DiffMask extractor on the current model (theta frozen, dropout off)
        for --extractor-epochs epochs (a fresh extractor: at least --extractor-min-steps steps), exactly the CLI's
        phase (`uimer.training.schedules.train_extractor`). The first call builds the extractor; later
        calls continue it unless `fresh` (or the method's `reinit_extractor`). Returns the last epoch's mean
        statistics (l_phi, kl, l0, alpha). `train` defaults to the split given to `prepare`."""
        from uimer.training.schedules import train_extractor

        if self.family != "dm":
            raise ConfigError(f"fit_extractor: {self.name} has no extractor (only dm-* methods do)")
        if not self.prepared:
            raise ConfigError("fit_extractor: call prepare(train, tokenizer, seed, model=...) first, before "
                              "fine-tuning (DM keeps the pretrained [MASK] embedding)")
        view = self.view(model)
        base = self._setup
        split = base.train if train is None else training_split(train, tokenizer or base.tokenizer, view.kind)
        if len(split) == 0:
            raise ConfigError("train: the extractor phase needs training examples")
        setup = MethodSetup(view, base.tokenizer, split, self.seed, base.device, base.batch_size)
        dm, config = self.method.dm, self._config
        fresh = self.method.extractor is None or dm.reinit_extractor if fresh is None else fresh
        self._dm_rounds += 1
        if fresh:
            self.method.extractor = self.method.build_extractor(self._dm_rounds, setup)
        return train_extractor(view, self.method, self.method.extractor, split, batch_size=config.batch_size,
                               shuffle=config.shuffle, max_grad_norm=config.max_grad_norm, device=base.device,
                               lr=dm.lr_extractor if lr is None else lr, shuffler=self._shuffler, noise=self._noise,
                               fresh=fresh, round_index=self._dm_rounds, history=[],
                               step_log=step_log or (lambda record: None))

    def save_extractor(self, path: Path | str) -> Path:
        """Write DM's trained extractor (what `uimer train --save-model` keeps beside the model)."""
        from uimer.interpret.extractor import save_extractor

        if self.family != "dm" or self.method.extractor is None:
            raise ConfigError(f"save_extractor: {self.name} has no trained extractor (fit_extractor first)")
        save_extractor(self.method.extractor, Path(path))
        return Path(path)

    def load_extractor(self, path: Path | str, device: torch.device | str = "cpu") -> Aligner:
        """Use a saved extractor (`DIR/models/seedS/extractor.pt` of a DM run) for L_int and attribution."""
        from uimer.interpret.extractor import load_extractor

        if self.family != "dm":
            raise ConfigError(f"load_extractor: {self.name} has no extractor (only dm-* methods do)")
        if not Path(path).is_file():
            raise ConfigError(f"load_extractor: {path}: no such file")
        self.method.extractor = load_extractor(Path(path), device)
        return self

    # -- losses and attributions ---------------------------------------------------------------------------------
    def active(self, step: int | None) -> bool:
        """Whether L_int is on at this step: never for the baseline or alpha 0, not before `warmup_steps`, and
        for DM not before an extractor exists (its L_int reads one)."""
        if self.family == "baseline" or self.alpha == 0:
            return False
        if self.family == "dm" and self.method.extractor is None:
            return False
        if self.warmup_steps:
            if step is None:
                raise ConfigError("step: with warmup_steps, pass the global step so the warm-up can end")
            return step >= self.warmup_steps
        return True

    def loss(self, model: nn.Module, batch: BatchLike, *, logits: torch.Tensor | None = None,
             inputs_embeds: torch.Tensor | None = None, task_loss: torch.Tensor | None = None) -> torch.Tensor:
        """L_int of the batch (a scalar, 0 when no example has a rationale), unweighted by alpha.

        Without `logits` the model runs one forward on its word embeddings here. With them, they must come from a
        forward on `inputs_embeds` (GB differentiates through that very forward: pass both, as `__call__` does)."""
        view = self.view(model)
        b = as_batch(batch, model_device(view))
        if logits is None:
            inputs_embeds = view.embed(b.input_ids)
            logits = view(b, inputs_embeds=inputs_embeds)
        elif inputs_embeds is None and self.method.needs_double_backward:
            raise ConfigError(f"inputs_embeds: {self.name} differentiates the logits w.r.t. the embeddings they were "
                              "computed from; pass inputs_embeds with logits, or neither")
        if task_loss is None:
            task_loss = view.task_loss(logits, b)
        self._check_ready()
        return self.method.alignment_loss(view, b, logits, task_loss, inputs_embeds)

    def __call__(self, model: nn.Module, batch: BatchLike, *, step: int | None = None) -> AlignmentOutput:
        """L_task + alpha * L_int from one forward on the word embeddings: `uimer.training.step.step_loss`, the
        CLI's own training loss, so a library run and a CLI run optimise the same L."""
        view = self.view(model)
        b = as_batch(batch, model_device(view))
        active = self.active(step)
        if active:
            self._check_ready()
        terms = step_loss(view, b, self.method, alpha=self.alpha, alignment=active)
        l_int = terms.l_int if terms.l_int is not None else terms.l_task.new_zeros(())
        return AlignmentOutput(terms.loss, terms.l_task, l_int, terms.logits, active)

    def attribute(self, model: nn.Module, batch: BatchLike, *, create_graph: bool = False) -> Attribution:
        """The method's attribution of the batch: per-piece `scores` for every family, and IM's own a_R/a_N."""
        if self.family == "baseline":
            raise ConfigError("method: the baseline has no attribution; choose a gb-*, im-* or dm-* method")
        view = self.view(model)
        self._check_ready()
        return self.method.attribute(view, as_batch(batch, model_device(view)), create_graph=create_graph)

    def _check_ready(self) -> None:
        if self.family == "im" and getattr(self.method, "proposer", None) is None:
            raise ConfigError(f"{self.name}: call prepare(train, tokenizer, seed, model=...) first (IM draws its "
                              "replacement sets from the training set)")
        if self.family == "dm" and self.method.extractor is None and not self.prepared:
            raise ConfigError(f"{self.name}: call prepare(...) and fit_extractor(...) (or load_extractor) first")


def alignment_loss(model: nn.Module, batch: BatchLike, method: str = "gb-huang-base", *, tokenizer=None,
                   extractor: Path | str | None = None, seed: int = 0, **options: Any) -> torch.Tensor:
    """L_int of one batch with a fresh method (functional form; for training, prepare an `Aligner` once).

    IM needs `tokenizer` (its replacement sets are drawn for the batch itself), DM a trained `extractor` file.
    `options` as for `Aligner`."""
    aligner = Aligner(method, **options)
    if aligner.family == "baseline":
        raise ConfigError("method: the baseline has no L_int; choose a gb-*, im-* or dm-* method")
    view = aligner.view(model)
    if aligner.family == "im":
        if tokenizer is None:
            raise ConfigError(f"tokenizer: {method} draws replacement words with the tokenizer; pass tokenizer=")
        _prepare_im_for_batches(aligner, view, tokenizer, seed)
    elif aligner.family == "dm":
        if extractor is None:
            raise ConfigError(f"extractor: {method}'s L_int reads a trained DiffMask extractor; pass extractor=PATH "
                              "(see Aligner.fit_extractor)")
        aligner.load_extractor(extractor, model_device(view))
    else:
        aligner.prepare(seed=seed)
    return aligner.loss(view, batch)


def _prepare_im_for_batches(aligner: Aligner, view: AttributableModel, tokenizer, seed: int) -> None:
    """IM without a training set: the proposer only, so every batch gets sets drawn for itself."""
    method = aligner.method
    if method.strategy == "prior":
        raise ConfigError("method: im-prior draws from the training text's unigram prior; use Aligner(...).prepare"
                          "(train, tokenizer, ...) with the training set")
    empty = EncodedSplit([], [], int(getattr(tokenizer, "pad_token_id", 0) or 0))
    method.prepare(MethodSetup(view, tokenizer, empty, int(seed), model_device(view)))
    aligner.seed, aligner.prepared = int(seed), True


def _cuda_devices(device: torch.device) -> list[int]:
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
