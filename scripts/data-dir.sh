#!/usr/bin/env bash
# Sourced: points UIMER_DATA_DIR at the datasets. Uses an existing setting, else the shared/ folder beside
# the checkout (this project's machines and CI), else downloads into ~/.cache/uimer/data.
if [ -z "${UIMER_DATA_DIR:-}" ]; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  if [ -d "$here/../shared/data/snips" ]; then
    export UIMER_DATA_DIR="$here/../shared/data"
  else
    export UIMER_DATA_DIR="$HOME/.cache/uimer/data"
  fi
fi
