#!/usr/bin/env bash
# Set up .venv, then run the built-in end-to-end demo on synthetic EM domains (extra arguments go to `mtbio demo`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
exec .venv/bin/mtbio demo "$@"
