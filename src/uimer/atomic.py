"""Atomic file writes: write to a temporary file in the target folder, fsync, then rename.

Readers (and a rerun after a kill) see either the old file or the whole new one, never a part; the temporary
file is removed when the write fails. A failing write (full disk, no permission, read-only file system) is an
`OutputError` naming the file, so the CLI reports it in one line, and the previous content is left as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from uimer.errors import OutputError, describe_os_error


@contextlib.contextmanager
def open_atomic(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary handle whose content replaces `path` only when the block ends without an error."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        raise OutputError(f"cannot write {path}: {describe_os_error(err)}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            kept = "its previous content is unchanged" if path.exists() else "nothing was written"
            raise OutputError(f"cannot write {path}: {describe_os_error(err)}; {kept}") from err
        raise


def write_bytes_atomic(path: Path, data: bytes, suffix: str = ".tmp") -> None:
    with open_atomic(path, suffix) as handle:
        handle.write(data)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, data, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, default=str) + "\n")


class DirLock:
    """One writer per output folder: an flock on FOLDER/<name> that holds the writer's PID.

    The kernel drops an flock when its process dies (even on SIGKILL), so a lock file left by a dead process is
    simply taken over; a live holder makes the second writer stop with a message naming the holder's PID.
    """

    def __init__(self, folder: Path, name: str = ".uimer.lock", purpose: str = "uimer"):
        self.path = Path(folder) / name
        self.purpose = purpose
        self.handle = None
        self.took_over: str | None = None  # what a dead holder had written, when its lock was taken over

    def acquire(self) -> DirLock:
        import fcntl
        import socket

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as err:
            raise OutputError(f"cannot lock {self.path.parent}: {describe_os_error(err)}") from err
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise OutputError(f"{self.path.parent} is in use by {holder}; wait for it to finish or use another "
                              "output directory") from None
        handle.seek(0)
        # Holding the flock means nobody else does: text left in the file is a dead writer's (release clears it).
        self.took_over = handle.read().strip() or None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} ({self.purpose})")
        handle.flush()
        self.handle = handle
        return self

    def release(self) -> None:
        if self.handle is not None:
            with contextlib.suppress(OSError):
                self.handle.seek(0)
                self.handle.truncate()
            self.handle.close()
            self.handle = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
