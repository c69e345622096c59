"""From word pieces to words, and batches in row chunks: the helpers attributions and their evaluation share.

`word_ids` (B, L) gives each piece's word (-1 for [CLS]/[SEP]/padding and truncated words); a pair's second
sentence continues the numbering after the first.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import fields, replace

import torch

from uimer.data.encoding import Batch


def word_membership(word_ids: torch.Tensor, n_words: int) -> torch.Tensor:
    """(B, W, L) bool: piece l belongs to word w."""
    words = torch.arange(n_words, device=word_ids.device)
    return word_ids.unsqueeze(1) == words[None, :, None]


def pieces_to_words(piece_scores: torch.Tensor, word_ids: torch.Tensor, n_words: int) -> torch.Tensor:
    """(B, W) max over each word's pieces; -inf for words without a piece (truncated)."""
    b = piece_scores.shape[0]
    index = torch.where(word_ids >= 0, word_ids, torch.full_like(word_ids, n_words))
    out = torch.full((b, n_words + 1), -math.inf, dtype=piece_scores.dtype, device=piece_scores.device)
    out = out.scatter_reduce(1, index, piece_scores, reduce="amax", include_self=True)
    return out[:, :n_words]


def words_to_pieces(word_scores: torch.Tensor, word_ids: torch.Tensor) -> torch.Tensor:
    """(B, L): each piece carries its word's score; 0 for pieces outside words and for absent (-inf) words."""
    gathered = word_scores.gather(1, word_ids.clamp_min(0))
    keep = (word_ids >= 0) & torch.isfinite(gathered)
    return torch.where(keep, gathered, torch.zeros_like(gathered))


def index_batch(batch: Batch, rows: torch.Tensor) -> Batch:
    """The batch's examples `rows` (repeats allowed), every field gathered the same way."""
    return Batch(**{f.name: getattr(batch, f.name).index_select(0, rows) for f in fields(batch)})


def chunked(fn: Callable[[Batch], torch.Tensor], batch: Batch, chunk: int) -> torch.Tensor:
    """fn over row chunks of `batch` (padding trimmed to each chunk's longest row), concatenated."""
    parts = []
    for start in range(0, batch.size, max(1, chunk)):
        rows = torch.arange(start, min(start + chunk, batch.size), device=batch.input_ids.device)
        part = index_batch(batch, rows)
        length = max(int(part.attention_mask.sum(1).max()), 1) if part.size else 1
        part = replace(part, input_ids=part.input_ids[:, :length], attention_mask=part.attention_mask[:, :length],
                       token_type_ids=part.token_type_ids[:, :length], rationale=part.rationale[:, :length],
                       real_mask=part.real_mask[:, :length])
        parts.append(fn(part))
    return torch.cat(parts) if parts else torch.empty(0)
