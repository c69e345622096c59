"""Cost of one training step of every UIMER method, relative to the baseline, on the same batches.

    python benchmarks/step_cost.py --json --data-dir /work/shared/data

One process, the packaged MiniLM intent model, batches of real SNIPS intent training sentences. A step is
`uimer.training.step.train_step`, the very function `fit` and the DM model phase call per batch: forward on the
word embeddings, L_task + alpha * L_int, backward, gradient clipping, optimizer and scheduler step. Every
measured method gets its own freshly loaded model, built the way `uimer train` builds it (eager attention when
it needs double backward, SDPA otherwise) and prepared with `method.prepare(context.method_setup())`. The methods are run round-robin, one step each per round in a
freshly shuffled order, so a change in machine load during the run hits them all alike and no method always
runs after the same neighbour; the median over the timed rounds is reported.

Methods with the "diffmask" schedule are timed through `uimer.training.schedules.dm_phase_steps(context)`:
one training step of each phase (extractor, model), reported under its own key.

Prints `{"baseline_s": ..., "baseline_eager_s": ..., "ratios": {"gb-ghaeini": ..., ...}, ...}`.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable

import torch

from uimer.data.encoding import encode_examples
from uimer.data.paths import resolve_data_dir
from uimer.data.tasks import load_task
from uimer.interpret import METHODS, create_method, method_option_defaults
from uimer.models.encoder import load_tokenizer
from uimer.models.task_model import build_model
from uimer.training.schedules import dm_phase_steps
from uimer.training.step import train_step
from uimer.training.trainer import TrainConfig, TrainingContext, make_optimizer, set_seed

BASELINE = "baseline"


def parse_option(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def default_methods() -> list[str]:
    """Every registered method whose schedule has steps to time (the standard loop's, or DM's two phases)."""
    names = []
    for name in sorted(METHODS):
        if name == BASELINE:
            continue
        if create_method(name, method_option_defaults()).schedule in ("standard", "diffmask"):
            names.append(name)
    return names


class Runner:
    """One model + optimizer + method, stepping the standard loop's body on given batches."""

    def __init__(self, name: str, method_name: str, attn: str | None, task, encoded, args, options: dict):
        set_seed(args.seed)
        self.name = name
        self.method = create_method(method_name, options)
        if attn is None:
            attn = "eager" if self.method.needs_double_backward else "sdpa"
        self.attn = attn
        self.device = torch.device(args.device)
        self.model = build_model(args.encoder, task.kind, len(task.labels), attn_implementation=attn).to(self.device)
        self.model.set_precision(args.precision)
        self.model.train()
        self.config = TrainConfig(batch_size=args.batch_size, alpha=args.alpha, method_options=options,
                                  device=args.device, precision=args.precision)
        train, dev = encoded
        self.context = TrainingContext(
            model=self.model, task=task, train=train, dev=dev, test=dev, config=self.config, seed=args.seed,
            tokenizer=args.tokenizer, device=self.device, method=self.method,
        )
        self.method.prepare(self.context.method_setup())
        self.optimizer, self.scheduler = make_optimizer(self.model, self.model.named_parameters(), self.config, 10**6)
        self.uses_l_int = self.method.family != BASELINE and self.config.alpha != 0

    def step(self, batch) -> None:
        """One step of the standard loop: the shared `train_step`, as `fit` calls it (warm-up over)."""
        train_step(self.model, batch.to(self.device), self.method, self.optimizer, self.scheduler,
                   alpha=self.config.alpha, max_grad_norm=self.config.max_grad_norm, alignment=self.uses_l_int)


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Wall-clock of one step; on CUDA the queued kernels are waited for on both sides."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print one JSON object (default: a readable table)")
    p.add_argument("--methods", nargs="+", default=None, help="methods to time (default: every registered one)")
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--steps", type=int, default=7, help="timed steps per method (the median is reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per method first")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $UIMER_DATA_DIR, else ~/.cache/uimer/data)")
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (steps are timed with CUDA synchronisation)")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: the encoder under autocast")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option as `uimer train` would pass it (dest name, JSON value), repeatable")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    task = load_task("snips-intent", resolve_data_dir(args.data_dir))
    args.tokenizer = load_tokenizer(args.encoder)
    n_batches = args.warmup + args.steps
    rng = random.Random(args.seed)
    picked = rng.sample(range(len(task.train)), n_batches * args.batch_size)
    train = encode_examples([task.train[i] for i in picked], args.tokenizer, task.kind)
    dev = encode_examples(task.dev[: args.batch_size], args.tokenizer, task.kind)
    batches = list(train.batches(args.batch_size))  # the same batches, in the same order, for every method

    options = method_option_defaults()
    options.update(dict(parse_option(o) for o in args.option))
    methods = args.methods or default_methods()

    # name -> zero-argument step for round r (standard-loop methods step batch r; phase steps take their own)
    steps: dict[str, Callable[[int], None]] = {}
    attention: dict[str, str] = {}
    errors: dict[str, str] = {}
    for name, method_name, attn in [(BASELINE, BASELINE, "sdpa"), ("baseline-eager", BASELINE, "eager")] + [
        (m, m, None) for m in methods
    ]:
        try:
            runner = Runner(name, method_name, attn, task, (train, dev), args, options)
        except Exception as err:  # report and go on: one broken method must not hide the others' numbers
            errors[name] = f"{type(err).__name__}: {err}"
            continue
        if runner.method.schedule == "diffmask":
            for key, fn in dm_phase_steps(runner.context).items():
                steps[key] = lambda r, fn=fn: fn()
                attention[key] = runner.attn
        else:
            steps[name] = lambda r, runner=runner: runner.step(batches[r])
            attention[name] = runner.attn

    times: dict[str, list[float]] = {name: [] for name in steps}
    order = list(steps)
    for r in range(n_batches):
        rng.shuffle(order)  # no method always follows the same (e.g. memory-hungry) neighbour
        for name in order:
            step = steps[name]
            if name not in times:
                continue
            try:
                elapsed = timed(lambda step=step, r=r: step(r), torch.device(args.device))
            except Exception as err:
                errors[name] = f"{type(err).__name__}: {err}"
                del times[name]
                continue
            if r >= args.warmup:
                times[name].append(elapsed)

    median = {name: statistics.median(t) for name, t in times.items() if t}
    base = median.get(BASELINE)
    if base is None:
        print(json.dumps({"errors": errors}), file=sys.stderr)
        return 1
    # Issue 4's bound for IM: 1.15 x (1 + 2K f), f = the timed batches' share of examples with a rationale
    # (only those get the 2K replaced sentences).
    timed_batches = batches[args.warmup:]
    share = statistics.fmean(float(b.has_rationale.float().mean()) for b in timed_batches)
    k = int(options.get("im_k") or 2)
    result = {
        "baseline_s": round(base, 4),
        "im_bound": {"k": k, "rationale_share": round(share, 3), "bound": round(1.15 * (1 + 2 * k * share), 3)},
        "baseline_eager_s": round(median["baseline-eager"], 4) if "baseline-eager" in median else None,
        "ratios": {n: round(s / base, 3) for n, s in median.items() if n not in (BASELINE, "baseline-eager")},
        "seconds": {n: round(s, 4) for n, s in median.items()},
        "attention": attention,
        "config": {"encoder": args.encoder, "batch_size": args.batch_size, "steps": args.steps,
                   "warmup": args.warmup, "alpha": args.alpha, "threads": torch.get_num_threads(),
                   "device": args.device, "precision": args.precision,
                   "mean_pieces": round(float(sum(b.attention_mask.sum() for b in batches)) / len(picked), 1),
                   "options": dict(parse_option(o) for o in args.option)},
    }
    if errors:
        result["errors"] = errors
    if args.json:
        print(json.dumps(result))
    else:
        print(f"baseline step: {base:.3f} s (eager attention: {result['baseline_eager_s']} s); IM bound "
              f"1.15 x (1 + 2K f) = {result['im_bound']['bound']} (K = {k}, f = {share:.3f})")
        for name, ratio in result["ratios"].items():
            print(f"  {name:24s} {median[name]:7.3f} s  {ratio:5.2f}x  ({attention[name]})")
        for name, message in errors.items():
            print(f"  {name:24s} failed: {message}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
