"""UIMER in a plain PyTorch loop: a Hugging Face classifier, your optimizer, and `uimer.Aligner` for the loss.

    python examples/custom_loop.py --method im-mask --epochs 20

The lines that are uimer's are marked `# uimer`: build the features with a rationale mask, collate them with
`RationaleCollator`, prepare the method once, and take `aligner(model, inputs).loss` (L_task + alpha * L_int from
one forward) instead of the model's own loss. Data: 1-shot SNIPS intent, the subset `uimer train --shot 1` uses.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snips_data import features, few_shot, load, subset  # noqa: E402 - the examples' shared helpers

import uimer  # noqa: E402
from uimer.data.types import TaskKind  # noqa: E402
from uimer.models.encoder import resolve_encoder  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="im-mask", choices=uimer.method_names("gb") + uimer.method_names("im"))
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--encoder", default="minilm")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (tests)")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--eval-size", type=int, default=None, help="a stratified test subset (quick checks)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(args.seed)
    task = load("snips-intent", args.data_dir)
    path = resolve_encoder(args.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(task.labels),
                                                               attn_implementation="eager")
    train = features(tokenizer, few_shot(task, args.shot, args.seed), TaskKind.CLASSIFICATION, 50)  # uimer
    for i, feature in enumerate(train):
        feature["index"] = i  # uimer: IM finds the replacement sets it drew for this training example

    aligner = uimer.Aligner(args.method, alpha=args.alpha).prepare(train, tokenizer, args.seed, model=model)  # uimer
    collate = uimer.RationaleCollator(tokenizer)  # uimer: the HF inputs plus the Batch the methods read
    loader = torch.utils.data.DataLoader(train, batch_size=24, shuffle=True, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)

    history, step = [], 0
    model.train()
    for epoch in range(args.epochs):
        for inputs in loader:
            out = aligner(model, inputs)  # uimer: out.loss = L_task + alpha * L_int
            optimizer.zero_grad()
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            history.append({"epoch": epoch, "l_task": out.task_loss.item(), "l_int": out.alignment_loss.item()})
            step += 1
            if args.max_steps is not None and step >= args.max_steps:
                break
        print(f"epoch {epoch}: L_task {history[-1]['l_task']:.4f}  L_int {history[-1]['l_int']:.4f}")
        if args.max_steps is not None and step >= args.max_steps:
            break

    model.eval()
    test = features(tokenizer, subset(task, task.test, args.eval_size), TaskKind.CLASSIFICATION, 50)
    plain = uimer.RationaleCollator(tokenizer, require_rationale=False)
    correct = 0
    with torch.no_grad():
        for start in range(0, len(test), 256):
            inputs = plain(test[start:start + 256])
            uimer.pop_batch(inputs)  # what is left is exactly the HF model's keyword arguments
            labels = inputs.pop("labels")
            correct += int((model(**inputs).logits.argmax(-1) == labels).sum())
    accuracy = correct / len(test)
    assert all(math.isfinite(h["l_task"]) for h in history)
    print(f"{args.method}: test accuracy {accuracy:.4f} after {step} steps")
    return {"history": history, "test": accuracy, "steps": step}


if __name__ == "__main__":
    main()
