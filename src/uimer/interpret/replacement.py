"""Replacement sets S^R and S^N for UIMER-IM (paper §3.2, digest §5.1-5.2): which pieces, by what, with which q.

For every example with rationale pieces, side 0 (S^R) replaces rationale pieces and side 1 (S^N) the same
number of randomly chosen non-rationale pieces; each side has K sentences x'(r), r = 0..K-1. Every replaced
position j gets K candidates c_j[r] with weights w_j[r] (sum_r w_j[r] = 1) from a *proposer*, aligned by rank
(MLM) or draw (uniform, prior) across positions, and q(x'(r)) is the mean of w_j[r] over the replaced
positions (paper footnote 4), so sum_r q(x'(r)) = 1 and m = sum_r q p is a weighted average.

Rules kept here, not in the proposers:
- only real word pieces are ever replaced (never [CLS], [SEP], padding: `Batch.real_mask`);
- a cap of at most max(1, floor(fraction * L)) rationale pieces (L counts [CLS]/[SEP], as the reference),
  chosen with the seeded generator, and the *same* count of non-rationale pieces (the reference's
  cut-down counted the uncapped pieces, digest §2.5); uncapped rationale pieces are never "non-rationales";
- when fewer non-rationale pieces exist than needed, all of them are replaced; an example with no
  non-rationale piece (or no rationale piece) has no a_N (a_R) and is left out of L_int (`valid`).

Everything is tensorised over all examples at once, so building the sets for a whole training split is a
handful of tensor operations (plus the masked-LM forwards for the MLM strategy).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from uimer.errors import ConfigError

RATIONALE_SIDE, NON_RATIONALE_SIDE = 0, 1
MIN_Q = 1e-30  # q is a positive weight; this only keeps log q finite if a softmax weight underflows
_UNUSED = re.compile(r"^\[unused\d+\]$")


@dataclass
class ReplacementSets:
    """Precomputed replaced sentences of N examples, padded to one length L."""

    input_ids: torch.Tensor  # (N, 2, K, L): side 0 = S^R, side 1 = S^N
    log_q: torch.Tensor  # (N, 2, K): log q(x'(r)); sum_r q = 1 for valid examples
    replaced: torch.Tensor  # (N, 2, L) bool: positions replaced on each side
    valid: torch.Tensor  # (N,) bool: both sides replace at least one piece
    original: torch.Tensor  # (N, L) the unreplaced input ids (to check a batch really is this split)

    @property
    def k(self) -> int:
        return self.input_ids.shape[2]

    def to(self, device: torch.device | str) -> ReplacementSets:
        return ReplacementSets(*(t.to(device) for t in
                                 (self.input_ids, self.log_q, self.replaced, self.valid, self.original)))


# -- vocabularies -----------------------------------------------------------------------------------------
def special_ids(tokenizer) -> set[int]:
    """Ids of special ([CLS], [PAD], ...) and [unusedN] tokens: never proposed as replacements."""
    ids = set(tokenizer.all_special_ids)
    ids.update(i for tok, i in tokenizer.get_vocab().items() if _UNUSED.match(tok))
    return ids


def real_vocabulary(tokenizer, limit: int | None = None) -> torch.Tensor:
    """Sorted ids of real word pieces: not special, not [unusedN], below `limit` (the model's embedding rows)."""
    excluded = special_ids(tokenizer)
    bound = len(tokenizer) if limit is None else min(len(tokenizer), limit)
    ids = sorted(i for i in set(tokenizer.get_vocab().values()) if i < bound and i not in excluded)
    if not ids:
        raise ConfigError("the tokenizer has no real word pieces to replace with")
    return torch.tensor(ids, dtype=torch.long)


def unigram_prior(input_ids: torch.Tensor, real_mask: torch.Tensor, vocab_size: int,
                  exclude: set[int] | None = None) -> torch.Tensor:
    """Unigram frequency (V,) of the real word pieces of a split; sums to 1 over the pieces seen.

    This is the paper's Prior, count(u)/N over the training text (the reference counts the current train
    subset). Special tokens ([UNK]) are left out so that no strategy ever proposes one.
    """
    pieces = input_ids[real_mask]
    counts = torch.bincount(pieces, minlength=vocab_size)[:vocab_size].double()
    if exclude:
        drop = torch.tensor(sorted(i for i in exclude if i < vocab_size), dtype=torch.long)
        counts[drop] = 0
    total = counts.sum()
    if total <= 0:
        raise ConfigError("the prior strategy needs training text with at least one real word piece")
    return (counts / total).float()


# -- proposers ------------------------------------------------------------------------------------------
class Proposer(ABC):
    """K replacement candidates and their weights for chosen positions."""

    k: int

    @abstractmethod
    def propose(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                positions: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, K) candidate ids and (M, K) weights summing to 1 per row, for the M True entries of
        `positions` (N, L) in row-major order."""


class MaskProposer(Proposer):
    """[MASK] with q = 1 (the paper's footnote-1 "MASK"); one sentence per side since all K would be equal."""

    k = 1

    def __init__(self, mask_id: int | None):
        if mask_id is None:
            raise ConfigError("the mask strategy needs a tokenizer with a [MASK] token")
        self.mask_id = int(mask_id)

    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        m = int(positions.sum())
        return torch.full((m, 1), self.mask_id, dtype=torch.long), torch.ones(m, 1)


def distinct_draws(pool_size: int, rows: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, k) indices into range(pool_size), distinct within a row, uniformly drawn.

    Rows with a repeat are redrawn whole (rejection), which keeps every k-subset equally likely; with
    k << pool_size repeats are rare (K=2 over ~29k pieces: 1 row in ~30k), so the loop runs once or twice.
    """
    if k > pool_size:
        raise ConfigError(f"cannot draw {k} distinct replacements from {pool_size} word pieces")
    draws = torch.randint(pool_size, (rows, k), generator=generator)
    while k > 1:
        ordered = draws.sort(1).values
        repeated = (ordered[:, 1:] == ordered[:, :-1]).any(1)
        n_bad = int(repeated.sum())
        if n_bad == 0:
            break
        draws[repeated] = torch.randint(pool_size, (n_bad, k), generator=generator)
    return draws


class UniformProposer(Proposer):
    """K distinct real word pieces uniformly, q = 1/|V_real| per draw, i.e. w = 1/K after renormalising."""

    def __init__(self, vocabulary: torch.Tensor, k: int):
        self.vocabulary = vocabulary
        self.k = k

    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        m = int(positions.sum())
        picks = distinct_draws(len(self.vocabulary), m, self.k, generator)
        return self.vocabulary[picks], torch.full((m, self.k), 1.0 / self.k)


class PriorProposer(Proposer):
    """K draws with replacement from the unigram prior; w = the drawn frequencies renormalised over the K."""

    def __init__(self, frequencies: torch.Tensor, k: int):
        self.frequencies = frequencies
        self.k = k

    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        m = int(positions.sum())
        if m == 0:
            return torch.empty(0, self.k, dtype=torch.long), torch.empty(0, self.k)
        draws = torch.multinomial(self.frequencies, m * self.k, replacement=True, generator=generator)
        draws = draws.view(m, self.k)
        freq = self.frequencies[draws]
        return draws, freq / freq.sum(1, keepdim=True)


class MLMProposer(Proposer):
    """Top-K of a masked LM at each position, masking only that position in the original sentence.

    All positions of all examples are batched into a few no-grad forwards (`chunk` sequences each); w is the
    softmax over the K top logits (renormalised over the K, as the reference). Special and [unused] tokens
    are excluded from the proposals (the reference did not filter; a [SEP] mid-sentence changes the input's
    structure rather than a word). The original piece may be proposed, as in Kim et al.'s marginalisation.
    """

    def __init__(self, mlm: torch.nn.Module, allowed: torch.Tensor, mask_id: int, k: int,
                 device: torch.device | str = "cpu", chunk: int = 256):
        self.mlm = mlm
        self.allowed = allowed  # (V_mlm,) bool
        self.mask_id = int(mask_id)
        self.k = k
        self.device = torch.device(device)
        self.chunk = max(1, chunk)
        if int(allowed.sum()) < k:
            raise ConfigError(f"the masked LM has fewer than {k} real word pieces to propose")

    def _position_logits(self, ids: torch.Tensor, attention: torch.Tensor, types: torch.Tensor,
                         cols: torch.Tensor) -> torch.Tensor:
        """MLM logits at one position per row; the LM head runs only there when the model allows it."""
        prefix = getattr(self.mlm, "base_model_prefix", "")
        base = getattr(self.mlm, prefix, None) if prefix else None
        head = getattr(self.mlm, "cls", None)
        rows = torch.arange(len(ids), device=ids.device)
        if base is not None and head is not None:  # BERT family: encoder, then the head at the masked spot
            hidden = base(input_ids=ids, attention_mask=attention, token_type_ids=types).last_hidden_state
            return head(hidden[rows, cols])
        return self.mlm(input_ids=ids, attention_mask=attention, token_type_ids=types).logits[rows, cols]

    @torch.no_grad()
    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        rows, cols = positions.nonzero(as_tuple=True)
        ids_out, w_out = [], []
        was_training = self.mlm.training
        self.mlm.eval()
        try:
            for start in range(0, len(rows), self.chunk):
                r, c = rows[start:start + self.chunk], cols[start:start + self.chunk]
                masked = input_ids[r].clone()
                masked[torch.arange(len(r)), c] = self.mask_id
                logits = self._position_logits(masked.to(self.device), attention_mask[r].to(self.device),
                                                token_type_ids[r].to(self.device), c.to(self.device)).float()
                allowed = self.allowed.to(logits.device)
                logits = logits[:, : len(allowed)].masked_fill(~allowed[: logits.shape[1]], float("-inf"))
                top = logits.topk(self.k, dim=-1)
                ids_out.append(top.indices.cpu())
                w_out.append(torch.softmax(top.values, dim=-1).cpu())
        finally:
            self.mlm.train(was_training)
        if not ids_out:
            return torch.empty(0, self.k, dtype=torch.long), torch.empty(0, self.k)
        return torch.cat(ids_out), torch.cat(w_out)


class TableProposer(Proposer):
    """Proposals precomputed at every position of a fixed split (the MLM's are deterministic), so drawing
    new positions each epoch costs a gather, not masked-LM forwards."""

    def __init__(self, candidates: torch.Tensor, weights: torch.Tensor):
        self.candidates = candidates  # (N, L, K)
        self.weights = weights  # (N, L, K)
        self.k = candidates.shape[-1]

    @classmethod
    def precompute(cls, proposer: Proposer, input_ids, attention_mask, token_type_ids, real_mask,
                   generator: torch.Generator) -> TableProposer:
        n, length = input_ids.shape
        cand = torch.zeros(n, length, proposer.k, dtype=torch.long)
        weights = torch.zeros(n, length, proposer.k)
        c, w = proposer.propose(input_ids, attention_mask, token_type_ids, real_mask, generator)
        cand[real_mask], weights[real_mask] = c, w
        return cls(cand, weights)

    def propose(self, input_ids, attention_mask, token_type_ids, positions, generator):
        return self.candidates[positions], self.weights[positions]


# -- positions and sets ---------------------------------------------------------------------------------
def cap_counts(lengths: torch.Tensor, fraction: float | None) -> torch.Tensor | None:
    """max(1, floor(fraction * L)) per example; None when uncapped."""
    if fraction is None:
        return None
    # A tiny epsilon keeps e.g. 0.29 * 100 (= 28.999...) at 29.
    return torch.floor(lengths.double() * fraction + 1e-9).long().clamp_min(1)


def random_subset(mask: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Per row, `counts` of the True entries of `mask` chosen uniformly at random (all of them if fewer)."""
    keys = torch.rand(mask.shape, generator=generator).masked_fill(~mask, 2.0)
    ranks = keys.argsort(1).argsort(1)
    return mask & (ranks < counts.unsqueeze(1))


def select_positions(real_mask: torch.Tensor, rationale: torch.Tensor, attention_mask: torch.Tensor,
                     fraction: float | None, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Replaced positions (N, 2, L) of S^R (side 0) and S^N (side 1), and which examples are valid."""
    real = real_mask.bool()
    is_rationale = (rationale > 0) & real
    non_rationale = real & ~is_rationale
    n_r = is_rationale.sum(1)
    cap = cap_counts(attention_mask.sum(1), fraction)
    if cap is not None:
        n_r = torch.minimum(n_r, cap)
    chosen_r = random_subset(is_rationale, n_r, generator)
    n_n = torch.minimum(n_r, non_rationale.sum(1))
    chosen_n = random_subset(non_rationale, n_n, generator)
    valid = (n_r > 0) & (n_n > 0)
    return torch.stack([chosen_r, chosen_n], dim=1), valid


def build_replacement_sets(input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
                           real_mask: torch.Tensor, rationale: torch.Tensor, proposer: Proposer,
                           fraction: float | None, generator: torch.Generator) -> ReplacementSets:
    """S^R and S^N for a padded batch of examples (all on CPU; move the result to the training device)."""
    n, length = input_ids.shape
    k = proposer.k
    chosen, valid = select_positions(real_mask, rationale, attention_mask, fraction, generator)
    positions = chosen.any(1)  # the two sides never share a position
    cand_flat, w_flat = proposer.propose(input_ids, attention_mask, token_type_ids, positions, generator)
    candidates = input_ids.unsqueeze(-1).expand(n, length, k).clone()
    weights = torch.zeros(n, length, k)
    candidates[positions] = cand_flat
    weights[positions] = w_flat.float()
    # (N, 2, K, L): position j of x'_side(r) is c_j[r] where the side replaces j, else the original piece.
    replaced_ids = torch.where(chosen.unsqueeze(2), candidates.permute(0, 2, 1).unsqueeze(1),
                               input_ids[:, None, None, :])
    counts = chosen.sum(-1).clamp_min(1).unsqueeze(-1)  # (N, 2, 1)
    q = torch.einsum("nsl,nlk->nsk", chosen.float(), weights) / counts
    return ReplacementSets(
        input_ids=replaced_ids,
        log_q=q.clamp_min(MIN_Q).log(),
        replaced=chosen,
        valid=valid,
        original=input_ids.clone(),
    )


def derive_seed(seed: int, salt: int) -> int:
    """A generator seed for IM that differs from the trainer's streams seeded with `seed` itself."""
    return (seed * 1_000_003 + salt) % (2**63 - 1)

