#!/usr/bin/env bash
# The main job: 1-shot SNIPS intent classification over the paper's four seeds with the packaged MiniLM,
# the base model and UIMER-IM (uniform replacement) side by side, printed as one table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
. scripts/data-dir.sh
[ -d "$UIMER_DATA_DIR/snips" ] || uimer data fetch snips --data-dir "$UIMER_DATA_DIR"
uimer train --task snips-intent --shot 1 --method ${UIMER_DEMO_METHODS:-baseline im-uniform} \
  --seeds 55 1988 12333 42 --encoder minilm --output-dir runs/demo "$@"
