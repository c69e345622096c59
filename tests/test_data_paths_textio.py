"""Data-root resolution and strict UTF-8 reading."""

from __future__ import annotations

from pathlib import Path

import pytest

from uimer.data.paths import resolve_data_dir
from uimer.data.textio import read_lines, read_text
from uimer.errors import DataError


def test_flag_wins_over_env(monkeypatch, tmp_path):
    monkeypatch.setenv("UIMER_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "flag")) == tmp_path / "flag"


def test_env_then_default(monkeypatch, tmp_path):
    monkeypatch.setenv("UIMER_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("UIMER_DATA_DIR")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir() == tmp_path / ".cache" / "uimer" / "data"


def test_read_lines_keeps_trailing_spaces_and_drops_cr(tmp_path):
    p = tmp_path / "f.txt"
    p.write_bytes(b"\xef\xbb\xbfa b \r\nc\x0cd\n")
    assert read_lines(p) == ["a b ", "c\x0cd"]  # BOM dropped, form feed is not a line break


def test_non_utf8_file_names_file_and_line(tmp_path):
    p = tmp_path / "seq.in"
    p.write_bytes(b"fine line\nsecond\nbad \xff byte\n")
    with pytest.raises(DataError) as err:
        read_lines(p)
    assert err.value.line == 3
    assert str(p) in str(err.value) and "line 3" in str(err.value) and "UTF-8" in str(err.value)


def test_empty_file_is_an_error(tmp_path):
    p = tmp_path / "label"
    p.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(DataError, match="empty") as err:
        read_text(p)
    assert str(p) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_text(Path(tmp_path / "nope.txt"))
