"""Hugging Face task models seen through uimer's model contract (`uimer.models.protocol.AttributableModel`).

Every interpretation method reads a model only through that contract and a uimer `Batch`, so wrapping an
`AutoModelForSequenceClassification` or `AutoModelForTokenClassification` (any encoder whose forward accepts
`inputs_embeds`) in one of these adapters lets every method run on it unchanged. The adapter owns no weights:
it is a view of the HF model, whose parameters (and `save_pretrained`) stay the user's.

Choices:
- sequence classification (and sentence pairs): as `TaskModel` -- the gold score is the gold logit, log p is
  the gold log-softmax, and log(1 - p) comes from the other classes' logits, so it stays exact when p rounds
  to 1 (UIMER-IM's log-odds keep their gradient on a confident model);
- token classification (no CRF): the scored positions are the *labelled* pieces (label != -100; with the usual
  HF preprocessing that is the first piece of every word). `Batch.word_starts` lists them and the adapter's
  logits are the emissions gathered there, (B, W, T), exactly the shape of uimer's own tagger. The gold score
  and log p of an example are the sum over its labelled pieces of log softmax(emission)[gold tag], i.e. the log
  probability of the whole gold tag sequence under the model's independent per-piece softmaxes (the analogue of
  the CRF's sequence log-likelihood that `TaskModel` uses); log(1 - p) has no exact closed form there and is
  None, as for the CRF. `task_loss` is the HF model's own token cross-entropy: a mean over every labelled
  piece of the batch.
- `encoder` is the HF model's base transformer (`model.base_model`), so UIMER-DM's layer hooks find its layers.
  DM also reads two members outside the protocol (its state reader runs the encoder itself): `autocast()` and
  `head_logits(hidden, attention_mask, word_starts)`, the model's own head applied to last hidden states, which
  is mapped per architecture (BERT, RoBERTa family, ELECTRA, DistilBERT) and refused by name elsewhere.
- gradient methods differentiate a gradient (double backward), which SDPA and flash attention kernels do not
  support: `use_eager_attention` switches a model to eager attention, or says how to load it that way.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from uimer.data.encoding import Batch
from uimer.data.types import TaskKind
from uimer.errors import ConfigError

EAGER = "eager"
# model_type -> how its sequence-classification head maps last hidden states to logits (see `head_logits`)
_POOLER_HEADS = ("bert",)  # pooler (in the base model) -> dropout -> classifier
_FEATURE_HEADS = ("roberta", "xlm-roberta", "camembert", "electra")  # the head reads h_[CLS] from the states


def attention_implementation(model: nn.Module) -> str | None:
    """The attention implementation a HF model runs with ('eager', 'sdpa', 'flash_attention_2', ...)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) if config is not None else None


def use_eager_attention(model: nn.Module, switch: bool = True) -> nn.Module:
    """Make sure `model` runs eager attention, which gradient (GB) methods need for their double backward.

    With `switch` the model is switched in place where transformers allows it; otherwise, or where it cannot be
    switched, a ConfigError says how to load the model with eager attention. Returns the model.
    """
    current = attention_implementation(model)
    if current in (None, EAGER):
        return model
    if switch and hasattr(model, "set_attn_implementation"):
        with contextlib.suppress(ValueError, ImportError, NotImplementedError):
            model.set_attn_implementation(EAGER)
        if attention_implementation(model) == EAGER:
            return model
    raise ConfigError(
        f"attn_implementation is {current!r}, but gradient (gb-*) methods take a gradient of a gradient, which "
        f"only eager attention supports: load the model with from_pretrained(..., attn_implementation=\"eager\") "
        f"or call model.set_attn_implementation(\"eager\")"
    )


def _accepts(module: nn.Module, argument: str) -> bool:
    """Whether the module's forward takes `argument` by name (DistilBERT-style models have no token types)."""
    parameters = inspect.signature(module.forward).parameters
    return argument in parameters


class HFAdapter(nn.Module):
    """Shared part of the two adapters: the forward from embeddings and the encoder view."""

    kind: TaskKind

    def __init__(self, model: nn.Module):
        super().__init__()
        if not _accepts(model, "inputs_embeds"):
            raise ConfigError(f"{type(model).__name__}.forward takes no inputs_embeds; uimer's methods need it")
        self.model = model
        self._token_types = _accepts(model, "token_type_ids")

    @property
    def encoder(self) -> nn.Module:
        """The base transformer (its input embeddings and layers are what UIMER-DM hooks)."""
        return self.model.base_model

    @property
    def config(self):
        return self.model.config

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings only; position and segment embeddings are added inside the model."""
        return self.model.get_input_embeddings()(input_ids)

    def autocast(self) -> contextlib.AbstractContextManager:
        """No autocast: the HF model runs in its own dtype (UIMER-DM's state reader enters this context)."""
        return contextlib.nullcontext()

    def model_inputs(self, batch: Batch, inputs_embeds: torch.Tensor) -> dict:
        """The keyword arguments of the HF forward for this batch (no labels: the adapter computes the loss)."""
        inputs = {"inputs_embeds": inputs_embeds, "attention_mask": batch.attention_mask}
        if self._token_types:
            inputs["token_type_ids"] = batch.token_type_ids
        return inputs

    def predict(self, logits: torch.Tensor, batch: Batch) -> list:
        """Class ids, or one list of tag ids per example over its scored pieces: the argmax, as `TaskModel`
        predicts without a CRF. With it, uimer's own `fit` and `evaluate` run on a HF model too (the method
        contract tests train every method through the adapters that way)."""
        return logits.argmax(-1).tolist()

    def raw_logits(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """The HF model's own logits: (B, C), or (B, L, T) for token classification."""
        if inputs_embeds is None:
            inputs_embeds = self.embed(batch.input_ids)
        return self.model(**self.model_inputs(batch, inputs_embeds)).logits


class HFSequenceClassifier(HFAdapter):
    """An `AutoModelForSequenceClassification` (one sentence or a pair) as an `AttributableModel`."""

    def __init__(self, model: nn.Module, kind: TaskKind = TaskKind.CLASSIFICATION):
        super().__init__(model)
        if kind is TaskKind.TAGGING:
            raise ConfigError("kind: a sequence classifier is 'classification' or 'pair'; use HFTokenClassifier")
        self.kind = kind

    def forward(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.raw_logits(batch, inputs_embeds)

    def gold_log_prob(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return torch.log_softmax(logits, dim=-1).gather(1, batch.labels.unsqueeze(1)).squeeze(1)

    def gold_log_complement(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """log(1 - p) from the other classes' logits: exact (and differentiable) even where p rounds to 1."""
        others = logits.scatter(1, batch.labels.unsqueeze(1), float("-inf"))
        return torch.logsumexp(others, dim=-1) - torch.logsumexp(logits, dim=-1)

    def gold_score(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return logits.gather(1, batch.labels.unsqueeze(1)).squeeze(1)

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return nn.functional.cross_entropy(logits, batch.labels)

    def head_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
        """Logits from the base model's last hidden states, for UIMER-DM (which reads the states itself).

        The classification head differs between architectures, so only the ones mapped here are supported."""
        model, model_type = self.model, getattr(self.config, "model_type", "")
        if model_type in _POOLER_HEADS:
            pooler = getattr(self.encoder, "pooler", None)
            if pooler is None:
                raise ConfigError(f"the {model_type} model has no pooler, which its classification head reads")
            return model.classifier(model.dropout(pooler(hidden)))
        if model_type in _FEATURE_HEADS:
            return model.classifier(hidden)  # these heads take h_[CLS] themselves
        if model_type == "distilbert":
            pooled = torch.relu(model.pre_classifier(hidden[:, 0]))
            return model.classifier(model.dropout(pooled))
        raise ConfigError(
            f"model_type {model_type!r}: UIMER-DM reads hidden states and applies the classification head itself, "
            f"which the adapter knows for {', '.join(_POOLER_HEADS + _FEATURE_HEADS + ('distilbert',))}"
        )


class HFTokenClassifier(HFAdapter):
    """An `AutoModelForTokenClassification` (no CRF) as an `AttributableModel`, scored on labelled pieces.

    Its logits are the emissions at `Batch.word_starts` (B, W, T); `Batch.tags` holds the gold tag of each
    (see `uimer.data.collator`, which fills both from the HF `labels` with -100 on unscored pieces).
    """

    kind = TaskKind.TAGGING

    def forward(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.gather_words(self.raw_logits(batch, inputs_embeds), batch.word_starts)

    @staticmethod
    def gather_words(piece_logits: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
        """(B, W, T) rows of the (B, L, T) piece logits at the scored positions."""
        index = word_starts.unsqueeze(-1).expand(-1, -1, piece_logits.shape[-1])
        return piece_logits.gather(1, index)

    def _gold_tag_log_probs(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """(B, W) log softmax of the gold tag at every scored piece, 0 on padding words."""
        log_p = torch.log_softmax(logits, dim=-1).gather(2, batch.tags.unsqueeze(-1)).squeeze(-1)
        return log_p * batch.word_mask.to(log_p.dtype)

    def gold_log_prob(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """log p of the whole gold tag sequence under independent per-piece softmaxes."""
        return self._gold_tag_log_probs(logits, batch).sum(1)

    def gold_log_complement(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        return None  # a sequence probability's complement has no exact closed form (as for the CRF)

    def gold_score(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.gold_log_prob(logits, batch)

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """HF's token cross-entropy: the mean over every labelled piece of the batch."""
        count = batch.word_mask.sum().clamp_min(1).to(logits.dtype)
        return -self._gold_tag_log_probs(logits, batch).sum() / count

    def head_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
        """Emissions at the scored pieces from the base model's last hidden states (for UIMER-DM)."""
        model = self.model
        if not (hasattr(model, "classifier") and hasattr(model, "dropout")):
            raise ConfigError(f"{type(model).__name__}: UIMER-DM needs a token head of dropout + classifier")
        index = word_starts.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return model.classifier(model.dropout(hidden.gather(1, index)))


def adapt(model: nn.Module, kind: TaskKind | str | None = None) -> HFAdapter:
    """The adapter for a HF model, chosen from `kind` or, when None, from the model's class name."""
    if kind is None:
        name = type(model).__name__
        if name.endswith("ForTokenClassification"):
            kind = TaskKind.TAGGING
        elif name.endswith("ForSequenceClassification"):
            kind = TaskKind.CLASSIFICATION
        else:
            raise ConfigError(f"kind: cannot tell the task of a {name}; pass kind='classification', 'pair' or 'tagging'")
    try:
        kind = TaskKind(kind)
    except ValueError as err:
        raise ConfigError(f"kind must be one of {', '.join(k.value for k in TaskKind)}, not {kind!r}") from err
    if kind is TaskKind.TAGGING:
        return HFTokenClassifier(model)
    return HFSequenceClassifier(model, kind)
