"""Markdown tables from the JSON files that run.sh writes: plausibility/faithfulness and Table 4.

    python benchmarks/interpretability/summarize.py > benchmarks/interpretability/SUMMARY.md
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = ("baseline", "im-mask", "dm-one-pass")
METHODS = ("im-mask", "gb-huang-base", "dm-one-pass")
METRICS = ("token_f1", "auprc", "iou_f1", "aopc_comprehensiveness", "aopc_sufficiency")


def metric_value(entry) -> float:
    return entry["value"] if isinstance(entry, dict) else entry


def main() -> None:
    print("# 1-shot SNIPS intent (seed 55, MiniLM): what the models look at\n")
    print("Plausibility against the gold keyword rationales and ERASER faithfulness on SNIPS test "
          "(`uimer evaluate-rationales`; target = the predicted label; top-k = the gold rationale size; "
          "AOPC over 1/5/10/20/50 % of the words, removal by deletion). ↑ higher is better, ↓ lower.\n")
    print("| model | scored with | " + " | ".join(f"{m} {'↓' if 'sufficiency' in m else '↑'}" for m in METRICS)
          + " |")
    print("|---|---|" + "---:|" * len(METRICS))
    for method in METHODS:
        for model in MODELS:
            path = HERE / f"plausibility-{model}-{method}.json"
            if not path.exists():
                continue
            data = json.loads(path.read_text())
            values = {k: metric_value(v) for k, v in data["metrics"].items()}
            cells = " | ".join(f"{values[m]:.4f}" if m in values else "" for m in METRICS)
            print(f"| {model} | {method} | {cells} |")
    print("\n## Table 4: accuracy split by a_R > a_N (UIMER-IM MASK scores, gold class, SNIPS test)\n")
    notes: list[str] = []
    print("| models | model | accuracy a_R > a_N | accuracy a_R ≤ a_N | share a_R > a_N | valid |")
    print("|---|---|---:|---:|---:|---:|")
    for other in MODELS[1:]:
        path = HERE / f"table4-baseline-vs-{other}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        for row in data["rows"]:
            print(f"| baseline vs {other} | {row['model']} | {100 * row['accuracy_r_gt_n']:.2f} | "
                  f"{100 * row['accuracy_r_le_n']:.2f} | {100 * row['share_r_gt_n']:.2f} | {row['valid']} |")
        base_row, other_row = data["rows"]
        keys = ("accuracy", "accuracy_r_gt_n", "accuracy_r_le_n", "share_r_gt_n")
        if all(base_row[k] == other_row[k] for k in keys):
            notes.append(f"- baseline vs {other}: identical rows: the {other} run's dev-selected model is its "
                         "warm-up model (no later epoch beat the warm-up's dev score), i.e. the base model itself; "
                         "only its extractor differs (see the `dm-one-pass` rows above).")
    if notes:
        print("\n" + "\n".join(notes))


if __name__ == "__main__":
    main()
