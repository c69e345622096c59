"""Tiny in-memory models and tasks for testing methods, schedules and adapters in seconds, offline.

A word-level BERT tokenizer over a few dozen words, a 2-layer BERT with hidden size 16, a 12-sentence task
with rationales (classification or tagging), and option sets that keep every registered method to a few
steps. The package's own tests use them, and so can code that registers a method or wraps a model: the
method contract test (`tests/test_method_contract.py`) runs every name in `METHODS` on them.

The tiny model comes on every model backend a method must run on (`BACKENDS`): uimer's own `TaskModel`, and a
Hugging Face `BertForSequenceClassification` / `BertForTokenClassification` seen through `adapt`, so a
contract checked over `BACKENDS` holds for library users' HF models as well as for the CLI's.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from uimer.data.encoding import Batch, encode_examples
from uimer.data.types import Example, TaskData, TaskKind
from uimer.interpret.base import METHODS
from uimer.models.adapters import adapt
from uimer.models.protocol import AttributableModel
from uimer.models.task_model import TaskModel
from uimer.training.trainer import TrainConfig, TrainingContext, set_seed

WORDS = (
    "add play the a to my playlist song music weather in paris what is book rate find movie show "
    "kids smiling frowning children waving at camera are and of me stars out six five tomorrow"
).split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HIDDEN_SIZE = 16

# (sentence, class, per-word rationale or None): three intents, most sentences with a keyword rationale.
SENTENCES = [
    ("play my song", 0, [1, 0, 0]), ("play music", 0, [1, 0]), ("add the song to my playlist", 1, [1, 0, 0, 0, 0, 1]),
    ("add a song", 1, [1, 0, 0]), ("weather in paris", 2, [1, 0, 0]), ("what is the weather tomorrow", 2, [0, 0, 0, 1, 0]),
    ("play the music", 0, [1, 0, 0]), ("add music to playlist", 1, [1, 0, 0, 1]), ("weather in paris tomorrow", 2, [1, 0, 0, 0]),
    ("play a song", 0, None), ("add my song", 1, [0, 0, 0]), ("the weather", 2, [0, 1]),
]

# Options that keep each family to a few steps (DM: two short rounds, a couple of extractor steps).
FAST_OPTIONS: dict[str, dict] = {
    "dm": {"rounds": 2, "extractor_epochs": 1, "extractor_min_steps": 2, "model_epochs_per_round": 1},
}


def tiny_tokenizer():
    """A word-level fast BERT tokenizer over `WORDS` (plus a few suffix pieces), with [MASK]."""
    from transformers import BertTokenizerFast

    vocab = [*SPECIALS, *WORDS, "##s", "##ing", "##er"]
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)


def tiny_encoder(vocab_size: int, seed: int = 0, attn: str = "eager"):
    """A randomly initialised 2-layer BERT (hidden 16), seeded; eager attention runs every method."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN_SIZE, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, attn_implementation=attn,
    )
    return BertModel(config, add_pooling_layer=False)


def tiny_task(kind: TaskKind = TaskKind.CLASSIFICATION) -> TaskData:
    """`SENTENCES` as a task: 8 training, 4 dev and 6 test examples; tagging tags each rationale word with
    its sentence's class (B-a/B-b/B-c), every other word O."""
    examples = []
    for text, label, rationale in SENTENCES:
        words = text.split()
        if kind is TaskKind.TAGGING:
            tags = [label + 1 if r else 0 for r in (rationale or [0] * len(words))]
            examples.append(Example(words=words, tags=tags, rationale=rationale))
        else:
            examples.append(Example(words=words, label=label, rationale=rationale))
    labels = ["O", "B-a", "B-b", "B-c"] if kind is TaskKind.TAGGING else ["play", "add", "weather"]
    metric = "f1" if kind is TaskKind.TAGGING else "accuracy"
    return TaskData("tiny", kind, labels, examples[:8], examples[8:], examples[6:], metric)


# Model backends -> the task kind the tiny task takes on it: uimer's head, and the two HF heads through `adapt`.
BACKENDS: dict[str, TaskKind] = {
    "taskmodel": TaskKind.CLASSIFICATION,
    "hf-sequence": TaskKind.CLASSIFICATION,
    "hf-token": TaskKind.TAGGING,
}


def tiny_hf_model(tokenizer, kind: TaskKind, num_labels: int, seed: int = 0, attn: str = "eager"):
    """A randomly initialised tiny `BertForSequenceClassification` (or `...ForTokenClassification` for tagging),
    seeded, with the encoder shape of `tiny_encoder`; the plain transformers model, before `adapt`."""
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=HIDDEN_SIZE, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, num_labels=num_labels, attn_implementation=attn,
    )
    cls = BertForTokenClassification if kind is TaskKind.TAGGING else BertForSequenceClassification
    return cls(config)


def tiny_model(tokenizer, kind: TaskKind, num_labels: int, seed: int = 0,
               backend: str = "taskmodel") -> AttributableModel:
    """The tiny model on a model backend (see `BACKENDS`): a `TaskModel` on a fresh tiny encoder, or a tiny HF
    classifier through its adapter. Either is an `AttributableModel` that uimer's `fit` can train."""
    if backend == "taskmodel":
        return TaskModel(tiny_encoder(len(tokenizer), seed), kind, num_labels)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if kind is not BACKENDS[backend]:
        raise ValueError(f"backend {backend} takes {BACKENDS[backend].value} tasks, not {kind.value}")
    return adapt(tiny_hf_model(tokenizer, kind, num_labels, seed), kind)


def save_tiny_mlm(directory: Path, tokenizer, seed: int = 0) -> Path:
    """A randomly initialised tiny masked LM with `tokenizer`, saved where `--mlm` (im-mlm) can load it."""
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN_SIZE, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    directory = Path(directory)
    BertForMaskedLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def fast_options(name: str, workdir: Path | None = None, tokenizer=None) -> dict:
    """Options under which method `name` trains in a few steps on the tiny task; a method that needs a masked
    LM (im-mlm) gets a tiny one saved under `workdir`."""
    spec = METHODS[name]
    options = dict(FAST_OPTIONS.get(spec.family, {}))
    if getattr(spec.factory, "strategy", None) == "mlm":
        if workdir is None or tokenizer is None:
            raise ValueError(f"{name} needs a masked LM: pass a workdir and the tokenizer")
        mlm = Path(workdir) / "tiny-mlm"
        if not (mlm / "config.json").exists():
            save_tiny_mlm(mlm, tokenizer)
        options["mlm"] = str(mlm)
    return options


def tiny_context(method, tokenizer, kind: TaskKind = TaskKind.CLASSIFICATION, seed: int = 0,
                 backend: str = "taskmodel", **config) -> TrainingContext:
    """A training context for one seed of `method` on the tiny task and the tiny model of `backend` (the global
    RNG seeded first, as a run does); `config` overrides the small TrainConfig (batch 4, 1 epoch, lr 1e-3)."""
    task = tiny_task(kind)
    set_seed(seed)
    model = tiny_model(tokenizer, kind, len(task.labels), seed, backend)
    settings = {"batch_size": 4, "max_epochs": 1, "patience": 1, "lr": 1e-3, "eval_batch_size": 16, **config}
    return TrainingContext(
        model=model, task=task, train=encode_examples(task.train, tokenizer, kind),
        dev=encode_examples(task.dev, tokenizer, kind), test=encode_examples(task.test, tokenizer, kind),
        config=TrainConfig(method_options=dict(method.options), **settings), seed=seed, tokenizer=tokenizer,
        device=torch.device("cpu"), method=method,
    )


def without_rationales(batch: Batch) -> Batch:
    """The same batch with every rationale removed (what examples without gold rationales look like)."""
    return replace(batch, rationale=torch.zeros_like(batch.rationale),
                   has_rationale=torch.zeros_like(batch.has_rationale))
