"""Plausibility and faithfulness metrics: hand-computed values on crafted scores and on a bag-of-words model
whose attributions and probabilities are known exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from uimer.data.encoding import encode_examples
from uimer.data.types import Example, TaskKind
from uimer.evaluation.attributions import (
    SavedModel,
    encode_with_words,
    pieces_to_words,
    remove_pieces,
    score_examples,
)
from uimer.evaluation.eraser import eraser_records, write_jsonl
from uimer.evaluation.rationale_metrics import (
    ALL_METRICS,
    AUPRC,
    ERASER_THRESHOLDS,
    IOUF1,
    AOPCComprehensiveness,
    AOPCSufficiency,
    Comprehensiveness,
    ScoredInstances,
    Sufficiency,
    TokenF1,
    TokenPrecision,
    TokenRecall,
    average_precision,
    evaluate_instances,
    spans,
    threshold_counts,
    top_k_mask,
)
from uimer.interpret.base import Attribution, InterpretationMethod


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# -- a model with known attributions ------------------------------------------------------------------------
class BagModel(nn.Module):
    """Two classes; logits (0, z) with z = sum of evidence[piece] over the attended pieces, so
    p(class 1 | x) = sigmoid(z) and deleting (or [MASK]-ing: evidence 0) a word removes exactly its evidence."""

    def __init__(self, tokenizer, evidence: dict[str, float], kind: TaskKind = TaskKind.CLASSIFICATION):
        super().__init__()
        table = torch.zeros(len(tokenizer))
        for token, value in evidence.items():
            table[tokenizer.convert_tokens_to_ids(token)] = value
        self.register_buffer("evidence", table)
        self.kind = kind
        self.num_labels = 2

    def forward(self, batch, inputs_embeds=None):
        z = (self.evidence[batch.input_ids] * batch.attention_mask).sum(1)
        return torch.stack([torch.zeros_like(z), z], dim=1)

    def gold_log_prob(self, logits, batch):
        return torch.log_softmax(logits, -1).gather(1, batch.labels.unsqueeze(1)).squeeze(1)

    def predict(self, logits, batch):
        return logits.argmax(-1).tolist()


class EvidenceAttribution(InterpretationMethod):
    """A 'method' whose piece scores are the bag model's evidence: the attributions are known by construction."""

    name = "evidence"
    family = "gb"

    def piece_attribution(self, model, batch, *, create_graph=False) -> Attribution:
        scores = model.evidence[batch.input_ids] * batch.real_mask
        return Attribution(scores=scores, valid=batch.real_mask.any(1))

    def alignment_loss(self, model, batch, logits, task_loss, inputs_embeds):
        return logits.new_zeros(())


EVIDENCE = {"play": 2.0, "music": 1.0, "song": -1.0, "the": 0.0, "weather": -3.0}
LABELS = ["neg", "pos"]


def saved_bag(tokenizer, kind: TaskKind = TaskKind.CLASSIFICATION) -> SavedModel:
    return SavedModel(BagModel(tokenizer, EVIDENCE, kind), tokenizer, {"kind": kind.value, "labels": LABELS},
                      Path("bag"))


# -- metadata ----------------------------------------------------------------------------------------------
def test_every_metric_declares_its_metadata():
    names = set()
    for metric in ALL_METRICS:
        assert isinstance(metric.NAME, str) and metric.NAME and metric.NAME not in names
        names.add(metric.NAME)
        assert isinstance(metric.SHORT_NAME, str) and metric.SHORT_NAME
        assert metric.FAMILY in ("plausibility", "faithfulness")
        low, high = metric.RANGE
        assert low < high
        assert isinstance(metric.LOWER_IS_BETTER, bool)
    lower = {m.NAME for m in ALL_METRICS if m.LOWER_IS_BETTER}
    assert lower == {"sufficiency", "aopc_sufficiency"}
    assert TokenF1.RANGE == (0.0, 1.0) and Comprehensiveness.RANGE == (-1.0, 1.0)
    assert ERASER_THRESHOLDS == (0.01, 0.05, 0.10, 0.20, 0.50)


# -- plausibility by hand ----------------------------------------------------------------------------------
def two_instances(k=None) -> ScoredInstances:
    return ScoredInstances.from_lists(
        scores=[[0.9, 0.1, 0.8, 0.3], [0.2, 0.7, 0.5]],
        gold=[[1, 0, 0, 1], [0, 1, 0]],
        k=k,
    )


def test_token_prf_at_gold_k():
    data = two_instances()
    assert data.k.tolist() == [2, 1]
    # A: top-2 = {0 (0.9), 2 (0.8)}, gold {0, 3}: tp 1 -> P = R = F1 = 1/2
    # B: top-1 = {1 (0.7)}, gold {1}: P = R = F1 = 1
    assert TokenPrecision().compute(data).value == pytest.approx(0.75)
    assert TokenRecall().compute(data).value == pytest.approx(0.75)
    f1 = TokenF1().compute(data)
    assert f1.value == pytest.approx(0.75)
    assert f1.per_instance.tolist() == pytest.approx([0.5, 1.0])


def test_token_prf_at_fixed_k():
    data = two_instances(k=3)
    assert data.k.tolist() == [3, 3]
    # A: top-3 = {0, 2, 3}, tp 2: P = 2/3, R = 1, F1 = 2 (2/3) / (5/3) = 0.8
    # B: top-3 = all three words, tp 1: P = 1/3, R = 1, F1 = 2 (1/3) / (4/3) = 0.5
    assert TokenPrecision().compute(data).value == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert TokenRecall().compute(data).value == pytest.approx(1.0)
    assert TokenF1().compute(data).value == pytest.approx((0.8 + 0.5) / 2)
    # k larger than the instance is capped at its length
    assert ScoredInstances.from_lists([[1.0, 2.0]], [[0, 1]], k=5).k.tolist() == [2]


def test_auprc_is_mean_per_instance_average_precision():
    data = two_instances()
    # A sorted: 0.9 (gold) 0.8 0.3 (gold) 0.1 -> precisions at the gold words 1/1 and 2/3 -> AP = (1 + 2/3) / 2 = 5/6
    # B: the gold word ranks first -> AP = 1
    result = AUPRC().compute(data)
    assert result.per_instance.tolist() == pytest.approx([5 / 6, 1.0])
    assert result.value == pytest.approx(11 / 12)


def test_average_precision_groups_ties_like_sklearn():
    # 0.5 and 0.5 tie: the gold word enters together with a non-gold one -> precision 1/2 at recall 1 -> AP = 0.5
    scores = np.array([[0.5, 0.5, 0.1], [0.3, 0.9, 0.9]])
    gold = np.array([[0, 1, 0], [1, 0, 1]], dtype=bool)
    mask = np.ones_like(gold)
    # row 2: the two 0.9 words enter together (1 gold of 2: P = 1/2 at R = 1/2), then 0.3 (P = 2/3 at R = 1)
    # AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12
    assert average_precision(scores, gold, mask).tolist() == pytest.approx([0.5, 7 / 12])
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    s = np.round(rng.random((40, 9)), 1)  # rounded: plenty of ties
    g = rng.random((40, 9)) < 0.3
    g[:, 0] = True
    m = np.ones_like(g)
    m[:, 7:] = rng.random((40, 2)) < 0.5
    ours = average_precision(s, g, m)
    for row in range(40):
        keep = m[row]
        expected = sklearn.average_precision_score(g[row][keep].astype(int), s[row][keep])
        assert ours[row] == pytest.approx(expected)


def test_iou_f1_by_hand():
    # instance 1: gold spans [0,3) [5,6); predicted top-4 = {0, 1, 3, 5} -> spans [0,2) [3,4) [5,6)
    #   IOU([0,2), [0,3)) = 2/3 >= 0.5 match; [3,4) overlaps nothing; [5,6) = gold span, IOU 1 -> P = 2/3, R = 2/2
    # instance 2: gold [1,4); predicted top-3 = {0, 1, 2} -> [0,3): IOU = 2/4 = 0.5 (>= 0.5, a match) -> P = R = 1
    # ERASER macro: F1(mean P, mean R) = F1(5/6, 1) = 2 (5/6) / (11/6) = 10/11
    data = ScoredInstances.from_lists(
        scores=[[0.9, 0.8, 0.1, 0.7, 0.2, 0.6], [0.9, 0.8, 0.7, 0.1]],
        gold=[[1, 1, 1, 0, 0, 1], [0, 1, 1, 1]],
        k=[4, 3],
    )
    result = IOUF1().compute(data)
    assert result.details["precision"] == pytest.approx(5 / 6)
    assert result.details["recall"] == pytest.approx(1.0)
    assert result.value == pytest.approx(10 / 11)
    assert spans(np.array([1, 1, 0, 1, 0, 1], dtype=bool)) == [(0, 2), (3, 4), (5, 6)]


def test_instances_without_gold_are_not_scored_and_ties_go_to_the_earlier_word():
    data = ScoredInstances.from_lists([[0.5, 0.5, 0.5], [1.0, 0.0]], [[0, 1, 0], [0, 0]])
    # instance 2 has no gold word: left out everywhere; instance 1's tie picks word 0 -> F1 0
    result = TokenF1().compute(data)
    assert result.per_instance.tolist() == [0.0]
    mask = top_k_mask(np.array([[0.5, 0.5, 0.5]]), np.ones((1, 3), dtype=bool), np.array([2]))
    assert mask.tolist() == [[True, True, False]]


def test_threshold_counts():
    # ceil(f n) at least 1: a 3-word sentence removes 1 word at 1/5/10/20 % and ceil(1.5) = 2 at 50 %
    assert [int(threshold_counts(f, np.array([3]))[0]) for f in ERASER_THRESHOLDS] == [1, 1, 1, 1, 2]
    assert int(threshold_counts(0.1, np.array([30]))[0]) == 3  # 0.1 * 30 = 3.0000000000000004 stays 3
    assert threshold_counts(0.5, np.array([0, 1, 10])).tolist() == [0, 1, 5]


def test_faithfulness_arithmetic_from_given_probabilities():
    data = ScoredInstances.from_lists(
        [[1.0, 0.0], [0.0, 1.0]], [[1, 0], [0, 1]],
        full=np.array([0.9, 0.6]),
        hard_comprehensiveness=np.array([0.5, 0.7]),
        hard_sufficiency=np.array([0.8, 0.6]),
        comprehensiveness={0.1: np.array([0.5, 0.6]), 0.5: np.array([0.1, 0.2])},
        sufficiency={0.1: np.array([0.9, 0.5]), 0.5: np.array([1.0, 0.6])},
    )
    # comp = mean(0.9 - 0.5, 0.6 - 0.7) = 0.15; suff = mean(0.1, 0.0) = 0.05
    assert Comprehensiveness().compute(data).value == pytest.approx(0.15)
    assert Sufficiency().compute(data).value == pytest.approx(0.05)
    # AOPC comp: drops [[0.4, 0.8], [0.0, 0.4]] -> mean 0.4; curve per threshold [0.2, 0.6]
    aopc = AOPCComprehensiveness().compute(data)
    assert aopc.value == pytest.approx(0.4)
    assert aopc.details["thresholds"] == [0.1, 0.5] and aopc.details["curve"] == pytest.approx([0.2, 0.6])
    # AOPC suff: drops [[0.0, -0.1], [0.1, 0.0]] -> mean 0.0
    assert AOPCSufficiency().compute(data).value == pytest.approx(0.0)
    names = [r.name for r in evaluate_instances(data)]
    assert names == [m.NAME for m in ALL_METRICS]
    assert [r.name for r in evaluate_instances(two_instances())] == [
        "token_precision", "token_recall", "token_f1", "auprc", "iou_f1"]


# -- words and pieces --------------------------------------------------------------------------------------
def test_word_ids_for_pairs_and_max_pooling(tiny_tokenizer):
    examples = [Example(words=["play", "songs"], label=0, pair_words=["music"], rationale=[0, 1, 1])]
    encoded = encode_with_words(examples, tiny_tokenizer, TaskKind.PAIR)
    # [CLS] play song ##s [SEP] music [SEP]
    assert tiny_tokenizer.convert_ids_to_tokens(encoded.split[0].input_ids.tolist()) == [
        "[CLS]", "play", "song", "##s", "[SEP]", "music", "[SEP]"]
    assert encoded.word_ids[0].tolist() == [-1, 0, 1, 1, -1, 2, -1]
    assert encoded.n_words == [3]
    pieces = torch.tensor([[9.0, 0.2, -1.0, 0.5, 9.0, 0.3, 9.0]])
    words = pieces_to_words(pieces, encoded.word_ids[0].unsqueeze(0), 4)
    # word 1 = max(-1.0, 0.5); specials never reach a word; word 3 has no piece -> -inf
    assert words[0, :3].tolist() == pytest.approx([0.2, 0.5, 0.3])
    assert words[0, 3].item() == -math.inf


def test_deletion_compacts_and_mask_replaces(tiny_tokenizer):
    examples = [Example(words=["play", "the", "song"], label=0, pair_words=["music"])]
    batch = encode_examples(examples, tiny_tokenizer, TaskKind.PAIR).collate([0])
    removed = torch.tensor([[False, False, True, False, False, False, False]])  # "the"
    deleted = remove_pieces(batch, removed, "delete", tiny_tokenizer.mask_token_id, tiny_tokenizer.pad_token_id)
    assert tiny_tokenizer.convert_ids_to_tokens(deleted.input_ids[0].tolist()) == [
        "[CLS]", "play", "song", "[SEP]", "music", "[SEP]"]
    assert deleted.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1]]
    assert deleted.token_type_ids.tolist() == [[0, 0, 0, 0, 1, 1]]
    assert deleted.real_mask.tolist() == [[False, True, True, False, True, False]]
    masked = remove_pieces(batch, removed, "mask", tiny_tokenizer.mask_token_id, tiny_tokenizer.pad_token_id)
    assert tiny_tokenizer.convert_ids_to_tokens(masked.input_ids[0].tolist())[2] == "[MASK]"
    assert masked.attention_mask.equal(batch.attention_mask)


# -- end to end on the bag model ---------------------------------------------------------------------------
@pytest.mark.parametrize("removal", ["delete", "mask"])
def test_aopc_on_a_model_with_known_attributions(tiny_tokenizer, removal):
    # "play music song": z = 2 + 1 - 1 = 2, p(pos) = sigmoid(2); scores = evidence, ranking play > music > song
    examples = [Example(words=["play", "music", "song"], label=1, rationale=[1, 0, 0])]
    scored = score_examples(EvidenceAttribution(), saved_bag(tiny_tokenizer), examples, removal=removal)
    inst = scored.instances
    assert scored.predictions == [1]
    assert inst.scores[0].tolist() == [2.0, 1.0, -1.0]
    p = sigmoid(2.0)
    assert inst.full.tolist() == pytest.approx([p])
    # thresholds 1/5/10/20 % of 3 words -> 1 word (play); 50 % -> ceil(1.5) = 2 words (play, music)
    # comprehensiveness: without play z = 0; without play and music z = -1
    comp = [p - sigmoid(0.0)] * 4 + [p - sigmoid(-1.0)]
    # sufficiency: only play z = 2 (drop 0); only play and music z = 3
    suff = [0.0] * 4 + [p - sigmoid(3.0)]
    results = {r.name: r for r in evaluate_instances(inst)}
    assert results["aopc_comprehensiveness"].details["curve"] == pytest.approx(comp, abs=1e-6)
    assert results["aopc_comprehensiveness"].value == pytest.approx(sum(comp) / 5, abs=1e-6)
    assert results["aopc_sufficiency"].value == pytest.approx(sum(suff) / 5, abs=1e-6)
    # hard rationale = top-1 (one gold word) = play
    assert results["comprehensiveness"].value == pytest.approx(p - 0.5, abs=1e-6)
    assert results["sufficiency"].value == pytest.approx(0.0, abs=1e-6)
    assert results["token_f1"].value == 1.0 and results["auprc"].value == 1.0 and results["iou_f1"].value == 1.0


def test_gold_target_and_batches_agree(tiny_tokenizer):
    # "weather song": z = -4 -> predicts neg; with target gold (pos) the drops are of p(pos)
    examples = [Example(words=["weather", "song"], label=1, rationale=[0, 1]),
                Example(words=["play", "the", "music"], label=1, rationale=[1, 0, 1]),
                Example(words=["the", "song"], label=0, rationale=None)]
    saved = saved_bag(tiny_tokenizer)
    one = score_examples(EvidenceAttribution(), saved, examples, batch_size=1, target="gold")
    many = score_examples(EvidenceAttribution(), saved, examples, batch_size=8, target="gold")
    assert one.indices == [0, 1]  # the example without a rationale is not scored
    assert one.predictions == [0, 1]
    assert one.instances.full.tolist() == pytest.approx([sigmoid(-4.0), sigmoid(3.0)])
    for f in ERASER_THRESHOLDS:
        assert one.instances.comprehensiveness[f] == pytest.approx(many.instances.comprehensiveness[f])
    # example 1, top-1 = song (-1 > -3): removing it leaves z = -3
    assert one.instances.hard_comprehensiveness[0] == pytest.approx(sigmoid(-3.0))


def test_eraser_export_matches_the_metrics(tiny_tokenizer, tmp_path):
    examples = [Example(words=["play", "music", "song"], label=1, rationale=[1, 0, 0]),
                Example(words=["the", "weather", "song", "music"], label=0, rationale=[0, 1, 0, 0])]
    saved = saved_bag(tiny_tokenizer)
    scored = score_examples(EvidenceAttribution(), saved, examples)
    records = eraser_records(scored, LABELS, TaskKind.CLASSIFICATION, "toy:test")
    path = write_jsonl(records, tmp_path / "eraser.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["annotation_id"] for r in lines] == ["toy:test:0", "toy:test:1"]
    first = lines[0]
    assert first["classification"] == "pos"
    assert first["rationales"][0]["docid"] == "toy:test:0"
    assert first["rationales"][0]["hard_rationale_predictions"] == [{"start_token": 0, "end_token": 1}]
    assert first["rationales"][0]["soft_rationale_predictions"] == [2.0, 1.0, -1.0]
    assert set(first["classification_scores"]) == set(LABELS)
    assert [t["threshold"] for t in first["thresholded_scores"]] == list(ERASER_THRESHOLDS)
    # ERASER's AOPC (metrics.py::_instances_aopc) recomputed from the file equals ours
    drops = [[r["classification_scores"][r["classification"]]
              - t["comprehensiveness_classification_scores"][r["classification"]] for t in r["thresholded_scores"]]
             for r in lines]
    ours = AOPCComprehensiveness().compute(scored.instances).value
    assert float(np.mean(drops)) == pytest.approx(ours)
    comp = [r["classification_scores"][r["classification"]]
            - r["comprehensiveness_classification_scores"][r["classification"]] for r in lines]
    assert float(np.mean(comp)) == pytest.approx(Comprehensiveness().compute(scored.instances).value)


def test_eraser_export_of_pairs_has_two_documents(tiny_tokenizer):
    examples = [Example(words=["play", "music"], label=1, pair_words=["the", "song"], rationale=[1, 0, 0, 1])]
    scored = score_examples(EvidenceAttribution(), saved_bag(tiny_tokenizer, TaskKind.PAIR), examples)
    record = eraser_records(scored, LABELS, TaskKind.PAIR, "pairs:test")[0]
    premise, hypothesis = record["rationales"]
    assert premise["docid"] == "pairs:test:0_premise" and hypothesis["docid"] == "pairs:test:0_hypothesis"
    assert premise["soft_rationale_predictions"] == [2.0, 1.0]
    assert hypothesis["soft_rationale_predictions"] == [0.0, -1.0]
    # top-2 (two gold words) = play, music: both in the premise
    assert premise["hard_rationale_predictions"] == [{"start_token": 0, "end_token": 2}]
    assert hypothesis["hard_rationale_predictions"] == []


def test_slot_filling_uses_mask_removal_and_sequence_probabilities(tiny_tokenizer):
    from conftest import make_tiny_encoder
    from uimer.errors import ConfigError
    from uimer.interpret import create_method
    from uimer.models.task_model import TaskModel

    labels = ["O", "B-x", "I-x"]
    model = TaskModel(make_tiny_encoder(len(tiny_tokenizer), seed=3, attn="sdpa"), TaskKind.TAGGING, 3).eval()
    saved = SavedModel(model, tiny_tokenizer, {"kind": "tagging", "labels": labels}, Path("tagger"))
    examples = [Example(words="play the songs in paris".split(), tags=[0, 0, 1, 0, 1], rationale=[1, 0, 0, 1, 0]),
                Example(words="weather tomorrow".split(), tags=[0, 1], rationale=[1, 0])]
    scored = score_examples(create_method("gb-huang-base"), saved, examples)
    assert scored.removal == "mask" and scored.probabilities is None
    assert [len(p) for p in scored.predictions] == [5, 2]
    # p(c | x) is the CRF probability of the predicted tag sequence
    with torch.no_grad():
        batch = encode_examples(examples, tiny_tokenizer, TaskKind.TAGGING).collate([0, 1])
        emissions = model(batch)
        tags = torch.tensor([scored.predictions[0], scored.predictions[1] + [0, 0, 0]])
        expected = model.crf(emissions, tags, mask=model._crf_mask(batch.word_mask), reduction="none").exp()
    assert scored.instances.full == pytest.approx(expected.numpy(), rel=1e-5)
    values = {r.name: r.value for r in evaluate_instances(scored.instances)}
    assert all(math.isfinite(v) for v in values.values())
    with pytest.raises(ConfigError, match="--removal mask"):
        score_examples(create_method("gb-huang-base"), saved, examples, removal="delete")
    with pytest.raises(ConfigError, match="slot filling"):
        eraser_records(scored, labels, TaskKind.TAGGING, "slots")


def test_slot_f1_counts_a_predicted_pad_as_a_wrong_entity_without_warning():
    import warnings

    from uimer.training.metrics import slot_f1

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # seqeval's "PAD seems not to be NE tag" would fail here
        score = slot_f1([["PAD", "B-city", "O"]], [["O", "B-city", "O"]])
    assert score == pytest.approx(2 / 3)  # precision 1/2 (PAD is a predicted entity), recall 1
