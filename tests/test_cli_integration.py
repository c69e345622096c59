"""End-to-end through the real CLI with the packaged MiniLM and the shared SNIPS data (kept to seconds)."""

import json

import pytest
import torch

from uimer.cli import main

pytestmark = pytest.mark.integration


def test_train_save_predict_snips_intent(tmp_path, shared_data, capsys):
    out = tmp_path / "run"
    code = main([
        "train", "--task", "snips-intent", "--shot", "1", "--seeds", "55", "--max-epochs", "2",
        "--dev-size", "70", "--data-dir", str(shared_data), "--output-dir", str(out), "--save-model",
        "--no-progress", "--device", "cpu",
    ])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["task"] == "snips-intent" and results["setting"] == "1-shot"
    assert results["method"] == "baseline" and results["encoder"] == "minilm"
    assert [r["seed"] for r in results["per_seed"]] == [55]
    assert 0.0 <= results["test_mean"] <= 1.0 and results["test_std"] == 0.0
    assert "test score at the best dev epoch" in capsys.readouterr().out
    steps = (out / "logs" / "seed55-steps.jsonl").read_text().splitlines()
    assert len(steps) == 2 and {"l_task", "l_int"} <= set(json.loads(steps[0]))

    code = main(["predict", "--model", str(out / "models" / "seed55"), "play some jazz music", "--device", "cpu"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line["sentence"] == "play some jazz music"
    assert line["label"] in {"AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook",
                             "SearchCreativeWork", "SearchScreeningEvent", "UNK"}

    # `uimer export`: the saved run as a plain transformers model that predicts the same labels as `uimer predict`
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    sentences = ["play some jazz music", "what is the weather in paris", "book a table for two at noon",
                 "rate this novel five stars", "add this song to my road trip playlist", "find the movie schedule"]
    assert main(["predict", "--model", str(out / "models" / "seed55"), *sentences, "--device", "cpu"]) == 0
    ours = [json.loads(row)["label"] for row in capsys.readouterr().out.strip().splitlines()]
    assert main(["export", "--model", str(out / "models" / "seed55"), "--out", str(tmp_path / "hf")]) == 0
    assert "from_pretrained" in capsys.readouterr().out
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        logits = model(**tokenizer(sentences, padding=True, return_tensors="pt")).logits
    assert [model.config.id2label[i] for i in logits.argmax(-1).tolist()] == ours
    assert main(["export", "--model", str(out / "models" / "seed55"), "--out", str(tmp_path / "hf")]) == 2
    assert "--out" in capsys.readouterr().err  # not over a non-empty directory without --overwrite
    assert main(["export", "--model", str(tmp_path), "--out", str(tmp_path / "hf2")]) == 2
    assert "--model" in capsys.readouterr().err


def test_bad_option_is_a_clear_error(tmp_path, shared_data, capsys):
    code = main(["train", "--task", "esnli", "--shot", "1", "--data-dir", str(shared_data),
                 "--output-dir", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert code == 2
    assert "--train-size" in capsys.readouterr().err
