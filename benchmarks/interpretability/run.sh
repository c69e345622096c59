#!/usr/bin/env bash
# Issue 7's evidence: Table 4 (accuracy split by a_R > a_N) and plausibility/faithfulness on SNIPS test for
# 1-shot intent models (seed 55, MiniLM, the paper's per-cell hyper-parameters): the base model, the best
# UIMER-IM variant of our 1-shot grid (im-mask) and UIMER-DM (one-pass). Train them first (runs/ is not
# committed; ~4 minutes each here):
#
#   C="--task snips-intent --shot 1 --seeds 55 --lr 2e-4 --batch-size 24 --max-epochs 70 --patience 7 --max-length 50 --save-model"
#   uimer train $C --method baseline --output-dir runs/i7/baseline
#   uimer train $C --method im-mask --alpha 4 --margin 1 --output-dir runs/i7/im-mask
#   uimer train $C --method dm-one-pass --alpha 0.8 --lr-extractor 5e-4 --output-dir runs/i7/dm-one-pass
#
# then: bash benchmarks/interpretability/run.sh   (writes the JSON files next to this script)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=benchmarks/interpretability
declare -A model=(
  [baseline]=runs/i7/baseline/models/seed55
  [im-mask]=runs/i7/im-mask/models/seed55
  [dm-one-pass]=runs/i7/dm-one-pass/models/seed55
)
for name in baseline im-mask dm-one-pass; do
  for method in im-mask gb-huang-base dm-one-pass; do
    uimer evaluate-rationales --model "${model[$name]}" --split test --method "$method" \
      --json "$out/plausibility-$name-$method.json" > "$out/plausibility-$name-$method.txt"
  done
done
for name in im-mask dm-one-pass; do
  uimer attribution-accuracy --base-model "${model[baseline]}" --model "${model[$name]}" --split test \
    --method im-mask --json "$out/table4-baseline-vs-$name.json" > "$out/table4-baseline-vs-$name.txt"
done
uimer case-study --base-model "${model[baseline]}" --model "${model[im-mask]}" --method im-mask \
  --json "$out/case-study-im-mask.json" \
  "what is the weather forecast for paris tomorrow" "play the newest album by miles davis" \
  "book a table for two at an italian restaurant" > "$out/case-study-im-mask.txt"
uimer explain --model "${model[dm-one-pass]}" --method dm-one-pass \
  "what is the weather forecast for paris tomorrow" > "$out/explain-dm-one-pass.txt"
