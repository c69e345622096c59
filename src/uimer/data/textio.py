"""Strict text reading: every dataset file must be UTF-8, and a bad file is reported with its path and line.

Decoding errors deep inside a tokenizer or a silently empty split are much harder to trace than a
message that names the file and the line; everything the data layer reads goes through here.
"""

from __future__ import annotations

import io
from pathlib import Path

from uimer.errors import DataError

_BOM = "\ufeff"


def read_text(path: Path, *, allow_empty: bool = False) -> str:
    """Read `path` as strict UTF-8 (a leading BOM is dropped).

    Raises DataError for a missing/unreadable file, for non-UTF-8 bytes (naming the 1-based line and the byte
    offset) and, unless `allow_empty`, for a file with no non-whitespace content.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(path, "file not found") from None
    except IsADirectoryError:
        raise DataError(path, "expected a file but found a directory") from None
    except OSError as exc:
        raise DataError(path, f"cannot read file: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        bad = raw[exc.start : exc.start + 1].hex()
        raise DataError(
            path, f"not valid UTF-8 (byte 0x{bad} at offset {exc.start}); re-save the file as UTF-8", line=line
        ) from None
    if text.startswith(_BOM):
        text = text[1:]
    if not allow_empty and not text.strip():
        raise DataError(path, "file is empty")
    return text


def read_lines(path: Path, *, allow_empty: bool = False) -> list[str]:
    """Read a line-oriented file: split on '\\n' only (a trailing '\\r' is dropped), no final empty line.

    `str.splitlines` is avoided on purpose: it also splits on form feeds, U+2028 and other characters that
    can legitimately appear inside an utterance and would shift every later line number.
    """
    text = read_text(path, allow_empty=allow_empty)
    if not text:
        return []
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def text_stream(path: Path) -> io.StringIO:
    """The strictly decoded content as a stream suitable for the csv module (newline='' semantics)."""
    return io.StringIO(read_text(path), newline="")
