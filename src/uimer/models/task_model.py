"""An encoder plus one of the paper's three heads, with the quantities interpretation methods need.

- classification (intent): pooled encoder state -> dropout -> linear (softmax over classes);
- tagging (slots): first word-piece of each word -> dropout -> linear emissions -> CRF over *words*;
  running the CRF over words (not pieces) keeps pytorch-crf's rule that mask[:, 0] is on, and never trains
  the CRF on padding tags;
- pair (NLI): `[CLS] premise [SEP] hypothesis [SEP]` -> h_[CLS] (or pooled) -> linear.

Every forward goes through `inputs_embeds`, so gradient methods get per-position, per-example gradients.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch
from torch import nn
from torchcrf import CRF

from uimer.data.encoding import Batch
from uimer.data.types import TaskKind
from uimer.models.encoder import load_encoder, load_tokenizer

POOLINGS = ("cls", "mean")
PRECISIONS = ("fp32", "bf16")


class TaskModel(nn.Module):
    def __init__(
        self,
        encoder: nn.Module,
        kind: TaskKind,
        num_labels: int,
        dropout: float = 0.1,
        pooling: str = "cls",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}")
        self.encoder = encoder
        self.kind = kind
        self.pooling = pooling
        self.num_labels = num_labels
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        self.crf = CRF(num_labels, batch_first=True) if kind is TaskKind.TAGGING else None
        self.precision = "fp32"  # "bf16": the encoder runs under autocast; heads, CRF and losses stay fp32

    def set_precision(self, precision: str) -> TaskModel:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
        self.precision = precision
        return self

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on the model's device for the encoder's matrix work, or nothing in fp32.

        Only the encoder call is autocast and its states come back as fp32, so every loss, log-odds and
        CRF score is computed in fp32 and the gradient methods' double backward sees fp32 inputs."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.head.weight.device.type, dtype=torch.bfloat16)

    # -- forward -------------------------------------------------------------------------------------
    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word embeddings only; position and segment embeddings are added inside the encoder."""
        return self.encoder.get_input_embeddings()(input_ids)

    def encode(
        self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        with self.autocast():
            out = self.encoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               token_type_ids=token_type_ids)
        return out.last_hidden_state.to(inputs_embeds.dtype)  # autocast's bf16 back to the model's dtype

    def head_logits(self, hidden: torch.Tensor, attention_mask: torch.Tensor, word_starts: torch.Tensor) -> torch.Tensor:
        """Class logits (B, C) or word emissions (B, W, T) from the last hidden states."""
        if self.kind is TaskKind.TAGGING:
            index = word_starts.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
            return self.head(self.dropout(hidden.gather(1, index)))
        if self.pooling == "mean":
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        else:
            pooled = hidden[:, 0]
        return self.head(self.dropout(pooled))

    def forward(self, batch: Batch, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.embed(batch.input_ids)
        hidden = self.encode(inputs_embeds, batch.attention_mask, batch.token_type_ids)
        return self.head_logits(hidden, batch.attention_mask, batch.word_starts)

    # -- task quantities -----------------------------------------------------------------------------
    @staticmethod
    def _crf_mask(word_mask: torch.Tensor) -> torch.Tensor:
        mask = word_mask.clone()
        mask[:, 0] = True  # pytorch-crf requires the first step on; readers reject empty sentences
        return mask

    def gold_log_prob(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """log p(y | x) per example: gold-class log-softmax, or the CRF log-likelihood of the gold tag sequence."""
        if self.crf is not None:
            return self.crf(logits, batch.tags, mask=self._crf_mask(batch.word_mask), reduction="none")
        return torch.log_softmax(logits, dim=-1).gather(1, batch.labels.unsqueeze(1)).squeeze(1)

    def gold_log_complement(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """log(1 - p(y | x)) computed directly from the other classes' logits, so it stays exact (and
        differentiable) when p rounds to 1 in float32; None for the CRF, whose complement has no closed form."""
        if self.crf is not None:
            return None
        others = logits.scatter(1, batch.labels.unsqueeze(1), float("-inf"))
        return torch.logsumexp(others, dim=-1) - torch.logsumexp(logits, dim=-1)

    def gold_score(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The scalar per example that saliency is taken of: the gold logit, or the gold CRF log-likelihood."""
        if self.crf is not None:
            return self.gold_log_prob(logits, batch)
        return logits.gather(1, batch.labels.unsqueeze(1)).squeeze(1)

    def task_loss(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean negative log-likelihood: cross-entropy, or CRF NLL averaged over the batch."""
        if self.crf is not None:
            return -self.gold_log_prob(logits, batch).mean()
        return nn.functional.cross_entropy(logits, batch.labels)

    def predict(self, logits: torch.Tensor, batch: Batch) -> list:
        """Class ids, or one list of tag ids per example (over its kept words)."""
        if self.crf is not None:
            return self.crf.decode(logits, mask=self._crf_mask(batch.word_mask))
        return logits.argmax(-1).tolist()

    # -- persistence -------------------------------------------------------------------------------
    def save(self, directory: Path, tokenizer, meta: dict) -> None:
        """Self-contained: the encoder, its tokenizer, the head (and CRF) and what they mean."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(directory / "encoder")
        tokenizer.save_pretrained(directory / "encoder")
        heads = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        torch.save(heads, directory / "head.pt")
        info = {"kind": self.kind.value, "num_labels": self.num_labels, "pooling": self.pooling, **meta}
        tmp = directory / "uimer-model.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(directory / "uimer-model.json")

    @classmethod
    def load(cls, directory: Path, attn_implementation: str = "sdpa") -> tuple[TaskModel, object, dict]:
        directory = Path(directory)
        meta_path = directory / "uimer-model.json"
        if not meta_path.exists():
            from uimer.errors import ConfigError

            raise ConfigError(f"{directory} is not a saved uimer model (no uimer-model.json)")
        info = json.loads(meta_path.read_text())
        encoder = load_encoder(str(directory / "encoder"), attn_implementation)
        model = cls(encoder, TaskKind(info["kind"]), info["num_labels"], pooling=info.get("pooling", "cls"))
        model.load_state_dict(torch.load(directory / "head.pt", weights_only=True), strict=False)
        tokenizer = load_tokenizer(str(directory / "encoder"))
        return model, tokenizer, info


def build_model(
    encoder_name: str, kind: TaskKind, num_labels: int, pooling: str = "cls", attn_implementation: str = "sdpa"
) -> TaskModel:
    return TaskModel(load_encoder(encoder_name, attn_implementation), kind, num_labels, pooling=pooling)
