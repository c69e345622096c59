"""Training a masked LM offline for UIMER-IM's BERT strategy (`im-mlm`), and its CLI `uimer mlm train`.

The paper proposes replacements with `bert-base-uncased`'s masked LM; offline there is none here, and the
packaged MiniLM encoder ships without an MLM head. `uimer mlm train` therefore does domain-adaptive masked-LM
training of the packaged encoder: a masked-LM model built from the encoder's config, the encoder's weights
loaded, a *fresh* MLM head whose decoder is tied to the word embeddings, and the standard recipe (15 % of the
real word pieces selected; of those 80 % [MASK], 10 % a random real piece, 10 % kept), AdamW with a linear
schedule. The corpus is the task's training sentences (SNIPS `seq.in`; e-SNLI premises and hypotheses of the
pool) plus any `--corpus` lines; 5 % of the sentences are held out and the top-1/top-5 accuracy of the
trained model on their masked pieces (each selected piece replaced by [MASK], predictions restricted to real
word pieces as im-mlm's are) is printed and written to `OUT/mlm-eval.json`. The output directory holds the
model and tokenizer (`save_pretrained`), so `--mlm OUT` loads it through `AutoModelForMaskedLM`.

The LM head is applied only at the selected positions (about 15 % of pieces): for a small encoder the
30k-way output layer costs as much per position as the whole encoder, so this nearly halves a step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import nn

from uimer.checks import SEED, Domain, check_device
from uimer.errors import ConfigError, OutputError, describe_os_error
from uimer.interpret.replacement import real_vocabulary
from uimer.models.mlm import build_fresh_mlm, quiet_transformers
from uimer.training.trainer import adamw, set_seed

log = logging.getLogger("uimer.mlm")

MASK_PROBABILITY = 0.15
HELD_OUT_FRACTION = 0.05
IGNORE = -100


# -- data ------------------------------------------------------------------------------------------------
def task_sentences(task_names: Sequence[str], data_dir: str | None = None) -> list[str]:
    """Training sentences of tasks: each sentence once (pairs give premise and hypothesis separately)."""
    from uimer.data.paths import resolve_data_dir
    from uimer.data.tasks import load_task

    sentences: list[str] = []
    for name in task_names:
        task = load_task(name, resolve_data_dir(data_dir))
        for example in task.train:
            sentences.append(" ".join(example.words))
            if example.pair_words:
                sentences.append(" ".join(example.pair_words))
    return sentences


def corpus_lines(path: Path) -> list[str]:
    from uimer.data.textio import read_lines

    return [line.strip() for line in read_lines(Path(path)) if line.strip()]


def split_held_out(sentences: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Distinct sentences, shuffled with the seed; the first max(1, round(fraction * n)) are held out."""
    unique = list(dict.fromkeys(s for s in sentences if s.strip()))
    if len(unique) < 2:
        raise ConfigError(f"masked-LM training needs at least 2 distinct sentences, got {len(unique)}")
    order = torch.randperm(len(unique), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = min(len(unique) - 1, max(1, round(fraction * len(unique)))) if fraction > 0 else 0
    held = [unique[i] for i in order[:n_held]]
    train = [unique[i] for i in order[n_held:]]
    return train, held


class Encoded:
    """Sentences tokenised once; `batch()` pads a selection and marks the real word pieces."""

    def __init__(self, sentences: Sequence[str], tokenizer, max_length: int):
        enc = tokenizer(list(sentences), truncation=True, max_length=max_length, return_special_tokens_mask=True)
        self.ids = enc["input_ids"]
        self.special = enc["special_tokens_mask"]
        self.pad_id = tokenizer.pad_token_id

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        length = max(len(self.ids[i]) for i in indices)
        ids = torch.full((len(indices), length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(indices), length), dtype=torch.long)
        real = torch.zeros((len(indices), length), dtype=torch.bool)
        for row, i in enumerate(indices):
            n = len(self.ids[i])
            ids[row, :n] = torch.tensor(self.ids[i])
            attention[row, :n] = 1
            real[row, :n] = torch.tensor(self.special[i]) == 0
        return ids, attention, real


def mask_for_mlm(input_ids: torch.Tensor, real: torch.Tensor, mask_id: int, vocabulary: torch.Tensor,
                 generator: torch.Generator, all_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption: select 15 % of real pieces; 80 % -> [MASK], 10 % -> random real piece, 10 % kept.

    Returns (inputs, labels) with labels = -100 off the selected pieces. `all_mask` (evaluation) turns every
    selected piece into [MASK].
    """
    probability = torch.full(input_ids.shape, MASK_PROBABILITY) * real
    selected = torch.bernoulli(probability, generator=generator).bool()
    labels = input_ids.masked_fill(~selected, IGNORE)
    inputs = input_ids.clone()
    if all_mask:
        inputs[selected] = mask_id
        return inputs, labels
    roll = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (roll < 0.8)
    to_random = selected & (roll >= 0.8) & (roll < 0.9)
    inputs[to_mask] = mask_id
    picks = torch.randint(len(vocabulary), (int(to_random.sum()),), generator=generator)
    inputs[to_random] = vocabulary[picks]
    return inputs, labels


def selected_logits(model: nn.Module, inputs: torch.Tensor, attention: torch.Tensor,
                    selected: torch.Tensor) -> torch.Tensor:
    """MLM logits (S, V) at the selected positions only (the head runs there alone for BERT models)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    head = getattr(model, "cls", None)
    if base is not None and head is not None:
        hidden = base(input_ids=inputs, attention_mask=attention).last_hidden_state
        return head(hidden[selected])
    return model(input_ids=inputs, attention_mask=attention).logits[selected]


@torch.no_grad()
def evaluate_mlm(model: nn.Module, data: Encoded, mask_id: int, vocabulary: torch.Tensor, allowed: torch.Tensor,
                 device: torch.device, batch_size: int = 64, seed: int = 0) -> dict:
    """Top-1 and top-5 accuracy on held-out masked pieces (a fixed, seeded 15 % of the real pieces)."""
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    hits1 = hits5 = total = 0
    for start in range(0, len(data), batch_size):
        ids, attention, real = data.batch(list(range(start, min(start + batch_size, len(data)))))
        inputs, labels = mask_for_mlm(ids, real, mask_id, vocabulary, generator, all_mask=True)
        selected = labels != IGNORE
        if not selected.any():
            continue
        logits = selected_logits(model, inputs.to(device), attention.to(device), selected.to(device)).float()
        logits = logits[:, : len(allowed)].masked_fill(~allowed.to(device)[: logits.shape[1]], float("-inf"))
        top = logits.topk(5, dim=-1).indices.cpu()
        gold = labels[selected].unsqueeze(1)
        hits1 += int((top[:, :1] == gold).any(1).sum())
        hits5 += int((top == gold).any(1).sum())
        total += int(selected.sum())
    model.train(was_training)
    return {"top1": hits1 / total if total else None, "top5": hits5 / total if total else None,
            "masked_tokens": total, "sentences": len(data)}


# -- training --------------------------------------------------------------------------------------------
def train_mlm(sentences: Sequence[str], base: str, out: Path, steps: int = 800, batch_size: int = 32,
              lr: float = 1e-4, seed: int = 0, device: str | torch.device = "cpu", max_length: int = 128,
              held_out: float = HELD_OUT_FRACTION, progress: bool = True, console=None) -> dict:
    """Domain-adaptive MLM training of `base`; saves model + tokenizer to `out` and returns the evaluation."""
    from transformers import get_linear_schedule_with_warmup


    if steps < 1 or batch_size < 1:
        raise ConfigError("--steps and --batch-size must be >= 1")
    device = torch.device(device)
    set_seed(seed)
    train_sentences, held_sentences = split_held_out(sentences, held_out, seed)
    model, tokenizer = build_fresh_mlm(base)
    model.to(device).train()
    if tokenizer.mask_token_id is None:
        raise ConfigError(f"the tokenizer of '{base}' has no [MASK] token")
    mask_id = tokenizer.mask_token_id
    vocab_rows = model.get_input_embeddings().num_embeddings
    vocabulary = real_vocabulary(tokenizer, vocab_rows)
    allowed = torch.zeros(vocab_rows, dtype=torch.bool)
    allowed[vocabulary] = True
    train_data = Encoded(train_sentences, tokenizer, max_length)
    held_data = Encoded(held_sentences, tokenizer, max_length)

    optimizer = adamw(model.named_parameters(), lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.05 * steps), steps)
    generator = torch.Generator().manual_seed(seed)
    start_time = time.perf_counter()
    loss_ema: float | None = None

    def batches() -> Iterator[list[int]]:
        while True:
            order = torch.randperm(len(train_data), generator=generator).tolist()
            for s in range(0, len(order), batch_size):
                yield order[s:s + batch_size]

    with _progress(progress, steps, console) as advance:
        for step, indices in zip(range(steps), batches(), strict=False):
            ids, attention, real = train_data.batch(indices)
            inputs, labels = mask_for_mlm(ids, real, mask_id, vocabulary, generator)
            selected = labels != IGNORE
            if not selected.any():  # tiny batches of short sentences can come out with nothing masked
                advance(step, loss_ema)
                continue
            logits = selected_logits(model, inputs.to(device), attention.to(device), selected.to(device))
            loss = nn.functional.cross_entropy(logits.float(), labels[selected].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            value = float(loss.detach())
            loss_ema = value if loss_ema is None else 0.95 * loss_ema + 0.05 * value
            advance(step, loss_ema)
    seconds = time.perf_counter() - start_time
    evaluation = evaluate_mlm(model, held_data, mask_id, vocabulary, allowed, device, seed=seed + 1)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    report = {
        **evaluation, "held_out_sentences": len(held_sentences), "train_sentences": len(train_sentences),
        "steps": steps, "batch_size": batch_size, "lr": lr, "seed": seed, "base": base,
        "final_loss_ema": loss_ema, "train_seconds": round(seconds, 1),
    }
    tmp = out / "mlm-eval.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    tmp.replace(out / "mlm-eval.json")
    return report


@contextlib.contextmanager
def _progress(enabled: bool, total: int, console=None) -> Iterator:
    """A rich bar over steps showing the smoothed loss; a no-op callback when disabled."""
    if not enabled:
        yield lambda step, loss: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn("[bold]masked LM"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True))
    with bar:
        task = bar.add_task("mlm", total=total, status="")

        def advance(step: int, loss: float | None) -> None:
            bar.update(task, advance=1, status="" if loss is None else f"loss {loss:.3f}")

        yield advance


# -- command line ----------------------------------------------------------------------------------------
def register_mlm_cli(subparsers) -> None:
    """Add `uimer mlm train` to the top-level sub-command parser."""
    from uimer.data.tasks import TASKS

    mlm = subparsers.add_parser("mlm", help="masked language models for im-mlm")
    sub = mlm.add_subparsers(dest="mlm_command", required=True)
    p = sub.add_parser("train", help="domain-adaptive masked-LM training of an encoder (fresh tied MLM head)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", action="append", choices=TASKS, default=[],
                   help="use this task's training sentences (repeatable, e.g. --task snips-intent --task esnli)")
    p.add_argument("--corpus", action="append", default=[], metavar="FILE",
                   help="extra sentences, one per line (repeatable)")
    p.add_argument("--data-dir", default=None, help="dataset root (default: $UIMER_DATA_DIR, else ~/.cache/uimer/data)")
    p.add_argument("--base", default="minilm", help="encoder to adapt: 'minilm' (packaged), a name or a path")
    p.add_argument("--out", required=True, help="directory to save the masked LM in (pass it to --mlm)")
    p.add_argument("--steps", type=Domain(int, 1, 10**7), default=800)
    p.add_argument("--batch-size", type=Domain(int, 1, 65536), default=32)
    p.add_argument("--lr", type=Domain(float, 0, 1, low_open=True), default=1e-4)
    p.add_argument("--seed", type=SEED, default=0)
    p.add_argument("--max-length", type=Domain(int, 4, 8192), default=128)
    p.add_argument("--held-out", type=Domain(float, 0, 1, high_open=True), default=HELD_OUT_FRACTION, help="fraction of sentences held out")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_mlm_train)


def cmd_mlm_train(args) -> int:
    from rich.console import Console

    if not args.task and not args.corpus:
        raise ConfigError("give at least one --task or --corpus")
    device = check_device(args.device)
    try:  # an unwritable --out is found now, not after the training it would lose
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"--out {args.out}: cannot create it: {describe_os_error(err)}") from err
    sentences = task_sentences(args.task, args.data_dir) if args.task else []
    for path in args.corpus:
        sentences += corpus_lines(Path(path))
    console = Console(stderr=True)
    report = train_mlm(sentences, args.base, Path(args.out), steps=args.steps, batch_size=args.batch_size,
                       lr=args.lr, seed=args.seed, device=device, max_length=args.max_length,
                       held_out=args.held_out, progress=not args.no_progress, console=console)
    def percent(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f} %"

    Console().print(
        f"saved masked LM to {args.out}: held-out top-5 accuracy {percent(report['top5'])}, "
        f"top-1 {percent(report['top1'])}, over {report['masked_tokens']} masked pieces "
        f"of {report['held_out_sentences']} held-out sentences (also in {Path(args.out) / 'mlm-eval.json'})"
    )
    return 0
