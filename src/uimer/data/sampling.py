"""Low-resource training subsets, reproducing the reference exactly (digest §1.3, §1.4, Appendix A).

All samplers return 0-based indices into the training list, in the order the examples should be fed.

The reference calls `random.seed(seed)` and then `random.shuffle(list)` on the module-level RNG. The samplers
here use a private `random.Random(seed)` instead: it is the same Mersenne Twister seeded the same way, so the
shuffle is identical (verified against fewshot-subsets.json) without touching the global RNG.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence

from uimer.data.types import Example
from uimer.errors import ConfigError

EXCLUDED_INTENT_CLASSES = frozenset({"UNK"})
EXCLUDED_TAGS = frozenset({"PAD", "UNK"})


def _all(shot: int | None) -> bool:
    if shot is None or shot == -1:
        return True
    if shot < 1:
        raise ConfigError(f"shot must be a positive integer or -1 (all), got {shot}")
    return False


def _shuffled(n: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order


def sample_intent(train: Sequence[Example], labels: Sequence[str], shot: int | None, seed: int) -> list[int]:
    """n-shot classification subset: shuffle all indices, then keep an example while its class has < `shot`.

    Classes are all labels except UNK; stops once every class has `shot` (7·n examples on SNIPS). Returns the
    indices in shuffled order, which is the reference's fixed training order. `shot` -1/None: all, file order.
    """
    if _all(shot):
        return list(range(len(train)))
    classes = {i for i, name in enumerate(labels) if name not in EXCLUDED_INTENT_CLASSES}
    counts = dict.fromkeys(classes, 0)
    chosen: list[int] = []
    remaining = len(classes)
    for idx in _shuffled(len(train), seed):
        label = train[idx].label
        if label not in counts or counts[label] >= shot:
            continue
        counts[label] += 1
        chosen.append(idx)
        if counts[label] == shot:
            remaining -= 1
            if remaining == 0:
                break
    return chosen


def slot_types(labels: Sequence[str]) -> list[str]:
    """Slot *types* of a tag set: B-/I- prefixes stripped, O kept as a type, PAD/UNK dropped (40 on SNIPS)."""
    types: list[str] = []
    for name in labels:
        if name in EXCLUDED_TAGS:
            continue
        t = name[2:] if name.startswith(("B-", "I-")) else name
        if t not in types:
            types.append(t)
    return types


def sample_slot(train: Sequence[Example], labels: Sequence[str], shot: int | None, seed: int) -> list[int]:
    """n-shot tagging subset, per TOKEN as in the reference (digest §1.4, a deviation from the paper's "span").

    Walk the shuffled indices; for each token whose type counter is below `shot`, increment it and mark the
    example; keep marked examples; stop once every type (from the label list) has reached `shot`.
    """
    if _all(shot):
        return list(range(len(train)))
    types = slot_types(labels)
    tag_type: dict[int, str | None] = {}
    for i, name in enumerate(labels):
        tag_type[i] = None if name in EXCLUDED_TAGS else (name[2:] if name.startswith(("B-", "I-")) else name)
    counts = dict.fromkeys(types, 0)
    remaining = len(types)
    chosen: list[int] = []
    for idx in _shuffled(len(train), seed):
        keep = False
        for tag in train[idx].tags or ():
            t = tag_type.get(tag)
            if t is None or counts[t] >= shot:
                continue
            counts[t] += 1
            keep = True
            if counts[t] == shot:
                remaining -= 1
        if keep:
            chosen.append(idx)
        if remaining == 0:
            break
    return chosen


def sample_pairs(n_pool: int, k: int | None, seed: int) -> list[int]:
    """k indices of a pool of n_pool, drawn with `random.Random(seed).sample(range(n_pool), k)`.

    Used for the e-SNLI 100/500-sample settings. (The reference took the first k rows for every seed; this
    draws a different random subset per seed.) The result is in draw order. k -1/None: all, in pool order.
    """
    if k is None or k == -1:
        return list(range(n_pool))
    if k < 1 or k > n_pool:
        raise ConfigError(f"train size must be between 1 and the pool size {n_pool} (or -1 for all), got {k}")
    return random.Random(seed).sample(range(n_pool), k)


def _strat_key(ex: Example, labels: Sequence[str] | None) -> Hashable:
    if ex.label is not None:
        return ex.label
    if ex.tags is not None and labels is not None:
        for tag in ex.tags:
            name = labels[tag]
            if name not in EXCLUDED_TAGS and name != "O":
                return name[2:] if name.startswith(("B-", "I-")) else name
        return "O"
    return None


def stratified_subset(
    examples: Sequence[Example], n: int, seed: int, *, labels: Sequence[str] | None = None
) -> list[int]:
    """A fixed, seeded subset of n examples (e.g. a cheaper dev set), stratified by class; sorted indices.

    Strata: the class label (classification/pairs). For tagging, the type of the first non-O tag ("O" if
    none) when `labels` (tag names) is given, else one stratum (simple random sample). Allocation is
    proportional with largest remainders (ties: larger stratum, then first appearance); within a stratum the
    members are drawn with one `random.Random(seed)`, strata visited in first-appearance order.
    n >= len(examples) returns everything.
    """
    total = len(examples)
    if n >= total:
        return list(range(total))
    if n < 1:
        raise ConfigError(f"subset size must be positive, got {n}")
    strata: dict[Hashable, list[int]] = defaultdict(list)
    for i, ex in enumerate(examples):
        strata[_strat_key(ex, labels)].append(i)
    keys = list(strata)  # first-appearance order
    quotas = {k: n * len(strata[k]) / total for k in keys}
    alloc = {k: int(quotas[k]) for k in keys}
    left = n - sum(alloc.values())
    order = sorted(keys, key=lambda k: (-(quotas[k] - alloc[k]), -len(strata[k]), keys.index(k)))
    for k in order[:left]:
        alloc[k] += 1
    rng = random.Random(seed)
    chosen: list[int] = []
    for k in keys:
        chosen.extend(rng.sample(strata[k], alloc[k]))
    return sorted(chosen)
