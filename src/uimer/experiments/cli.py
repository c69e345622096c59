"""`uimer sweep` (run a grid, resumably, optionally on Ray) and `uimer report` (REPORT.md + figures)."""

from __future__ import annotations

import math
import os
import signal
import sys
from collections import Counter
from pathlib import Path

from uimer.checks import POSITIVE_INT, SEED, Domain, check_device
from uimer.errors import UimerError
from uimer.experiments import packaged_configs


def _seeds(values: list[str] | None, flag: str = "--seeds") -> list[int] | None:
    if not values:
        return None
    seeds: list[int] = []
    for value in values:
        for part in value.replace(":", ",").split(","):
            if part.strip():
                try:
                    seeds.append(int(SEED.parse(part.strip())))
                except ValueError as err:
                    raise UimerError(f"{flag}: each seed {err}") from None
    return seeds


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [part for value in values for part in value.split(",") if part]


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep", help="run a grid of settings x methods x seeds, resumably (sequentially or on Ray)",
        description="Run every (setting, method variant, seed) of a grid config that is not done yet. Each finished "
        "run is written atomically to DIR/runs/<task>/<setting>/<variant>/seed<S>.json; rerunning skips finished "
        "runs (same configuration fingerprint) and reruns failed or reconfigured ones; a killed run resumes at its last "
        "checkpoint (DIR/checkpoints/, saved at an epoch boundary, DM: a round boundary, every few minutes).",
    )
    p.add_argument("config", help=f"grid YAML: a path or a packaged name ({', '.join(packaged_configs())})")
    p.add_argument("--results", required=True, metavar="DIR", help="results directory (created; shared by reruns)")
    p.add_argument("--only-settings", nargs="+", metavar="SETTING", help="run only these settings (e.g. intent-1 nli-100)")
    p.add_argument("--only-methods", nargs="+", metavar="METHOD",
                   help="run only these method variants (grid keys such as im-uniform-warm, or registry names)")
    p.add_argument("--only-seeds", nargs="+", metavar="SEED",
                   help="run only these of the grid's seeds; unlike --seeds, the grid's plan (what the report "
                        "expects per cell) keeps all of them")
    p.add_argument("--seeds", nargs="+",
                   help="replace every setting's seeds (space-, comma- or colon-separated); the report then expects "
                        "these")
    p.add_argument("--dry-run", action="store_true", help="list what would run, with a cost estimate; run nothing")
    p.add_argument("--cost-from", action="append", default=[], metavar="DIR",
                   help="other results directories whose measured run times feed the --dry-run estimate")
    ray = p.add_mutually_exclusive_group()
    ray.add_argument("--ray", action="store_true", help="run on a local Ray instance (one task per run)")
    ray.add_argument("--ray-address", metavar="HOST:PORT",
                     help="run on an existing Ray cluster (its GCS address, 'auto', or ray://HOST:PORT for Ray Client)")
    p.add_argument("--ray-num-cpus", type=POSITIVE_INT, default=None,
                   help="CPUs of the local Ray instance started by --ray (default: all)")
    p.add_argument("--data-dir", default=None,
                   help="dataset root for snips/esnli runs (default: the grid's, else $UIMER_DATA_DIR, else ~/.cache/uimer/data)")
    p.add_argument("--device", default=None, help="override the grid's device (auto, cpu, cuda)")
    p.add_argument("--gpus-per-run", type=float, default=None, metavar="FRACTION",
                   help="override the grid's resources.num_gpus; with --ray, 0.25 runs four runs at a time on one GPU")
    p.add_argument("--threads", type=Domain(int, 1, 1024), default=None,
                   help="torch threads for sequential runs (default: the grid's resources.num_cpus, as Ray tasks)")
    p.add_argument("--no-progress", action="store_true", help="plain lines instead of progress bars")
    p.set_defaults(func=cmd_sweep)

    r = subparsers.add_parser("report", help="write DIR/REPORT.md: our results beside the paper's, with figures",
                              description="Summarise a sweep's results directory: Table 2 and Table 9 layouts with the "
                              "paper's numbers, seeds per cell, missing cells, cost per method, the issue's targets, and "
                              "the L_int (Fig. 3) and multi-round (Fig. 4) curves when those runs exist.")
    r.add_argument("results", metavar="DIR")
    r.add_argument("--no-figures", action="store_true", help="skip the matplotlib figures")
    r.add_argument("--quiet", action="store_true", help="write REPORT.md without printing it")
    r.add_argument("--output", metavar="FILE", default=None,
                   help="write the report here instead of DIR/REPORT.md (figures stay in DIR, linked relatively)")
    r.set_defaults(func=cmd_report)


def _dry_run(grid, runs, results: Path, args, console) -> int:
    from rich.table import Table

    from uimer.experiments.sweep import (
        estimate_seconds,
        made_by_older_version,
        measured_seconds,
        read_json,
        run_status,
    )

    measured = measured_seconds([results, *map(Path, args.cost_from)])
    table = Table(title=f"{grid.name}: what `uimer sweep` would run in {results}")
    for column in ("setting", "variant", "to run", "done", "stale", "est. s / run", "source", "est. total"):
        table.add_column(column, justify="right" if column.startswith(("to", "done", "stale", "est")) else "left")
    groups: dict[tuple[str, str], list] = {}
    for run in runs:
        groups.setdefault((run.cell.setting_key, run.cell.variant), []).append(run)
    total, unknown, counts = 0.0, 0, Counter()
    for (setting, variant), group in groups.items():
        status = Counter(run_status(results, r) for r in group)
        counts.update(status)
        counts["older version"] += sum(1 for r in group if run_status(results, r) == "stale"
                                       and made_by_older_version(read_json(results / r.relpath) or {}, r.cell.method))
        todo = status["todo"] + status["stale"] + status["damaged"]
        seconds, source = estimate_seconds(grid, group[0], measured)
        if todo and seconds is None:
            unknown += todo
        total += (seconds or 0.0) * todo
        table.add_row(setting, variant, str(todo), str(status["done"]), str(status["stale"]),
                      f"{seconds:.0f}" if seconds is not None else "?", source,
                      f"{(seconds or 0) * todo / 60:.1f} min" if seconds is not None else "?")
    console.print(table)
    to_run = counts["todo"] + counts["stale"] + counts["damaged"]
    older = f", {counts['older version']} of these made by an older method/trainer version" if counts["older version"] \
        else ""
    damaged = f"; {counts['damaged']} damaged run file(s) start over" if counts["damaged"] else ""
    console.print(f"{len(runs)} runs: {counts['done']} done, {to_run} to run ({counts['stale']} of them stale: "
                  f"configuration changed{older}{damaged}).")
    line = f"Estimated compute for the runs to do: {total / 3600:.2f} h run after run"
    cpus = [r.resources["num_cpus"] for r in runs if run_status(results, r) != "done"]
    if (args.ray or args.ray_address) and cpus:
        per_run = Counter(cpus).most_common(1)[0][0] or 1.0
        if args.ray:
            slots = max(1, math.floor((args.ray_num_cpus or os.cpu_count() or 1) / per_run))
            line += f"; ≈ {total / slots / 3600:.2f} h on the local Ray instance ({slots} runs in parallel)"
        else:
            line += f"; divide by the cluster's parallel runs ({per_run:g} CPU each)"
    if unknown:
        line += f" (+ {unknown} runs without an estimate)"
    console.print(line + ".")
    missing_paths = sorted({
        value for r in runs if run_status(results, r) != "done"
        for value in (r.spec.config.method_options.get("mlm"), r.spec.rationale_file)
        if isinstance(value, str) and ("/" in value or value.startswith(".")) and not Path(value).expanduser().exists()
    })
    for value in missing_paths:
        console.print(f"[yellow]warning[/yellow]: {value} does not exist (yet); runs that need it will fail")
    return 0


def cmd_sweep(args) -> int:
    from rich.console import Console

    from uimer.experiments.config import load_grid
    from uimer.experiments.sweep import plan_runs, sweep

    console = Console(stderr=True)
    if args.device not in (None, "auto"):
        check_device(args.device)
    grid = load_grid(args.config)
    seeds, only_settings, only_methods = _seeds(args.seeds), _names(args.only_settings), _names(args.only_methods)
    only_seeds = _seeds(args.only_seeds, "--only-seeds")
    results = Path(args.results)
    if args.dry_run:
        runs = plan_runs(grid, seeds, only_settings, only_methods, args.data_dir, args.device, only_seeds=only_seeds,
                         gpus_per_run=args.gpus_per_run)
        out = Console()
        return _dry_run(grid, runs, results, args, out if out.is_terminal else Console(width=150))

    def on_term(signum, frame):  # a polite kill ends like Ctrl-C: finished runs stay, Ray tasks are cancelled
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        outcome = sweep(grid, results, seeds=seeds, only_settings=only_settings, only_methods=only_methods,
                        only_seeds=only_seeds,
                        data_dir=args.data_dir, device=args.device, use_ray=args.ray, ray_address=args.ray_address,
                        ray_num_cpus=args.ray_num_cpus, threads=args.threads, progress=not args.no_progress,
                        console=console, gpus_per_run=args.gpus_per_run)
    finally:
        signal.signal(signal.SIGTERM, previous)
    console.print(f"{grid.name}: {outcome.planned} runs planned, {outcome.skipped} already done, "
                  f"{len(outcome.finished)} finished now, {len(outcome.failed)} failed. Results: {results}")
    for name, error in outcome.failed:
        console.print(f"  [red]failed[/red] {name}: {error}")
    if outcome.failed:
        console.print(f"  (details in {results / 'failed'}; a rerun retries them)")
    return 1 if outcome.failed else 0


def cmd_report(args) -> int:
    from uimer.experiments.report import write_report

    path, text = write_report(Path(args.results), figures=not args.no_figures,
                              output=Path(args.output) if args.output else None)
    if not args.quiet:
        print(text)
    print(f"written: {path}", file=sys.stderr)
    return 0
