"""The masked LM behind im-mlm: a few training steps of a tiny model, save/load, proposals, and the checks."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from conftest import WORDS, make_tiny_encoder, make_tokenizer
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.interpret import create_method
from uimer.interpret.base import MethodSetup
from uimer.interpret.replacement import real_vocabulary, special_ids
from uimer.models.mlm import load_masked_lm
from uimer.training.mlm import IGNORE, mask_for_mlm, register_mlm_cli, split_held_out, train_mlm

SENTENCES = [
    "play the song", "play my playlist", "add the song to my playlist", "what is the weather in paris",
    "what is the weather tomorrow", "book a movie", "rate the book five stars", "find the movie show",
    "kids are smiling at the camera", "children waving at me", "play music", "add music to my playlist",
    "show me the weather", "rate my song six stars", "find a book", "play a song tomorrow",
]


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny BERT encoder (no MLM head) with the word-level test tokenizer, saved like any HF encoder."""
    path = tmp_path_factory.mktemp("base")
    tokenizer = make_tokenizer()
    make_tiny_encoder(len(tokenizer), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm")
    report = train_mlm(SENTENCES, str(base_dir), out, steps=4, batch_size=4, lr=1e-3, seed=0, max_length=32,
                       held_out=0.2, progress=False)
    return out, report


def test_training_saves_a_loadable_tied_masked_lm(trained, tiny_tokenizer):
    out, report = trained
    assert (out / "config.json").exists() and (out / "mlm-eval.json").exists()
    stored = json.loads((out / "mlm-eval.json").read_text())
    assert stored == report
    assert report["held_out_sentences"] == 3 and report["train_sentences"] == 13 and report["steps"] == 4
    assert 0.0 <= report["top1"] <= report["top5"] <= 1.0 and report["masked_tokens"] >= 0
    model = load_masked_lm(str(out), tiny_tokenizer)
    assert not model.training
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    ids = tiny_tokenizer(["play the [MASK]"], return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits
    assert logits.shape == (1, 5, len(tiny_tokenizer)) and torch.isfinite(logits).all()


def test_loading_checks_head_and_tokenizer(base_dir, trained, tiny_tokenizer):
    from transformers import BertTokenizerFast

    with pytest.raises(ConfigError, match="no trained masked-LM head"):
        load_masked_lm(str(base_dir), tiny_tokenizer)
    other = BertTokenizerFast(vocab={w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x"])})
    with pytest.raises(ConfigError, match="different tokenizer"):
        load_masked_lm(str(trained[0]), other)
    with pytest.raises(ConfigError, match="cannot load"):
        load_masked_lm(str(base_dir / "missing"), tiny_tokenizer)


def test_im_mlm_proposes_the_top_k_of_the_masked_lm(trained, tiny_tokenizer):
    out, _ = trained
    examples = [Example(words="play the song tomorrow".split(), label=0, rationale=[1, 0, 1, 0]),
                Example(words="what is the weather in paris".split(), label=1, rationale=[0, 0, 0, 1, 0, 0])]
    split = encode_examples(examples, tiny_tokenizer, TaskKind.CLASSIFICATION)
    method = create_method("im-mlm", {"mlm": str(out), "im_k": 3})
    method.prepare(MethodSetup(None, tiny_tokenizer, split, 0))
    sets = method.sets
    assert sets.valid.all() and torch.allclose(sets.log_q.exp().sum(-1), torch.ones(2, 2))
    mlm = load_masked_lm(str(out), tiny_tokenizer)
    excluded = torch.tensor(sorted(special_ids(tiny_tokenizer)))
    batch = split.collate([0, 1])
    for n in range(2):
        for side in range(2):
            positions = sets.replaced[n, side].nonzero().squeeze(1).tolist()
            weights = []
            for j in positions:
                masked = batch.input_ids[n : n + 1].clone()
                masked[0, j] = tiny_tokenizer.mask_token_id
                with torch.no_grad():
                    logits = mlm(input_ids=masked, attention_mask=batch.attention_mask[n : n + 1]).logits[0, j]
                logits[excluded] = float("-inf")
                top = logits.topk(3)
                assert sets.input_ids[n, side, :, j].tolist() == top.indices.tolist()
                weights.append(torch.softmax(top.values, -1))
            q = torch.stack(weights).mean(0)  # footnote 4: q = mean of the positions' weights
            assert torch.allclose(sets.log_q[n, side].exp(), q, atol=1e-5)
    # Resampling each epoch reuses the precomputed proposals: same ids at the same positions.
    epoch = create_method("im-mlm", {"mlm": str(out), "im_k": 3, "im_resample": "epoch"})
    epoch.prepare(MethodSetup(None, tiny_tokenizer, split, 0))
    assert torch.equal(epoch.sets.input_ids, sets.input_ids)
    epoch.on_epoch_start(1)
    assert epoch.sets.valid.all()


def test_mask_for_mlm_recipe():
    tokenizer = make_tokenizer()
    vocabulary = real_vocabulary(tokenizer)
    ids = torch.randint(5, len(tokenizer), (400, 50))
    real = torch.ones_like(ids, dtype=torch.bool)
    real[:, :1] = False
    real[:, -10:] = False
    inputs, labels = mask_for_mlm(ids, real, tokenizer.mask_token_id, vocabulary, torch.Generator().manual_seed(0))
    selected = labels != IGNORE
    assert not (selected & ~real).any()
    assert selected.sum() / real.sum() == pytest.approx(0.15, abs=0.01)
    assert torch.equal(labels[selected], ids[selected])
    masked = (inputs == tokenizer.mask_token_id) & selected
    kept = (inputs == ids) & selected
    assert masked.sum() / selected.sum() == pytest.approx(0.8, abs=0.02)
    assert kept.sum() / selected.sum() == pytest.approx(0.1 + 0.1 / len(vocabulary), abs=0.02)
    assert torch.equal(inputs[~selected], ids[~selected])
    assert torch.isin(inputs[selected & ~masked], vocabulary).all()
    all_masked, _ = mask_for_mlm(ids, real, 4, vocabulary, torch.Generator().manual_seed(0), all_mask=True)
    assert (all_masked[selected] == 4).all()


def test_held_out_split_is_seeded_and_disjoint():
    sentences = [f"sentence {i}" for i in range(100)] + ["sentence 1"]
    train, held = split_held_out(sentences, 0.05, seed=3)
    assert len(held) == 5 and len(train) == 95 and not set(train) & set(held)
    assert split_held_out(sentences, 0.05, seed=3) == (train, held)
    with pytest.raises(ConfigError):
        split_held_out(["only one"], 0.05, seed=0)


def test_cli_registration(tmp_path):
    parser = argparse.ArgumentParser()
    register_mlm_cli(parser.add_subparsers(dest="command"))
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES) + "\n")
    args = parser.parse_args(["mlm", "train", "--corpus", str(corpus), "--out", str(tmp_path / "m"), "--steps", "2"])
    assert args.steps == 2 and args.batch_size == 32 and args.base == "minilm" and callable(args.func)
    args = parser.parse_args(["mlm", "train", "--out", "x"])
    with pytest.raises(ConfigError, match="--task or --corpus"):
        args.func(args)


def test_vocabulary_words_are_in_the_corpus():
    # Guards the fixtures: every corpus word is a whole piece of the test tokenizer.
    assert {w for s in SENTENCES for w in s.split()} <= set(WORDS)
