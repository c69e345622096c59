"""Value domains checked at the boundary (CLI flags, grid YAML, library RunSpecs), before any model loads.

A value outside its domain would start a run that cannot be what the user meant (a zero batch size divides
by zero an hour later; `--shot 0` silently trains on the full data), so every number is checked against a
range and the error says which flag or key and what is allowed. One `Domain` serves argparse (as a `type=`),
the grid loader and `RunSpec.validate`, so the three cannot disagree.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


class Domain:
    """A numeric range of ints or floats (finite; NaN and infinities are never in a domain)."""

    def __init__(self, kind: type, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False):
        self.kind = kind
        self.low, self.high = low, high
        self.low_open, self.high_open = low_open, high_open
        self.__name__ = kind.__name__  # argparse names the type in some of its messages

    @staticmethod
    def _fmt(value: float) -> str:
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"{noun} in {left}{self._fmt(self.low)}, {self._fmt(self.high)}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self._fmt(self.low)}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {self._fmt(self.high)}"
        return f"a finite {'integer' if self.kind is int else 'number'}"

    def problem(self, value: Any) -> str | None:
        """None when `value` (already parsed) is in the domain, else what is wrong with it."""
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be {self.describe()}, got {value!r}"
        if self.kind is int and (isinstance(value, float) and not value.is_integer()):
            return f"must be {self.describe()}, got {value!r}"
        if isinstance(value, float) and not math.isfinite(value):
            return f"must be {self.describe()}, got {value!r}"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        above = self.high is not None and (value >= self.high if self.high_open else value > self.high)
        if below or above:
            return f"must be {self.describe()}, got {value!r}"
        return None

    def parse(self, text: Any) -> int | float:
        """Parse a flag or YAML value and check it; raises ValueError with the message (showing the value as given)."""
        shown = text if isinstance(text, str) and text.strip() else repr(text)
        wrong = f"must be {self.describe()}, got {shown}"
        if isinstance(text, bool):
            raise ValueError(wrong)
        try:
            number = float(text)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(wrong) from None
        if self.kind is int:
            if not math.isfinite(number) or not number.is_integer():
                raise ValueError(wrong)
            number = int(text) if isinstance(text, int) else int(number)
        if self.problem(number):
            raise ValueError(wrong)
        return number

    def __call__(self, text: str) -> int | float:
        """argparse `type=`: the message becomes `argument --flag: must be ...`."""
        try:
            return self.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    def __repr__(self) -> str:
        return f"Domain({self.describe()})"


POSITIVE_INT = Domain(int, 1)
NON_NEGATIVE_INT = Domain(int, 0)
SEED = Domain(int, 0, 2**32 - 1)


def default_device() -> str:
    """The device used when none is named: cuda when usable, else cpu (the one definition of the default)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(name: str | None, flag: str = "--device") -> str:
    """The device to train on, checked before anything loads ('auto'/None: cuda when usable, else cpu)."""
    import torch

    from uimer.errors import ConfigError

    if name in (None, "", "auto"):
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"{flag} {name!r} is not a device: use cpu, cuda, cuda:N, mps or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag} {name}: CUDA is not available here (a CPU-only torch build or no GPU "
                              "visible); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"{flag} {name}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{flag} {name}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise ConfigError(f"{flag} {name!r}: unsupported device type {device.type!r} (cpu, cuda, cuda:N, mps)")
    return str(name)
