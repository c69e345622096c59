"""Table-driven: one row per bad input (CLI flag, rules YAML, JSONL data, grid YAML), each expecting exit status 2
and a single `uimer: error: ...` line that names the flag, key or file; never a traceback, never a model load.

`UIMER_BAD_INPUTS_TABLE=FILE` writes every row's message to FILE (the issue note's table).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from uimer.cli import main
from uimer.errors import DataError, UimerWarning

ROWS: list[tuple[str, list[str], str]] = []  # (row id, argv with {T} = tmp folder, expected substring)
MESSAGES: list[tuple[str, str, str]] = []  # (row id, input shown, message) for the table


def row(name: str, argv: list[str], expected: str) -> None:
    ROWS.append((name, argv, expected))


TRAIN = ["train", "--task", "snips-intent", "--output-dir", "{T}/out", "--no-progress", "--device", "cpu",
         "--data-dir", "{T}/good"]
IM = ["--method", "im-uniform"]
# -- uimer train: every numeric flag, names, paths, devices, method flags ----------------------------------
for flag, value in [("--batch-size", "0"), ("--batch-size", "x"), ("--batch-size", "1.5"), ("--lr", "0"),
                    ("--lr", "nan"), ("--lr", "-1e-4"), ("--lr", "5"), ("--max-epochs", "0"), ("--patience", "-1"),
                    ("--weight-decay", "-0.1"), ("--eval-batch-size", "0"), ("--shot", "0"), ("--shot", "-3"),
                    ("--train-size", "0"), ("--dev-size", "0"), ("--dev-size", "-5"), ("--max-length", "2"),
                    ("--max-length", "100000"), ("--pooling", "max"), ("--task", "snips"), ("--method", "nope")]:
    row(f"train {flag} {value}", [*TRAIN, flag, value], flag)
row("train --lr=-1e-4", [*TRAIN, "--lr=-1e-4"], "--lr")
for flag, value in [("--alpha", "-1"), ("--alpha", "inf"), ("--warmup-epochs", "-1"), ("--warmup-epochs", "nan"),
                    ("--warmup-epochs", "70"), ("--im-k", "0"), ("--margin", "-0.5"), ("--margin", "nan"),
                    ("--max-rationale-fraction", "1.5"), ("--max-rationale-fraction", "0"), ("--im-chunk", "-1"),
                    ("--log-odds-floor", "3"), ("--im-resample", "often")]:
    row(f"train im-uniform {flag} {value}", [*TRAIN, *IM, flag, value], flag)
for method, flag, value in [("dm-multi-round", "--rounds", "0"), ("dm-one-pass", "--dm-eps", "-1"),
                            ("dm-one-pass", "--dm-hidden-layer", "-1"), ("dm-multi-round", "--lr-extractor", "0"),
                            ("dm-one-pass", "--extractor-epochs", "-2"), ("dm-one-pass", "--dm-gate", "output"),
                            ("gb-ghaeini", "--ghaeini-saliency", "x")]:
    row(f"train {method} {flag} {value}", [*TRAIN, "--method", method, flag, value], flag)
for method, flag, value in [("baseline", "--margin", "0.5"), ("im-uniform", "--rounds", "3"),
                            ("gb-huang-base", "--mlm", "some/mlm"), ("dm-one-pass", "--rounds", "4"),
                            ("im-prior", "--ghaeini-saliency", "grad-sum"), ("baseline", "--alpha", "2"),
                            ("baseline", "--warmup-epochs", "1")]:
    row(f"train {method} with {flag} (another method's flag)", [*TRAIN, "--method", method, flag, value], flag)
row("train --method listed twice", [*TRAIN, "--method", "baseline", "baseline"], "--method")
row("train --seeds 1,x", [*TRAIN, "--seeds", "1,x"], "--seeds")
row("train --seeds -1", [*TRAIN, "--seeds", "-1"], "--seeds")
row("train --seeds 5 5", [*TRAIN, "--seeds", "5", "5"], "--seeds")
row("train --seeds ,", [*TRAIN, "--seeds", ","], "--seeds")
row("train --device cuda (CPU-only torch)", [*TRAIN, "--device", "cuda"], "--device")
row("train --device tpu", [*TRAIN, "--device", "tpu"], "--device")
row("train --device cuda:x", [*TRAIN, "--device", "cuda:x"], "--device")
row("train --output-dir that cannot be created", [*TRAIN, "--output-dir", "/proc/uimer-no/x"], "--output-dir")
row("train --output-dir that is a file", [*TRAIN, "--output-dir", "{T}/a-file"], "--output-dir")
row("train --output-dir ''", [*TRAIN, "--output-dir", ""], "--output-dir")
row("train --shot with --train-size", [*TRAIN, "--shot", "1", "--train-size", "5"], "--train-size")
row("train --task jsonl without --data-dir",
    ["train", "--task", "jsonl", "--output-dir", "{T}/out", "--device", "cpu", "--no-progress"], "--data-dir")
row("train --data-dir missing", [*TRAIN, "--data-dir", "{T}/nodata"], "--data-dir")
row("train snips-intent on a folder without SNIPS", [*TRAIN], "snips")
row("train --rationale-file missing", [*TRAIN, "--rationale-file", "{T}/none.yaml"], "--rationale-file")
row("train --data-dir not a folder", [*TRAIN, "--data-dir", "{T}/a-file"], "--data-dir")
# -- other commands ----------------------------------------------------------------------------------------
row("sweep --threads 0", ["sweep", "lowresource-minilm", "--results", "{T}/r", "--threads", "0"], "--threads")
row("sweep --ray-num-cpus 0", ["sweep", "lowresource-minilm", "--results", "{T}/r", "--ray-num-cpus", "0"],
    "--ray-num-cpus")
row("sweep --seeds x", ["sweep", "lowresource-minilm", "--results", "{T}/r", "--seeds", "x", "--dry-run"], "--seeds")
row("sweep --only-seeds -4", ["sweep", "lowresource-minilm", "--results", "{T}/r", "--only-seeds", "-4", "--dry-run"],
    "--only-seeds")
row("sweep --device cuda (CPU-only torch)", ["sweep", "lowresource-minilm", "--results", "{T}/r", "--device", "cuda"],
    "--device")
row("sweep --results that cannot be created", ["sweep", "{T}/grid-ok.yaml", "--results", "/proc/uimer-no/r"],
    "--results")
row("sweep unknown grid", ["sweep", "no-such-grid", "--results", "{T}/r", "--dry-run"], "no-such-grid")
row("data sample --shot 0", ["data", "sample", "--task", "snips-intent", "--shot", "0", "--seed", "1"], "--shot")
row("data sample --seed -1", ["data", "sample", "--task", "snips-intent", "--shot", "1", "--seed", "-1"], "--seed")
row("mlm train --steps 0", ["mlm", "train", "--task", "snips-intent", "--out", "{T}/m", "--steps", "0"], "--steps")
row("mlm train --held-out 1", ["mlm", "train", "--task", "snips-intent", "--out", "{T}/m", "--held-out", "1"],
    "--held-out")
row("mlm train --lr 0", ["mlm", "train", "--task", "snips-intent", "--out", "{T}/m", "--lr", "0"], "--lr")
row("evaluate-rationales --limit 0", ["evaluate-rationales", "--model", "{T}/m", "--limit", "0"], "--limit")
row("evaluate-rationales --thresholds 0", ["evaluate-rationales", "--model", "{T}/m", "--thresholds", "0"],
    "--thresholds")
row("evaluate-rationales --top-k 0", ["evaluate-rationales", "--model", "{T}/m", "--top-k", "0"], "--top-k")
row("explain --batch-size 0", ["explain", "--model", "{T}/m", "--batch-size", "0", "hi"], "--batch-size")
row("predict --model missing", ["predict", "--model", "{T}/nomodel", "hello"], "nomodel")
row("report on a missing folder", ["report", "{T}/noresults"], "noresults")
row("report --output that cannot be written", ["report", "{T}/results-empty", "--output", "/proc/uimer-no/R.md"],
    "/proc/uimer-no/R.md")
row("mlm train --out that cannot be created", ["mlm", "train", "--task", "snips-intent", "--out", "/proc/uimer-no/m"],
    "--out")
row("train im-mlm without --mlm", [*TRAIN, "--method", "im-mlm"], "--mlm")
row("train im-mlm --mlm missing folder", [*TRAIN, "--method", "im-mlm", "--mlm", "./no-such-mlm"], "--mlm")
row("train --encoder ''", [*TRAIN, "--encoder", ""], "--encoder")

# -- rules YAML (through `uimer train --task jsonl --rationale-file`) ---------------------------------------
RULES = {
    "invalid YAML": "keywords: [a, b\n",
    "a list, not a mapping": "- a\n- b\n",
    "unknown key": "keywords: {PlayMusic: [play]}\nregexs: []\n",
    "no keywords or regexes": "{}\n",
    "keywords not a mapping": "keywords: [play]\n",
    "keyword list is a mapping": "keywords:\n  PlayMusic: {a: 1}\n",
    "regex does not compile": "regexes:\n  - '(?P<rationale>play'\n",
    "regex without a rationale group": "regexes:\n  - '.*(play).*'\n",
    "regex not a string": "regexes:\n  - [1, 2]\n",
    "regexes not a list": "regexes: '.*'\n",
    "keyword label unknown (--strict)": "keywords:\n  PlayMusik: [play]\n",
    "regex matching nothing (--strict)": "regexes:\n  - '.*(?P<rationale>zebra).*'\n",
}
for name in RULES:
    strict = ["--strict"] if "--strict" in name else []
    row(f"rules: {name}", ["train", "--task", "jsonl", "--data-dir", "{T}/good", "--output-dir", "{T}/out",
                           "--device", "cpu", "--no-progress", "--rationale-file", f"{{T}}/rules/{len(ROWS)}.yaml",
                           *strict], "rules/")

# -- JSONL data (a bad line in the given split; the rest is the good task) ---------------------------------
GOOD = {"words": ["play", "music"], "label": "PlayMusic", "rationale": [1, 0]}
JSONL = {
    "invalid JSON": ("train", '{"words": ["a"], "label": '),
    "a list, not an object": ("train", '["play", "music"]'),
    "no words or text": ("train", '{"label": "PlayMusic"}'),
    "words and text": ("train", '{"words": ["a"], "text": "a", "label": "PlayMusic"}'),
    "missing label": ("train", '{"words": ["a"]}'),
    "empty text": ("train", '{"text": "   ", "label": "PlayMusic"}'),
    "word with a space": ("train", '{"words": ["a b"], "label": "PlayMusic"}'),
    "rationale too short": ("train", '{"words": ["a", "b"], "label": "PlayMusic", "rationale": [1]}'),
    "rationale with a 2": ("train", '{"words": ["a"], "label": "PlayMusic", "rationale": [2]}'),
    "rationale of booleans": ("train", '{"words": ["a"], "label": "PlayMusic", "rationale": [true]}'),
    "label not a string": ("train", '{"words": ["a"], "label": 3}'),
    "tagging line in a classification set": ("train", '{"words": ["a"], "tags": ["O"]}'),
    "dev label unseen in train": ("dev", '{"words": ["a"], "label": "Nope"}'),
    "not UTF-8": ("test", b'{"words": ["caf\xe9"], "label": "PlayMusic"}'),
}
for name, (split, _) in JSONL.items():
    row(f"jsonl: {name}", ["train", "--task", "jsonl", "--data-dir", f"{{T}}/jsonl/{len(ROWS)}", "--output-dir",
                           "{T}/out", "--device", "cpu", "--no-progress"], f"{split}.jsonl")
row("jsonl: dev.jsonl missing", ["train", "--task", "jsonl", "--data-dir", "{T}/jsonl-nodev", "--output-dir", "{T}/out",
                                 "--device", "cpu", "--no-progress"], "dev.jsonl")

# -- grid YAML (through `uimer sweep --dry-run`) ----------------------------------------------------------
GRIDS = {
    "train.batch_size 0": ({"defaults": {"train": {"batch_size": 0}}}, "defaults.train.batch_size"),
    "train.lr -1": ({"defaults": {"train": {"lr": -1}}}, "defaults.train.lr"),
    "train.alpha nan": ({"defaults": {"train": {"alpha": float("nan")}}}, "defaults.train.alpha"),
    "train.max_epochs ten": ({"defaults": {"train": {"max_epochs": "ten"}}}, "defaults.train.max_epochs"),
    "shot 0": ({"settings": {"s": {"task": "snips-intent", "shot": 0}}}, "settings.s.shot"),
    "seeds listed twice": ({"defaults": {"seeds": [1, 1]}}, "defaults.seeds"),
    "seed -1": ({"defaults": {"seeds": [-1]}}, "defaults.seeds"),
    "device gpu": ({"defaults": {"device": "gpu"}}, "defaults.device"),
    "options.margin -1": ({"methods": {"im-uniform": {"options": {"margin": -1}}}}, "methods.im-uniform.options.margin"),
    "options.im_k true": ({"methods": {"im-uniform": {"options": {"im_k": True}}}}, "methods.im-uniform.options.im_k"),
    "resources.num_cpus -1": ({"defaults": {"resources": {"num_cpus": -1}}}, "defaults.resources.num_cpus"),
    "max_length 1": ({"defaults": {"max_length": 1}}, "defaults.max_length"),
    "dev_size 0": ({"defaults": {"dev_size": 0}}, "defaults.dev_size"),
    "encoder empty": ({"defaults": {"encoder": ""}}, "defaults.encoder"),
    "baseline with an IM option": ({"methods": {"baseline": {"options": {"margin": 0.5}}}},
                                   "methods.baseline.options.margin: baseline does not read this option"),
    "im-uniform with dm rounds per setting": (
        {"methods": {"im-uniform": {"settings": {"s": {"options": {"rounds": 3}}}}}},
        "methods.im-uniform.settings.s.options.rounds: im-uniform does not read this option"),
}
for name, (_, key) in GRIDS.items():
    row(f"grid: {name}", ["sweep", f"{{T}}/grids/{len(ROWS)}.yaml", "--results", "{T}/r", "--dry-run"], key)


def _write_fixtures(root: Path) -> None:
    (root / "a-file").write_text("x")
    (root / "results-empty").mkdir()
    good = root / "good"
    good.mkdir()
    lines = [GOOD, {"words": ["weather", "paris"], "label": "GetWeather", "rationale": [1, 0]}]
    for split in ("train", "dev", "test"):
        (good / f"{split}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    (root / "rules").mkdir()
    (root / "jsonl-nodev").mkdir()
    (root / "jsonl-nodev" / "train.jsonl").write_text(json.dumps(GOOD) + "\n")
    (root / "grids").mkdir()
    base = {"settings": {"s": {"task": "snips-intent", "shot": 1}}, "methods": {"baseline": {}, "im-uniform": {}}}
    (root / "grid-ok.yaml").write_text(yaml.safe_dump(base))
    names = iter(RULES.values())
    jsonl = iter(JSONL.values())
    grids = iter(GRIDS.values())
    for i, (name, _, _) in enumerate(ROWS):
        if name.startswith("rules:"):
            (root / "rules" / f"{i}.yaml").write_text(next(names))
        elif name.startswith("jsonl:") and name != "jsonl: dev.jsonl missing":
            split, line = next(jsonl)
            folder = root / "jsonl" / str(i)
            folder.mkdir(parents=True)
            for s in ("train", "dev", "test"):
                content = (json.dumps(GOOD) + "\n").encode()
                if s == split:
                    content += line if isinstance(line, bytes) else line.encode() + b"\n"
                (folder / f"{s}.jsonl").write_bytes(content)
        elif name.startswith("grid:"):
            patch, _ = next(grids)
            grid = json.loads(json.dumps(base))
            for section, value in patch.items():
                grid[section] = {**grid.get(section, {}), **value} if section != "methods" else {
                    **grid["methods"], **value}
            (root / "grids" / f"{i}.yaml").write_text(yaml.safe_dump(grid))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad-inputs")
    _write_fixtures(root)
    return root


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_there_are_at_least_forty_rows_across_all_kinds():
    kinds = {name.split(":")[0] if ":" in name else name.split()[0] for name, _, _ in ROWS}
    assert len(ROWS) >= 40 and {"rules", "jsonl", "grid", "train", "sweep"} <= kinds


@pytest.mark.parametrize(("name", "argv", "expected"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_naming_the_flag(world, capsys, monkeypatch, name, argv, expected):
    monkeypatch.setenv("UIMER_DATA_DIR", str(world / "nodata"))
    argv = [a.replace("{T}", str(world)) for a in argv]
    code, out, err = run_cli(argv, capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err)
    assert "Traceback" not in err + out
    assert len(lines) == 1 and lines[0].startswith("uimer: error: "), err
    assert expected.replace("{T}", str(world)) in lines[0], lines[0]
    table = os.environ.get("UIMER_BAD_INPUTS_TABLE")
    if table:
        shown = " ".join(a for a in argv if a not in ("--no-progress",)).replace(str(world), "T")
        with open(table, "a") as handle:
            handle.write(json.dumps({"row": name, "input": shown, "message": lines[0].replace(str(world), "T")}) + "\n")


def test_rules_matching_nothing_warn_with_counts(world):
    """Without --strict the run goes on, but says what matched nothing and how much is marked."""
    from uimer.training.runner import RunSpec, load_task_for

    rules = world / "nothing.yaml"
    rules.write_text("keywords:\n  PlayMusik: [play]\n  GetWeather: [weather]\nregexes:\n  - '.*(?P<rationale>zebra).*'\n")
    spec = RunSpec(task="jsonl", data_dir=str(world / "good"), rationale_file=str(rules))
    with pytest.warns(UimerWarning) as caught:
        task = load_task_for(spec)
    message = str(caught[0].message)
    assert "1 of 2 keyword label(s) match no label of the task (PlayMusik)" in message
    assert "1 of 1 regex(es) match no training example (#1)" in message
    assert "1 of 2 training examples get a rationale" in message
    assert task.train[1].rationale == [1, 0]
    spec.strict = True
    with pytest.raises(DataError, match="--strict"):
        load_task_for(spec)


def test_rules_that_match_are_silent(world, recwarn):
    from uimer.training.runner import RunSpec, load_task_for

    rules = world / "fine.yaml"
    rules.write_text("keywords:\n  PlayMusic: [play]\n  GetWeather: [weather]\n")
    load_task_for(RunSpec(task="jsonl", data_dir=str(world / "good"), rationale_file=str(rules), strict=True))
    assert not [w for w in recwarn if issubclass(w.category, UimerWarning)]
