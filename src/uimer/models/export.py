"""A uimer classifier as a plain `transformers` model: `AutoModelForSequenceClassification.from_pretrained` loads it.

uimer's 'cls' pooling feeds h_[CLS] straight to its linear head; `BertForSequenceClassification` (MiniLM and
every BERT checkpoint) always runs h_[CLS] through its pooler first, tanh(W_p h + b_p). No transformers class
takes a BERT encoder with a plain linear head on h_[CLS], so the export makes the pooler a near-identity:
W_p = s * I, b_p = 0 and the classifier's weights divided by s, so that

    classifier(tanh(s * h)) = W tanh(s h) / s + b = W h + b - W (s h)^3 / 3 + ...

With the default s = 1e-4 and |h| <= 100 the relative error of each pooled unit is below (s h)^2 / 3 ~ 3e-5
(about 1e-7 for usual |h| ~ 5), far below what moves an argmax except on exact ties; the tests measure it.
The weights stay in range for fp16/bf16 loading (|W| / s ~ 1e3 - 1e4). Fine-tuning such an export further is
fine, but its pooler starts near-linear rather than pretrained.

Refused (ConfigError): 'mean' pooling (BERT's head reads only [CLS]: no equivalent), encoders other than BERT
ones (other heads have extra layers), and the CRF tagger. The tagger's Viterbi decoding over tag transitions
has no `transformers` class: `TaskModel.save` writes `encoder/` (a plain HF encoder + tokenizer,
`AutoModel.from_pretrained`), `head.pt` (emission layer `head.*` and CRF `crf.start_transitions`,
`crf.end_transitions`, `crf.transitions`, a torch state dict) and `uimer-model.json` (kind, labels, pooling);
load it whole with `uimer.models.task_model.TaskModel.load(directory)`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from uimer.data.types import TaskKind
from uimer.errors import ConfigError
from uimer.models.task_model import TaskModel

DEFAULT_POOLER_SCALE = 1e-4
BERT_TYPES = ("bert",)


def to_hf_sequence_classifier(model: TaskModel, labels: Sequence[str] | None = None,
                              pooler_scale: float = DEFAULT_POOLER_SCALE) -> nn.Module:
    """A `BertForSequenceClassification` computing the same logits as the uimer classifier (see the module doc)."""
    from transformers import AutoModelForSequenceClassification

    if model.kind is TaskKind.TAGGING:
        raise ConfigError("kind: the CRF tagger has no transformers equivalent; load it with TaskModel.load(directory)")
    if model.pooling != "cls":
        raise ConfigError(f"pooling {model.pooling!r}: BertForSequenceClassification reads only h_[CLS], so only a "
                          "model trained with --pooling cls can be exported")
    config = copy.deepcopy(model.encoder.config)
    if getattr(config, "model_type", "") not in BERT_TYPES:
        raise ConfigError(f"encoder model_type {config.model_type!r}: export supports {', '.join(BERT_TYPES)} "
                          "encoders, whose classification head is pooler + linear")
    if not 0 < pooler_scale <= 1e-2:
        raise ConfigError(f"pooler_scale must be in (0, 0.01], got {pooler_scale}")
    if labels is not None and len(labels) != model.num_labels:
        raise ConfigError(f"labels: {len(labels)} names for {model.num_labels} classes")
    names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(model.num_labels)]
    config.num_labels = model.num_labels
    config.id2label = dict(enumerate(names))
    config.label2id = {name: i for i, name in enumerate(names)}
    config.architectures = ["BertForSequenceClassification"]
    config.problem_type = "single_label_classification"
    hf = AutoModelForSequenceClassification.from_config(config)
    encoder_state = {k: v for k, v in model.encoder.state_dict().items() if not k.startswith("pooler.")}
    result = hf.base_model.load_state_dict(encoder_state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("pooler.")]
    if missing or result.unexpected_keys:
        raise ConfigError(f"encoder weights do not fit {type(hf).__name__}: missing {missing}, "
                          f"unexpected {result.unexpected_keys}")
    pooler = hf.base_model.pooler
    hidden = config.hidden_size
    with torch.no_grad():
        pooler.dense.weight.copy_(torch.eye(hidden) * pooler_scale)
        pooler.dense.bias.zero_()
        hf.classifier.weight.copy_(model.head.weight.detach() / pooler_scale)
        hf.classifier.bias.copy_(model.head.bias.detach())
    return hf.to(model.head.weight.device).eval()


def export_hf_classifier(model: TaskModel, tokenizer, directory: Path | str, labels: Sequence[str] | None = None,
                         pooler_scale: float = DEFAULT_POOLER_SCALE) -> Path:
    """Write `directory` with `save_pretrained` (model + tokenizer), loadable by
    `AutoModelForSequenceClassification.from_pretrained(directory)` and predicting the same classes."""
    directory = Path(directory)
    hf = to_hf_sequence_classifier(model, labels, pooler_scale)
    hf.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def export_saved_model(saved: Path | str, directory: Path | str, pooler_scale: float = DEFAULT_POOLER_SCALE) -> Path:
    """Export a model saved by uimer (`uimer train --save-model`, `TaskModel.save`) with its label names."""
    model, tokenizer, info = TaskModel.load(Path(saved), attn_implementation="eager")
    labels = info.get("labels")
    return export_hf_classifier(model, tokenizer, directory, labels, pooler_scale)

