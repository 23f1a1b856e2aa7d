#!/usr/bin/env bash
# The built-in default, end to end, with nothing to download (CPU, minutes
# on 2 cores, more when other jobs share them; README quotes measured times):
#   1. install decq_plugin into the current Python environment;
#   2. stage 1: train the tiny DecQ tokenizer on the bundled photos;
#   3. evaluate it (PSNR, SSIM) and write a reconstruction grid;
#   4. latent statistics and cached latents (+ flips) of the photos;
#   5. stage 2: train a tiny DiT-DH jointly on patch and query latents;
#   6. sample a class-balanced grid and score it with the metrics that need
#      no download (FID / IS / precision / recall on a tiny random feature
#      network: they exercise the pipeline, they are not Inception numbers).
# Usage: bash tools/demo.sh [WORK_DIR]   (default: work_dirs/demo)
# DEMO_EPOCHS / DEMO_LDM_EPOCHS shorten or lengthen the two trainings.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python || command -v python3)}
WORK=${1:-work_dirs/demo}
TOK_CONFIG=configs/demo/decq_tiny_1xb8-16e_demo-64.py
LDM_CONFIG=configs/demo/ldm_dit-dh-tiny_decq-tiny_1xb16-40e_demo-64.py
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
start=$(date +%s)

echo "== [1/6] installing decq_plugin into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
"$PYTHON" -m pip install -q -e . \
    2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2)
"$PYTHON" tools/misc/check_torch_build.py

TOK_EXTRA=()
[ -n "${DEMO_EPOCHS:-}" ] && TOK_EXTRA=(--cfg-options "train_cfg.max_epochs=${DEMO_EPOCHS}")
LDM_EXTRA=()
[ -n "${DEMO_LDM_EPOCHS:-}" ] && LDM_EXTRA=("train_cfg.max_epochs=${DEMO_LDM_EPOCHS}")

echo "== [2/6] stage 1: training the tiny DecQ tokenizer -> $WORK/tokenizer"
"$PYTHON" tools/train.py "$TOK_CONFIG" --work-dir "$WORK/tokenizer" "${TOK_EXTRA[@]}"
TOK_CKPT=$(cat "$WORK/tokenizer/last_checkpoint")

echo "== [3/6] evaluating $TOK_CKPT"
"$PYTHON" tools/test.py "$TOK_CONFIG" "$TOK_CKPT" --work-dir "$WORK/tokenizer" \
    --out "$WORK/tokenizer_metrics.json"
mapfile -t PHOTOS < <("$PYTHON" -c '
from decq_plugin.datasets.demo_images import demo_image_path
for name in ("astronaut", "coffee", "chelsea", "rocket"):
    print(demo_image_path(name))')
"$PYTHON" tools/reconstruct.py "$TOK_CONFIG" "$TOK_CKPT" "${PHOTOS[@]}" \
    --out-dir "$WORK/reconstructions" --grid "$WORK/reconstruction_grid.png"

echo "== [4/6] latent statistics and cached latents"
"$PYTHON" tools/compute_latent_stats.py "$TOK_CONFIG" "$TOK_CKPT" \
    --out "$WORK/latent_stats.pt" --split train
rm -rf "$WORK/latents"
"$PYTHON" tools/extract_latents.py "$TOK_CONFIG" "$TOK_CKPT" \
    --out-dir "$WORK/latents" --stats "$WORK/latent_stats.pt" --split train \
    --dtype float32 --shard-size 256

echo "== [5/6] stage 2: training the tiny DiT-DH -> $WORK/ldm"
"$PYTHON" tools/train.py "$LDM_CONFIG" --work-dir "$WORK/ldm" --cfg-options \
    "model.tokenizer_ckpt=$TOK_CKPT" \
    "model.tokenizer.latent_stats=$WORK/latent_stats.pt" \
    "train_dataloader.dataset.data_root=$WORK/latents" "${LDM_EXTRA[@]}"
LDM_CKPT=$(cat "$WORK/ldm/last_checkpoint")

echo "== [6/6] sampling 8 classes x 4 and scoring against the photos"
"$PYTHON" - "$WORK/reference" <<'PY'
import os, sys
from PIL import Image
from decq_plugin.datasets.demo_images import DemoImageDataset
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
for i, item in enumerate(DemoImageDataset(mode='val', image_size=64)):
    img = item['inputs'].mul(255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(img).save(os.path.join(out, f'{i:04d}.png'))
PY
rm -rf "$WORK/samples"
"$PYTHON" tools/sample.py "$LDM_CONFIG" "$LDM_CKPT" --out-dir "$WORK/samples" \
    --num-per-class 4 --batch-size 16 --npz "$WORK/samples/samples.npz" \
    --metrics --reference "$WORK/reference" \
    --feature-extractor RandomConvFeatureExtractor \
    --cfg-options "model.tokenizer.latent_stats=$WORK/latent_stats.pt" \
    | tee "$WORK/generation_metrics.txt"
# One class per row in the grid; the metrics file and stdout say that the
# numbers come from a random feature network, not Inception.
"$PYTHON" -m decq_plugin.utils.demo_report "$WORK"

echo "== done in $(( $(date +%s) - start )) s"
echo "   tokenizer checkpoint  $TOK_CKPT"
echo "   tokenizer metrics     $WORK/tokenizer_metrics.json"
echo "   reconstructions       $WORK/reconstruction_grid.png"
echo "   DiT-DH checkpoint     $LDM_CKPT"
echo "   samples               $WORK/sample_grid.png (one class per row), $WORK/samples/samples.npz"
echo "   generation metrics    $WORK/generation_metrics.txt (random feature network, not Inception)"
