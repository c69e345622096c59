"""uimer classifiers saved as plain transformers models: export -> from_pretrained -> the same predictions."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import make_tiny_encoder
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.models.export import export_hf_classifier, export_saved_model, to_hf_sequence_classifier
from uimer.models.task_model import TaskModel

LABELS = ["PlayMusic", "GetWeather", "AddToPlaylist", "BookRestaurant"]
SENTENCES = ["play the song tomorrow", "what is the weather in paris", "add my song to my playlist",
             "book a movie", "rate the book five stars", "show me the weather", "play music", "find a movie show"]


def trained_like(tokenizer, kind: TaskKind, seed: int = 0) -> TaskModel:
    """A TaskModel whose head separates the test sentences (a random encoder's h_[CLS] barely varies between
    inputs, so a random head would predict one class for all and prove nothing)."""
    torch.manual_seed(seed)
    model = TaskModel(make_tiny_encoder(len(tokenizer), seed), kind, len(LABELS)).eval()
    cls = cls_states(model, tokenizer, kind)
    with torch.no_grad():
        centred = cls - cls.mean(0)
        weight = torch.randn(len(LABELS), cls.shape[1]) * 5.0 / centred.norm(dim=1).mean()
        model.head.weight.copy_(weight)
        model.head.bias.copy_(-weight @ cls.mean(0))
    return model


def hf_inputs(tokenizer, kind: TaskKind) -> dict:
    if kind is TaskKind.PAIR:
        return tokenizer(SENTENCES[:4], SENTENCES[4:], padding=True, return_tensors="pt")
    return tokenizer(SENTENCES, padding=True, return_tensors="pt")


def uimer_batch(tokenizer, kind: TaskKind):
    words = [s.split() for s in SENTENCES]
    if kind is TaskKind.PAIR:
        examples = [Example(words=a, pair_words=b, label=0) for a, b in zip(words[:4], words[4:], strict=True)]
    else:
        examples = [Example(words=w, label=0) for w in words]
    return encode_examples(examples, tokenizer, kind).collate(list(range(len(examples))))


def cls_states(model: TaskModel, tokenizer, kind: TaskKind) -> torch.Tensor:
    """h_[CLS] of each test input, as the head reads it."""
    batch = uimer_batch(tokenizer, kind)
    with torch.no_grad():
        return model.encode(model.embed(batch.input_ids), batch.attention_mask, batch.token_type_ids)[:, 0]


def uimer_logits(model: TaskModel, tokenizer, kind: TaskKind) -> torch.Tensor:
    with torch.no_grad():
        return model(uimer_batch(tokenizer, kind))


@pytest.mark.parametrize("kind", (TaskKind.CLASSIFICATION, TaskKind.PAIR), ids=lambda k: k.value)
def test_export_loads_with_auto_class_and_predicts_the_same_labels(kind, tiny_tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = trained_like(tiny_tokenizer, kind)
    out = export_hf_classifier(model, tiny_tokenizer, tmp_path / "hf", labels=LABELS)
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert type(loaded).__name__ == "BertForSequenceClassification"
    assert loaded.config.id2label == dict(enumerate(LABELS))
    with torch.no_grad():
        theirs = loaded(**hf_inputs(tokenizer, kind)).logits
    ours = uimer_logits(model, tiny_tokenizer, kind)
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    assert len(set(ours.argmax(-1).tolist())) > 1  # the check is not passed by a constant prediction
    # Float32 noise only. This head separates nearly equal h_[CLS] (their spread is ~1e-3 of their size), so each
    # logit of ~10 is what remains of terms W_kj h_j + b_k summing to ~1e4 in magnitude: rounding scales with
    # those terms, not with the logits (the same export, on another library version's random init, drifts
    # between 0.9e-4 and 1.2e-4 of the logits). Allow 1e-6 of the terms' magnitude: ~10x float32's eps.
    with torch.no_grad():
        terms = cls_states(model, tiny_tokenizer, kind).abs() @ model.head.weight.abs().T + model.head.bias.abs()
    assert torch.all((theirs - ours).abs() <= 1e-6 * terms)
    assert float((theirs - ours).abs().max()) < 1e-2 * float(ours.abs().max())  # far below any real mismatch


def test_pooler_scale_bounds_the_deviation(tiny_tokenizer):
    """The near-identity pooler's error shrinks with the scale as (s h)^2 / 3 predicts."""
    model = trained_like(tiny_tokenizer, TaskKind.CLASSIFICATION)
    ours = uimer_logits(model, tiny_tokenizer, TaskKind.CLASSIFICATION)
    inputs = hf_inputs(tiny_tokenizer, TaskKind.CLASSIFICATION)
    errors = []
    for scale in (1e-2, 1e-3):
        with torch.no_grad():
            theirs = to_hf_sequence_classifier(model, pooler_scale=scale)(**inputs).logits
        errors.append(float((theirs - ours).abs().max()))
    assert errors[1] < errors[0] / 10  # a 10x smaller scale: ~100x smaller cubic term (down to float noise)
    with pytest.raises(ConfigError, match="pooler_scale"):
        to_hf_sequence_classifier(model, pooler_scale=0.5)


def test_export_of_a_saved_uimer_model_keeps_its_label_names(tiny_tokenizer, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = trained_like(tiny_tokenizer, TaskKind.CLASSIFICATION)
    model.save(tmp_path / "saved", tiny_tokenizer, {"labels": LABELS, "task": "tiny"})
    out = export_saved_model(tmp_path / "saved", tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {str(i): name for i, name in enumerate(LABELS)}
    loaded = AutoModelForSequenceClassification.from_pretrained(out).eval()
    with torch.no_grad():
        theirs = loaded(**hf_inputs(tiny_tokenizer, TaskKind.CLASSIFICATION)).logits
    assert torch.equal(theirs.argmax(-1), uimer_logits(model, tiny_tokenizer, TaskKind.CLASSIFICATION).argmax(-1))


def test_export_refuses_what_has_no_transformers_equivalent(tiny_tokenizer):
    mean = TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.CLASSIFICATION, 3, pooling="mean")
    with pytest.raises(ConfigError, match="pooling 'mean'"):
        to_hf_sequence_classifier(mean)
    tagger = TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.TAGGING, 3)
    with pytest.raises(ConfigError, match="TaskModel.load"):
        to_hf_sequence_classifier(tagger)
    with pytest.raises(ConfigError, match="labels"):
        to_hf_sequence_classifier(TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.CLASSIFICATION, 3),
                                  labels=["a", "b"])


@pytest.mark.integration
def test_packaged_minilm_export_matches_to_float_noise(tmp_path):
    """On the real MiniLM (|h_[CLS]| up to ~6) the default pooler scale leaves only float32 noise."""
    from transformers import AutoModelForSequenceClassification

    from uimer.models.encoder import load_tokenizer
    from uimer.models.task_model import build_model

    tokenizer = load_tokenizer("minilm")
    torch.manual_seed(0)
    model = build_model("minilm", TaskKind.CLASSIFICATION, 7, attn_implementation="eager").eval()
    with torch.no_grad():
        model.head.weight.normal_(0, 0.5)
    model.save(tmp_path / "saved", tokenizer, {"labels": [f"intent{i}" for i in range(7)]})
    loaded = AutoModelForSequenceClassification.from_pretrained(export_saved_model(tmp_path / "saved", tmp_path / "hf"))
    examples = [Example(words=s.split(), label=0) for s in SENTENCES]
    batch = encode_examples(examples, tokenizer, TaskKind.CLASSIFICATION).collate(list(range(len(examples))))
    with torch.no_grad():
        ours = model(batch)
        theirs = loaded.eval()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               token_type_ids=batch.token_type_ids).logits
    assert torch.equal(theirs.argmax(-1), ours.argmax(-1))
    assert float((theirs - ours).abs().max()) < 1e-5 * max(1.0, float(ours.abs().max()))
