"""SNIPS slot filling (BIO tags) with `AutoModelForTokenClassification` and UIMER, through the HF adapter.

    python examples/token_classification.py --shot 1 --seed 55 --method gb-huang-base

Each word's tag sits on its first word piece (-100 on the others, the usual HF label alignment); uimer's collator
scores exactly those pieces, and the adapter takes the gold score / log p of an example as the log probability
of its whole gold tag sequence under the per-piece softmaxes (the analogue of the CRF likelihood uimer's own
tagger uses; this model has no CRF). Rationales are the paper's 28 slot regular expressions. The metric is
uimer's slot F1 (seqeval, conlleval mode) over the first pieces; `DevSelection` keeps the best dev epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snips_data import features, few_shot, load, subset  # noqa: E402 - the examples' shared helpers

import uimer  # noqa: E402
from uimer.data.types import TaskKind  # noqa: E402
from uimer.models.encoder import resolve_encoder  # noqa: E402
from uimer.training.metrics import slot_f1  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="gb-huang-base", choices=uimer.method_names())
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--max-length", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--max-epochs", type=int, default=70)
    p.add_argument("--patience", type=int, default=7)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="L_task only first (DM: >= 1)")
    p.add_argument("--dev-size", type=int, default=None)
    p.add_argument("--test-size", type=int, default=None)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (tests)")
    p.add_argument("--output-dir", default="runs/hf-slots")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from transformers import AutoModelForTokenClassification, AutoTokenizer, TrainingArguments, set_seed

    task = load("snips-slot", args.data_dir)
    path = resolve_encoder(args.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    kind = TaskKind.TAGGING
    train = features(tokenizer, few_shot(task, args.shot, args.seed), kind, args.max_length)
    dev = features(tokenizer, subset(task, task.dev, args.dev_size), kind, args.max_length)
    test = features(tokenizer, subset(task, task.test, args.test_size), kind, args.max_length)

    def f1(prediction) -> dict:
        """Slot F1 over the labelled (first) pieces: each word's predicted and gold tag names."""
        predicted = np.argmax(prediction.predictions, -1)
        gold_tags, pred_tags = [], []
        for row, labels in enumerate(prediction.label_ids):
            scored = labels != -100
            gold_tags.append([task.labels[t] for t in labels[scored]])
            pred_tags.append([task.labels[t] for t in predicted[row][scored]])
        return {"slot_f1": slot_f1(pred_tags, gold_tags)}

    set_seed(args.seed)
    gradient = uimer.METHODS[args.method].family == "gb"
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(task.labels), id2label=dict(enumerate(task.labels)),
        label2id={name: i for i, name in enumerate(task.labels)}, attn_implementation="eager" if gradient else "sdpa")
    out = Path(args.output_dir)
    training = TrainingArguments(
        output_dir=str(out), seed=args.seed, use_cpu=True, per_device_train_batch_size=24,
        per_device_eval_batch_size=256, learning_rate=args.lr, num_train_epochs=args.max_epochs,
        max_steps=args.max_steps, weight_decay=0.0, max_grad_norm=1.0, lr_scheduler_type="linear",
        eval_strategy="epoch", save_strategy="no", logging_strategy="steps", logging_steps=1, report_to=[],
        disable_tqdm=True, remove_unused_columns=False)
    selection = uimer.DevSelection("eval_slot_f1", patience=args.patience)
    trainer = uimer.UimerTrainer(model=model, args=training, train_dataset=train, eval_dataset=dev,
                                 processing_class=tokenizer, compute_metrics=f1, callbacks=[selection],
                                 method=args.method, alpha=args.alpha, warmup_epochs=args.warmup_epochs)
    trainer.train()
    test_f1 = trainer.evaluate(test, metric_key_prefix="test")["test_slot_f1"]
    logs = [e for e in trainer.state.log_history if "loss" in e]  # per step: loss, l_task, l_int
    result = {"method": args.method, "seed": args.seed, "dev": selection.best, "best_epoch": selection.best_epoch,
              "test": test_f1, "logs": logs}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    print(f"{args.method} slots seed {args.seed}: dev F1 {selection.best:.4f}, test F1 {test_f1:.4f}")
    return result


if __name__ == "__main__":
    main()
