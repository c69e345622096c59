"""Typed method options: each family declares its options once, as a dataclass, and everything else is made
from that declaration: the `uimer train`/`tune`/evaluation flags, the grid YAML's checks, the defaults, and
which methods read which option.

A field's name is the option's key everywhere (the `options` dicts of run specs, grids and fingerprints, and
the argparse dest); its flag is `--` plus the name with dashes. `option(...)` attaches what a flag needs: help,
a `Domain` or choices (checked at the CLI and grid boundary), and, for an option only some of the family's
methods read, those methods. Library errors name the option (`OptionError.option`); the CLI turns that into
its flag.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from uimer.checks import Domain
from uimer.errors import ConfigError


class OptionError(ConfigError):
    """A method option's value is wrong; `option` is its key (the CLI shows its flag instead)."""

    def __init__(self, option: str, problem: str):
        self.option = option
        self.problem = problem
        super().__init__(f"method option {option!r} {problem}")

    def for_flags(self) -> str:
        """The message with the option named by its flag, as the CLI reports it."""
        return f"{flag_of(self.option)} {self.problem}"


@dataclass(frozen=True)
class OptionInfo:
    """What the declaration of one option says besides its type and default."""

    help: str
    kind: type | None = None  # int, float, bool (a switch), or None: text as given
    domain: Domain | None = None  # the range the CLI and grids accept
    choices: tuple[str, ...] | None = None
    only: tuple[str, ...] | None = None  # the methods that read it (None: every method of the family)
    metavar: str | None = None


def option(default: Any, help: str, *, kind: type | None = None, domain: Domain | None = None,
           choices: tuple[str, ...] | None = None, only: tuple[str, ...] | None = None,
           metavar: str | None = None) -> Any:
    """A field of an options dataclass (see the module docstring)."""
    if kind is None and domain is not None:
        kind = domain.kind
    return field(default=default, metadata={"uimer": OptionInfo(help, kind, domain, choices, only, metavar)})


def flag_of(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class MethodOptions:
    """Base of the options dataclasses; `title` heads the family's flag group, `family` says who reads them."""

    title: ClassVar[str] = ""
    family: ClassVar[str] = ""

    @classmethod
    def infos(cls) -> dict[str, tuple[dataclasses.Field, OptionInfo]]:
        return {f.name: (f, f.metadata["uimer"]) for f in dataclasses.fields(cls) if "uimer" in f.metadata}

    @classmethod
    def from_dict(cls, options: Mapping[str, Any] | None):
        """The family's options from an options dict (keys of other families are ignored, None keeps the
        default), converted to each field's type and checked by `validate`; raises OptionError."""
        options = options or {}
        values = {}
        for name, (_, info) in cls.infos().items():
            value = options.get(name)
            if value is not None:
                values[name] = _convert(name, value, info)
        result = cls(**values)
        result.validate()
        return result

    def validate(self) -> None:
        """Library-level checks (the choices here; families add theirs). The CLI and grids check the stricter
        domains before a value gets here."""
        for name, (_, info) in self.infos().items():
            value = getattr(self, name)
            if info.choices is not None and value is not None and value not in info.choices:
                raise OptionError(name, f"must be one of {', '.join(info.choices)}, not {value!r}")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {name: f.default for name, (f, _) in cls.infos().items()}

    @classmethod
    def readers(cls, name: str, methods: Mapping[str, str]) -> list[str]:
        """The methods (of `methods`: name -> family) that read option `name`."""
        info = cls.infos()[name][1]
        if info.only is not None:
            return list(info.only)
        return sorted(m for m, family in methods.items() if family == cls.family)

    @classmethod
    def add_flags(cls, group, defaults: bool = True) -> None:
        """One argparse flag per option, its default the field's (None with `defaults=False`: not given)."""
        for name, (f, info) in cls.infos().items():
            kwargs: dict[str, Any] = {"default": f.default if defaults else None, "help": info.help, "dest": name}
            if info.kind is bool:
                kwargs["action"] = "store_true"
            else:
                if info.domain is not None:
                    kwargs["type"] = info.domain
                elif info.kind in (int, float):
                    kwargs["type"] = info.kind
                if info.choices is not None:
                    kwargs["choices"] = info.choices
                if info.metavar is not None:
                    kwargs["metavar"] = info.metavar
            group.add_argument(flag_of(name), **kwargs)

    @classmethod
    def check_value(cls, name: str, value: Any) -> Any:
        """A grid's value for option `name`, converted and checked as its flag would be; raises ValueError."""
        info = cls.infos()[name][1]
        if value is None:
            return None
        if info.kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected true/false, got {value!r}")
            return value
        if info.domain is not None:
            try:
                value = info.domain(value if isinstance(value, str) else str(value))
            except (TypeError, ValueError, argparse.ArgumentTypeError) as err:
                raise ValueError(f"bad value {value!r}: {err}") from None
        elif info.kind in (int, float):
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise ValueError(f"expected {info.kind.__name__}, got {value!r}") from None
            if info.kind is int and number != int(number):
                raise ValueError(f"expected int, got {value!r}")
            value = int(number) if info.kind is int else info.kind(value)
        if info.choices is not None and value not in info.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(map(str, info.choices))}")
        return value


def _convert(name: str, value: Any, info: OptionInfo) -> Any:
    if info.kind is None:
        return value
    if info.kind is bool:
        return bool(value)
    if info.choices is not None:
        return str(value)
    try:
        return info.kind(value)
    except (TypeError, ValueError):
        raise OptionError(name, f"must be {info.kind.__name__}, got {value!r}") from None


# The families' options classes, in flag-group order (`register_options` adds one).
OPTION_CLASSES: list[type[MethodOptions]] = []


def register_options(cls: type[MethodOptions]) -> type[MethodOptions]:
    """Class decorator: makes a family's options known to the CLI, the grids and the fingerprints."""
    if any(other.title == cls.title for other in OPTION_CLASSES):
        raise ValueError(f"options {cls.title!r} registered twice")
    OPTION_CLASSES.append(cls)
    return cls


def options_class_of(name: str) -> type[MethodOptions] | None:
    """The options class that declares option `name`."""
    for cls in OPTION_CLASSES:
        if name in cls.infos():
            return cls
    return None
