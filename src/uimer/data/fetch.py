"""Download the public data sets into the data root, verified by SHA-256 (`uimer data fetch snips|esnli`).

Files land in `<dest>/<dataset>/<relative path>`, the layout the loaders read. Every file is pinned to a
commit of its public repository and to its SHA-256, so a changed or truncated download is refused rather
than silently training on different data. Writes are atomic (temp file in the same folder + os.replace),
files already present with the right hash are skipped, and nothing is written for a failed file.

`base_url` (or `$UIMER_DATA_BASE_URL`) replaces the public URLs by `<base_url>/<dataset>/<relative path>`,
e.g. a mirror or a local `python -m http.server` serving an existing data root.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from uimer.atomic import write_bytes_atomic
from uimer.errors import UimerError

BASE_URL_ENV = "UIMER_DATA_BASE_URL"
TIMEOUT_S = 60.0

_SNIPS = "https://raw.githubusercontent.com/monologg/JointBERT/00324f60dda4a491b2913bc3065ae93966caea3f/data/snips/"
_ESNLI = "https://raw.githubusercontent.com/OanaMariaCamburu/e-SNLI/7b585a3f077fdea899780eb0473940522ae44a2e/dataset/"
_UIMER = "https://raw.githubusercontent.com/Chord-Chen-30/UIMER/bba6d292f29a1b3ef296eca1996c9c5e7d1822a3/data/eSNLI/"
_STRUCT = (
    "https://raw.githubusercontent.com/ceciliaiacometta/Structured-e-SNLI/"
    "561be6908a428443aa731769f8455db0da5927d5/data/"
)


class FetchError(UimerError):
    """A download failed or did not match its pinned SHA-256; the message names the URL."""


@dataclass(frozen=True)
class RemoteFile:
    path: str  # relative to <data root>/<dataset>/
    url: str
    sha256: str


MANIFEST: dict[str, list[RemoteFile]] = {
    "snips": [
        RemoteFile("intent_label.txt", _SNIPS + "intent_label.txt",
                   "65e97527fa7048ee19a5a9a030c1feb43846ac48a99d2efeacbf44b9dd6014e8"),
        RemoteFile("slot_label.txt", _SNIPS + "slot_label.txt",
                   "d355b87d41fe23ff1c9d81e419333387590a305b32f7431df170deb379614d26"),
        RemoteFile("train/seq.in", _SNIPS + "train/seq.in",
                   "04ad1e3f2121d83c6478f9a4b17d2dbdc21d06d6127f73cb7af835ed733f9855"),
        RemoteFile("train/seq.out", _SNIPS + "train/seq.out",
                   "fd5f2121d8055827e5d6b3d3bac30f3d7e94e82a5d437751960cbdd9e1b4f6d3"),
        RemoteFile("train/label", _SNIPS + "train/label",
                   "bfd7df6cf9dd76c5da5d8b61bc85f90386197bdd3d7510c1d324c051537b962f"),
        RemoteFile("dev/seq.in", _SNIPS + "dev/seq.in",
                   "64e0f6d8ad8aab3a3828164d7d53731a0993d3ca1aed437ceaca6d3d568d410e"),
        RemoteFile("dev/seq.out", _SNIPS + "dev/seq.out",
                   "712e6d34feb8d52d208b820a5f8bae6e6ff990f08374507dfde22de389088319"),
        RemoteFile("dev/label", _SNIPS + "dev/label",
                   "9c1dd041216f647bcfca838aaf1a48eb5781e4404256d31ff07cd38a5436c52f"),
        RemoteFile("test/seq.in", _SNIPS + "test/seq.in",
                   "c1e341173fcea2951a8ca371956a6f81c76de87b9583c62eb87edd6158fa3a7c"),
        RemoteFile("test/seq.out", _SNIPS + "test/seq.out",
                   "58c07c9097d5e1f78889765c2a535a160f6455b90b3142055c8051847afcca47"),
        RemoteFile("test/label", _SNIPS + "test/label",
                   "37a26da3ad079bb41c42c85a3a8f827eb47efec4c5917ce5d08f4b2736e4f830"),
    ],
    "esnli": [
        RemoteFile("esnli_dev.csv", _ESNLI + "esnli_dev.csv",
                   "d7a656d196eea18fd827d6f5486b00f5d4cf469dbf13a252cc211495a186bcb4"),
        RemoteFile("esnli_test.csv", _ESNLI + "esnli_test.csv",
                   "9269aa8075dbfed0fa8a5012eb2ac9c18a92be139671f05df897f69092592927"),
        RemoteFile("train_pool/UIMER/view_data.txt", _UIMER + "view_data.txt",
                   "f52b2b47dd6fb1b37e706ec60d83fb42474011276b595fcb22d77db5c04a4290"),
        RemoteFile("train_pool/Structured-e-SNLI/assigned_samples_training.csv",
                   _STRUCT + "assigned_samples_training.csv",
                   "3b814d50aa43d8b3d3a7fec476b31ec5db908b4a21c81245bc44b2b1e13250cb"),
    ],
}
DATASETS = tuple(MANIFEST)


def _sha256_file(path: Path) -> str | None:
    try:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    except OSError:
        return None


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download failed: {url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"download failed: {url}: {exc.reason}") from None
    except (TimeoutError, OSError) as exc:
        raise FetchError(f"download failed: {url}: {exc}") from None


def _write_atomic(target: Path, data: bytes) -> None:
    write_bytes_atomic(target, data, suffix=".part")


def file_url(dataset: str, remote: RemoteFile, base_url: str | None) -> str:
    """The URL a file is fetched from: the pinned public URL, or `<base_url>/<dataset>/<path>`."""
    if base_url:
        return f"{base_url.rstrip('/')}/{dataset}/{remote.path}"
    return remote.url


def fetch_dataset(name: str, dest: Path, base_url: str | None = None) -> list[Path]:
    """Fetch data set `name` ("snips" or "esnli") into `dest/<name>/`; return the local paths of all its files.

    Skips files already present with the pinned hash; raises FetchError (naming the URL) on an HTTP/network
    failure or a hash mismatch, leaving no partial file behind. Files fetched before the failure are kept.
    """
    if name not in MANIFEST:
        raise FetchError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if base_url is None:
        base_url = os.environ.get(BASE_URL_ENV) or None
    root = Path(dest).expanduser() / name
    paths: list[Path] = []
    for remote in MANIFEST[name]:
        target = root / remote.path
        paths.append(target)
        if target.is_file() and _sha256_file(target) == remote.sha256:
            continue
        url = file_url(name, remote, base_url)
        data = _download(url)
        digest = hashlib.sha256(data).hexdigest()
        if digest != remote.sha256:
            raise FetchError(
                f"SHA-256 mismatch for {url}: expected {remote.sha256}, got {digest} ({len(data)} bytes); "
                "the file was not written"
            )
        _write_atomic(target, data)
    return paths
