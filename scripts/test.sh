#!/usr/bin/env bash
# Set up .venv (with the dev + napari + measure + export extras) and run the test suite. Extra arguments go to pytest.
# GUI (napari) tests need an X server: they run under xvfb-run when it exists, and are skipped with the
# reason printed otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,napari,measure,export
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export MPLBACKEND=Agg
if command -v xvfb-run >/dev/null 2>&1; then
  QT_QPA_PLATFORM=xcb exec xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@"
else
  echo "test: xvfb-run not found: the napari GUI tests are skipped (Debian: apt-get install xvfb libxcb-icccm4 libxcb-keysyms1)"
  MTBIO_SKIP_GUI="xvfb-run not found: install xvfb to run the napari GUI tests" exec .venv/bin/python -m pytest "$@"
fi
