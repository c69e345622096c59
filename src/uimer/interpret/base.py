"""The framework's two interfaces and the registry the CLI reads `--method` choices from.

`L = L_task + alpha * L_int(a, g)`: an `InterpretationMethod` produces attribution scores `a` for a batch
(differentiable w.r.t. the model when `create_graph=True`), and its `alignment_loss` compares them with the
gold rationales `g`. Families differ in what they need around training (replacement sets, an extractor), so
a method can also hook into preparation (`prepare(MethodSetup)`, never a whole training run) and declare
the training schedule it needs (`schedule`: "standard", or "diffmask" for the extractor methods); the
schedules themselves live in `uimer.training`. `attribute` gives every family's scores in one form
(`Attribution`: per piece, per word when asked), so evaluation never asks which family it scores. Methods are
written against `uimer.models.protocol.AttributableModel`, not a concrete model class, and read their options
from their family's options dataclass (`uimer.interpret.options`), from which the flags are made.

Conventions every method follows:
- examples without any rationale piece contribute L_task only; a batch without rationales gives
  L_int = 0 (a zero tensor attached to nothing), never an error;
- special ([CLS]/[SEP]) and padding positions are never rationales and never "non-rationales".
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from uimer.data.encoding import Batch, EncodedSplit
from uimer.interpret.options import OPTION_CLASSES, options_class_of
from uimer.interpret.words import pieces_to_words
from uimer.models.protocol import AttributableModel


@dataclass
class MethodSetup:
    """What a method is prepared from, once per seed: the model it will explain, the tokenizer (IM's [MASK]
    and vocabulary, DM's placeholder), the training examples (IM's replacement sets and prior, DM's
    placeholder mean), the seed its own generators derive from, and the device.

    `batch_size` is the number of rows per gradient-free pass over `train` (DM's hidden-gate placeholder
    averages the training states in such passes): the trainer passes its eval batch size, so that the sums,
    hence the numbers, stay what they were. Dev and test, the config and the logging callbacks stay out:
    evaluation prepares a method for a saved model with exactly this object, without faking a training run.
    """

    model: AttributableModel
    tokenizer: Any
    train: EncodedSplit
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    batch_size: int = 256


@dataclass
class Attribution:
    """A method's scores for a batch, in the same form for every family.

    `scores` (B, L): one score per word piece, zero on [CLS]/[SEP]/padding (IM scores units by replacing them,
    and each piece carries its unit's score). `words` (B, W): per word, when `attribute` got `word_ids`; -inf
    for words without a piece. `a_r`, `a_n` (B,): multi-token scores of the rationale and of the rest where
    the method defines its own (IM's Eq. 4), else None (evaluation then averages word scores). `valid` (B,):
    the examples `a_r`/`a_n` (or, without them, `scores`) are defined for.
    """

    scores: torch.Tensor | None = None
    words: torch.Tensor | None = None
    a_r: torch.Tensor | None = None
    a_n: torch.Tensor | None = None
    valid: torch.Tensor | None = None


class InterpretationMethod(ABC):
    """One interpretation method plus the alignment loss that trains with it."""

    name: ClassVar[str] = ""
    family: ClassVar[str] = ""  # "baseline", "gb", "im", "dm"
    unit: ClassVar[str] = "score"  # what an attribution score measures, shown with explanations
    # The family's typed options (uimer.interpret.options), None for a method without any.
    options_class: ClassVar[type | None] = None
    # Second-order gradients do not run under fused SDPA attention: such methods get eager attention.
    needs_double_backward: ClassVar[bool] = False
    # Behaviour version: bump it (as a string: "2", "3", ...) in any change that alters the numbers this method
    # gives for the same configuration. It enters the run fingerprint, so results made before are reported stale.
    version: ClassVar[str] = "1"

    @classmethod
    def behaviour_version(cls, task: str) -> str:
        """The version of this method's numbers on `task` (a task name such as snips-slot): a change that left
        one task's numbers bit-identical keeps that task's results current by returning the old version there."""
        return cls.version

    def __init__(self, options: dict | None = None):
        self.options = dict(options or {})

    # The training schedule the method needs, chosen in `uimer.training.schedules.SCHEDULES`: "standard" (the
    # one loop of baseline, GB and IM) or "diffmask" (warm-up, then extractor and model phases alternately).
    schedule: ClassVar[str] = "standard"

    def prepare(self, setup: MethodSetup) -> None:  # noqa: B027 - optional hook
        """Called once per seed before training or explaining (e.g. to build replacement sets)."""

    def on_epoch_start(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Called at the start of every training epoch."""

    def state_dict(self) -> dict:
        """The method's own random state, saved in mid-seed checkpoints (stateless methods: nothing)."""
        return {}

    def load_state_dict(self, state: dict) -> None:  # noqa: B027 - optional hook
        """Restore what `state_dict` saved; called after `prepare`, before training resumes."""

    def attribute(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False,
                  word_ids: torch.Tensor | None = None, n_words: int | None = None) -> Attribution:
        """Scores for the batch: per piece always, per word too when `word_ids` (B, L; -1 outside words) and
        `n_words` are given (by default a word's score is the maximum over its pieces). Differentiable w.r.t.
        the model iff `create_graph`; with the model in eval mode it never draws from the global RNG."""
        attribution = self.piece_attribution(model, batch, create_graph=create_graph)
        if word_ids is not None:
            attribution.words = pieces_to_words(attribution.scores, word_ids.to(attribution.scores.device),
                                                int(n_words if n_words is not None else 0))
        return attribution

    @abstractmethod
    def piece_attribution(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False) -> Attribution:
        """The per-piece `Attribution` (`scores`, and `a_r`/`a_n` where the method has its own)."""

    @abstractmethod
    def alignment_loss(
        self,
        model: AttributableModel,
        batch: Batch,
        logits: torch.Tensor,
        task_loss: torch.Tensor,
        inputs_embeds: torch.Tensor,
    ) -> torch.Tensor:
        """L_int for a training batch (a scalar; zero when no example has rationales).

        `logits` and `task_loss` come from the training forward, which ran on `inputs_embeds` (the word
        embeddings, still attached to the graph), so gradient methods can differentiate through the very
        same forward instead of running another one.
        """


class Baseline(InterpretationMethod):
    """The base model: L_task only (alpha is ignored)."""

    name = "baseline"
    family = "baseline"

    def piece_attribution(self, model: AttributableModel, batch: Batch, *, create_graph: bool = False) -> Attribution:
        raise NotImplementedError("the baseline has no interpretation method; pick one with --method")

    def alignment_loss(self, model, batch, logits, task_loss, inputs_embeds) -> torch.Tensor:
        return logits.new_zeros(())


@dataclass
class MethodSpec:
    name: str
    factory: Callable[..., InterpretationMethod]
    family: str
    help: str


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, family: str, help: str) -> Callable:
    """Class decorator (or factory decorator): makes a method selectable with `--method NAME`."""

    def decorator(factory):
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        METHODS[name] = MethodSpec(name, factory, family, help)
        return factory

    return decorator


register_method("baseline", "baseline", "the base model, task loss only")(Baseline)


def add_method_options(parser: argparse.ArgumentParser,
                       defaults: bool = True) -> dict[str, tuple[argparse.Action, str]]:
    """Add every family's option group to `parser`, generated from its options dataclass; returns the flags
    added, dest (= option name) -> (action, group title). `defaults=False` leaves every flag at None unless
    given, so that a command can tell a flag given at its default value from one not given at all."""
    added: dict[str, tuple[argparse.Action, str]] = {}
    for cls in OPTION_CLASSES:
        before = {a.dest for a in parser._actions}
        cls.add_flags(parser.add_argument_group(cls.title), defaults=defaults)
        added.update({a.dest: (a, cls.title) for a in parser._actions if a.dest not in before})
    return added


def option_users(title: str, dest: str) -> list[str]:
    """The registered methods that read option `dest` (`title`, its group, is kept for the callers' sake)."""
    cls = options_class_of(dest)
    if cls is None:
        return []
    return cls.readers(dest, {name: spec.family for name, spec in METHODS.items()})


def method_option_defaults() -> dict[str, object]:
    """Every registered option with its default, as `uimer train` would pass it without flags."""
    return {name: value for cls in OPTION_CLASSES for name, value in cls.defaults().items()}


def options_read_by(name: str) -> frozenset[str]:
    """The options method `name` reads (its family's, less those scoped to other methods)."""
    families = {n: spec.family for n, spec in METHODS.items()}
    return frozenset(option for cls in OPTION_CLASSES for option in cls.infos()
                     if name in cls.readers(option, families))


def options_for(name: str, options: dict) -> dict:
    """`options` less the ones method `name` does not read: what a run of `name` depends on (the fingerprint
    covers these only, so another family's flags, set or not, never make two equal runs look different). An
    unregistered name keeps everything, so that a mistake still shows in the fingerprint."""
    if name not in METHODS:
        return dict(options)
    read = options_read_by(name)
    return {key: value for key, value in options.items() if key in read}


def create_method(name: str, options: dict | None = None) -> InterpretationMethod:
    """Instantiate a registered method; `options` holds the method flags (margin, im_k, ...)."""
    from uimer.errors import ConfigError

    spec = METHODS.get(name)
    if spec is None:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return spec.factory(options or {})


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """A zero L_int for batches without rationales; keeps the graph valid and the step cheap."""
    return like.new_zeros(())
