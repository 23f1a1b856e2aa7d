#!/usr/bin/env bash
# The built-in default, end to end, with nothing to download:
#   1. install decq_plugin into the current Python environment;
#   2. train the tiny DecQ tokenizer on the bundled photos (CPU, minutes);
#   3. evaluate it (PSNR, SSIM) and write a reconstruction grid;
#   4. compute its latent statistics (the input of stage 2).
# Usage: bash tools/demo.sh [WORK_DIR]   (default: work_dirs/demo)
# DEMO_EPOCHS shortens or lengthens the training (default: the config's).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
WORK=${1:-work_dirs/demo}
CONFIG=configs/demo/decq_tiny_1xb8-16e_demo-64.py
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore

echo "== [1/4] installing decq_plugin into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install -q -e . \
    2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2)

EXTRA=()
if [ -n "${DEMO_EPOCHS:-}" ]; then
    EXTRA=(--cfg-options "train_cfg.max_epochs=${DEMO_EPOCHS}")
fi

echo "== [2/4] training the tiny DecQ tokenizer -> $WORK/tokenizer"
"$PYTHON" tools/train.py "$CONFIG" --work-dir "$WORK/tokenizer" "${EXTRA[@]}"
CKPT=$(cat "$WORK/tokenizer/last_checkpoint")

echo "== [3/4] evaluating $CKPT"
"$PYTHON" tools/test.py "$CONFIG" "$CKPT" --work-dir "$WORK/tokenizer" \
    --out "$WORK/tokenizer_metrics.json"
"$PYTHON" tools/reconstruct.py "$CONFIG" "$CKPT" \
    "$("$PYTHON" -c 'from decq_plugin.datasets.demo_images import demo_image_path as p; print(p("astronaut"))')" \
    "$("$PYTHON" -c 'from decq_plugin.datasets.demo_images import demo_image_path as p; print(p("coffee"))')" \
    "$("$PYTHON" -c 'from decq_plugin.datasets.demo_images import demo_image_path as p; print(p("chelsea"))')" \
    "$("$PYTHON" -c 'from decq_plugin.datasets.demo_images import demo_image_path as p; print(p("rocket"))')" \
    --out-dir "$WORK/reconstructions" --grid "$WORK/reconstruction_grid.png"

echo "== [4/4] latent statistics"
"$PYTHON" tools/compute_latent_stats.py "$CONFIG" "$CKPT" \
    --out "$WORK/latent_stats.pt" --split train

echo "== done: checkpoint $CKPT"
echo "   metrics          $WORK/tokenizer_metrics.json"
echo "   reconstructions  $WORK/reconstruction_grid.png"
echo "   latent stats     $WORK/latent_stats.pt"
