"""Typed method options: one dataclass per family makes the flags, the grid checks, the defaults and the readers."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from uimer.errors import ConfigError
from uimer.interpret import (
    METHODS,
    OPTION_CLASSES,
    OptionError,
    add_method_options,
    create_method,
    option_users,
)
from uimer.interpret.diffmask import DMOptions
from uimer.interpret.marginalization import IMOptions
from uimer.interpret.options import flag_of


def test_every_family_with_options_declares_them_once():
    families = {cls.family for cls in OPTION_CLASSES}
    assert families == {spec.family for spec in METHODS.values()} - {"baseline"}
    names = [name for cls in OPTION_CLASSES for name in cls.infos()]
    assert len(names) == len(set(names))  # an option belongs to one family


def test_the_flags_are_generated_from_the_dataclasses():
    added = add_method_options(argparse.ArgumentParser(add_help=False))
    for cls in OPTION_CLASSES:
        for name, (f, info) in cls.infos().items():
            action, title = added[name]
            assert title == cls.title
            assert action.option_strings == [flag_of(name)] and action.default == f.default
            assert (action.choices is None) == (info.choices is None)


def test_grid_values_are_converted_as_their_flags_would_be():
    # A YAML `margin: 1` is the float 1.0, exactly as `--margin 1`: fingerprints hash the converted value.
    assert IMOptions.check_value("margin", 1) == 1.0 and isinstance(IMOptions.check_value("margin", 1), float)
    parsed = argparse.ArgumentParser()
    add_method_options(parsed)
    assert parsed.parse_args(["--margin", "1"]).margin == IMOptions.check_value("margin", 1)
    assert DMOptions.check_value("dm_no_test_curve", True) is True
    assert DMOptions.check_value("dm_warmup_batch_size", 16.0) == 16
    for name, bad in (("margin", -1), ("im_k", 0), ("dm_gate", "attention"), ("dm_no_test_curve", "yes"),
                      ("dm_warmup_batch_size", 1.5)):
        owner = next(cls for cls in OPTION_CLASSES if name in cls.infos())
        with pytest.raises(ValueError):
            owner.check_value(name, bad)


def test_library_errors_name_the_option_and_the_cli_its_flag():
    with pytest.raises(OptionError) as caught:
        create_method("im-uniform", {"im_k": 0})
    assert caught.value.option == "im_k" and "'im_k'" in str(caught.value)
    assert caught.value.for_flags().startswith("--im-k must be >= 1")
    assert isinstance(caught.value, ConfigError)


def test_cli_reports_an_option_error_by_its_flag(capsys, tmp_path):
    from uimer.cli import main

    # --dm-warmup-batch-size takes any int at the parser; the options dataclass refuses 0 before anything loads.
    code = main(["train", "--task", "snips-intent", "--shot", "1", "--method", "dm-one-pass", "--device", "cpu",
                 "--dm-warmup-batch-size", "0", "--output-dir", str(tmp_path / "out")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--dm-warmup-batch-size must be > 0, got 0" in err and "'dm_warmup_batch_size'" not in err
    assert not (tmp_path / "out").exists()


def test_the_readers_of_each_option():
    assert option_users("", "mlm") == ["im-mlm"]
    assert option_users("", "rounds") == ["dm-multi-round"]
    assert option_users("", "margin") == sorted(n for n, s in METHODS.items() if s.family == "im")
    assert option_users("", "ghaeini_saliency") == ["gb-ghaeini"]


def test_dm_options_keep_their_readable_names():
    dm = DMOptions.from_dict({"dm_gate": "hidden", "dm_eps": 0.2, "dm_no_test_curve": True, "dm_warmup_lr": 1e-4})
    assert (dm.gate, dm.eps, dm.test_curve, dm.warmup_overrides()) == ("hidden", 0.2, False, {"lr": 1e-4})
    assert dataclasses.replace(dm, dm_eps=0.3).eps == 0.3
    assert DMOptions.from_dict({}) == DMOptions()
