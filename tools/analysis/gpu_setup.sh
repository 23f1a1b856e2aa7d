#!/usr/bin/env bash
# Make the GPU machine's image (torch, timm, einops ... but no MMEngine
# stack) able to run the project's tools: install the wheels carried in
# .whl/ (mmengine, mmcv-lite, mmpretrain, lpips, torch-fidelity and their
# small pure-Python needs) into a folder and put it on PYTHONPATH.
#
# Source it from the repository root, so the PYTHONPATH reaches the tools:
#   source tools/analysis/gpu_setup.sh && python tools/analysis/benchmark_gpu.py ...
#
# The wheels are made on a machine with PyPI access (pure Python, any OS):
#   pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl \
#     mmengine==0.10.7 mmcv-lite==2.2.0 mmpretrain==1.2.0 lpips==0.1.4 \
#     torch-fidelity==0.4.0 addict yapf termcolor mat4py modelindex \
#     model-index ordered-set importlib-metadata lazy-importer platformdirs
# and, for --precision fp8, the torchao built for the machine's torch 2.11:
#   pip download --no-deps --python-version 3.12 --only-binary=:all: -d .whl \
#     --platform manylinux_2_28_x86_64 torchao==0.17.0
DECQ_SITE="${DECQ_SITE:-/tmp/decq_site}"
DECQ_WHEELS="${DECQ_WHEELS:-.whl}"
if python3 -c 'import mmengine, mmcv, mmpretrain, lpips, torch_fidelity' \
        2>/dev/null; then
    echo "gpu_setup: the MMEngine stack is already importable"
elif ls "$DECQ_WHEELS"/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target "$DECQ_SITE" "$DECQ_WHEELS"/*.whl \
        && export PYTHONPATH="$DECQ_SITE${PYTHONPATH:+:$PYTHONPATH}" \
        && echo "gpu_setup: installed $(ls "$DECQ_WHEELS"/*.whl | wc -l) wheels into $DECQ_SITE" \
        || { echo "gpu_setup: pip install failed" >&2; return 1 2>/dev/null || exit 1; }
else
    echo "gpu_setup: no wheels in $DECQ_WHEELS/ (carry .whl)" >&2
    return 1 2>/dev/null || exit 1
fi
export PYTHONUNBUFFERED=1
python3 - <<'PY' || { return 1 2>/dev/null || exit 1; }
import mmengine, mmpretrain, torch
print('gpu_setup: mmengine', mmengine.__version__, '| mmpretrain',
      mmpretrain.__version__, '| torch', torch.__version__, '| cuda',
      torch.cuda.is_available())
PY
