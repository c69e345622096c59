"""Step cost through `uimer.hf.UimerTrainer` against the CLI's step, same method, same batches, one process.

    python benchmarks/hf_step_cost.py --data-dir /work/shared/data --methods baseline gb-huang-base im-mask

CLI side: `step_cost.Runner.step`, the body of `fit`'s batch loop on uimer's `TaskModel`. HF side: the body of
`Trainer`'s inner loop on the packaged MiniLM loaded as `AutoModelForSequenceClassification` -- `training_step`
(compute_loss through `uimer.Aligner`, backward), gradient clipping, optimizer and scheduler step, zero_grad --
on the same sentences collated by `RationaleCollator`. Steps alternate CLI / HF in a shuffled order per round
(so load changes hit both alike); the median per side is reported with the ratio HF / CLI (issue 28 asks <= 1.15).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import Runner, method_option_defaults, timed  # noqa: E402

import uimer  # noqa: E402
from uimer.data.encoding import encode_examples  # noqa: E402
from uimer.data.paths import resolve_data_dir  # noqa: E402
from uimer.data.tasks import load_task  # noqa: E402
from uimer.models.encoder import load_tokenizer, resolve_encoder  # noqa: E402


def hf_stepper(method: str, task, examples, args, tmp: Path):
    """A UimerTrainer on the given examples and a function doing one inner-loop step on batch r."""
    from transformers import AutoModelForSequenceClassification, TrainingArguments

    tokenizer = args.tokenizer
    enc = uimer.encode_with_rationales(tokenizer, [e.words for e in examples],
                                       word_rationales=[e.rationale or [0] * len(e.words) for e in examples],
                                       truncation=True, max_length=128)
    features = [{**{k: enc[k][i] for k in enc.keys()}, "labels": e.label} for i, e in enumerate(examples)]
    torch.manual_seed(args.seed)
    gb = uimer.METHODS[method].family == "gb"
    model = AutoModelForSequenceClassification.from_pretrained(
        resolve_encoder(args.encoder), num_labels=len(task.labels), attn_implementation="eager" if gb else "sdpa")
    training = TrainingArguments(str(tmp / method), per_device_train_batch_size=args.batch_size, use_cpu=True,
                                 remove_unused_columns=False, report_to=[], save_strategy="no", seed=args.seed,
                                 max_grad_norm=1.0, weight_decay=0.0, optim="adamw_torch_fused")
    trainer = uimer.UimerTrainer(model=model, args=training, train_dataset=features, processing_class=tokenizer,
                                 method=method, alpha=args.alpha)
    trainer.create_optimizer_and_scheduler(num_training_steps=10**6)
    trainer.current_gradient_accumulation_steps = 1  # what the training loop sets before its steps
    model.train()
    collate = trainer.data_collator
    indexed = [trainer.train_dataset[i] for i in range(len(features))]
    batches = [collate(indexed[r * args.batch_size:(r + 1) * args.batch_size]) for r in range(len(features) // args.batch_size)]

    def step(r: int) -> None:
        trainer.training_step(model, dict(batches[r]))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        model.zero_grad(set_to_none=True)

    return step


def main(argv: list[str] | None = None) -> int:
    import tempfile

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["baseline", "gb-huang-base", "im-mask"])
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--steps", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    args.device, args.precision = "cpu", "fp32"
    torch.set_num_threads(args.threads)
    task = load_task("snips-intent", resolve_data_dir(args.data_dir))
    args.tokenizer = load_tokenizer(args.encoder)
    n = args.warmup + args.steps
    rng = random.Random(args.seed)
    examples = [task.train[i] for i in rng.sample(range(len(task.train)), n * args.batch_size)]
    train = encode_examples(examples, args.tokenizer, task.kind)
    cli_batches = list(train.batches(args.batch_size))
    options = method_option_defaults()
    steps = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            runner = Runner(method, method, None, task, (train, train), args, options)
            steps[("cli", method)] = lambda r, runner=runner: runner.step(cli_batches[r])
            steps[("hf", method)] = hf_stepper(method, task, examples, args, Path(tmp))
        times = {key: [] for key in steps}
        order = list(steps)
        for r in range(n):
            rng.shuffle(order)
            for key in order:
                elapsed = timed(lambda key=key, r=r: steps[key](r), torch.device("cpu"))
                if r >= args.warmup:
                    times[key].append(elapsed)
    result = {}
    for method in args.methods:
        cli, hf = statistics.median(times[("cli", method)]), statistics.median(times[("hf", method)])
        result[method] = {"cli_s": round(cli, 4), "hf_s": round(hf, 4), "hf_over_cli": round(hf / cli, 3)}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
