"""Every registered method through the Hugging Face adapters, and the adapters against uimer's own TaskModel.

The HF models are tiny randomly initialised BERTs built in memory (2 layers, hidden 32), fed by uimer's HF-side
pipeline: `encode_with_rationales` -> `RationaleCollator` -> `Batch`.
"""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from conftest import make_tiny_encoder, make_tokenizer
from uimer.data.alignment import encode_with_rationales
from uimer.data.collator import RationaleCollator, pop_batch
from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.interpret import METHODS, MethodSetup, create_method
from uimer.interpret.extractor import DiffMaskExtractor
from uimer.models.adapters import HFSequenceClassifier, HFTokenClassifier, adapt, use_eager_attention
from uimer.models.export import to_hf_sequence_classifier
from uimer.models.protocol import AttributableModel
from uimer.models.task_model import TaskModel

HIDDEN, LAYERS, CLASSES, TAGS = 32, 2, 3, 4
SENTENCES = [  # words, class label, rationale flags, tags
    (["play", "the", "songs", "tomorrow"], 1, [1, 0, 1, 0], [1, 0, 2, 3]),
    (["what", "is", "the", "weather", "in", "paris"], 0, [0, 0, 0, 1, 0, 1], [0, 0, 0, 1, 0, 2]),
    (["add", "my", "song", "to", "playlist"], 2, [1, 0, 0, 0, 1], [1, 0, 2, 0, 3]),
    (["book", "a", "movie"], 2, None, [1, 0, 2]),  # no rationale: L_task only
]
METHOD_NAMES = sorted(name for name in METHODS if name != "baseline")
KINDS = (TaskKind.CLASSIFICATION, TaskKind.TAGGING)


def hf_model(kind: TaskKind, seed: int = 0, attn: str = "eager"):
    from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(make_tokenizer()), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                        num_labels=TAGS if kind is TaskKind.TAGGING else CLASSES, attn_implementation=attn)
    cls = BertForTokenClassification if kind is TaskKind.TAGGING else BertForSequenceClassification
    return cls(config)


def features(tokenizer, kind: TaskKind) -> list[dict]:
    """HF-style features: the first piece of every word carries the word's tag (HF's usual alignment)."""
    words = [s[0] for s in SENTENCES]
    flags = [s[2] or [0] * len(s[0]) for s in SENTENCES]
    enc = encode_with_rationales(tokenizer, words, word_rationales=flags)
    out = []
    for i, (_, label, _, tags) in enumerate(SENTENCES):
        feature = {key: enc[key][i] for key in enc.keys()}
        if kind is TaskKind.TAGGING:
            word_ids, previous, piece_labels = enc.word_ids(i), None, []
            for w in word_ids:
                piece_labels.append(tags[w] if w is not None and w != previous else -100)
                previous = w
            feature["labels"] = piece_labels
        else:
            feature["labels"] = label
        feature["index"] = i
        out.append(feature)
    return out


def collated(tokenizer, kind: TaskKind):
    inputs = RationaleCollator(tokenizer, kind)(features(tokenizer, kind))
    return inputs, pop_batch(inputs)


def train_split(tokenizer, kind: TaskKind):
    examples = [Example(words=w, label=None if kind is TaskKind.TAGGING else c, rationale=r,
                        tags=t if kind is TaskKind.TAGGING else None) for w, c, r, t in SENTENCES]
    return encode_examples(examples, tokenizer, kind)


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
    """A tiny masked LM sharing the test tokenizer, saved as `im-mlm --mlm DIR` loads it."""
    from transformers import BertConfig, BertForMaskedLM

    tokenizer = make_tokenizer()
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    path = tmp_path_factory.mktemp("mlm")
    BertForMaskedLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def prepared(name: str, kind: TaskKind, model, tokenizer, mlm_dir, **extra):
    """A method ready for L_int: prepared from a `MethodSetup` on the model (adapter or TaskModel); DM also gets
    an extractor built directly, which is what loading a trained one does (`load_extractor`): L_int only reads it."""
    options = {"mlm": str(mlm_dir)} if name == "im-mlm" else {}
    options.update(extra)
    method = create_method(name, options)
    method.prepare(MethodSetup(model, tokenizer, train_split(tokenizer, kind), seed=0))
    if METHODS[name].family == "dm":
        mask_row = model.embed(torch.tensor(tokenizer.mask_token_id)).detach()
        if method.dm.gate == "hidden":
            mask_row = torch.zeros(HIDDEN)
        method.extractor = DiffMaskExtractor(method.dm.gate, HIDDEN, LAYERS, mask_row, method.dm.hidden_layer,
                                             torch.Generator().manual_seed(0))
    return method


def l_int(method, model, batch) -> torch.Tensor:
    """L_int as the trainer computes it: through the training forward on the word embeddings."""
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)
    return method.alignment_loss(model, batch, logits, model.task_loss(logits, batch), embeds)


def relabelled(batch, kind: TaskKind, shift: int):
    """The batch with every gold label (or tag) moved by `shift`: hinge losses are 0 for some gold outputs."""
    if kind is TaskKind.TAGGING:
        return replace(batch, tags=(batch.tags + shift) % TAGS)
    return replace(batch, labels=(batch.labels + shift) % CLASSES)


def test_taskmodel_and_both_adapters_satisfy_the_protocol(tiny_tokenizer):
    task_model = TaskModel(make_tiny_encoder(len(tiny_tokenizer)), TaskKind.CLASSIFICATION, CLASSES)
    sequence, token = adapt(hf_model(TaskKind.CLASSIFICATION)), adapt(hf_model(TaskKind.TAGGING))
    assert isinstance(sequence, HFSequenceClassifier) and isinstance(token, HFTokenClassifier)
    for model in (task_model, sequence, token):
        assert isinstance(model, AttributableModel)
    assert token.kind is TaskKind.TAGGING and sequence.kind is TaskKind.CLASSIFICATION
    assert sequence.encoder is sequence.model.base_model
    assert not isinstance(torch.nn.Linear(2, 2), AttributableModel)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_runs_through_the_hf_adapter(name, kind, tiny_tokenizer, mlm_dir):
    torch.manual_seed(0)
    model = adapt(hf_model(kind))
    model.train()
    _, batch = collated(tiny_tokenizer, kind)
    assert bool(batch.has_rationale[:3].all()) and not bool(batch.has_rationale[3])
    method = prepared(name, kind, model, tiny_tokenizer, mlm_dir)

    loss = None
    for shift in range(CLASSES):  # a gold output whose L_int is not 0 at this initialisation
        loss = l_int(method, model, relabelled(batch, kind, shift))
        if float(loss.detach()) > 0:
            break
    assert loss is not None and loss.dim() == 0 and math.isfinite(float(loss.detach())) and float(loss.detach()) > 0
    model.zero_grad(set_to_none=True)
    loss.backward()
    reached = [p for n, p in model.encoder.named_parameters() if p.grad is not None and float(p.grad.abs().sum()) > 0]
    assert reached, f"{name}: L_int sends no gradient to the encoder"
    if METHODS[name].family != "dm":  # DM reads the states of the encoder's layers, not its input embeddings
        table = model.encoder.get_input_embeddings().weight
        assert table.grad is not None and float(table.grad.abs().sum()) > 0

    none = replace(batch, rationale=torch.zeros_like(batch.rationale),
                   has_rationale=torch.zeros_like(batch.has_rationale))
    zero = l_int(method, model, none)
    assert zero.dim() == 0 and float(zero) == 0.0


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
def test_dm_hidden_gate_hooks_the_hf_encoder_layers(kind, tiny_tokenizer):
    """The hidden gate replaces a layer's input through a hook on `adapter.encoder`'s layers, while the forward
    runs the whole HF model: the masked prediction must change with the gates and L_int must reach theta."""
    from uimer.interpret.extractor import masked_logits, read_states

    torch.manual_seed(0)
    model = adapt(hf_model(kind)).eval()
    _, batch = collated(tiny_tokenizer, kind)
    method = prepared("dm-one-pass", kind, model, tiny_tokenizer, None, dm_gate="hidden", dm_hidden_layer=1)
    with torch.no_grad():
        reading = read_states(model, batch, method.extractor)
        torch.testing.assert_close(reading.logits, model(batch))  # head_logits = the HF head
        open_gates = masked_logits(model, batch, method.extractor, reading, torch.ones_like(batch.rationale))
        closed = masked_logits(model, batch, method.extractor, reading, torch.zeros_like(batch.rationale))
    assert float((open_gates - reading.logits).abs().max()) < 1e-7
    # A random BERT's logits are ~1e-2 (head init std 0.02): closing every gate moves them by ~1e-5 here, far
    # above the float noise (open gates reproduce the clean logits within 1e-7).
    assert float((closed - reading.logits).abs().max()) > 1e-6
    loss = l_int(method, model, batch)
    loss.backward()
    layer0 = model.encoder.encoder.layer[0].attention.self.query.weight
    assert float(loss.detach()) > 0 and layer0.grad is not None and float(layer0.grad.abs().sum()) > 0


@pytest.mark.parametrize("kind", (TaskKind.CLASSIFICATION, TaskKind.PAIR), ids=lambda k: k.value)
def test_exported_taskmodel_gives_the_same_gold_scores_and_gb_attributions(kind, tiny_tokenizer):
    """A TaskModel and the adapter around its transformers export agree on everything the methods read."""
    torch.manual_seed(3)
    task_model = TaskModel(make_tiny_encoder(len(tiny_tokenizer), seed=3), kind, CLASSES).eval()
    adapter = adapt(to_hf_sequence_classifier(task_model), kind).eval()
    if kind is TaskKind.PAIR:
        examples = [Example(words=["kids", "smiling"], pair_words=["kids", "frowning"], label=2, rationale=[0, 1, 0, 1]),
                    Example(words=["children", "waving"], pair_words=["kids", "at", "camera"], label=0,
                            rationale=[1, 1, 0, 0, 1])]
    else:
        examples = [Example(words=w, label=c, rationale=r) for w, c, r, _ in SENTENCES]
    batch = encode_examples(examples, tiny_tokenizer, kind).collate(list(range(len(examples))))
    with torch.no_grad():
        ours, theirs = task_model(batch), adapter(batch)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adapter.gold_score(theirs, batch), task_model.gold_score(ours, batch), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adapter.gold_log_complement(theirs, batch), task_model.gold_log_complement(ours, batch),
                               rtol=1e-4, atol=1e-5)
    for name in ("gb-ghaeini", "gb-huang-base"):
        method = create_method(name)
        a = method.attribute(adapter, batch).scores
        b = method.attribute(task_model, batch).scores
        assert float(b.abs().max()) > 0
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5 * float(b.abs().max()))


def test_token_adapter_scores_the_words_uimer_scores(tiny_tokenizer):
    """The collator's scored pieces are uimer's word starts, and with the same weights the adapter's emissions are
    exactly uimer's tagger emissions (the CRF aside)."""
    hf = hf_model(TaskKind.TAGGING).eval()
    adapter = adapt(hf)
    from transformers import BertModel

    tagger = TaskModel(BertModel(hf.config, add_pooling_layer=False), TaskKind.TAGGING, TAGS).eval()
    tagger.encoder.load_state_dict({k: v for k, v in hf.bert.state_dict().items() if not k.startswith("pooler.")},
                                   strict=False)
    tagger.head.load_state_dict(hf.classifier.state_dict())
    _, batch = collated(tiny_tokenizer, TaskKind.TAGGING)
    ours = train_split(tiny_tokenizer, TaskKind.TAGGING).collate(list(range(len(SENTENCES))))
    assert torch.equal(batch.word_starts, ours.word_starts) and torch.equal(batch.word_mask, ours.word_mask)
    assert torch.equal(batch.tags, ours.tags) and torch.equal(batch.real_mask, ours.real_mask)
    with torch.no_grad():
        torch.testing.assert_close(adapter(batch), tagger(ours))


def test_token_adapter_quantities_match_hf_by_hand(tiny_tokenizer):
    model = hf_model(TaskKind.TAGGING).eval()
    adapter = adapt(model)
    inputs, batch = collated(tiny_tokenizer, TaskKind.TAGGING)
    with torch.no_grad():
        hf_loss = model(**inputs).loss
        logits = adapter(batch)
        piece_log_p = torch.log_softmax(model(**{k: v for k, v in inputs.items() if k != "labels"}).logits, -1)
    torch.testing.assert_close(adapter.task_loss(logits, batch), hf_loss)
    labels = inputs["labels"]
    for row in range(batch.size):
        scored = (labels[row] != -100).nonzero().squeeze(1)
        expected = piece_log_p[row, scored, labels[row, scored]].sum()
        torch.testing.assert_close(adapter.gold_log_prob(logits, batch)[row], expected)
    assert adapter.gold_log_complement(logits, batch) is None
    torch.testing.assert_close(adapter.gold_score(logits, batch), adapter.gold_log_prob(logits, batch))


def test_sequence_adapter_loss_is_hf_loss_and_complement_is_exact(tiny_tokenizer):
    model = hf_model(TaskKind.CLASSIFICATION).eval()
    adapter = adapt(model)
    inputs, batch = collated(tiny_tokenizer, TaskKind.CLASSIFICATION)
    with torch.no_grad():
        out = model(**inputs)
        logits = adapter(batch)
    torch.testing.assert_close(logits, out.logits)
    torch.testing.assert_close(adapter.task_loss(logits, batch), out.loss)
    confident = torch.tensor([[40.0, 0.0, -1.0]])  # p(gold) rounds to 1 in float32
    one = replace(batch, labels=torch.tensor([0]))
    assert float(adapter.gold_log_prob(confident, one)) == 0.0
    expected = math.log(math.exp(0.0) + math.exp(-1.0)) - 40.0  # log(1 - p) to first order
    assert abs(float(adapter.gold_log_complement(confident, one)) - expected) < 1e-4


def test_eager_attention_is_switched_or_refused_by_name():
    model = hf_model(TaskKind.CLASSIFICATION, attn="sdpa")
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ConfigError, match='attn_implementation="eager"'):
        use_eager_attention(model, switch=False)
    assert use_eager_attention(model) is model and model.config._attn_implementation == "eager"
    adapter = adapt(model)
    _, batch = collated(make_tokenizer(), TaskKind.CLASSIFICATION)
    loss = l_int(create_method("gb-huang-base"), adapter, batch)  # double backward through eager attention
    loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad is not None


def test_adapt_refuses_what_it_cannot_tell():
    with pytest.raises(ConfigError, match="kind"):
        adapt(torch.nn.Identity())
    with pytest.raises(ConfigError, match="kind"):
        adapt(hf_model(TaskKind.CLASSIFICATION), "regression")
    with pytest.raises(ConfigError, match="kind"):
        HFSequenceClassifier(hf_model(TaskKind.CLASSIFICATION), TaskKind.TAGGING)


def other_encoder(model_type: str, kind: TaskKind):
    """Tiny DistilBERT (no token types, its own head) and RoBERTa (head on the features) models."""
    import transformers as tf

    labels = TAGS if kind is TaskKind.TAGGING else CLASSES
    vocab = len(make_tokenizer())
    torch.manual_seed(1)
    if model_type == "distilbert":
        config = tf.DistilBertConfig(vocab_size=vocab, dim=HIDDEN, n_layers=LAYERS, n_heads=2, hidden_dim=64,
                                     max_position_embeddings=64, num_labels=labels, attn_implementation="eager")
        cls = tf.DistilBertForTokenClassification if kind is TaskKind.TAGGING else tf.DistilBertForSequenceClassification
    else:
        config = tf.RobertaConfig(vocab_size=vocab, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=80, type_vocab_size=1, pad_token_id=0,
                                  num_labels=labels, attn_implementation="eager")
        cls = tf.RobertaForTokenClassification if kind is TaskKind.TAGGING else tf.RobertaForSequenceClassification
    return cls(config)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("model_type", ["distilbert", "roberta"])
def test_other_encoders_run_the_methods_and_dm_reads_their_head(model_type, kind, tiny_tokenizer):
    from uimer.interpret.extractor import read_states

    model = adapt(other_encoder(model_type, kind)).eval()
    _, batch = collated(tiny_tokenizer, kind)
    dm = prepared("dm-one-pass", kind, model, tiny_tokenizer, None)
    with torch.no_grad():  # DM applies the classification head itself: it must be the model's own
        torch.testing.assert_close(read_states(model, batch, dm.extractor).logits, model(batch), rtol=0, atol=1e-6)
    for name in ("gb-huang-base", "im-uniform", "dm-one-pass"):
        method = prepared(name, kind, model, tiny_tokenizer, None)
        model.zero_grad(set_to_none=True)
        loss = l_int(method, model, batch)
        loss.backward()
        grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
        assert float(loss.detach()) > 0 and any(float(g.abs().sum()) > 0 for g in grads), name
