"""User-facing errors: each names where the problem is, so the CLI can print it without a traceback."""

from __future__ import annotations


class UimerError(Exception):
    """Base class for errors the CLI reports as a one-line message (exit status 2)."""


class DataError(UimerError):
    """Bad input data: names the file, the 1-based line (or CSV row) and the field."""

    def __init__(self, path: object, message: str, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.line = line
        self.field = field
        self.message = message
        where = self.path
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class ConfigError(UimerError):
    """Bad option or configuration value."""


class OutputError(UimerError):
    """An output file or folder cannot be created, written or read (permissions, full disk, another run's files)."""


class UimerWarning(UserWarning):
    """Something accepted but probably not meant (e.g. rules that mark nothing); the CLI prints one line."""


def describe_os_error(err: OSError) -> str:
    """`strerror` with the errno name, e.g. 'No space left on device (ENOSPC)'; stable across platforms."""
    import errno as _errno

    name = _errno.errorcode.get(err.errno or 0)
    text = err.strerror or str(err)
    return f"{text} ({name})" if name else text
