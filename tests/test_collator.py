"""The HF-side collator: features -> the HF model's inputs and the uimer Batch, for sequences and tokens."""

from __future__ import annotations

import pytest
import torch

from conftest import make_tokenizer
from uimer.data.alignment import encode_with_rationales
from uimer.data.collator import BATCH_KEY, RationaleCollator, pop_batch
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError, DataError

TOKENIZER = make_tokenizer()
WORDS = [["play", "the", "songs"], ["what", "is", "the", "weather", "in", "paris"], ["zebra", "music"]]
FLAGS = [[1, 0, 1], [0, 0, 0, 1, 0, 1], [0, 0]]


def features(padding=False, **extra) -> list[dict]:
    enc = encode_with_rationales(TOKENIZER, WORDS, word_rationales=FLAGS, padding=padding)
    return [{**{k: enc[k][i] for k in enc.keys()}, "labels": i % 2, **extra} for i in range(len(WORDS))]


def test_sequence_batch_is_uimers_own_padding_and_masks():
    inputs = RationaleCollator(TOKENIZER)(features())
    batch = pop_batch(inputs)
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "labels"}
    ours = encode_examples([Example(words=w, label=i % 2, rationale=f) for i, (w, f) in enumerate(zip(WORDS, FLAGS,
                                                                                                    strict=True))],
                           TOKENIZER, TaskKind.CLASSIFICATION).collate([0, 1, 2])
    for name in ("input_ids", "attention_mask", "token_type_ids", "rationale", "real_mask", "has_rationale", "labels"):
        assert torch.equal(getattr(batch, name), getattr(ours, name)), name
    assert torch.equal(inputs["labels"], torch.tensor([0, 1, 0]))
    assert batch.has_rationale.tolist() == [True, True, False]
    assert not bool(batch.word_mask.any())  # no scored words for a sentence classifier
    assert batch.index.tolist() == [-1, -1, -1]
    assert BATCH_KEY not in inputs


def test_real_mask_without_special_tokens_mask_keeps_unk_and_drops_specials():
    plain = [{k: v for k, v in f.items() if k != "special_tokens_mask"} for f in features()]
    batch = RationaleCollator(TOKENIZER).collate(plain)[1]
    with_mask = RationaleCollator(TOKENIZER).collate(features())[1]
    assert torch.equal(batch.real_mask, with_mask.real_mask)
    unk = batch.input_ids == TOKENIZER.unk_token_id  # "zebra" is not in the vocabulary
    assert bool(unk.any()) and bool(batch.real_mask[unk].all())


def test_prepadded_features_and_index_column():
    padded = features(padding=True, index=7)
    assert len({len(f["input_ids"]) for f in padded}) == 1 and 0 in padded[0]["attention_mask"]
    inputs, batch = RationaleCollator(TOKENIZER).collate(padded)
    assert inputs["input_ids"].shape[1] == max(len(f["input_ids"]) - f["attention_mask"].count(0) for f in padded)
    assert torch.equal(batch.rationale, RationaleCollator(TOKENIZER).collate(features())[1].rationale)
    assert batch.index.tolist() == [7, 7, 7]


def test_token_batch_scores_the_labelled_pieces():
    enc = encode_with_rationales(TOKENIZER, WORDS, word_rationales=FLAGS)
    feats = []
    for i in range(len(WORDS)):
        labels, previous = [], None
        for w in enc.word_ids(i):
            labels.append(-100 if w is None or w == previous else (w % 3) + 1)
            previous = w
        feats.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                      "rationale_mask": enc["rationale_mask"][i], "labels": labels})
    inputs, batch = RationaleCollator(TOKENIZER).collate(feats)  # kind inferred from the per-piece labels
    assert "token_type_ids" not in inputs  # the features had none: the model's default applies
    assert batch.labels.tolist() == [-1, -1, -1]
    assert batch.word_mask.sum(1).tolist() == [len(w) for w in WORDS]
    for i, f in enumerate(feats):
        n = len(f["labels"])
        assert inputs["labels"][i, :n].tolist() == f["labels"]  # the HF labels come back unchanged
        assert bool((inputs["labels"][i, n:] == -100).all())
        starts = batch.word_starts[i, batch.word_mask[i]].tolist()
        assert starts == [p for p, label in enumerate(f["labels"]) if label != -100]
        assert batch.tags[i, batch.word_mask[i]].tolist() == [(w % 3) + 1 for w in range(len(WORDS[i]))]


def test_missing_rationales_name_remove_unused_columns():
    dropped = [{k: v for k, v in f.items() if k != "rationale_mask"} for f in features()]
    with pytest.raises(ConfigError, match="remove_unused_columns=False"):
        RationaleCollator(TOKENIZER)(dropped)
    batch = RationaleCollator(TOKENIZER, require_rationale=False).collate(dropped)[1]
    assert not bool(batch.has_rationale.any())


def test_bad_features_name_the_field():
    bad = features()
    bad[1]["rationale_mask"] = bad[1]["rationale_mask"][:-1]
    with pytest.raises(DataError, match="example #2 of the batch, field 'rationale_mask'"):
        RationaleCollator(TOKENIZER)(bad)
    left = features(padding=True)
    left[0]["attention_mask"] = list(reversed(left[0]["attention_mask"]))
    with pytest.raises(DataError, match="field 'attention_mask'.*right padding"):
        RationaleCollator(TOKENIZER)(left)
    with pytest.raises(ConfigError, match="kind must be one of"):
        RationaleCollator(TOKENIZER, kind="regression")
    with pytest.raises(ConfigError, match="RationaleCollator"):
        pop_batch({"input_ids": torch.zeros(1, 2)})


def test_pop_batch_moves_the_batch_with_the_inputs():
    inputs = RationaleCollator(TOKENIZER)(features())
    inputs = {k: v.to(torch.device("meta")) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    batch = pop_batch(inputs)
    assert batch.input_ids.device.type == "meta" and BATCH_KEY not in inputs


def test_collator_module_does_not_import_transformers():
    import subprocess
    import sys

    code = "import sys, uimer.data.collator, uimer.data.alignment; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_tokenizer_without_pad_token_is_refused():
    tokenizer = make_tokenizer()
    tokenizer.pad_token = None
    with pytest.raises(ConfigError, match="pad token"):
        RationaleCollator(tokenizer)
