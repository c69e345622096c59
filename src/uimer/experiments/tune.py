"""`uimer tune`: choose α (and the lr, and the margin where a method has one) on dev, never on test.

Why: the paper's Tables 6-8 were tuned for BERT-base on SNIPS and e-SNLI; a user's own encoder and data
need their own values, and the committed grid shows how far the published ones can be off.

A study lives in one directory (`--out`)::

    DIR/study.json            what is searched: task, setting, seeds, fixed training settings, space, searcher
    DIR/trials/<id>.json      one trial: method, params, status (running | complete | pruned | failed), the dev
                              score of every finished seed, its ASHA rung values; never a test score
    DIR/sealed/<id>.json      the test scores of the trial's seeds, read only to write the *chosen* trial's runs
    DIR/chosen.json           the chosen configuration with its dev and test per seed
    DIR/tune.log              what happened, with timestamps
    DIR/ray/                  Ray Tune's own state with --ray (git-ignored by DIR/.gitignore; not needed to resume)

Objective: the mean over the seeds of the best dev score (the score early stopping kept). Choice: the
complete trial with the highest objective (ties: the earlier trial). Test is scored by the training loop at
the best dev epoch, as in every run, but sealed away: `choose` only ever sees the trial files.

Early stopping of bad trials (ASHA-style, asynchronous successive halving): every epoch reports a running
score, the mean over the seeds started so far of their best dev so far, at step `seed_index x max_epochs +
epoch + 1` (DM: epochs of its rounds; its warm-up is the baseline and is not compared). At rungs
`grace x eta^k` a trial stops when its score is below the (1 - 1/eta) quantile of the
scores earlier trials had at that rung. Sequentially the rungs are rebuilt from the trial files on a rerun;
on Ray, Ray Tune's `ASHAScheduler` does the same within one invocation.

Searchers: `random` (the default: a seeded, reproducible list of candidates, log-uniform for ranges, uniform
over lists; trial i is the same whatever --trials says, so raising --trials extends a study), `grid` (the
product of the dimensions' grid points) and `optuna` (TPE, `pip install optuna`; a rerun re-tells the stored
trials). With `--ray` the trials run as Ray Tune trials (1 CPU each, local machine: workers write the trial
files); without Ray they run one after another in this process.

Resuming: a trial file is written atomically when the trial starts and after every seed, so a killed study
resumes at the next unfinished seed of its running trial; complete and pruned trials are skipped.

Cost: a trial costs at most len(seeds) runs of the method (a few-shot MiniLM run on 1 CPU: intent-1 baseline
≈ 135 s, IM ≈ 1.3-1.8x, GB ≈ 1.6x, DM 2.5-5x); ASHA stops most bad trials within the first seed. See README.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from uimer.atomic import write_json_atomic
from uimer.errors import ConfigError, UimerError
from uimer.experiments.config import column_name
from uimer.experiments.sweep import read_json
from uimer.training.runner import RunSpec
from uimer.training.trainer import TrainConfig

log = logging.getLogger("uimer.tune")

TRIALS, SEALED = "trials", "sealed"
SCHEMA = 1
# The paper's search grids (Tables 6-8) span these: α from 1e-4 to 10, lr {8e-5, 1e-4, 2e-4, 4e-4}, ε 0.01-4.
DEFAULT_SPACE = {"alpha": "0.001:10", "lr": "8e-5,1e-4,2e-4,4e-4", "margin": "0.01:4"}
SEARCHERS = ("random", "grid", "optuna")


class TuneError(UimerError):
    """A study cannot start or continue (another study in the directory, nothing complete to choose)."""


class TrialPruned(Exception):
    """Raised from the epoch callback when ASHA stops a trial."""


# -- the search space --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Dimension:
    """A log-uniform range (`low:high`) or a list of values (`a,b,c`; one value fixes the dimension)."""

    name: str
    values: tuple[float, ...] = ()
    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, name: str, text: str) -> Dimension:
        try:
            if ":" in text:
                low, high = (float(x) for x in text.split(":"))
                if not 0 < low < high:
                    raise ValueError
                return cls(name, low=low, high=high)
            values = tuple(float(x) for x in text.split(",") if x.strip())
            if not values:
                raise ValueError
            return cls(name, values=values)
        except ValueError:
            raise ConfigError(f"--space {name}={text}: expected LOW:HIGH (log-uniform, 0 < LOW < HIGH) or "
                              "a comma-separated list of numbers") from None

    def sample(self, rng: random.Random) -> float:
        if self.values:
            return rng.choice(self.values)
        return float(f"{math.exp(rng.uniform(math.log(self.low), math.log(self.high))):.3g}")

    def grid(self, points: int) -> list[float]:
        if self.values:
            return list(self.values)
        if points == 1:
            return [float(f"{math.sqrt(self.low * self.high):.3g}")]
        ratio = (self.high / self.low) ** (1 / (points - 1))
        return [float(f"{self.low * ratio ** i:.3g}") for i in range(points)]

    def describe(self) -> str:
        return ",".join(f"{v:g}" for v in self.values) if self.values else f"{self.low:g}:{self.high:g} (log)"


def method_family(method: str) -> str:
    from uimer.interpret import METHODS

    if method not in METHODS:
        raise ConfigError(f"--method {method}: unknown; choose from {', '.join(sorted(METHODS))}")
    return METHODS[method].family


def search_space(method: str, overrides: dict[str, str] | None = None) -> dict[str, Dimension]:
    """α and lr for every method with an alignment loss (the baseline: lr only), the margin for IM."""
    overrides = overrides or {}
    unknown = set(overrides) - set(DEFAULT_SPACE)
    if unknown:
        raise ConfigError(f"--space: unknown dimension(s) {', '.join(sorted(unknown))}; known: "
                          f"{', '.join(DEFAULT_SPACE)}")
    family = method_family(method)
    names = ["lr"] if family == "baseline" else ["alpha", "lr"]
    if family == "im":
        names.append("margin")
    return {n: Dimension.parse(n, overrides.get(n, DEFAULT_SPACE[n])) for n in names}


# -- the study ---------------------------------------------------------------------------------------------
@dataclass
class Study:
    """What one study searches; `base` carries everything fixed (its seeds are the objective's seeds)."""

    base: RunSpec
    methods: list[str]
    space: dict[str, str] = field(default_factory=dict)  # --space overrides
    searcher: str = "random"
    trials: int = 12
    seed: int = 0
    grid_points: int = 3
    asha: bool = True
    grace: int = 5
    eta: int = 3

    def dims(self, method: str) -> dict[str, Dimension]:
        return search_space(method, self.space)

    @property
    def seeds(self) -> list[int]:
        return list(self.base.seeds)

    @property
    def steps_per_seed(self) -> int:
        return self.base.config.max_epochs

    def fingerprint(self) -> str:
        """What must match for a directory's trials to belong to this study (--trials may grow)."""
        data = {
            # every option: the base spec stands for all the study's methods (and keeps the fingerprints
            # of studies made before fingerprints covered only a method's own options)
            "spec": self.base.fingerprint(every_option=True), "seeds": self.seeds, "methods": self.methods,
            "space": {m: {n: d.describe() for n, d in self.dims(m).items()} for m in self.methods},
            "searcher": self.searcher, "seed": self.seed, "grid_points": self.grid_points,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA, "fingerprint": self.fingerprint(), "base": dataclasses.asdict(self.base),
            "methods": self.methods, "space": self.space, "searcher": self.searcher, "trials": self.trials,
            "seed": self.seed, "grid_points": self.grid_points, "asha": self.asha, "grace": self.grace,
            "eta": self.eta,
            "dims": {m: {n: d.describe() for n, d in self.dims(m).items()} for m in self.methods},
        }

    @classmethod
    def from_dict(cls, data: dict) -> Study:
        base = dict(data["base"])
        base["config"] = TrainConfig(**base["config"])
        keys = ("methods", "space", "searcher", "trials", "seed", "grid_points", "asha", "grace", "eta")
        return cls(base=RunSpec(**base), **{k: data[k] for k in keys})

    def spec_for(self, method: str, params: dict) -> RunSpec:
        """The RunSpec of one trial (all seeds): the fixed settings with the trial's values."""
        config = self.base.config
        options = dict(config.method_options)
        if "margin" in params:
            options["margin"] = float(params["margin"])
        config = dataclasses.replace(config, alpha=float(params.get("alpha", config.alpha)),
                                     lr=float(params.get("lr", config.lr)), method_options=options)
        return dataclasses.replace(self.base, method=method, config=config, seeds=self.seeds)


def trial_id(method: str, params: dict) -> str:
    text = json.dumps({"method": method, "params": params}, sort_keys=True)
    return f"{method}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def candidates(study: Study) -> list[dict]:
    """The random or grid searcher's trials, in order: [{id, number, method, params}]."""
    out: list[dict] = []
    if study.searcher == "grid":
        for method in study.methods:
            dims = study.dims(method)
            for values in itertools.product(*(d.grid(study.grid_points) for d in dims.values())):
                out.append({"method": method, "params": dict(zip(dims, values, strict=True))})
    else:
        for i in range(study.trials):
            method = study.methods[i % len(study.methods)]
            rng = random.Random(f"{study.seed}:{i}")
            out.append({"method": method, "params": {n: d.sample(rng) for n, d in study.dims(method).items()}})
    seen, unique = set(), []
    for number, cand in enumerate(out):
        cand = {"id": trial_id(cand["method"], cand["params"]), "number": number, **cand}
        if cand["id"] not in seen:  # a categorical-only space can draw the same point twice
            seen.add(cand["id"])
            unique.append(cand)
    return unique


# -- files -------------------------------------------------------------------------------------------------
def _now() -> str:
    from uimer.experiments.sweep import utc_now

    return utc_now()


def log_line(out: Path, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "tune.log", "a") as handle:
        handle.write(f"{_now()} {text}\n")


def open_study(out: Path, study: Study) -> None:
    """Write DIR/study.json, or check that the directory holds this same study."""
    out = Path(out)
    stored = read_json(out / "study.json")
    if stored is not None and stored.get("fingerprint") != study.fingerprint():
        raise TuneError(f"{out} holds another study (task, seeds, methods, space or searcher differ); "
                        "use another --out, or remove it to start over")
    write_json_atomic(out / "study.json", study.to_dict())
    if not (out / ".gitignore").exists():  # Ray Tune's own state is large and not needed to resume
        (out / ".gitignore").write_text("ray/\n")


def load_trials(out: Path) -> list[dict]:
    """Every trial file, in trial order. These carry dev scores only."""
    trials = [t for p in sorted((Path(out) / TRIALS).glob("*.json")) if (t := read_json(p))]
    return sorted(trials, key=lambda t: (t.get("number", 1 << 30), t["id"]))


def objective(trial: dict) -> float | None:
    """Mean dev score over the study's seeds; None unless every seed finished."""
    if trial.get("status") != "complete":
        return None
    devs = [s["dev"] for s in trial.get("seeds", [])]
    return statistics.fmean(devs) if devs else None


def choose(trials: list[dict]) -> dict | None:
    """The complete trial with the highest mean dev (ties: the earlier trial). Reads nothing but dev."""
    best: tuple[float, dict] | None = None
    for trial in trials:
        value = objective(trial)
        if value is not None and (best is None or value > best[0]):
            best = (value, trial)
    return best[1] if best else None


# -- ASHA --------------------------------------------------------------------------------------------------
class Asha:
    """Asynchronous successive halving over the steps of a trial (see the module docstring)."""

    def __init__(self, grace: int, eta: int, max_step: int, history: list[dict] | None = None):
        self.eta = max(2, eta)
        self.milestones: list[int] = []
        step = max(1, grace)
        while step < max_step:
            self.milestones.append(step)
            step *= self.eta
        self.recorded: dict[int, list[float]] = {m: [] for m in self.milestones}
        for trial in history or []:
            self.add(trial)

    def add(self, trial: dict) -> None:
        for step, value in (trial.get("rungs") or {}).items():
            if int(step) in self.recorded:
                self.recorded[int(step)].append(float(value))

    def check(self, rungs: dict, step: int, score: float) -> bool:
        """Record the score at every milestone just reached; True if the trial should stop."""
        stop = False
        for milestone in self.milestones:
            if step >= milestone and str(milestone) not in rungs:
                rungs[str(milestone)] = score
                values = [*self.recorded[milestone], score]
                self.recorded[milestone].append(score)
                cutoff = _quantile(values, 1 - 1 / self.eta)
                stop = stop or score < cutoff
        return stop


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = q * (len(ordered) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


# -- one trial ---------------------------------------------------------------------------------------------
SeedFunction = Callable[[RunSpec, int, Callable[[dict], None]], dict]


def train_seed(spec: RunSpec, seed: int, on_epoch: Callable[[dict], None]) -> dict:
    """Train one seed of a trial; returns the SeedResult as a dict (dev, test, best_epoch, ...)."""
    from uimer.experiments.sweep import encoded_task, resolve_device
    from uimer.training.runner import run_seed

    device = resolve_device(spec.config.device)
    spec = dataclasses.replace(spec, config=dataclasses.replace(spec.config, device=str(device)))
    result = run_seed(spec, encoded_task(spec), seed, device, on_epoch)
    return dataclasses.asdict(result)


def run_trial(out: Path, study: Study, cand: dict, report: Callable[[dict], bool],
              seed_fn: SeedFunction | None = None, on_seed: Callable[[int], None] | None = None) -> dict:
    """Run (or resume) one trial; `report(metrics)` is called every epoch and returns True to stop it.
    Writes DIR/trials/<id>.json at the start and after every seed, DIR/sealed/<id>.json alongside."""
    seed_fn = seed_fn or train_seed
    path, sealed_path = Path(out) / TRIALS / f"{cand['id']}.json", Path(out) / SEALED / f"{cand['id']}.json"
    trial = read_json(path) or {"id": cand["id"], "number": cand["number"], "method": cand["method"],
                            "params": cand["params"], "seeds": [], "rungs": {}, "started_at": _now()}
    if trial.get("status") in ("complete", "pruned"):
        return trial
    sealed = read_json(sealed_path) or {"id": cand["id"], "test": {}}
    trial.update(status="running", error=None)
    write_json_atomic(path, trial)
    spec = study.spec_for(cand["method"], cand["params"])
    # DM trains a baseline first (its warm-up); only the epochs with the alignment loss are worth comparing
    rounds_only = method_family(cand["method"]) == "dm"
    done = {s["seed"] for s in trial["seeds"]}
    start = time.perf_counter()
    try:
        for index, seed in enumerate(study.seeds):
            if seed in done:
                continue
            if on_seed:
                on_seed(seed)
            best = -math.inf
            epochs = 0
            earlier = [s["dev"] for s in trial["seeds"]]

            def on_epoch(record: dict, index=index, earlier=earlier, seed=seed) -> None:
                nonlocal best, epochs
                if record.get("dev") is None or (rounds_only and record.get("round") is None):
                    return
                epochs += 1
                best = max(best, float(record["dev"]))
                step = index * study.steps_per_seed + min(epochs, study.steps_per_seed)
                score = statistics.fmean([*earlier, best])
                if report({"step": step, "score": score, "seed": seed, "epoch": epochs, "dev": record["dev"],
                           "rungs": trial["rungs"]}):
                    raise TrialPruned

            result = seed_fn(spec, seed, on_epoch)
            trial["seeds"].append({k: result[k] for k in ("seed", "dev", "best_epoch", "epochs_run", "seconds")
                                   if k in result} | {"history": [{k: v for k, v in h.items() if k != "test"}
                                                                  for h in result.get("history", [])]})
            sealed["test"][str(seed)] = result["test"]
            write_json_atomic(sealed_path, sealed)  # first: a trial file never names a seed without its test
            write_json_atomic(path, trial)
    except TrialPruned:
        trial.update(status="pruned", finished_at=_now())
    except Exception as err:
        trial.update(status="failed", error=f"{type(err).__name__}: {err}", finished_at=_now())
        write_json_atomic(path, trial)
        raise
    else:
        trial.update(status="complete", objective=objective({**trial, "status": "complete"}), finished_at=_now())
    trial["seconds"] = trial.get("seconds", 0.0) + time.perf_counter() - start
    write_json_atomic(path, trial)
    return trial


# -- running a study ---------------------------------------------------------------------------------------
@dataclass
class TuneOutcome:
    ran: int = 0
    skipped: int = 0
    pruned: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    chosen: dict | None = None


def _optuna_distributions(study: Study):
    import optuna

    dists = {"method": optuna.distributions.CategoricalDistribution(study.methods)} if len(study.methods) > 1 else {}
    for method in study.methods:
        for name, dim in study.dims(method).items():
            key = name if len(study.methods) == 1 else f"{method}:{name}"
            dists[key] = (optuna.distributions.CategoricalDistribution(list(dim.values)) if dim.values
                          else optuna.distributions.FloatDistribution(dim.low, dim.high, log=True))
    return dists


def _from_optuna(study: Study, params: dict) -> tuple[str, dict]:
    method = params.get("method", study.methods[0])
    prefix = "" if len(study.methods) == 1 else f"{method}:"
    values = {}
    for name in study.dims(method):
        value = float(params[prefix + name])
        values[name] = value if study.dims(method)[name].values else float(f"{value:.3g}")
    return method, values


def _import_optuna():
    try:
        import optuna
    except ImportError:
        raise TuneError("--searcher optuna needs Optuna: pip install optuna (or pip install 'uimer[tune]')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune(study: Study, out: Path, *, use_ray: bool = False, ray_num_cpus: int | None = None,
         threads: int | None = None, progress: bool = True, seed_fn: SeedFunction | None = None,
         console=None) -> TuneOutcome:
    """Run every trial of the study that is not finished yet; safe to interrupt and rerun."""
    from rich.console import Console

    out = Path(out)
    console = console or Console(stderr=True)
    if study.searcher not in SEARCHERS:
        raise ConfigError(f"--searcher {study.searcher}: choose from {', '.join(SEARCHERS)}")
    if study.searcher == "optuna":
        _import_optuna()
    open_study(out, study)
    outcome = TuneOutcome()
    mode = "ray" if use_ray else "sequential"
    log_line(out, f"tune: {len(study.methods)} method(s), searcher {study.searcher}, {study.trials} trial(s), "
                  f"seeds {study.seeds}, {mode}")
    if use_ray:
        _tune_on_ray(study, out, outcome, ray_num_cpus, progress, seed_fn, console)
    else:
        _tune_sequential(study, out, outcome, threads, progress, seed_fn, console)
    outcome.chosen = choose(load_trials(out))
    log_line(out, f"finished: {outcome.ran} run, {outcome.skipped} skipped, {outcome.pruned} pruned, "
                  f"{len(outcome.failed)} failed; chosen {outcome.chosen['id'] if outcome.chosen else None}")
    return outcome


def _tune_sequential(study: Study, out: Path, outcome: TuneOutcome, threads: int | None, progress: bool,
                     seed_fn: SeedFunction | None, console) -> None:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if threads:
        torch.set_num_threads(threads)
    stored = {t["id"]: t for t in load_trials(out)}
    asha = Asha(study.grace, study.eta, len(study.seeds) * study.steps_per_seed, list(stored.values()))
    finished = {i for i, t in stored.items() if t.get("status") in ("complete", "pruned")}
    optuna_study = dists = None
    if study.searcher == "optuna":
        optuna = _import_optuna()
        # seeded by the number of stored trials too: the same seed would re-propose a resumed study's first points
        sampler = optuna.samplers.TPESampler(seed=study.seed + 7919 * len(stored))
        optuna_study = optuna.create_study(direction="maximize", sampler=sampler)
        dists = _optuna_distributions(study)
        for trial in stored.values():
            if trial.get("status") in ("complete", "pruned"):
                params = {("" if len(study.methods) == 1 else f"{trial['method']}:") + k: v
                          for k, v in trial["params"].items()}
                if len(study.methods) > 1:
                    params["method"] = trial["method"]
                state = optuna.trial.TrialState.COMPLETE if trial["status"] == "complete" \
                    else optuna.trial.TrialState.PRUNED
                optuna_study.add_trial(optuna.trial.create_trial(
                    params={k: v for k, v in params.items() if k in dists}, distributions=dists, state=state,
                    value=objective(trial) if state == optuna.trial.TrialState.COMPLETE else None))
        # trials cut off by a kill are finished first, with their stored values
        queue = [t for t in stored.values() if t.get("status") not in ("complete", "pruned")]
    else:
        queue = candidates(study)
    todo_count = max(0, study.trials - len(finished)) if study.searcher == "optuna" else \
        sum(c["id"] not in finished for c in queue)
    outcome.skipped = len(finished)
    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=console, disable=not progress)
    with bar:
        overall = bar.add_task("trials", total=todo_count, status="")
        number, repeats = len(stored), 0
        while True:
            if study.searcher == "optuna":
                if queue:
                    cand, ask = queue.pop(0), None
                elif outcome.ran + len(finished) < study.trials:
                    ask = optuna_study.ask(dists)
                    method, params = _from_optuna(study, ask.params)
                    cand = {"id": trial_id(method, params), "number": number, "method": method, "params": params}
                    if cand["id"] in finished:  # proposed again (a categorical space): tell what it gave
                        known = read_json(out / TRIALS / f"{cand['id']}.json") or {}
                        value = objective(known)
                        optuna_study.tell(ask, value) if value is not None else optuna_study.tell(
                            ask, state=optuna.trial.TrialState.PRUNED)
                        repeats += 1
                        if repeats > 100:
                            break
                        continue
                    number += 1
                else:
                    break
            else:
                if not queue:
                    break
                cand, ask = queue.pop(0), None
                if cand["id"] in finished:
                    continue
            epochs = bar.add_task(f"  {cand['id']}", total=study.steps_per_seed, status="")

            def report(metrics: dict, task_id=epochs) -> bool:
                bar.update(task_id, advance=1, status=f"seed {metrics['seed']} dev {metrics['dev']:.4f} "
                                                      f"score {metrics['score']:.4f}")
                return study.asha and asha.check(metrics["rungs"], metrics["step"], metrics["score"])

            def on_seed(seed: int, task_id=epochs) -> None:
                bar.reset(task_id, total=study.steps_per_seed)

            log_line(out, f"start {cand['id']} {cand['params']}")
            try:
                trial = run_trial(out, study, cand, report, seed_fn, on_seed)
            except Exception as err:  # one broken trial must not stop the study
                outcome.failed.append((cand["id"], f"{type(err).__name__}: {err}"))
                log_line(out, f"FAILED {cand['id']}: {type(err).__name__}: {err}")
                if ask is not None:
                    optuna_study.tell(ask, state=_import_optuna().trial.TrialState.FAIL)
                bar.remove_task(epochs)
                bar.update(overall, advance=1)
                continue
            outcome.ran += 1
            outcome.pruned += trial["status"] == "pruned"
            value = objective(trial)
            if ask is not None:
                optuna = _import_optuna()
                if value is None:
                    optuna_study.tell(ask, state=optuna.trial.TrialState.PRUNED)
                else:
                    optuna_study.tell(ask, value)
            text = f"{trial['status']} {cand['id']} {cand['params']}" + (
                f" mean dev {100 * value:.2f}" if value is not None else "")
            log_line(out, text)
            if not progress:
                console.print(text)
            bar.remove_task(epochs)
            best = choose(load_trials(out))
            bar.update(overall, advance=1, status=f"best so far: {best['id']} dev {100 * objective(best):.2f}"
                       if best else "")


def _ray_trainable(config: dict, study_dict: dict, out: str, threads: int, seed_fn=None) -> None:
    """One Ray Tune trial (module level, so it pickles by reference)."""
    import torch
    from ray import tune as ray_tune

    torch.set_num_threads(max(1, threads))
    study = Study.from_dict(study_dict)
    if "trial" in config:
        cand = config["trial"]
    else:  # Optuna through Ray: the trial is named by its values
        method, params = _from_optuna(study, config)
        cand = {"id": trial_id(method, params), "number": 10**6 + int(time.time()), "method": method,
                "params": params}

    def report(metrics: dict) -> bool:
        ray_tune.report({"step": metrics["step"], "score": metrics["score"], "trial": cand["id"]})
        return False  # Ray's ASHAScheduler stops the trial itself

    trial = run_trial(Path(out), study, cand, report, seed_fn)
    value = objective(trial)
    ray_tune.report({"step": len(study.seeds) * study.steps_per_seed + 1, "score": value if value is not None else 0.0,
                     "trial": cand["id"], "done_trial": True})


def _tune_on_ray(study: Study, out: Path, outcome: TuneOutcome, num_cpus: int | None, progress: bool,
                 seed_fn: SeedFunction | None, console) -> None:
    from uimer.experiments.sweep import import_ray

    ray = import_ray()
    try:
        from ray import tune as ray_tune
        from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    except ImportError:
        raise TuneError("--ray needs Ray Tune: pip install 'ray[tune]' (or pip install 'uimer[tune]')") from None
    stored = {t["id"]: t for t in load_trials(out)}
    finished = {i for i, t in stored.items() if t.get("status") in ("complete", "pruned")}
    outcome.skipped = len(finished)
    search_alg, num_samples = None, 1
    if study.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        done = [t for t in stored.values() if t.get("status") == "complete"]
        points = []
        for t in done:
            params = {("" if len(study.methods) == 1 else f"{t['method']}:") + k: v for k, v in t["params"].items()}
            if len(study.methods) > 1:
                params["method"] = t["method"]
            points.append(params)
        search_alg = OptunaSearch(space=_optuna_distributions(study), metric="score", mode="max", seed=study.seed,
                                  points_to_evaluate=points or None,
                                  evaluated_rewards=[objective(t) for t in done] or None)
        num_samples = max(0, study.trials - len(finished)) + len(points)
        param_space: dict = {}
    else:
        todo = [c for c in candidates(study) if c["id"] not in finished]
        if not todo:
            return
        param_space = {"trial": ray_tune.grid_search(todo)}
    if num_samples == 0:
        return
    # one step past the last epoch: the trial's final report, so that ASHA never stops a trial that reached
    # its last epoch before it has written its result
    max_t = len(study.seeds) * study.steps_per_seed + 1

    class RecordingAsha(ASHAScheduler):
        """Ray's ASHA, remembering which trials it stopped: only those count as pruned (a trial cut off by
        Ctrl-C stays 'running' and resumes on the next run)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.stopped: set[str] = set()

        def on_trial_result(self, tune_controller, trial, result: dict) -> str:
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == self.STOP and not result.get("done_trial"):
                self.stopped.add(result.get("trial"))
            return decision

    scheduler = (RecordingAsha(time_attr="step", metric="score", mode="max", max_t=max_t,
                               grace_period=min(study.grace, max_t), reduction_factor=study.eta)
                 if study.asha else FIFOScheduler(metric="score", mode="max"))
    stopped = scheduler.stopped if study.asha else set()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=True,
                 object_store_memory=256 * 1024 * 1024)
    try:
        trainable = ray_tune.with_resources(
            ray_tune.with_parameters(_ray_trainable, study_dict=study.to_dict(), out=str(out.resolve()), threads=1,
                                     seed_fn=seed_fn), {"cpu": 1})
        tuner = ray_tune.Tuner(
            trainable, param_space=param_space,
            tune_config=ray_tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples),
            run_config=ray_tune.RunConfig(name="ray", storage_path=str((out / "ray").resolve()),
                                          verbose=1 if progress else 0),
        )
        results = tuner.fit()
        for result in results:
            trial_key = (result.metrics or {}).get("trial") or (result.config.get("trial") or {}).get("id")
            if result.error is not None:
                outcome.failed.append((str(trial_key), str(result.error).strip().splitlines()[-1][:300]))
                continue
            path = out / TRIALS / f"{trial_key}.json"
            trial = read_json(path)
            if trial is None:
                continue
            if trial.get("status") == "running" and trial["id"] in stopped:  # ASHA stopped it mid-seed
                trial.update(status="pruned", finished_at=_now())
                write_json_atomic(path, trial)
            elif trial.get("status") == "running":  # interrupted: resumes on the next run
                continue
            if trial["id"] not in finished:
                outcome.ran += 1
                outcome.pruned += trial["status"] == "pruned"
                log_line(out, f"{trial['status']} {trial['id']} {trial['params']}")
    finally:
        if started_here:
            ray.shutdown()


# -- cost ----------------------------------------------------------------------------------------------------
def estimate(study: Study, out: Path, cost_from: list[Path]) -> list[dict]:
    """Per method: trials left, runs left (trials x seeds, before pruning) and the mean measured seconds of one
    run of that method in this column in `cost_from` (sweep results directories), when measured there."""
    from uimer.experiments.sweep import measured_seconds

    measured = measured_seconds([Path(d) for d in cost_from])
    column = column_name(study.base.task, study.base.setting)
    stored = {t["id"]: t for t in load_trials(out)} if Path(out).exists() else {}
    if study.searcher == "optuna":
        planned = [{"id": f"optuna-{i}", "method": study.methods[i % len(study.methods)]}
                   for i in range(max(0, study.trials - len(stored)))]
    else:
        planned = [c for c in candidates(study) if stored.get(c["id"], {}).get("status") not in ("complete", "pruned")]
    rows = []
    for method in study.methods:
        mine = [c for c in planned if c["method"] == method]
        runs = sum(len(study.seeds) - len(stored.get(c["id"], {}).get("seeds", [])) for c in mine)
        seconds = measured.get((column, "method:" + method))
        per_run = statistics.fmean(seconds) if seconds else None
        rows.append({"method": method, "trials": len(mine), "runs": runs, "seconds_per_run": per_run,
                     "seconds": per_run * runs if per_run is not None else None, "column": column})
    return rows


# -- the chosen configuration, written like a sweep run ----------------------------------------------------
def write_chosen(out: Path, results: Path | None, variant: str | None = None) -> dict:
    """DIR/chosen.json, and with `results` one run file per seed under results/runs/<task>/<setting>/<variant>/
    in `uimer sweep`'s format, so `uimer report results` shows it beside the baseline (paired deltas)."""
    out = Path(out)
    study_data = read_json(out / "study.json")
    if study_data is None:
        raise TuneError(f"{out}: no study here (study.json missing)")
    study = Study.from_dict(study_data)
    trials = load_trials(out)
    chosen = choose(trials)
    if chosen is None:
        raise TuneError(f"{out}: no complete trial yet to choose from (run `uimer tune` again to continue)")
    sealed = read_json(out / SEALED / f"{chosen['id']}.json") or {"test": {}}
    spec = study.spec_for(chosen["method"], chosen["params"])
    variant = variant or f"tuned-{chosen['method']}"
    column = column_name(spec.task, spec.setting)
    tuned_meta = {"study": str(out), "trial": chosen["id"], "params": chosen["params"], "searcher": study.searcher,
                  "trials_complete": sum(t.get("status") == "complete" for t in trials),
                  "trials_pruned": sum(t.get("status") == "pruned" for t in trials),
                  "objective_dev": objective(chosen)}
    per_seed = []
    for s in chosen["seeds"]:
        test = sealed["test"].get(str(s["seed"]))
        per_seed.append({"seed": s["seed"], "dev": s["dev"], "test": test, "best_epoch": s.get("best_epoch")})
        if results is None or test is None:
            continue
        relpath = Path("runs") / spec.task / spec.setting / variant / f"seed{s['seed']}.json"
        spec_dict = {k: v for k, v in dataclasses.asdict(spec).items() if k not in ("seeds", "output_dir", "save_model")}
        record = {
            "schema": 1, "variant": variant, "method": chosen["method"], "family": method_family(chosen["method"]),
            "label": f"{chosen['method']} tuned on dev ({', '.join(f'{k} {v:g}' for k, v in chosen['params'].items())})",
            "paper": None, "setting_key": column, "column": column, "task": spec.task, "setting": spec.setting,
            "encoder": spec.encoder, "seed": s["seed"], "fingerprint": spec.fingerprint(), "relpath": str(relpath),
            "versions": spec.versions(), "dev": s["dev"], "test": test, "best_epoch": s.get("best_epoch"), "epochs_run": s.get("epochs_run"),
            "seconds": s.get("seconds"), "wall_seconds": s.get("seconds"), "history": s.get("history", []),
            "device": spec.config.device, "finished_at": chosen.get("finished_at"), "spec": spec_dict,
            "tuned": tuned_meta,
        }
        write_json_atomic(Path(results) / relpath, record)
    tests = [p["test"] for p in per_seed if p["test"] is not None]
    summary = {
        "variant": variant, "column": column, "method": chosen["method"], "params": chosen["params"],
        "trial": chosen["id"], "dev_mean": objective(chosen), "test_mean": statistics.fmean(tests) if tests else None,
        "per_seed": per_seed, "results": str(results) if results is not None else None,
        "command": train_command(spec),
        **{k: v for k, v in tuned_meta.items() if k not in ("trial", "params")},
    }
    write_json_atomic(out / "chosen.json", summary)
    return summary


def train_command(spec: RunSpec) -> str:
    """The `uimer train` line that reruns the chosen configuration (non-default values only)."""
    defaults = TrainConfig()
    parts = ["uimer train", f"--task {spec.task}", f"--method {spec.method}", f"--encoder {spec.encoder}"]
    if spec.shot:
        parts.append(f"--shot {spec.shot}")
    if spec.train_size:
        parts.append(f"--train-size {spec.train_size}")
    if spec.data_dir and spec.task == "jsonl":
        parts.append(f"--data-dir {spec.data_dir}")
    if spec.rationale_file:
        parts.append(f"--rationale-file {spec.rationale_file}")
    if spec.dev_size:
        parts.append(f"--dev-size {spec.dev_size}")
    if spec.max_length != 128:
        parts.append(f"--max-length {spec.max_length}")
    for name in ("lr", "alpha", "batch_size", "max_epochs", "patience", "warmup_epochs"):
        value = getattr(spec.config, name)
        if value != getattr(defaults, name):
            parts.append(f"--{name.replace('_', '-')} {value:g}" if isinstance(value, float) else
                         f"--{name.replace('_', '-')} {value}")
    if "margin" in spec.config.method_options:
        parts.append(f"--margin {spec.config.method_options['margin']:g}")
    parts.append("--seeds " + ",".join(map(str, spec.seeds)))
    return " ".join(parts)
