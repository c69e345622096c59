"""`--method auto`: the recommended method and hyper-parameters per task kind (presets.yaml, with provenance).

Why: a user with their own data cannot be expected to know the paper's Tables 6-8; `auto` picks, by the
task's kind (classification, tagging, pair), the method and values the committed evidence supports, and says
where they come from. Values the user gives on the command line always win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from uimer.errors import ConfigError

PRESETS = Path(__file__).resolve().parent / "presets.yaml"
AUTO = "auto"
TASK_KINDS = {"snips-intent": "classification", "snips-slot": "tagging", "esnli": "pair"}


@dataclass
class Preset:
    kind: str
    method: str
    shared: dict = field(default_factory=dict)  # TrainConfig fields for every method of the command
    train: dict = field(default_factory=dict)  # TrainConfig fields of the method alone
    options: dict = field(default_factory=dict)  # method options (argparse dests)
    source: str = ""

    def describe(self) -> str:
        values = {**self.shared, **self.train, **self.options}
        return f"{self.method} (" + ", ".join(f"{k} {v}" for k, v in values.items()) + ")"


def load_presets(path: Path = PRESETS) -> dict[str, Preset]:
    from uimer.interpret import METHODS
    from uimer.training.trainer import TrainConfig

    data = yaml.safe_load(Path(path).read_text()) or {}
    fields = set(TrainConfig.__dataclass_fields__) - {"device", "method_options"}
    presets = {}
    for kind, entry in data.items():
        if entry.get("method") not in METHODS:
            raise ConfigError(f"{path}: {kind}.method {entry.get('method')!r} is not a method")
        for section in ("shared", "train"):
            unknown = set(entry.get(section) or {}) - fields
            if unknown:
                raise ConfigError(f"{path}: {kind}.{section}: unknown training setting(s) {', '.join(sorted(unknown))}")
        if not str(entry.get("source", "")).strip():
            raise ConfigError(f"{path}: {kind}: every preset must say where its values come from (source)")
        presets[kind] = Preset(kind, entry["method"], dict(entry.get("shared") or {}), dict(entry.get("train") or {}),
                               dict(entry.get("options") or {}), str(entry["source"]).strip())
    return presets


def task_kind(task: str, data_dir: str | None = None, rationale_file: str | None = None) -> str:
    """The kind of a task; a JSONL folder is read to find out (its files decide it)."""
    if task in TASK_KINDS:
        return TASK_KINDS[task]
    if task == "jsonl":
        if not data_dir:
            raise ConfigError("--task jsonl needs --data-dir pointing at the folder with train/dev/test.jsonl")
        from uimer.data.jsonl import load_jsonl

        return load_jsonl(Path(data_dir)).kind.value
    raise ConfigError(f"unknown task {task!r}")


def preset_for(kind: str) -> Preset:
    presets = load_presets()
    if kind not in presets:
        raise ConfigError(f"no --method auto preset for {kind} tasks (have: {', '.join(presets)})")
    return presets[kind]
