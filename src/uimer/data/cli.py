"""Data sub-commands of the `uimer` CLI: `data fetch`, `data sample`, `rationales stats`.

`register(subparsers)` adds them to the top-level parser's sub-parsers; each leaf sets `func`, a handler
taking the parsed arguments and returning an exit code. Bad input raises UimerError subclasses, which the
top-level `main` reports as one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from uimer.checks import SEED, Domain
from uimer.data.fetch import DATASETS, fetch_dataset
from uimer.data.paths import resolve_data_dir
from uimer.data.sampling import sample_intent, sample_pairs, sample_slot
from uimer.data.stats import rationale_stats
from uimer.data.tasks import TASKS, load_task
from uimer.data.types import TaskKind
from uimer.errors import ConfigError


class _SizeOrAll(Domain):
    """A subset size, or -1 for all (0 would silently select nothing)."""

    def describe(self) -> str:
        return "an integer >= 1, or -1 for all"

    def problem(self, value):
        return None if value == -1 else super().problem(value)


SIZE_OR_ALL = _SizeOrAll(int, 1, 10**9)

DATA_DIR_HELP = (
    "data root holding snips/ and esnli/ (default: $UIMER_DATA_DIR, else ~/.cache/uimer/data); "
    "for --task jsonl, the folder holding train/dev/test.jsonl"
)


def _task_dir(args: argparse.Namespace) -> Path:
    if args.task == "jsonl":
        if args.data_dir is None:
            raise ConfigError("--task jsonl needs --data-dir pointing at the folder with train/dev/test.jsonl")
        return Path(args.data_dir).expanduser()
    return resolve_data_dir(args.data_dir)


def cmd_fetch(args: argparse.Namespace) -> int:
    """Download and verify a data set into the data root."""
    dest = resolve_data_dir(args.data_dir)
    paths = fetch_dataset(args.dataset, dest, base_url=args.base_url)
    print(f"{args.dataset}: {len(paths)} files verified in {dest / args.dataset}")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Print the 0-based train indices of a low-resource subset as a JSON list."""
    task = load_task(args.task, _task_dir(args))
    if args.train_size is not None:
        indices = sample_pairs(len(task.train), args.train_size, args.seed)
    elif task.kind is TaskKind.PAIR:
        raise ConfigError(f"task {args.task} is sampled with --train-size N, not --shot")
    elif task.kind is TaskKind.TAGGING:
        indices = sample_slot(task.train, task.labels, args.shot, args.seed)
    else:
        indices = sample_intent(task.train, task.labels, args.shot, args.seed)
    print(json.dumps(indices))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from uimer.data.jsonl import write_jsonl

    task = load_task(args.task, resolve_data_dir(args.data_dir))
    counts = write_jsonl(task, Path(args.out), rationales=args.with_rationales)
    print(f"{args.task} -> {args.out}: " + ", ".join(f"{n} {split}" for split, n in counts.items())
          + f" ({task.kind.value}, {len(task.labels)} labels; rationales {'kept' if args.with_rationales else 'none'})")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    """Report rationale coverage of one split."""
    rationale_file = Path(args.rationale_file).expanduser() if args.rationale_file else None
    task = load_task(args.task, _task_dir(args), rationale_file=rationale_file)
    examples = getattr(task, args.split)
    stats = rationale_stats(examples, task.labels, task.kind)
    if args.json:
        print(json.dumps({"task": task.name, "split": args.split, **stats}, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Rationale coverage: {task.name} / {args.split}")
    table.add_column("scope")
    table.add_column("examples", justify="right")
    table.add_column("coverage", justify="right")
    table.add_row("all", str(stats["n_examples"]), f"{100 * stats['coverage']:.1f} %")
    counts: dict[str, int] = {}
    for ex in examples:
        if ex.label is not None:
            counts[task.labels[ex.label]] = counts.get(task.labels[ex.label], 0) + 1
    for name, share in stats.get("per_class_coverage", {}).items():
        table.add_row(name, str(counts.get(name, 0)), f"{100 * share:.1f} %")
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(f"mean rationale words per example: {stats['mean_rationale_words']:.2f}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `data {fetch,sample}` and `rationales stats` to the top-level sub-parsers."""
    data = subparsers.add_parser("data", help="download data sets and draw low-resource subsets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="{fetch,sample,export}")

    fetch = data_sub.add_parser("fetch", help="download and verify a public data set")
    fetch.add_argument("dataset", choices=DATASETS)
    fetch.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    fetch.add_argument(
        "--base-url", default=None, help="fetch <base-url>/<dataset>/<file> instead (default: $UIMER_DATA_BASE_URL)"
    )
    fetch.set_defaults(func=cmd_fetch)

    sample = data_sub.add_parser("sample", help="print the train indices of an n-shot / n-sample subset (JSON)")
    sample.add_argument("--task", required=True, choices=TASKS)
    size = sample.add_mutually_exclusive_group(required=True)
    size.add_argument("--shot", type=SIZE_OR_ALL, help="n-shot per class (intent) or per slot type (slot); -1 = all")
    size.add_argument("--train-size", type=SIZE_OR_ALL, help="random subset of N training examples (e-SNLI); -1 = all")
    sample.add_argument("--seed", type=SEED, required=True)
    sample.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    sample.set_defaults(func=cmd_sample)

    export = data_sub.add_parser("export", help="write a task as JSONL (uimer's own-data format)")
    export.add_argument("--task", required=True, choices=[t for t in TASKS if t != "jsonl"])
    export.add_argument("--out", required=True, help="folder for train/dev/test.jsonl and labels.txt")
    export.add_argument("--with-rationales", action="store_true",
                        help="keep the built-in rationales (default: none, as your own data before a rules file)")
    export.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    export.set_defaults(func=cmd_export)

    rationales = subparsers.add_parser("rationales", help="inspect rationale annotations")
    rat_sub = rationales.add_subparsers(dest="rationales_command", required=True, metavar="{stats}")
    stats = rat_sub.add_parser("stats", help="rationale coverage of a split")
    stats.add_argument("--task", required=True, choices=TASKS)
    stats.add_argument("--split", default="train", choices=("train", "dev", "test"))
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.add_argument("--data-dir", default=None, help=DATA_DIR_HELP)
    stats.add_argument("--rationale-file", default=None, help="YAML keywords/regexes replacing the built-in rationales")
    stats.set_defaults(func=cmd_stats)
