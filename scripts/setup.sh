#!/usr/bin/env bash
# Set up the project-local virtual environment .venv/ with the known-good pinned stack (constraints.txt).
# Usage: bash scripts/setup.sh [EXTRAS]      e.g. EXTRAS=dev,napari  (default: none)
# Idempotent: a stamp file records what was installed; rerunning with nothing changed takes ~1 s.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for cand in python3.11 python3; do
    if command -v "$cand" >/dev/null 2>&1; then python_bin="$cand"; break; fi
  done
fi
if [ -z "$python_bin" ]; then echo "setup: no python3 found (need Python >= 3.11)" >&2; exit 1; fi
"$python_bin" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "setup: $python_bin is $("$python_bin" --version 2>&1); mtbio needs Python >= 3.11 (set PYTHON=...)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $("$python_bin" --version 2>&1)"
  "$python_bin" -m venv .venv
fi
key=$(cat constraints.txt pyproject.toml | sha256sum | cut -c1-16)
stamp=".venv/.mtbio-setup-${key}-${extras//,/_}"
if [ -f "$stamp" ]; then
  exit 0
fi
spec="."
[ -n "$extras" ] && spec=".[${extras}]"
echo "setup: installing mtbio${extras:+[$extras]} with the pinned stack (constraints.txt); first time takes ~2-3 min"
# torch is pinned to 2.13.0 (CPU wheel where one is available locally); never let pip pull an unpinned torch.
.venv/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e "$spec"
rm -f .venv/.mtbio-setup-*
touch "$stamp"
echo "setup: done (.venv/bin/python, .venv/bin/mtbio)"
