"""1-shot SNIPS intent with a plain Hugging Face model and `transformers.Trainer`, plus UIMER's alignment loss.

    python examples/hf_trainer_intent.py --seed 55 --method gb-huang-base
    python examples/hf_trainer_intent.py --seed 55 --method im-mask

The packaged MiniLM (`--encoder minilm`, any BERT-type HF name or directory works) is loaded as
`AutoModelForSequenceClassification`; the training subset is the one `uimer train --task snips-intent --shot 1
--seeds 55` draws (the reference's sampler), and the hyper-parameters are the CLI's: batch 24, AdamW (eps 1e-8,
no weight decay), a linear decay to 0 over max-epochs x steps-per-epoch with no LR warm-up, gradient clipping at 1,
dropout 0.1, at most 70 epochs, dev accuracy after every epoch, the best dev epoch's weights kept (ties to the later
epoch) and early stopping after more than 7 epochs below the best (`uimer.DevSelection`). Test accuracy is scored
once, at the best dev epoch.

The head. `BertForSequenceClassification` runs h_[CLS] through BERT's pretrained pooler (dense + tanh), then
dropout and a linear layer initialised from N(0, 0.02); uimer's classifier (`--pooling cls`) feeds h_[CLS] straight
to dropout and a linear layer with torch's default initialisation. On 1-shot intent that is not a detail: with the
stock head the model learns several times slower (seed 55, GB: dev 0.43 after 14 epochs against 0.77 with uimer's
head) and ends 7 points lower. `--head cls` (the default) therefore gives the HF model uimer's head -- the pooler
becomes h_[CLS] itself and the linear layer is drawn as the CLI draws it, right after seeding -- so that this script
and `uimer train` compare like with like; `--head pooler` keeps the stock head. With `--head cls` the model is saved
through `uimer.export_hf_classifier` (a near-identity pooler, see `uimer.models.export`), so
`AutoModelForSequenceClassification.from_pretrained` still loads it. The random streams. The CLI shuffles the training set with its own generator (a fresh
permutation per epoch from `torch.Generator().manual_seed(seed)`) and draws dropout from the global torch stream
as it stands after seeding and building the head; the Trainer reseeds the global stream and its sampler draws
from it every epoch. `--rng cli` (the default) gives the Trainer the CLI's two streams -- the CLI's sampler, and
training steps that draw dropout from a stream of their own started where the CLI's starts (`CliDropoutStream`) --
so on the CPU this script trains on the same batches with the same dropout masks as `uimer train`; `--rng hf`
leaves the Trainer's own streams, i.e. another dropout draw (which alone moves a 1-shot run by 1-3 test points,
see benchmarks/gpu/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from snips_data import features, few_shot, load, subset  # noqa: E402 - the examples' shared helpers
from transformers import TrainerCallback  # noqa: E402

import uimer  # noqa: E402
from uimer.data.types import TaskKind  # noqa: E402
from uimer.models.encoder import resolve_encoder  # noqa: E402


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=55, help="few-shot subset and training seed (default 55)")
    p.add_argument("--method", default="gb-huang-base", choices=uimer.method_names(),
                   help="uimer method (gb-*, im-*; dm-* with --warmup-epochs >= 1)")
    p.add_argument("--alpha", type=float, default=1.0, help="weight of L_int (default 1)")
    p.add_argument("--shot", type=int, default=1)
    p.add_argument("--encoder", default="minilm", help="packaged 'minilm', a HF name or a directory")
    p.add_argument("--data-dir", default=None, help="datasets root (default $UIMER_DATA_DIR, else ../shared/data)")
    p.add_argument("--max-length", type=int, default=50)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=24)
    p.add_argument("--max-epochs", type=int, default=70)
    p.add_argument("--patience", type=int, default=7)
    p.add_argument("--warmup-epochs", type=float, default=0.0, help="epochs of L_task only before L_int")
    p.add_argument("--dev-size", type=int, default=None, help="a seeded stratified dev subset (as the CLI's flag)")
    p.add_argument("--test-size", type=int, default=None, help="a stratified test subset (quick checks only)")
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (tests)")
    p.add_argument("--output-dir", default="runs/hf-intent", help="where results.json (and the model) go")
    p.add_argument("--save-model", action="store_true", help="save_pretrained the selected model to OUTPUT/model")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--rng", default="cli", choices=("cli", "hf"),
                   help="cli: the CLI's batch order and dropout stream (CPU); hf: the Trainer's own")
    p.add_argument("--head", default="cls", choices=("cls", "pooler"),
                   help="cls: uimer's classifier head (h_[CLS] -> dropout -> linear, as the CLI); pooler: BERT's "
                        "stock head (pretrained pooler first)")
    return p.parse_args(argv)


def accuracy(prediction) -> dict:
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


class CliOrder(torch.utils.data.Sampler):
    """The CLI's training order: every epoch a fresh permutation from one generator seeded with the run seed."""

    def __init__(self, size: int, seed: int):
        self.size = size
        self._shuffler = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(torch.randperm(self.size, generator=self._shuffler).tolist())


class CliDropoutStream(TrainerCallback):
    """Training steps draw from their own CPU torch stream, started at `state` (the CLI's global stream after
    seeding and building the model); between steps (data loading, evaluation) the Trainer's stream is back."""

    def __init__(self, state: torch.Tensor):
        self.state = state
        self.outside: torch.Tensor | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        self.outside = torch.get_rng_state()
        torch.set_rng_state(self.state)

    def on_step_end(self, args, state, control, **kwargs):
        self.state = torch.get_rng_state()
        torch.set_rng_state(self.outside)


class CliOrderTrainer(uimer.UimerTrainer):
    """UimerTrainer with the CLI's batch order (see `CliOrder`)."""

    def _get_train_sampler(self, train_dataset=None):
        return CliOrder(len(train_dataset if train_dataset is not None else self.train_dataset), int(self.args.seed))


class ClsToken(nn.Module):
    """In place of BERT's pooler: h_[CLS] itself, so the classifier reads it directly (uimer's `--pooling cls`)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states[:, 0]


def use_uimer_head(model: nn.Module, seed: int) -> nn.Module:
    """Give a BERT-type sequence classifier uimer's head: no pooler, and a linear layer with torch's default
    initialisation drawn right after seeding, which is exactly how the CLI draws its head (loading the encoder
    draws nothing from the RNG)."""
    if getattr(model.config, "model_type", "") != "bert" or not hasattr(model.base_model, "pooler"):
        raise SystemExit(f"--head cls: {type(model).__name__} is not a BERT-type classifier; use --head pooler")
    model.base_model.pooler = ClsToken()
    torch.manual_seed(seed)
    model.classifier = nn.Linear(model.config.hidden_size, model.config.num_labels)
    return model


def save(model: nn.Module, tokenizer, directory: Path, head: str, labels: list[str]) -> None:
    """save_pretrained, loadable by AutoModelForSequenceClassification: directly for the stock head, through
    uimer's export (a near-identity pooler in front of the same linear layer) for uimer's head."""
    if head == "pooler":
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)
        return
    from uimer.data.types import TaskKind
    from uimer.models.task_model import TaskModel

    view = TaskModel(model.base_model, TaskKind.CLASSIFICATION, model.config.num_labels, pooling="cls")
    view.head.load_state_dict(model.classifier.state_dict())
    uimer.export_hf_classifier(view.eval(), tokenizer, directory, labels=labels)


def evaluation_features(tokenizer, task, examples, size: int | None, max_length: int) -> list[dict]:
    """Dev or test features, length-sorted so that evaluation batches pad less (accuracy ignores the order)."""
    rows = features(tokenizer, subset(task, examples, size), TaskKind.CLASSIFICATION, max_length)
    return sorted(rows, key=lambda feature: len(feature["input_ids"]))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments, set_seed

    task = load("snips-intent", args.data_dir)
    path = resolve_encoder(args.encoder)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = features(tokenizer, few_shot(task, args.shot, args.seed), TaskKind.CLASSIFICATION, args.max_length)
    dev = evaluation_features(tokenizer, task, task.dev, args.dev_size, args.max_length)
    test = evaluation_features(tokenizer, task, task.test, args.test_size, args.max_length)

    set_seed(args.seed)  # the head's initialisation and the dropout stream
    gradient = uimer.METHODS[args.method].family == "gb"
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(task.labels), id2label=dict(enumerate(task.labels)),
        label2id={name: i for i, name in enumerate(task.labels)},
        attn_implementation="eager" if gradient else "sdpa")  # GB: a gradient of a gradient needs eager attention
    if args.head == "cls":
        use_uimer_head(model, args.seed)
    dropout_state = torch.get_rng_state()  # where the CLI's dropout stream starts (after building the head)
    out = Path(args.output_dir)
    training = TrainingArguments(
        output_dir=str(out), seed=args.seed, use_cpu=args.device == "cpu",
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=256,
        learning_rate=args.lr, num_train_epochs=args.max_epochs, max_steps=args.max_steps,
        optim="adamw_torch_fused", adam_epsilon=1e-8, weight_decay=0.0, max_grad_norm=1.0,
        lr_scheduler_type="linear", warmup_steps=0,
        eval_strategy="epoch", save_strategy="no", logging_strategy="epoch", report_to=[], disable_tqdm=True,
        remove_unused_columns=False,  # keep `rationale_mask` for uimer's collator
    )
    selection = uimer.DevSelection("eval_accuracy", patience=args.patience)
    callbacks: list[TrainerCallback] = [selection]
    if args.rng == "cli":
        if args.device != "cpu":
            raise SystemExit("--rng cli reproduces the CLI's CPU dropout stream; use --rng hf with --device cuda")
        callbacks.append(CliDropoutStream(dropout_state))
    trainer_class = CliOrderTrainer if args.rng == "cli" else uimer.UimerTrainer
    trainer = trainer_class(
        model=model, args=training, train_dataset=train, eval_dataset=dev, processing_class=tokenizer,
        compute_metrics=accuracy, callbacks=callbacks,
        method=args.method, alpha=args.alpha, warmup_epochs=args.warmup_epochs)
    trainer.train()  # DevSelection leaves the best dev epoch's weights in the model
    scored = trainer.predict(test, metric_key_prefix="test")
    test_accuracy = scored.metrics["test_accuracy"]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    result = {"method": args.method, "head": args.head, "rng": args.rng, "seed": args.seed, "shot": args.shot, "dev": selection.best,
              "best_epoch": selection.best_epoch, "epochs_run": trainer.state.epoch, "test": test_accuracy,
              "train_loss": losses, "dev_history": selection.history,
              "test_predictions": np.argmax(scored.predictions, -1).tolist(),
              "logs": [e for e in trainer.state.log_history if "loss" in e]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=2))
    if args.save_model:
        save(model, tokenizer, out / "model", args.head, task.labels)  # AutoModelForSequenceClassification loads it
    print(f"{args.method} seed {args.seed}: dev {selection.best:.4f} (epoch {selection.best_epoch}), "
          f"test accuracy {test_accuracy:.4f}")
    return result


if __name__ == "__main__":
    main()
