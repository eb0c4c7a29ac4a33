#!/usr/bin/env bash
# Set up .venv, then run the default MONAI bundle bundles/masktwins_demo end to end: generate the synthetic EM
# domains, train oracle / source-only / MaskTwins, predict the held-out target with the streaming inferer, evaluate
# and print the metric table. Extra arguments are bundle overrides passed to all three workflows, e.g.
#   bash scripts/demo.sh --iterations 300 --output_dir /tmp/demo --models_dir /tmp/demo/models
# A finished training is kept (delete bundles/masktwins_demo/runs and models to retrain).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning:monai.bundle.scripts}"
bundle=bundles/masktwins_demo
configs=$bundle/configs
start=$(date +%s)
# inference.yaml and evaluate.yaml extend train.yaml (MONAI merges the listed files in order)
.venv/bin/python -m monai.bundle run training --bundle_root "$bundle" --config_file "$configs/train.yaml" "$@"
.venv/bin/python -m monai.bundle run inference --bundle_root "$bundle" \
  --config_file "['$configs/train.yaml','$configs/inference.yaml']" "$@"
.venv/bin/python -m monai.bundle run evaluate --bundle_root "$bundle" \
  --config_file "['$configs/train.yaml','$configs/evaluate.yaml']" "$@"
echo "demo bundle: $(($(date +%s) - start)) s (training, inference, evaluation; set-up not counted)"
