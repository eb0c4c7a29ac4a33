#!/usr/bin/env bash
# The one prepared script a session runs on a lent GPU machine (docs/paper_protocol.md):
#   1. benchmarks/gpu_check.py            (~2 min: streaming inference fp32 / AMP, a training step)
#   2. benchmarks/paper_protocol.py       (the rest of the time: VNC III -> Lucchi++ with a sized schedule)
# Prepare HERE first (internet, ../shared/data): .venv/bin/python scripts/gpu_prepare.py --data ../shared/data
# then one device call:  run(command="bash scripts/gpu_session.sh", carry=[".whl", "data/gpu"], timeout_s=600)
#
# Assumed on the device machine (nothing can be fetched there): its image's python3 (3.12) with a CUDA torch,
# numpy, scipy, scikit-learn, scikit-image, pillow, tifffile, h5py, tqdm, tensorboard; the packages it lacks come as
# the carried wheels in .whl/ (installed into /tmp/site, not into the image); the carried data in data/gpu/. A .venv
# made here is not used there (another machine, another Python).
#
# Everything goes under $OUT (at most 8 files come back): gpu_check/gpu_check.{json,md}, paper/results.{json,md},
# paper/config.json, gpu_check.log, paper.log, summary.txt. Run folders and checkpoints stay in /tmp there.
# A failed step does not stop the next; the whole script ends within SESSION_S seconds (default 570).
# Environment: OUT, SESSION_S, CHECK_S (gpu_check's limit, default 200), MINUTES (the protocol's budget at most,
# default 7), DATA (default data/gpu), PYTHON;
# SMOKE=1 runs the same steps on the CPU in seconds (gpu_check --quick, paper_protocol --tiny) to try the script.
set -u
cd "$(dirname "$0")/.."
start=$(date +%s)
OUT=${OUT:-/tmp/mtbio-gpu-out}
SESSION_S=${SESSION_S:-570}
MINUTES=${MINUTES:-7}
DATA=${DATA:-data/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
summary="$OUT/summary.txt"
: >"$summary"
say() { echo "$*" | tee -a "$summary"; }
left() { echo $((SESSION_S - ($(date +%s) - start))); }

# environment: the image's python3 + the carried wheels (only if the image lacks the packages)
if ! "$PY" -c "import monai, ignite, zarr" >/dev/null 2>&1; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
      && export PYTHONPATH=/tmp/site
  else
    say "env: monai / ignite / zarr missing and no .whl/ carried (run scripts/gpu_prepare.py here first)"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" - <<'EOF' 2>&1 | tee -a "$summary"
import platform
try:
    import torch
    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else "no CUDA device"
    print(f"env: python {platform.python_version()}, torch {torch.__version__}, {name}")
    import monai, ignite, zarr
    print(f"env: monai {monai.__version__}, ignite {ignite.__version__}, zarr {zarr.__version__}")
except Exception as err:  # reported, the steps below still run
    print(f"env: {type(err).__name__}: {err}")
EOF
[ -f "$DATA/PACK.json" ] && say "data: $("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); t=r['target_train']; print(f\"{sys.argv[1]}: target training {len(t['sections'])} of {t['of']} sections (every {t['stride']}), test {r['test']['sections']}, git {r['git']}\")" "$DATA/PACK.json")"

# step 1: GPU checks (at most CHECK_S seconds)
check_args=(--out "$OUT/gpu_check")
paper_args=(--data "$DATA" --device cuda --tta)
if [ "${SMOKE:-0}" = 1 ]; then
  check_args+=(--device cpu --quick --repeats 1)
  paper_args=(--tiny --tta)
  MINUTES=0.5
fi
timeout "${CHECK_S:-200}" "$PY" benchmarks/gpu_check.py "${check_args[@]}" >"$OUT/gpu_check.log" 2>&1
rc1=$?
say "gpu_check: exit $rc1 ($([ $rc1 -eq 124 ] && echo 'timed out' || echo done)) after $(($(date +%s) - start)) s"

# step 2: the paper protocol within what is left (its own budget sizing + a hard timeout 20 s later)
avail=$(($(left) - 30))
minutes=$("$PY" -c "import sys; print(f'{max(0.0, min(float(sys.argv[1]), int(sys.argv[2]) / 60)):.2f}')" "$MINUTES" "$avail")
rm -rf /tmp/mtbio-paper-runs  # a fresh schedule: never resume another budget's runs
if [ "$avail" -gt 60 ]; then
  timeout $((avail + 20)) "$PY" benchmarks/paper_protocol.py "${paper_args[@]}" --minutes "$minutes" \
    --out "$OUT/paper" --work /tmp/mtbio-paper-runs >"$OUT/paper.log" 2>&1
  rc2=$?
else
  rc2=-1
  echo "skipped: ${avail} s left" >"$OUT/paper.log"
fi
say "paper_protocol: exit $rc2 (budget $minutes min) after $(($(date +%s) - start)) s"

# summary
say ""
[ -f "$OUT/gpu_check/gpu_check.md" ] && tee -a "$summary" <"$OUT/gpu_check/gpu_check.md"
[ -f "$OUT/paper/results.md" ] && tee -a "$summary" <"$OUT/paper/results.md"
for log in gpu_check paper; do
  if [ -f "$OUT/$log.log" ] && ! grep -q . "$OUT/$log/"*.md 2>/dev/null; then
    say "--- last lines of $log.log ---"
    tail -n 15 "$OUT/$log.log" | tee -a "$summary"
  fi
done
exit 0
