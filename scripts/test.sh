#!/usr/bin/env bash
# The test suite (fast tests; `-m slow` runs the long ones). pytest's exit code 5 (no tests) is not a failure.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit 1
. .venv/bin/activate
. scripts/data-dir.sh
export UIMER_TEST_DATA_DIR="${UIMER_TEST_DATA_DIR:-$UIMER_DATA_DIR}"
python -m pytest -q "$@"
rc=$?
[ "$rc" -eq 5 ] && rc=0
exit "$rc"
