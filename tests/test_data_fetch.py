"""`fetch_dataset` against a local HTTP server: verified, atomic, idempotent downloads."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from uimer.data.fetch import MANIFEST, FetchError, fetch_dataset
from uimer.data.snips import load_snips


def shared_data_dir() -> Path:
    env = os.environ.get("UIMER_TEST_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


DATA = shared_data_dir()
needs_snips = pytest.mark.skipif(
    not (DATA / "snips" / "intent_label.txt").exists(), reason=f"SNIPS not found under {DATA}"
)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve(directory: Path) -> Iterator[str]:
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_manifest_layout():
    assert sorted(MANIFEST) == ["esnli", "snips"]
    assert len(MANIFEST["snips"]) == 11 and len(MANIFEST["esnli"]) == 4
    for files in MANIFEST.values():
        for f in files:
            assert f.url.startswith("https://raw.githubusercontent.com/") and len(f.sha256) == 64


@needs_snips
@pytest.mark.integration
def test_fetch_snips_from_local_server(tmp_path):
    dest = tmp_path / "data"
    with serve(DATA) as url:
        paths = fetch_dataset("snips", dest, base_url=url + "/")
    assert len(paths) == 11
    for f in MANIFEST["snips"]:
        assert (dest / "snips" / f.path).read_bytes() == (DATA / "snips" / f.path).read_bytes()
    assert not list(dest.rglob("*.part"))
    assert len(load_snips(dest, "intent").train) == 13084
    # Already present with the right hash: nothing is downloaded (the server is gone now).
    assert fetch_dataset("snips", dest, base_url=url) == paths


@needs_snips
def test_env_base_url(tmp_path, monkeypatch):
    with serve(DATA) as url:
        monkeypatch.setenv("UIMER_DATA_BASE_URL", url)
        fetch_dataset("snips", tmp_path)
    assert (tmp_path / "snips" / "train" / "seq.in").is_file()


@needs_snips
def test_hash_mismatch_leaves_no_file(tmp_path):
    served = tmp_path / "served"
    shutil.copytree(DATA / "snips", served / "snips")
    corrupt = served / "snips" / "train" / "label"
    corrupt.write_bytes(corrupt.read_bytes().replace(b"PlayMusic", b"PlayMusik", 1))
    dest = tmp_path / "dest"
    with serve(served) as url:
        with pytest.raises(FetchError) as err:
            fetch_dataset("snips", dest, base_url=url)
    assert f"{url}/snips/train/label" in str(err.value) and "SHA-256 mismatch" in str(err.value)
    assert not (dest / "snips" / "train" / "label").exists()
    assert not [p for p in dest.rglob("*") if p.is_file() and p.name.endswith(".part")]
    assert (dest / "snips" / "train" / "seq.in").exists()  # files before the failure are kept


def test_http_error_names_url(tmp_path):
    with serve(tmp_path) as url:
        with pytest.raises(FetchError, match="HTTP 404") as err:
            fetch_dataset("esnli", tmp_path / "dest", base_url=url)
    assert f"{url}/esnli/esnli_dev.csv" in str(err.value)
    assert not (tmp_path / "dest" / "esnli" / "esnli_dev.csv").exists()


def test_unknown_dataset(tmp_path):
    with pytest.raises(FetchError, match="unknown data set"):
        fetch_dataset("mnli", tmp_path)


@needs_snips
def test_cli_fetch(tmp_path, capsys):
    import argparse

    from uimer.data.cli import register

    parser = argparse.ArgumentParser(prog="uimer")
    register(parser.add_subparsers(dest="command"))
    with serve(DATA) as url:
        args = parser.parse_args(["data", "fetch", "snips", "--data-dir", str(tmp_path), "--base-url", url])
        assert args.func(args) == 0
    assert "11 files verified" in capsys.readouterr().out
    assert (tmp_path / "snips" / "slot_label.txt").read_bytes() == (DATA / "snips" / "slot_label.txt").read_bytes()
