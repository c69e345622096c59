"""The examples run as tests on tiny settings: the packaged MiniLM on a few SNIPS sentences, a few steps each.

Each asserts what the example is for: the training subset is the CLI's, the alignment term is on (L_int > 0 in
the logs) and the losses are finite, and what it writes reloads in plain transformers with the same predictions.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytest.importorskip("accelerate", reason="uimer.hf needs the [hf] extra (accelerate)")


def example(name: str):
    """Import examples/NAME.py as a module (its `main(argv)` is what the command line runs)."""
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_intent_example_trains_on_the_clis_subset(shared_data):
    from uimer.data.tasks import load_task
    from uimer.training.runner import select_train_indices

    helpers = example("snips_data")
    task = load_task("snips-intent", shared_data)
    ours = helpers.few_shot(task, 1, 55)
    cli = [task.train[i] for i in select_train_indices(task, 1, None, 55)]
    assert [e.words for e in ours] == [e.words for e in cli] and len(ours) == 7
    assert sum(bool(e.has_rationale) for e in ours) >= 1  # the keyword dictionary marks some of them


@pytest.mark.parametrize(("method", "head"), [("gb-huang-base", "cls"), ("im-mask", "pooler")])
def test_hf_trainer_intent_example_and_its_saved_model_reloads(method, head, shared_data, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    module = example("hf_trainer_intent")
    result = module.main(["--method", method, "--max-epochs", "3", "--dev-size", "14", "--test-size", "21",
                          "--data-dir", str(shared_data), "--output-dir", str(tmp_path), "--save-model",
                          "--head", head])
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["test"] == result["test"] and 0 <= result["test"] <= 1
    logs = result["logs"]
    assert len(logs) == 3 and all(math.isfinite(e["loss"]) and e["l_int"] > 0 for e in logs)
    assert all(abs(e["loss"] - (e["l_task"] + e["l_int"])) < 1e-3 * max(1.0, e["loss"]) for e in logs)  # alpha 1
    assert logs[-1]["l_task"] < logs[0]["l_task"]
    assert len(result["dev_history"]) == 3 and result["best_epoch"] is not None

    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    from uimer.data.tasks import load_task

    task = load_task("snips-intent", shared_data)
    test = module.evaluation_features(tokenizer, task, task.test, 21, 50)
    predictions = []
    with torch.no_grad():
        for feature in test:
            ids = torch.tensor([feature["input_ids"]])
            predictions.append(int(reloaded(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.argmax(-1)))
    assert predictions == result["test_predictions"]  # the selected model, reloaded by plain transformers


def test_custom_loop_example_adds_the_loss_in_a_plain_loop(shared_data):
    result = example("custom_loop").main(["--method", "im-mask", "--epochs", "4", "--eval-size", "14",
                                          "--data-dir", str(shared_data)])
    history = result["history"]
    assert result["steps"] == 4 and history[0]["l_int"] > 0
    assert history[-1]["l_task"] < history[0]["l_task"] and history[-1]["l_int"] < history[0]["l_int"]


def test_token_classification_example_runs_the_hf_token_adapter(shared_data, tmp_path):
    result = example("token_classification").main(
        ["--method", "gb-huang-base", "--max-epochs", "2", "--dev-size", "10", "--test-size", "10",
         "--data-dir", str(shared_data), "--output-dir", str(tmp_path)])
    logs = [e for e in result["logs"] if "l_int" in e]
    assert logs and all(e["l_int"] > 0 and math.isfinite(e["l_task"]) for e in logs)
    assert 0 <= result["test"] <= 1 and (tmp_path / "results.json").is_file()


def test_hf_trainer_intent_with_the_clis_streams_reproduces_uimer_train(shared_data, tmp_path):
    """Same subset, hyper-parameters, head, batch order and dropout stream: the HF Trainer run and `uimer train`
    give the same dev curve, losses and test accuracy (2 epochs, 14 dev sentences)."""
    from uimer.cli import main as cli

    common = ["--max-epochs", "2", "--dev-size", "14", "--data-dir", str(shared_data)]
    assert cli(["train", "--task", "snips-intent", "--shot", "1", "--seeds", "55", "--method", "gb-huang-base",
                "--max-length", "50", "--lr", "2e-4", "--output-dir", str(tmp_path / "cli"), "--no-progress",
                "--device", "cpu", *common]) == 0
    ours = json.loads((tmp_path / "cli" / "seeds" / "seed55.json").read_text())
    theirs = example("hf_trainer_intent").main(["--seed", "55", "--method", "gb-huang-base",
                                                "--output-dir", str(tmp_path / "hf"), *common])
    assert [round(e["eval_accuracy"], 6) for e in theirs["dev_history"]] == [round(e["dev"], 6) for e in ours["history"]]
    for mine, cli_epoch in zip(theirs["logs"], ours["history"], strict=True):
        assert abs(mine["l_task"] - cli_epoch["l_task"]) < 1e-4 and abs(mine["l_int"] - cli_epoch["l_int"]) < 1e-4
    assert abs(theirs["test"] - ours["test"]) < 1e-9
