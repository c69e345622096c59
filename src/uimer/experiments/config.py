"""Experiment grids as YAML: settings x methods (x seeds), each cell a `RunSpec` for one seed.

A grid file has these top-level keys (all optional except `settings` and `methods`, which may instead come
from the file it `extends`)::

    name: lowresource-minilm          # default: the file's stem
    description: free text
    extends: paper.yaml               # a base grid (path relative to this file, or a packaged config name)
    defaults:  {RUN FIELDS}           # apply to every run
    settings:                         # the columns: key -> RUN FIELDS incl. task and shot / train_size
      intent-1: {task: snips-intent, shot: 1}
    methods:                          # the rows: key (the "variant") -> METHOD ENTRY
      im-uniform-warm:
        method: im-uniform            # registry name (`uimer train --method`); default: the key
        label: "UIMER-IM +Uniform (warm.)"
        paper: im-uniform-warm        # key in paper_results.yaml; default: the key when it is there
        only_settings: [intent-1]     # restrict the variant to some settings (default: all)
        like: im-mask-warm            # start from that variant's entry, per-setting rows included (below)
        confidence: 0.975             # level of its paired intervals in the report (default 0.95; below)
        train: {warmup_epochs: 1}     # RUN FIELDS for every setting ...
        settings:                     # ... and per setting (these win)
          intent-1: {train: {lr: 4.0e-4, alpha: 4}, options: {margin: 0.5}}
    overrides: {RUN FIELDS}           # applied last, over everything (e.g. a smoke test's max_epochs)
    cost: {baseline: {SETTING: seconds}, factor: {METHOD: x}}   # dry-run cost model, see uimer.experiments.sweep
          # + budget: {hours: H, workers: W}: the report checks the grid's wall-clock against H hours

RUN FIELDS: `task`, `shot`, `train_size` (settings only), `dev_size`, `encoder`, `seeds`, `max_length`,
`pooling`, `rationale_file`, `data_dir`, `device` (`auto`, `cpu`, `cuda`), `train` (TrainConfig fields:
lr, batch_size, max_epochs, patience, alpha, warmup_epochs, ...), `options` (method options keyed by the
argparse dest of `uimer train`'s flags: margin, im_k, mlm, rounds, lr_extractor, ...) and `resources`
(`num_cpus`, `num_gpus` of one run's Ray task).

A cell (method M, setting S) is the deep merge, later winning, of: defaults, settings[S], M's own fields,
M.settings[S], overrides. With `extends`, the base file's raw sections are deep-merged with this file's
first, so a derived grid inherits the base's hyper-parameters per cell: `defaults`, `overrides` and `cost`
merge; `settings` and `methods`, when given, *select* (and order) the base's entries, as a list of keys or
as a mapping whose values override the base entry (a new key adds an entry); omitted, all are kept.
A method key that a grid up the chain defines but the base left out still means that grid's entry.

`like: OTHER` makes an ablation twin: the entry starts as a copy of variant OTHER (from this file or any grid
up the chain; its label and `confidence` excepted) and this entry's own fields win over everything OTHER sets, its per-setting
rows included, so `{like: dm-multi-round, train: {alpha: 0}}` is dm-multi-round with alpha 0 in every setting.
Without `like`, a new variant of method M inherits none of M's per-setting rows: it would run with defaults.
`uimer sweep` (and its dry run) warns when such a variant leaves unset a value that variant M sets.

`confidence` is for a comparison that was already looked at with fewer seeds and then given more: judging
the second look at 95 % again would inflate the false-positive rate, so the grid states the stricter level
it was planned at, at least 0.95 (e.g. 0.975: the two looks together stay under 7.5 % instead of 10 %). The
report builds that variant's intervals and significance marks at this level in the columns this grid plans it
for (limit them with `only_settings`), in every comparison it takes part in there (against the baseline or an
`--against` control, on test and dev). It travels in the plan a sweep writes (`uimer sweep GRID` writes it even
when nothing is left to run; a dry run does not), and a variant is judged in a column at the strictest level
any plan or run file states for that column. It names no run setting, so it
changes no fingerprint. `extends:` keeps it; `like:` does not copy it.

Paths in `rationale_file` and `data_dir` are relative to the grid file; `encoder` and `options.mlm` are
names or paths as `uimer train` takes them (relative paths are resolved against the working directory when
a sweep runs). Every problem is a `ConfigError` naming the file and the key.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from uimer.checks import SEED, Domain
from uimer.data.types import TASKS
from uimer.errors import ConfigError
from uimer.experiments import CONFIG_DIR, packaged_configs
from uimer.experiments.stats import DEFAULT_LEVEL
from uimer.models.task_model import PRECISIONS
from uimer.training.trainer import TrainConfig

PAPER_RESULTS = Path(__file__).resolve().parent / "paper_results.yaml"
TASK_CHOICES = TASKS  # defined once, in uimer.data.types
TASK_COLUMN_PREFIX = {"snips-intent": "intent", "snips-slot": "slot", "esnli": "nli"}

TOP_KEYS = ("name", "description", "extends", "defaults", "settings", "methods", "overrides", "cost")
SETTING_ONLY = ("task", "shot", "train_size")
RUN_KEYS = ("dev_size", "encoder", "seeds", "max_length", "pooling", "rationale_file", "data_dir", "device",
            "train", "options", "resources")
METHOD_META = ("method", "label", "paper", "only_settings", "settings", "like", "confidence")
RESOURCE_KEYS = ("num_cpus", "num_gpus")
# TrainConfig fields a grid may set (device and method_options come from `device` and `options`).
TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("device", "method_options"))
RUN_DEFAULTS: dict[str, Any] = {
    "encoder": "minilm", "seeds": [55, 1988, 12333, 42], "max_length": 128, "pooling": "cls", "dev_size": None,
    "rationale_file": None, "data_dir": None, "device": "auto", "shot": None, "train_size": None,
}


# -- small helpers ---------------------------------------------------------------------------------------
def deep_merge(base: Any, over: Any) -> Any:
    """`over` on top of `base`: mappings merge key by key, anything else (lists included) is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = deep_merge(base[key], value) if key in base else copy.deepcopy(value)
        return merged
    return copy.deepcopy(over)


def column_name(task: str, setting: str) -> str:
    """The report's column for a (task, RunSpec.setting): intent-1, slot-full, nli-100, jsonl-3 ..."""
    prefix = TASK_COLUMN_PREFIX.get(task, task)
    short = setting.removesuffix("-shot").removesuffix("-train")
    return f"{prefix}-{short}"


def resolve_config_path(name: str | Path, relative_to: Path | None = None) -> Path:
    """A grid file by path (relative to `relative_to`'s folder when given) or by packaged name."""
    candidates = []
    path = Path(name).expanduser()
    if relative_to is not None and not path.is_absolute():
        candidates.append(relative_to.parent / path)
    candidates.append(path)
    if path.suffix == "" and len(path.parts) == 1:
        candidates.append(CONFIG_DIR / f"{path}.yaml")
    elif len(path.parts) == 1:
        candidates.append(CONFIG_DIR / path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    packaged = ", ".join(packaged_configs())
    where = f" (referenced from {relative_to})" if relative_to else ""
    raise ConfigError(f"grid config {str(name)!r} not found{where}; packaged configs: {packaged}")


class _Where:
    """Builds error messages that name the file (and the files it extends) and the dotted key."""

    def __init__(self, path: Path, bases: list[Path] | None = None):
        self.path = path
        self.bases = bases or []

    def error(self, key: str, message: str) -> ConfigError:
        merged = f" (merged with {', '.join(map(str, self.bases))})" if self.bases else ""
        return ConfigError(f"{self.path}{merged}: {key}: {message}")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping with keys {', '.join(TOP_KEYS)}")
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{path}: {unknown[0]}: unknown top-level key (expected one of {', '.join(TOP_KEYS)})")
    return data


def _select_or_merge(base: dict, mine: Any, where: _Where, section: str, pool: dict | None = None) -> dict:
    """`pool`: entries of every grid up the `extends` chain, so that a key the base left out still means the
    ancestor's entry (e.g. `im-prior` in a grid extending a grid that selected only some variants)."""
    if mine is None:
        return base
    known = {**(pool or {}), **base}
    if isinstance(mine, list):
        picked = {}
        for key in mine:
            if key not in known:
                raise where.error(f"{section}.{key}", f"not defined in the base grid (it has: {', '.join(base)})")
            picked[key] = known[key]
        return picked
    if not isinstance(mine, dict):
        raise where.error(section, "must be a mapping (or, with `extends`, a list of base keys)")
    merged = {}
    for key, value in mine.items():
        merged[key] = deep_merge(known[key], value or {}) if key in known else (value or {})
    return merged


def _load_raw(path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict, list[Path]]:
    """The raw grid with `extends` applied; returns it with the files it came from (base first)."""
    if path in chain:
        raise ConfigError(f"{path}: extends: circular ({' -> '.join(str(p) for p in (*chain, path))})")
    raw = _read_yaml(path)
    where = _Where(path)
    for section in ("defaults", "overrides", "cost"):
        if raw.get(section) is not None and not isinstance(raw[section], dict):
            raise where.error(section, "must be a mapping")
    # Relative file paths are relative to the file that wrote them.
    for section_name in ("defaults", "overrides"):
        _anchor_paths(raw.get(section_name), path)
    for section_name in ("settings", "methods"):
        entries = raw.get(section_name)
        if isinstance(entries, dict):
            for entry in entries.values():
                _anchor_paths(entry, path)
                if isinstance(entry, dict) and isinstance(entry.get("settings"), dict):
                    for cell in entry["settings"].values():
                        _anchor_paths(cell, path)
    files = [path]
    if raw.get("extends"):
        if not isinstance(raw["extends"], str):
            raise where.error("extends", "must be a file name")
        base_path = resolve_config_path(raw["extends"], relative_to=path)
        base, base_files = _load_raw(base_path, (*chain, path))
        files = base_files + files
        pool = base.get("_method_pool") or {}  # every ancestor's method entries, the base's own winning
        known = set(base.get("_known_settings", ())) | set(base.get("settings") or {})
        if isinstance(raw.get("settings"), dict):
            known |= set(raw["settings"])
        merged = {
            "_known_settings": sorted(known),
            "name": raw.get("name") or path.stem,
            "description": raw.get("description", base.get("description", "")),
            "defaults": deep_merge(base.get("defaults") or {}, raw.get("defaults") or {}),
            "settings": _select_or_merge(base.get("settings") or {}, raw.get("settings"), where, "settings"),
            "methods": _resolve_likes(
                _select_or_merge(base.get("methods") or {}, raw.get("methods"), where, "methods", pool),
                {**pool, **(base.get("methods") or {})}, where),
            "overrides": deep_merge(base.get("overrides") or {}, raw.get("overrides") or {}),
            "cost": deep_merge(base.get("cost") or {}, raw.get("cost") or {}),
        }
        merged["_method_pool"] = {**pool, **(base.get("methods") or {}), **merged["methods"]}
        return merged, files
    raw.setdefault("name", path.stem)
    if isinstance(raw.get("methods"), dict):
        raw["methods"] = _resolve_likes(raw["methods"], {}, where)
        raw["_method_pool"] = dict(raw["methods"])
    return raw, files


def _resolve_likes(methods: dict, base_methods: dict, where: _Where) -> dict:
    """Replace every `like: OTHER` entry by OTHER's entry with this one's fields on top (module docstring).
    OTHER is looked up among this grid's variants, then among those up the `extends` chain."""
    pool = {**base_methods, **methods}

    def resolve(key: str, chain: tuple[str, ...]) -> dict:
        entry = pool[key]
        if not isinstance(entry, dict) or "like" not in entry:
            return entry
        other = entry["like"]
        if not isinstance(other, str) or other not in pool:
            known = ", ".join(sorted(k for k in pool if k != key))
            raise where.error(f"methods.{key}.like", f"{other!r} is no variant of this grid (it has: {known})")
        if other in (*chain, key):
            raise where.error(f"methods.{key}.like", "circular (" + " -> ".join((*chain, key, other)) + ")")
        liked = resolve(other, (*chain, key))
        own = {k: v for k, v in entry.items() if k != "like"}
        own_rows = own.pop("settings", None) or {}
        if not isinstance(own_rows, dict):
            raise where.error(f"methods.{key}.settings", "must be a mapping of setting name -> run fields")
        run_fields = {k: v for k, v in own.items() if k not in METHOD_META}
        # a twin is its own comparison: it keeps neither OTHER's label nor the level OTHER's looks required
        merged = deep_merge({k: v for k, v in liked.items() if k not in ("label", "settings", "confidence")}, own)
        # OTHER's method and paper row may be implicit in its key
        merged.setdefault("method", liked.get("method", other))
        paper = liked.get("paper", other if other in load_paper_results()["methods"] else None)
        if paper is not None:
            merged.setdefault("paper", paper)
        rows = {s: deep_merge(cell or {}, run_fields) for s, cell in (liked.get("settings") or {}).items()}
        for setting, cell in own_rows.items():
            rows[setting] = deep_merge(rows.get(setting, {}), cell or {})
        if rows:
            merged["settings"] = rows
        return merged

    return {key: resolve(key, ()) for key in methods}


def _anchor_paths(fields_: Any, path: Path) -> None:
    """Make `rationale_file` / `data_dir` absolute relative to the grid file that names them."""
    if not isinstance(fields_, dict):
        return
    for key in ("rationale_file", "data_dir"):
        value = fields_.get(key)
        if isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
            fields_[key] = str((path.parent / Path(value).expanduser()).resolve())


# -- validation of run fields ----------------------------------------------------------------------------
def _option_actions() -> dict[str, type]:
    """Every method option, by name, with the options class (one per family) that declares and checks it."""
    from uimer.interpret import OPTION_CLASSES

    return {name: cls for cls in OPTION_CLASSES for name in cls.infos()}


def _coerce(value: Any, kind: type, key: str, where: _Where) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise where.error(key, f"expected true/false, got {value!r}")
    if isinstance(value, bool):
        raise where.error(key, f"expected a number, got {value!r}")
    try:
        if kind is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        return kind(value)
    except (TypeError, ValueError):
        raise where.error(key, f"expected {kind.__name__}, got {value!r}") from None


def _parse(domain: Domain, value: Any, key: str, where: _Where) -> int | float:
    try:
        return domain.parse(value)
    except ValueError as err:
        raise where.error(key, str(err)) from None


def _check_options(options: Any, key: str, where: _Where, actions: dict[str, type]) -> dict:
    """A grid's `options`, each converted and checked by its family's options dataclass, as its flag would be."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise where.error(key, "must be a mapping of method options")
    checked = {}
    for name, value in options.items():
        dest = str(name).replace("-", "_")
        owner = actions.get(dest)
        if owner is None:
            raise where.error(f"{key}.{name}", f"unknown method option (known: {', '.join(sorted(actions))})")
        try:
            checked[dest] = owner.check_value(dest, value)
        except ValueError as err:
            raise where.error(f"{key}.{name}", str(err)) from None
    return checked


def _check_train(train: Any, key: str, where: _Where) -> dict:
    from uimer.training.trainer import TRAIN_DOMAINS

    if train is None:
        return {}
    if not isinstance(train, dict):
        raise where.error(key, "must be a mapping of training hyper-parameters")
    checked = {}
    for name, value in train.items():
        if name not in TRAIN_KEYS:
            raise where.error(f"{key}.{name}", f"unknown training field (known: {', '.join(TRAIN_KEYS)})")
        if name == "warmup_epochs" and isinstance(value, str) and (value in ("task", "task-trained")
                                                                  or value.strip().endswith("*")):
            from uimer.training.trainer import parse_warmup

            try:
                checked[name] = parse_warmup(value)
            except ValueError as err:
                raise where.error(f"{key}.{name}", str(err)) from None
            continue
        domain = TRAIN_DOMAINS.get(name)
        if domain is not None:
            try:
                value = domain.parse(value)
            except ValueError as err:
                tail = " (or 'F*', a share of all batches, or 'task')" if name == "warmup_epochs" else ""
                raise where.error(f"{key}.{name}", str(err) + tail) from None
        elif name == "shuffle":
            value = _coerce(value, bool, f"{key}.{name}", where)
        elif name == "precision" and value not in PRECISIONS:
            raise where.error(f"{key}.{name}", f"{value!r} is not one of {', '.join(PRECISIONS)}")
        checked[name] = value
    return checked


def _check_fields(fields_: Any, key: str, where: _Where, actions, allow_setting: bool) -> dict:
    """Validate one layer of run fields; returns it with normalised values."""
    if fields_ is None:
        return {}
    if not isinstance(fields_, dict):
        raise where.error(key, "must be a mapping")
    allowed = RUN_KEYS + (SETTING_ONLY if allow_setting else ())
    out: dict[str, Any] = {}
    for name, value in fields_.items():
        sub = f"{key}.{name}" if key else name
        if name not in allowed:
            hint = " (task/shot/train_size belong to a setting)" if name in SETTING_ONLY else ""
            raise where.error(sub, f"unknown key{hint} (expected one of {', '.join(allowed)})")
        if name == "train":
            out[name] = _check_train(value, sub, where)
        elif name == "options":
            out[name] = _check_options(value, sub, where, actions)
        elif name == "resources":
            if not isinstance(value, dict):
                raise where.error(sub, "must be a mapping with num_cpus / num_gpus")
            for res, amount in value.items():
                if res not in RESOURCE_KEYS:
                    raise where.error(f"{sub}.{res}", f"unknown resource (expected {', '.join(RESOURCE_KEYS)})")
                amount = _parse(Domain(float, 0, 4096), amount, f"{sub}.{res}", where)
            out[name] = {res: float(amount) for res, amount in value.items()}
        elif name == "seeds":
            if isinstance(value, int | str):
                value = [value]
            if not isinstance(value, list) or not value:
                raise where.error(sub, "must be a non-empty list of integers")
            seeds = [_parse(SEED, s, sub, where) for s in value]
            if len(set(seeds)) != len(seeds):
                raise where.error(sub, f"seed {next(s for s in seeds if seeds.count(s) > 1)} is listed twice")
            out[name] = seeds
        elif name == "task":
            if value not in TASK_CHOICES:
                raise where.error(sub, f"{value!r} is not one of {', '.join(TASK_CHOICES)}")
            out[name] = value
        elif name in ("shot", "train_size", "dev_size", "max_length"):
            from uimer.training.runner import SPEC_DOMAINS

            out[name] = None if value is None else _parse(SPEC_DOMAINS[name][1], value, sub, where)
        elif name == "device":
            if value is not None and not (isinstance(value, str) and re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", value)):
                raise where.error(sub, f"{value!r} is not a device (auto, cpu, cuda, cuda:N, mps)")
            out[name] = value
        elif name == "encoder":
            if not isinstance(value, str) or not value.strip():
                raise where.error(sub, f"expected an encoder name or path, got {value!r}")
            out[name] = value
        elif name == "pooling":
            if value not in ("cls", "mean"):
                raise where.error(sub, f"{value!r} is not one of cls, mean")
            out[name] = value
        else:
            if value is not None and not isinstance(value, str):
                raise where.error(sub, f"expected a string, got {value!r}")
            out[name] = value
    return out


# -- the grid --------------------------------------------------------------------------------------------
@dataclass
class MethodEntry:
    key: str
    method: str
    family: str
    label: str
    paper: str | None
    only_settings: list[str] | None
    fields: dict
    per_setting: dict[str, dict]
    paper_per_setting: dict[str, str | None]
    confidence: float = DEFAULT_LEVEL  # level of the report's paired intervals for this variant


@dataclass
class Cell:
    """One (variant, setting) of a grid, fully resolved; `seeds` expand it into runs."""

    variant: str
    method: str
    family: str
    label: str
    setting_key: str
    paper: str | None
    fields: dict  # merged run fields (task, shot, ..., train, options, resources)
    confidence: float = DEFAULT_LEVEL

    @property
    def task(self) -> str:
        return self.fields["task"]


@dataclass
class Grid:
    name: str
    path: Path
    files: list[Path]
    description: str
    settings: dict[str, dict]
    methods: dict[str, MethodEntry]
    defaults: dict
    overrides: dict
    cost: dict = field(default_factory=dict)

    def _merged(self, entry: MethodEntry | None, setting: str) -> dict:
        merged: dict = {}
        layers = (RUN_DEFAULTS, self.defaults, self.settings[setting],
                  entry.fields if entry else {}, entry.per_setting.get(setting, {}) if entry else {}, self.overrides)
        for layer in layers:
            merged = deep_merge(merged, layer)
        merged.setdefault("train", {})
        merged.setdefault("options", {})
        merged.setdefault("resources", {})
        return merged

    def cell(self, variant: str, setting: str) -> Cell:
        entry = self.methods[variant]
        merged = self._merged(entry, setting)
        if entry.family == "dm":
            self._baseline_warmup(merged, setting)
        paper = entry.paper_per_setting.get(setting, entry.paper)
        return Cell(variant, entry.method, entry.family, entry.label, setting, paper, merged, entry.confidence)

    def _baseline_warmup(self, merged: dict, setting: str) -> None:
        """A DM cell warms up with the baseline's lr, batch size, max epochs and patience (the paper's phase 1
        is a separately trained task model): they become --dm-warmup-* options wherever they differ from the
        DM row's, unless the cell sets those options itself. The baseline is the grid's `baseline` variant
        (else its first baseline-method variant, else the setting's own training fields)."""
        base_entry = self.methods.get("baseline")
        if base_entry is None or base_entry.method != "baseline":
            base_entry = next((e for e in self.methods.values() if e.method == "baseline"), None)
        base_train = self._merged(base_entry, setting)["train"]
        defaults = TrainConfig()
        options = merged["options"]
        for name in ("lr", "batch_size", "max_epochs", "patience"):
            option = f"dm_warmup_{name}"
            if options.get(option) is not None:
                continue
            mine = merged["train"].get(name, getattr(defaults, name))
            theirs = base_train.get(name, getattr(defaults, name))
            if theirs != mine:
                options[option] = theirs

    def unshared_values(self, cells: list[Cell]) -> list[str]:
        """Warnings for cells of a variant of method M (under another name) that leave unset a training value or
        option which variant M itself sets in the same setting. Such a variant usually meant to copy M's row
        (`like: M`) and silently runs with the default instead; an ablation may mean it, so this only warns."""
        out = []
        for cell in cells:
            entry, sibling = self.methods[cell.variant], self.methods.get(cell.method)
            if sibling is None or sibling is entry:
                continue
            theirs = deep_merge(sibling.fields, sibling.per_setting.get(cell.setting_key, {}))
            mine = deep_merge(entry.fields, entry.per_setting.get(cell.setting_key, {}))
            unset = [f"{section}.{key}" for section in ("train", "options") for key in theirs.get(section) or {}
                     if key not in (mine.get(section) or {})]
            if unset:
                out.append(f"{cell.variant} in {cell.setting_key} does not set {', '.join(unset)}, which "
                           f"{cell.method} sets there (it runs with the grid's defaults); `like: {cell.method}` "
                           "copies them")
        return out

    def cells(self, only_settings: list[str] | None = None, only_methods: list[str] | None = None) -> list[Cell]:
        """Cells in (setting, method) order, filtered; unknown filter names are errors.

        A method filter name is a variant key; a name that is no variant key but a registry method selects
        every variant of that method (e.g. im-mlm-warm and im-mlm for `im-mlm` when no variant has that key).
        """
        for item in only_settings or []:
            if item not in self.settings:
                raise ConfigError(f"{self.path}: no setting {item!r} in this grid (it has: {', '.join(self.settings)})")
        wanted: set[str] | None = None
        if only_methods:
            wanted = set()
            for item in only_methods:
                matches = [item] if item in self.methods else [k for k, e in self.methods.items() if e.method == item]
                if not matches:
                    raise ConfigError(f"{self.path}: no method {item!r} in this grid (it has: {', '.join(self.methods)})")
                wanted.update(matches)
        out = []
        for setting in self.settings:
            if only_settings and setting not in only_settings:
                continue
            for variant, entry in self.methods.items():
                if wanted is not None and variant not in wanted:
                    continue
                if entry.only_settings is not None and setting not in entry.only_settings:
                    continue
                out.append(self.cell(variant, setting))
        return out


def load_grid(name: str | Path) -> Grid:
    """Load, merge (`extends`) and validate a grid file; raises ConfigError naming the file and key."""
    from uimer.interpret import METHODS

    path = resolve_config_path(name)
    raw, files = _load_raw(path)
    where = _Where(path, files[:-1])
    actions = _option_actions()
    paper_keys = set(load_paper_results()["methods"])

    defaults = _check_fields(raw.get("defaults"), "defaults", where, actions, allow_setting=False)
    overrides = _check_fields(raw.get("overrides"), "overrides", where, actions, allow_setting=False)
    settings_raw = raw.get("settings")
    if not isinstance(settings_raw, dict) or not settings_raw:
        raise where.error("settings", "a non-empty mapping of setting name -> {task, shot | train_size, ...} is required")
    settings: dict[str, dict] = {}
    for key, value in settings_raw.items():
        checked = _check_fields(value or {}, f"settings.{key}", where, actions, allow_setting=True)
        if "task" not in checked:
            raise where.error(f"settings.{key}.task", "missing (one of " + ", ".join(TASK_CHOICES) + ")")
        if checked.get("shot") and checked.get("train_size"):
            raise where.error(f"settings.{key}", "give shot or train_size, not both")
        settings[str(key)] = checked

    known_settings = set(raw.get("_known_settings", ()))
    methods_raw = raw.get("methods")
    if not isinstance(methods_raw, dict) or not methods_raw:
        raise where.error("methods", "a non-empty mapping of variant name -> method entry is required")
    methods: dict[str, MethodEntry] = {}
    for key, value in methods_raw.items():
        key = str(key)
        value = value or {}
        if not isinstance(value, dict):
            raise where.error(f"methods.{key}", "must be a mapping")
        registry = value.get("method", key)
        if registry not in METHODS:
            raise where.error(f"methods.{key}.method",
                              f"unknown method {registry!r} (registered: {', '.join(sorted(METHODS))})")
        run_fields = {k: v for k, v in value.items() if k not in METHOD_META}
        fields_ = _check_fields(run_fields, f"methods.{key}", where, actions, allow_setting=False)
        only = value.get("only_settings")
        if only is not None:
            if not isinstance(only, list) or not all(isinstance(s, str) for s in only):
                raise where.error(f"methods.{key}.only_settings", "must be a list of setting names")
            for s in only:
                if s not in settings and s not in known_settings:
                    raise where.error(f"methods.{key}.only_settings", f"no setting {s!r} in this grid")
            only = [s for s in only if s in settings]  # a derived grid may leave some of them out
        per_setting: dict[str, dict] = {}
        paper_per_setting: dict[str, str | None] = {}
        cell_overrides = value.get("settings") or {}
        if not isinstance(cell_overrides, dict):
            raise where.error(f"methods.{key}.settings", "must be a mapping of setting name -> run fields")
        for setting, cell in cell_overrides.items():
            if setting not in settings:
                # A derived grid may leave out settings its base configures: those cells are simply unused.
                if setting in known_settings:
                    continue
                raise where.error(f"methods.{key}.settings.{setting}", "no such setting in this grid")
            cell = dict(cell or {})
            if "paper" in cell:
                paper_per_setting[setting] = cell.pop("paper")
            per_setting[setting] = _check_fields(cell, f"methods.{key}.settings.{setting}", where, actions,
                                                 allow_setting=False)
        _check_option_users(registry, key, fields_, per_setting, where)
        paper = value.get("paper", key if key in paper_keys else None)
        for p in [paper, *paper_per_setting.values()]:
            if p is not None and p not in paper_keys:
                raise where.error(f"methods.{key}.paper", f"{p!r} is not in paper_results.yaml")
        confidence = value.get("confidence", DEFAULT_LEVEL)
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.95 <= confidence < 1:
            raise where.error(f"methods.{key}.confidence",
                              f"must be a level in [0.95, 1), stricter than the default, e.g. 0.975; got {confidence!r}")
        spec = METHODS[registry]
        methods[key] = MethodEntry(key, registry, spec.family, str(value.get("label", key)), paper, only,
                                   fields_, per_setting, paper_per_setting, float(confidence))
    cost = raw.get("cost") or {}
    _check_budget(cost.get("budget"), where)
    return Grid(raw.get("name") or path.stem, path, files, str(raw.get("description") or "").strip(), settings,
                methods, defaults, overrides, cost)


def _check_option_users(method: str, key: str, fields_: dict, per_setting: dict[str, dict], where: _Where) -> None:
    """A method entry's own options must be ones its method reads (`defaults`/`overrides` may hold options for
    several methods, so they are not checked): an ignored option would silently not do what the grid says."""
    from uimer.interpret import option_users

    layers = [(f"methods.{key}.options", fields_.get("options") or {})]
    layers += [(f"methods.{key}.settings.{s}.options", f.get("options") or {}) for s, f in per_setting.items()]
    for prefix, options in layers:
        for dest in options:
            users = option_users("", dest)
            if method not in users:
                raise where.error(f"{prefix}.{dest}", f"{method} does not read this option (read by "
                                  f"{', '.join(users[:6])}{', ...' if len(users) > 6 else ''})")


def _check_budget(budget: Any, where: _Where) -> None:
    if budget is None:
        return
    if not isinstance(budget, dict) or set(budget) - {"hours", "workers"} or "hours" not in budget:
        raise where.error("cost.budget", "must be {hours: H, workers: W} (workers: parallel runs, default 1)")
    for key in ("hours", "workers"):
        value = budget.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise where.error(f"cost.budget.{key}", f"must be a positive number, got {value!r}")


_PAPER_CACHE: dict[Path, dict] = {}


def load_paper_results(path: Path = PAPER_RESULTS) -> dict:
    """The paper's Table 2 means and Table 9 stds (in %), keyed by method then report column."""
    if path not in _PAPER_CACHE:
        data = yaml.safe_load(Path(path).read_text())
        if not isinstance(data, dict) or "methods" not in data:
            raise ConfigError(f"{path}: expected a mapping with a 'methods' section")
        _PAPER_CACHE[path] = data
    return _PAPER_CACHE[path]
