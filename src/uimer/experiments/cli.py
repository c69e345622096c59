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


def _warmup(value: str) -> float | str:
    import argparse

    from uimer.training.trainer import parse_warmup

    try:
        return parse_warmup(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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
    r.add_argument("--against", metavar="VARIANT", nargs="+", default=[],
                   help="also pair every row with these rows (e.g. an alpha-0 twin), on test and on dev")
    r.set_defaults(func=cmd_report)
    register_tune(subparsers)
    pr = subparsers.add_parser("presets", help="what `uimer train --method auto` picks per task kind, and why")
    pr.set_defaults(func=cmd_presets)


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
    _warn_unshared(grid, list({(r.cell.variant, r.cell.setting_key): r.cell for r in runs}.values()), console)
    return 0


def _warn_unshared(grid, cells, console) -> None:
    for line in grid.unshared_values(cells):
        console.print(f"[yellow]warning[/yellow]: {line}", highlight=False)


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

    _warn_unshared(grid, grid.cells(only_settings, only_methods), console)
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
                              output=Path(args.output) if args.output else None, against=tuple(args.against))
    if not args.quiet:
        print(text)
    print(f"written: {path}", file=sys.stderr)
    return 0


# -- uimer tune ----------------------------------------------------------------------------------------------
def register_tune(subparsers) -> None:
    from uimer.experiments.config import TASK_CHOICES
    from uimer.experiments.tune import DEFAULT_SPACE, SEARCHERS
    from uimer.interpret import METHODS, add_method_options
    from uimer.training.runner import PAPER_SEEDS
    from uimer.training.trainer import TrainConfig

    defaults = TrainConfig()
    p = subparsers.add_parser(
        "tune", help="choose alpha (and lr, margin) on dev over seeds; resumable; Ray Tune + ASHA optional",
        description="Search alpha, the lr and (IM) the margin for one or more methods on a task, by the mean dev "
        "score over the seeds, never by test. Trials are stored in --out as they finish (a rerun skips them and "
        "resumes a cut-off trial at its next seed); bad trials stop early (ASHA). The chosen configuration is "
        "written to OUT/chosen.json and, with --results, as sweep run files that `uimer report` shows.",
    )
    p.add_argument("--task", required=True, choices=TASK_CHOICES)
    setting = p.add_mutually_exclusive_group()
    setting.add_argument("--shot", type=int, help="n-shot SNIPS subset (the reference sampler)")
    setting.add_argument("--train-size", type=int, help="number of training examples drawn with the seed")
    p.add_argument("--method", nargs="+", required=True, choices=sorted(METHODS), metavar="METHOD",
                   help="method(s) to tune; several make the method a search dimension")
    p.add_argument("--out", required=True, metavar="DIR", help="study directory (created; a rerun continues it)")
    p.add_argument("--results", metavar="DIR", default=None,
                   help="also write the chosen configuration's runs here, in `uimer sweep`'s layout "
                        "(e.g. benchmarks/results), as variant tuned-<method>")
    p.add_argument("--variant", default=None, help="variant name of the written runs (default: tuned-<method>)")
    p.add_argument("--trials", type=int, default=12, help="trials in all (random, optuna; grid: every point)")
    p.add_argument("--searcher", choices=SEARCHERS, default="random")
    p.add_argument("--space", nargs="+", default=[], metavar="NAME=SPEC",
                   help="override a dimension: LOW:HIGH (log-uniform) or a,b,c (values; one value fixes it). "
                        + ", ".join(f"{k}={v}" for k, v in DEFAULT_SPACE.items()) + " by default")
    p.add_argument("--grid-points", type=int, default=3, help="points per range with --searcher grid")
    p.add_argument("--search-seed", type=int, default=0, help="seed of the searcher (not of training)")
    p.add_argument("--no-asha", action="store_true", help="run every trial to the end (no early stopping)")
    p.add_argument("--asha-grace", type=int, default=5, help="first rung, in epochs")
    p.add_argument("--asha-eta", type=int, default=3, help="reduction factor: keep the top 1/eta at each rung")
    p.add_argument("--ray", action="store_true", help="run trials as Ray Tune trials on this machine (1 CPU each)")
    p.add_argument("--ray-num-cpus", type=int, default=None, help="CPUs of the local Ray instance (default: all)")
    p.add_argument("--threads", type=int, default=None, help="torch threads for sequential trials")
    p.add_argument("--seeds", nargs="+", default=[",".join(map(str, PAPER_SEEDS))],
                   help="seeds the objective averages over (default: the paper's 55,1988,12333,42)")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--rationale-file", default=None, help="YAML with your own keywords/regexes")
    p.add_argument("--lr", type=float, default=None, help="fix the lr (default: searched, see --space)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size)
    p.add_argument("--max-epochs", type=int, default=defaults.max_epochs)
    p.add_argument("--patience", type=int, default=defaults.patience)
    p.add_argument("--warmup-epochs", type=_warmup, default=0.0, help="as `uimer train --warmup-epochs`")
    p.add_argument("--dev-size", type=int, default=None, help="select on a seeded, label-stratified dev subset")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--pooling", choices=("cls", "mean"), default="cls")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="show the trials left and their estimated cost; run nothing")
    p.add_argument("--cost-from", action="append", default=[], metavar="DIR",
                   help="sweep results directories whose measured run times feed --dry-run (e.g. benchmarks/results)")
    p.set_defaults(func=cmd_tune, method_dests=list(add_method_options(p)))


def cmd_tune(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from uimer.experiments.tune import Study, load_trials, objective, tune, write_chosen
    from uimer.training.runner import RunSpec
    from uimer.training.trainer import TrainConfig

    space = {}
    for item in args.space:
        name, sep, value = item.partition("=")
        if not sep:
            raise UimerError(f"--space {item}: expected NAME=SPEC, e.g. alpha=0.01:10 or lr=1e-4,2e-4")
        space[name] = value
    if args.lr is not None:
        if "lr" in space:
            raise UimerError("--lr fixes the lr and --space lr=... searches it: give one of them")
        space["lr"] = repr(args.lr)
    options = {dest: getattr(args, dest) for dest in args.method_dests}
    if args.task == "jsonl" and not args.data_dir:
        raise UimerError("--task jsonl needs --data-dir pointing at the folder with train/dev/test.jsonl")
    config = TrainConfig(lr=args.lr or TrainConfig().lr, batch_size=args.batch_size, max_epochs=args.max_epochs, patience=args.patience,
                         warmup_epochs=args.warmup_epochs, device=args.device, method_options=options)
    data_dir = str(Path(args.data_dir).expanduser().resolve()) if args.data_dir else None
    rationale_file = str(Path(args.rationale_file).expanduser().resolve()) if args.rationale_file else None
    base = RunSpec(task=args.task, encoder=args.encoder, shot=args.shot, train_size=args.train_size,
                   seeds=_seeds(args.seeds) or [], data_dir=data_dir, output_dir="", dev_size=args.dev_size,
                   max_length=args.max_length, pooling=args.pooling, rationale_file=rationale_file, config=config)
    study = Study(base=base, methods=list(dict.fromkeys(args.method)), space=space, searcher=args.searcher,
                  trials=args.trials, seed=args.search_seed, grid_points=args.grid_points, asha=not args.no_asha,
                  grace=args.asha_grace, eta=args.asha_eta)
    console = Console(stderr=True)
    out = Path(args.out)
    if args.dry_run:
        return _tune_dry_run(study, out, args)

    def on_term(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        outcome = tune(study, out, use_ray=args.ray, ray_num_cpus=args.ray_num_cpus, threads=args.threads,
                       progress=not args.no_progress, console=console)
    finally:
        signal.signal(signal.SIGTERM, previous)
    table = Table(title=f"uimer tune: {out} (objective: mean dev over {len(study.seeds)} seeds)")
    for column in ("trial", "method", "params", "status", "seeds", "mean dev"):
        table.add_column(column)
    trials = load_trials(out)
    for trial in sorted(trials, key=lambda t: -(objective(t) if objective(t) is not None else -1)):
        value = objective(trial)
        table.add_row(trial["id"], trial["method"], ", ".join(f"{k} {v:g}" for k, v in trial["params"].items()),
                      trial.get("status", "?"), str(len(trial.get("seeds", []))),
                      f"{100 * value:.2f}" if value is not None else "")
    out_console = Console() if sys.stdout.isatty() else Console(width=150)
    out_console.print(table)
    for name, error in outcome.failed:
        console.print(f"  [red]failed[/red] {name}: {error}")
    chosen = write_chosen(out, Path(args.results) if args.results else None, args.variant)
    tests = [p["test"] for p in chosen["per_seed"] if p["test"] is not None]
    out_console.print(f"chosen on dev: {chosen['trial']} ({chosen['method']}, "
                      + ", ".join(f"{k} {v:g}" for k, v in chosen["params"].items())
                      + f"): mean dev {100 * chosen['dev_mean']:.2f}"
                      + (f", its test {100 * chosen['test_mean']:.2f} over {len(tests)} seeds" if tests else ""))
    out_console.print(f"rerun it: {chosen['command']}")
    out_console.print(f"written: {out / 'chosen.json'}"
                      + (f"; runs under {args.results} as variant {chosen['variant']} (uimer report {args.results})"
                         if args.results else ""))
    return 1 if outcome.failed else 0


def _tune_dry_run(study, out: Path, args) -> int:
    from rich.console import Console
    from rich.table import Table

    from uimer.experiments.tune import estimate

    rows = estimate(study, out, [Path(d) for d in args.cost_from])
    table = Table(title=f"uimer tune --dry-run: {out} ({rows[0]['column']}, {len(study.seeds)} seeds, "
                        f"searcher {study.searcher})")
    for column in ("method", "space", "trials left", "runs left", "s / run (measured)", "at most"):
        table.add_column(column)
    total, unknown = 0.0, False
    for row in rows:
        dims = ", ".join(f"{n} {d.describe()}" for n, d in study.dims(row["method"]).items())
        per_run = f"{row['seconds_per_run']:.0f}" if row["seconds_per_run"] is not None else "?"
        table.add_row(row["method"], dims, str(row["trials"]), str(row["runs"]), per_run,
                      f"{row['seconds'] / 3600:.2f} h" if row["seconds"] is not None else "?")
        total += row["seconds"] or 0.0
        unknown = unknown or (row["seconds"] is None and row["runs"] > 0)
    console = Console() if sys.stdout.isatty() else Console(width=150)
    console.print(table)
    console.print(f"At most {total / 3600:.2f} h of run time" + (" (+ methods without a measurement)" if unknown
                                                                 else "")
                  + (f", before ASHA stops trials outside the top 1/{study.eta} of a rung (rungs at "
                     f"{study.grace}, {study.grace * study.eta}, ... epochs; the saving is not measured yet)"
                     if study.asha else "") + "; --ray runs trials in parallel, one CPU each."
                  + ("" if args.cost_from else " Give --cost-from DIR (sweep results) for measured run times."))
    return 0


def cmd_presets(args) -> int:
    from uimer.experiments.presets import PRESETS, load_presets

    for kind, preset in load_presets().items():
        print(f"{kind}: {preset.describe()}")
        print(f"  source: {preset.source}")
    print(f"(from {PRESETS}; `uimer train --method auto` uses these unless you give the flag yourself)")
    return 0
