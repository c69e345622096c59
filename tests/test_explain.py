"""`uimer explain` and the paper's analyses: known attributions on a bag-of-words model, IM per word, the
HTML and terminal heatmaps (with a headless-Chromium screenshot), Table 4 arithmetic, and the CLI end to end
on tiny saved models."""

from __future__ import annotations

import html
import io
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from conftest import make_tiny_encoder
from test_rationale_metrics import LABELS, EvidenceAttribution, saved_bag
from uimer.cli import main
from uimer.data.encoding import EncodedSplit
from uimer.data.types import Example, TaskKind
from uimer.errors import ConfigError
from uimer.evaluation.analysis import (
    attribution_accuracy,
    build_examples,
    explain_examples,
    group_means,
    table4_row,
)
from uimer.evaluation.render import (
    TokenExplanation,
    case_study_table,
    colour,
    explanation_renderable,
    explanations_html,
    format_score,
)
from uimer.interpret import create_method
from uimer.interpret.base import MethodSetup
from uimer.models.task_model import TaskModel

CHROMIUM = Path("/usr/bin/chromium")
LN2 = math.log(2.0)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


pytestmark = pytest.mark.usefixtures("one_thread")


# -- explanations with known attributions -------------------------------------------------------------------
def test_explain_gives_the_known_scores_prediction_and_group_means(tiny_tokenizer):
    saved = saved_bag(tiny_tokenizer)
    examples = build_examples(["play music song", "weather song"], TaskKind.CLASSIFICATION, LABELS,
                              gold_labels=["pos", "pos"], rationales=["1 1 0", "0 1"])
    out = explain_examples(EvidenceAttribution(), saved, examples, gold_known=[True, True])
    first, second = out
    assert first.tokens == ["play", "music", "song"] and first.scores == [2.0, 1.0, -1.0]
    assert first.prediction == "pos" and first.correct is True
    assert first.probability == pytest.approx(sigmoid(2.0))
    # a_R = mean(2, 1) = 1.5, a_N = -1 (mean word scores: the method is per-token)
    assert (first.a_r, first.a_n) == (pytest.approx(1.5), pytest.approx(-1.0))
    # "weather song": z = -4 -> neg (wrong); p(neg) = sigmoid(4); scores explain the prediction (target pred)
    assert second.prediction == "neg" and second.correct is False
    assert second.probability == pytest.approx(sigmoid(4.0))
    assert (second.a_r, second.a_n) == (pytest.approx(-1.0), pytest.approx(-3.0))


def test_explain_pairs_scores_premise_and_hypothesis_words(tiny_tokenizer):
    saved = saved_bag(tiny_tokenizer, TaskKind.PAIR)
    examples = build_examples(["play music"], TaskKind.PAIR, LABELS, pairs=["the song"], rationales=["1 0 0 1"])
    (e,) = explain_examples(EvidenceAttribution(), saved, examples)
    assert e.tokens == ["play", "music", "the", "song"] and e.pair_start == 2
    assert e.scores == [2.0, 1.0, 0.0, -1.0]
    assert (e.a_r, e.a_n) == (pytest.approx(0.5), pytest.approx(0.5))  # R = {play, song}, N = {music, the}
    assert '<span class="sep">' in explanations_html([e])
    (p,) = explain_examples(EvidenceAttribution(), saved, examples, pieces=True)
    assert p.tokens == ["play", "music", "the", "song"] and p.pair_start == 2 and p.rationale == [1, 0, 0, 1]
    with pytest.raises(ConfigError, match="--pair"):
        build_examples(["play music"], TaskKind.PAIR, LABELS)
    with pytest.raises(ConfigError, match="3 flags for 4 words"):
        build_examples(["play music"], TaskKind.PAIR, LABELS, pairs=["the song"], rationales=["1 0 0"])


def test_im_per_word_scores_are_log_odds_drops(tiny_tokenizer):
    # im-mask on the bag model: masking word w removes its evidence e_w, so
    # a_w = LO(sigmoid(z)) - LO(sigmoid(z - e_w)) = z/ln2 - (z - e_w)/ln2 = e_w / ln 2 bits
    saved = saved_bag(tiny_tokenizer)
    method = create_method("im-mask")
    method.prepare(MethodSetup(saved.model, tiny_tokenizer, EncodedSplit([], [], tiny_tokenizer.pad_token_id), 0))
    examples = build_examples(["play music song"], TaskKind.CLASSIFICATION, LABELS, gold_labels=["pos"],
                              rationales=["1 1 0"])
    (e,) = explain_examples(method, saved, examples, gold_known=[True])
    assert e.scores == pytest.approx([2 / LN2, 1 / LN2, -1 / LN2], abs=1e-4)
    assert e.unit.startswith("bits")
    # multi-token (Eq. 4): S^R masks play and music (z = -1), S^N masks the only other word, song (z = 3)
    assert e.a_r == pytest.approx((2 - (-1)) / LN2, abs=1e-4)
    assert e.a_n == pytest.approx((2 - 3) / LN2, abs=1e-4)
    assert e.a_note.startswith("Eq. 4")


def test_im_uniform_per_word_batches_are_consistent(tiny_tokenizer):
    saved = saved_bag(tiny_tokenizer)
    method = create_method("im-uniform", {"im_k": 3})
    method.prepare(MethodSetup(saved.model, tiny_tokenizer, EncodedSplit([], [], tiny_tokenizer.pad_token_id), 0))
    sentences = ["play music song", "the weather", "play the song music"]
    examples = build_examples(sentences, TaskKind.CLASSIFICATION, LABELS)
    together = explain_examples(method, saved, examples, batch_size=8)
    again = explain_examples(method, saved, examples, batch_size=8)
    assert [e.scores for e in together] == [e.scores for e in again]  # deterministic
    for e in together:
        assert all(math.isfinite(s) for s in e.scores) and len(e.scores) == len(e.tokens)


def test_group_means_and_validity():
    scores = torch.tensor([[1.0, 2.0, 3.0, 0.0], [5.0, 1.0, 0.0, 0.0]])
    present = torch.tensor([[True, True, True, False], [True, True, False, False]])
    gold = torch.tensor([[True, False, False, True], [True, True, False, False]])
    a_r, a_n, valid = group_means(scores, present, gold)
    # row 1: R = {0} (word 3 is absent) -> 1; N = {1, 2} -> 2.5; row 2: every word is a rationale -> invalid
    assert a_r.tolist() == pytest.approx([1.0, 3.0]) and a_n[0].item() == pytest.approx(2.5)
    assert valid.tolist() == [True, False]


def test_table4_arithmetic():
    correct = np.array([1, 0, 1, 1, 0, 1], dtype=bool)
    a_r = np.array([2.0, 1.0, 0.0, 3.0, 0.0, 5.0])
    a_n = np.array([1.0, 2.0, 1.0, 1.0, 0.0, 0.0])
    valid = np.array([1, 1, 1, 1, 1, 0], dtype=bool)
    row = table4_row(correct, a_r, a_n, valid, model="m", method="x", target="gold")
    # a_R > a_N among the 5 valid: examples 0 and 3, both correct -> 100 %; a_R <= a_N: 1, 2, 4 -> 1/3 correct
    # (a tie, example 4, counts as a_R <= a_N); share 2/5; overall accuracy 4/6 (the invalid one included)
    assert row.accuracy_r_gt_n == 1.0 and row.accuracy_r_le_n == pytest.approx(1 / 3)
    assert row.share_r_gt_n == pytest.approx(0.4) and row.accuracy == pytest.approx(4 / 6)
    assert (row.valid, row.examples, row.count_r_gt_n) == (5, 6, 2)


def test_attribution_accuracy_on_the_bag_model(tiny_tokenizer):
    saved = saved_bag(tiny_tokenizer)
    examples = [
        Example(words=["play", "song"], label=1, rationale=[1, 0]),  # z = 1 -> pos (right); a_R 2 > a_N -1
        Example(words=["weather", "music"], label=1, rationale=[1, 0]),  # z = -2 -> neg (wrong); -3 <= 1
        Example(words=["the", "song"], label=0, rationale=[0, 1]),  # z = -1 -> neg (right); -1 <= 0
        Example(words=["play", "music"], label=1, rationale=None),  # no rationale -> not valid; right
    ]
    row = attribution_accuracy(EvidenceAttribution(), saved, examples, model_name="bag")
    assert row.accuracy == pytest.approx(0.75) and row.valid == 3
    assert row.accuracy_r_gt_n == 1.0 and row.accuracy_r_le_n == pytest.approx(0.5)
    assert row.share_r_gt_n == pytest.approx(1 / 3)


# -- rendering ------------------------------------------------------------------------------------------------
def weird_explanation() -> TokenExplanation:
    return TokenExplanation(
        tokens=["a<b>", "x&y", '"q"', "plain"], scores=[0.5, -0.25, float("nan"), 1.0], model_name="m<1>",
        method="gb-huang-base", unit="u", prediction="pos", probability=0.75, rationale=[1, 0, 0, 1],
        gold_label="pos", a_r=0.75, a_n=-0.25, a_note="mean word score",
    )


def test_html_page_contains_every_token_with_its_score():
    e = weird_explanation()
    page = explanations_html([e], title="t & <t>")
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "http" not in page
    for token, score in zip(e.tokens, e.scores, strict=True):
        shown = html.escape(format_score(score))
        assert re.search(rf'data-score="{re.escape(shown)}">{re.escape(html.escape(token))}</span>', page)
        assert f"<td>{html.escape(token)}</td><td class=\"num\">{shown}</td>" in page
    assert "a<b>" not in page and "m<1>" not in page and "t & <t>" not in page  # everything escaped
    assert page.count('class="tok rationale"') == 2
    assert "rgb(214,39,40)" in page  # the top score (1.0) gets the full positive colour


def test_colours_and_terminal_rendering():
    assert colour(1.0, 1.0) == (214, 39, 40) and colour(-2.0, 2.0) == (31, 119, 180)
    assert colour(0.0, 1.0) == (255, 255, 255) and colour(float("nan"), 1.0) == (230, 230, 230)
    buffer = io.StringIO()
    console = Console(file=buffer, record=True, width=140, color_system="truecolor", force_terminal=True)
    e = weird_explanation()
    console.print(explanation_renderable(e))
    console.print(case_study_table([e, e], title="case"))
    text = console.export_text(clear=False)
    for token in e.tokens:
        assert token in text
    assert "0.5" in text and "-0.25" in text and "a_R = 0.75" in text and "✓ pos" in text
    assert "48;2;214;39;40m plain " in buffer.getvalue()  # the top token on the full red background


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium) to screenshot the HTML page")
def test_html_page_renders_in_headless_chromium(tmp_path):
    image = pytest.importorskip("matplotlib.image")
    page = tmp_path / "explain.html"
    page.write_text(explanations_html([weird_explanation()], title="uimer explain"), encoding="utf-8")
    png = tmp_path / "shot.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", "--window-size=1000,400",
               page.as_uri()]
    subprocess.run(command, capture_output=True, timeout=120, check=False)
    assert png.exists() and png.stat().st_size > 5_000
    pixels = image.imread(str(png))[..., :3]
    assert pixels.shape[:2] == (400, 1000)
    flat = pixels.reshape(-1, 3)
    assert len(np.unique(np.round(flat * 255).astype(int), axis=0)) > 50  # text and colours, not one colour
    # the strongest positive token's background colour is on screen (within PNG rounding)
    red = np.abs(flat * 255 - np.array([214, 39, 40])).max(1) < 3
    assert red.sum() > 100


# -- the CLI on tiny saved models ------------------------------------------------------------------------
ROWS = [
    ("add the song to my playlist", "AddToPlaylist", [1, 0, 0, 0, 0, 1]),
    ("play music", "PlayMusic", [1, 1]),
    ("what is the weather in paris", "GetWeather", [0, 0, 0, 1, 0, 0]),
    ("play the song", "PlayMusic", [1, 0, 0]),
    ("add a song to the playlist", "AddToPlaylist", [1, 0, 0, 0, 0, 1]),
    ("weather tomorrow in paris", "GetWeather", [1, 0, 0, 0]),
]
TASK_LABELS = ["AddToPlaylist", "GetWeather", "PlayMusic"]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A JSONL task and two saved tiny models (a 'base' and a 'UIMER' one) with different weights."""
    from conftest import make_tokenizer

    root = tmp_path_factory.mktemp("explain")
    data = root / "task"
    data.mkdir()
    for split in ("train", "dev", "test"):
        with (data / f"{split}.jsonl").open("w") as f:
            for text, label, rationale in ROWS:
                f.write(json.dumps({"text": text, "label": label, "rationale": rationale}) + "\n")
    (data / "labels.txt").write_text("\n".join(TASK_LABELS) + "\n")
    tokenizer = make_tokenizer()
    for name, seed, method in (("base", 0, "baseline"), ("uimer", 1, "im-mask")):
        model = TaskModel(make_tiny_encoder(len(tokenizer), seed=seed, attn="sdpa"), TaskKind.CLASSIFICATION, 3)
        model.save(root / name, tokenizer, {"task": "jsonl", "labels": TASK_LABELS, "encoder": "tiny",
                                            "method": method, "seed": seed})
    return root


def test_cli_explain_writes_heatmaps(tiny_runs, capsys):
    page = tiny_runs / "out" / "explain.html"
    scores = tiny_runs / "out" / "explain.json"
    code = main(["explain", "--model", str(tiny_runs / "uimer"), "play the song", "add a song to my playlist",
                 "--rationale", "1 0 1", "--rationale", "1 0 0 0 0 1", "--html", str(page), "--json", str(scores),
                 "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "im-mask" in out and "prediction" in out and "playlist" in out
    data = json.loads(scores.read_text())
    assert [d["tokens"] for d in data] == [["play", "the", "song"], ["add", "a", "song", "to", "my", "playlist"]]
    assert data[0]["rationale"] == [1, 0, 1] and data[0]["a_r"] is not None
    text = page.read_text()
    for d in data:
        for token, score in zip(d["tokens"], d["scores"], strict=True):
            assert f'data-score="{format_score(score)}">{token}</span>' in text


@pytest.mark.parametrize("method", ["gb-huang-base", "gb-ghaeini"])
def test_cli_explain_pieces_for_gradient_methods(tiny_runs, capsys, method):
    code = main(["explain", "--model", str(tiny_runs / "uimer"), "--method", method, "play songs",
                 "--pieces", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "##s" in out and method in out


def test_cli_baseline_model_needs_a_method(tiny_runs, capsys):
    assert main(["explain", "--model", str(tiny_runs / "base"), "play", "--device", "cpu"]) == 2
    assert "--method" in capsys.readouterr().err


def test_cli_evaluate_rationales_table_json_and_eraser(tiny_runs, capsys):
    out_dir = tiny_runs / "out"
    code = main(["evaluate-rationales", "--model", str(tiny_runs / "uimer"), "--method", "gb-huang-base",
                 "--data-dir", str(tiny_runs / "task"), "--json", str(out_dir / "m.json"),
                 "--export-eraser", str(out_dir / "eraser.jsonl"), "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    for name in ("token_f1", "auprc", "iou_f1", "comprehensiveness", "aopc_sufficiency"):
        assert name in out
    assert "AOPC thresholds: 1%, 5%, 10%, 20%, 50%" in out and "removal: delete" in out
    summary = json.loads((out_dir / "m.json").read_text())
    assert summary["thresholds"] == [0.01, 0.05, 0.1, 0.2, 0.5] and summary["scored"] == 6
    metrics = summary["metrics"]
    assert metrics["sufficiency"]["lower_is_better"] is True and metrics["token_f1"]["range"] == [0.0, 1.0]
    lines = (out_dir / "eraser.jsonl").read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[0])["annotation_id"] == "jsonl:test:0"


def test_cli_dm_trains_an_extractor_or_loads_a_saved_one(tiny_runs, capsys):
    from uimer.evaluation.attributions import EXTRACTOR_FILE, PrepareOptions, load_saved_model, prepare_method
    from uimer.interpret.extractor import save_extractor

    args = ["explain", "--model", str(tiny_runs / "uimer"), "--method", "dm-one-pass", "play the song",
            "--data-dir", str(tiny_runs / "task"), "--extractor-epochs", "1", "--device", "cpu"]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "training a DM extractor" in captured.err and "P(piece kept)" in captured.out
    # an extractor saved next to the model is used as it is
    saved = load_saved_model(tiny_runs / "uimer")
    method = create_method("dm-one-pass", {"extractor_epochs": 1})
    examples = [Example(words=t.split(), label=TASK_LABELS.index(label)) for t, label, _ in ROWS]
    prepare_method(method, saved, PrepareOptions(train_examples=examples))
    copy = tiny_runs / "uimer-dm"
    shutil.copytree(tiny_runs / "uimer", copy)
    save_extractor(method.extractor, copy / EXTRACTOR_FILE)
    assert main(["explain", "--model", str(copy), "--method", "dm-one-pass", "play the song", "--device", "cpu"]) == 0
    assert "loaded from" in capsys.readouterr().err


def test_cli_case_study_and_attribution_accuracy(tiny_runs, capsys):
    code = main(["case-study", "--base-model", str(tiny_runs / "base"), "--model", str(tiny_runs / "uimer"),
                 "--method", "im-uniform", "play the song", "--label", "PlayMusic", "--rationale", "1 0 1",
                 "--html", str(tiny_runs / "out" / "case.html"), "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "BaseModel +IM" in out and "UIMER-IM" in out and "a_R" in out
    assert (tiny_runs / "out" / "case.html").read_text().count("<section>") == 2
    table = tiny_runs / "out" / "t4.json"
    code = main(["attribution-accuracy", "--base-model", str(tiny_runs / "base"), "--model",
                 str(tiny_runs / "uimer"), "--method", "im-mask", "--data-dir", str(tiny_runs / "task"),
                 "--json", str(table), "--device", "cpu"])
    assert code == 0
    assert "% a_R > a_N" in capsys.readouterr().out
    rows = json.loads(table.read_text())["rows"]
    assert [r["model"] for r in rows] == ["BaseModel +IM", f"{json.loads((tiny_runs / 'uimer' / 'uimer-model.json').read_text())['method']} +IM"]
    for r in rows:
        assert r["examples"] == 6 and 0 <= r["share_r_gt_n"] <= 1 and r["target"] == "gold"


@pytest.mark.integration
def test_minilm_on_snips_test(tmp_path, shared_data, capsys):
    """The real tokenizer (word pieces) and the SNIPS keyword rationales, on an untrained MiniLM head."""
    from uimer.data.snips import load_snips
    from uimer.models.encoder import load_tokenizer
    from uimer.models.task_model import build_model

    labels = load_snips(shared_data, "intent").labels
    model = build_model("minilm", TaskKind.CLASSIFICATION, len(labels))
    model.save(tmp_path / "m", load_tokenizer("minilm"), {"task": "snips-intent", "labels": labels,
                                                          "encoder": "minilm", "method": "baseline", "seed": 0})
    code = main(["evaluate-rationales", "--model", str(tmp_path / "m"), "--method", "gb-huang-base",
                 "--data-dir", str(shared_data), "--limit", "24", "--json", str(tmp_path / "m.json"),
                 "--device", "cpu"])
    assert code == 0
    summary = json.loads((tmp_path / "m.json").read_text())
    assert summary["task"] == "snips-intent" and 0 < summary["scored"] <= 24
    for name in ("token_f1", "auprc", "iou_f1"):
        assert 0.0 <= summary["metrics"][name]["value"] <= 1.0
    assert "unit: words" in capsys.readouterr().out
