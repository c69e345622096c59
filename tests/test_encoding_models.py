import torch

from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.models.task_model import TaskModel


def test_rationale_pieces_and_specials(tiny_tokenizer):
    # "songs" -> song ##s: both pieces of a rationale word are 1, [CLS]/[SEP]/padding are 0.
    examples = [
        Example(words=["play", "songs", "tomorrow"], label=1, rationale=[1, 1, 0]),
        Example(words=["weather"], label=0, rationale=[0]),
    ]
    split = encode_examples(examples, tiny_tokenizer, TaskKind.CLASSIFICATION)
    batch = split.collate([0, 1])
    tokens = tiny_tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens == ["[CLS]", "play", "song", "##s", "tomorrow", "[SEP]"]
    assert batch.rationale[0].tolist() == [0, 1, 1, 1, 0, 0]
    assert batch.real_mask[0].tolist() == [False, True, True, True, True, False]
    assert batch.rationale[1].tolist() == [0, 0, 0, 0, 0, 0]
    assert batch.real_mask[1].tolist() == [False, True, False, False, False, False]
    assert batch.has_rationale.tolist() == [True, False]


def test_pair_alignment_offsets_hypothesis_words(tiny_tokenizer):
    example = Example(words=["kids", "smiling"], pair_words=["kids", "frowning"], label=2, rationale=[0, 1, 0, 1])
    batch = encode_examples([example], tiny_tokenizer, TaskKind.PAIR).collate([0])
    tokens = tiny_tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert tokens == ["[CLS]", "kids", "smiling", "[SEP]", "kids", "frowning", "[SEP]"]
    assert batch.rationale[0].tolist() == [0, 0, 1, 0, 0, 1, 0]
    assert batch.token_type_ids[0].tolist() == [0, 0, 0, 0, 1, 1, 1]


def test_tagging_uses_first_piece_and_crf(tiny_tokenizer, tiny_encoder):
    examples = [
        Example(words=["play", "songs", "tomorrow"], tags=[2, 3, 4]),
        Example(words=["weather", "in", "paris"], tags=[2, 2, 3]),
    ]
    split = encode_examples(examples, tiny_tokenizer, TaskKind.TAGGING)
    batch = split.collate([0, 1])
    assert batch.word_starts[0].tolist() == [1, 2, 4]
    model = TaskModel(tiny_encoder, TaskKind.TAGGING, num_labels=5)
    emissions = model(batch)
    assert emissions.shape == (2, 3, 5)
    llh = model.gold_log_prob(emissions, batch)
    assert llh.shape == (2,) and torch.all(llh < 0)
    assert torch.isclose(model.task_loss(emissions, batch), -llh.mean())
    paths = model.predict(emissions, batch)
    assert [len(p) for p in paths] == [3, 3]


def test_double_backward_through_tiny_bert_eager(tiny_tokenizer, tiny_encoder):
    examples = [Example(words=["play", "music"], label=1), Example(words=["book", "a", "book"], label=0)]
    batch = encode_examples(examples, tiny_tokenizer, TaskKind.CLASSIFICATION).collate([0, 1])
    model = TaskModel(tiny_encoder, TaskKind.CLASSIFICATION, num_labels=3)
    embeds = model.embed(batch.input_ids)
    logits = model(batch, inputs_embeds=embeds)
    (grad,) = torch.autograd.grad(model.gold_score(logits, batch).sum(), embeds, create_graph=True)
    second = grad.abs().sum()
    second.backward()
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0
