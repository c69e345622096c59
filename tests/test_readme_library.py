"""The README's "Use as a library" code runs as written (a tiny saved BERT stands in for `name`)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_encoder, make_tokenizer

README = Path(__file__).resolve().parents[1] / "README.md"
pytest.importorskip("accelerate", reason="uimer.hf needs the [hf] extra (accelerate)")


def section_code(title: str) -> list[str]:
    text = README.read_text()
    start = text.index(title)
    end = text.index("\n### ", start + len(title))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_trainer_and_plain_loop_snippets_run(tmp_path, monkeypatch):
    tokenizer = make_tokenizer()
    name = tmp_path / "tiny-bert"
    make_tiny_encoder(len(tokenizer), seed=0, attn="sdpa").save_pretrained(name)
    tokenizer.save_pretrained(name)
    monkeypatch.chdir(tmp_path)

    (trainer_code,) = section_code("### Add UIMER to a `transformers.Trainer` script")
    namespace: dict = {"name": str(name)}
    exec(compile(trainer_code, "README:trainer", "exec"), namespace)  # noqa: S102 - the README's own code
    logs = [e for e in namespace["trainer"].state.log_history if "train_loss" in e]
    assert logs and math.isfinite(logs[-1]["train_loss"])
    assert (tmp_path / "out" / "model" / "config.json").is_file()
    assert namespace["model"].config._attn_implementation == "eager"  # switched for gb-huang-base

    (loop_code,) = section_code("### A plain PyTorch loop")
    model = namespace["model"]
    namespace.update(torch=torch, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-3))
    exec(compile(loop_code, "README:loop", "exec"), namespace)  # noqa: S102
    out = namespace["out"]
    assert out.active and math.isfinite(float(out.loss.detach())) and float(out.alignment_loss.detach()) >= 0
