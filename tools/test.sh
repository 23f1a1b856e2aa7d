#!/usr/bin/env bash
# Install decq_plugin (editable, with its test extra) into the CURRENT Python
# environment, then run the test suite. The exit code is pytest's.
#   bash tools/test.sh [pytest arguments ...]   (default: the whole tests/)
# A torch already installed is kept when it fits the range in
# requirements/runtime.txt (e.g. a user's own CUDA build).
# PYTHON picks the interpreter (default: python, else python3).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
PYTHON=${PYTHON:-$(command -v python || command -v python3)}

export HF_HUB_OFFLINE=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
export MKL_NUM_THREADS=${MKL_NUM_THREADS:-$OMP_NUM_THREADS}
export MPLBACKEND=${MPLBACKEND:-Agg}
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_ROOT_USER_ACTION=ignore
export PYTHONDONTWRITEBYTECODE=1

echo "== installing decq_plugin[tests] into $("$PYTHON" -c 'import sys; print(sys.prefix)')"
# The filter drops pip's notes about local package folders that lack a
# package (machine-wide pip settings); every other message is kept.
if ! "$PYTHON" -m pip install -q -e ".[tests]" \
        2> >(grep -v "^WARNING: Location 'file://.*' is ignored" >&2); then
    echo "== pip install failed" >&2
    exit 1
fi
"$PYTHON" tools/misc/check_torch_build.py || exit 1
"$PYTHON" -c 'import torch, mmengine, mmcv, mmpretrain, timm
print("== torch", torch.__version__, "| mmengine", mmengine.__version__,
      "| mmcv", mmcv.__version__, "| mmpretrain", mmpretrain.__version__,
      "| timm", timm.__version__)' 2>/dev/null

if [ $# -gt 0 ]; then
    echo "== python -m pytest -q $*"
    "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
    status=$?
    echo "== pytest exit code: $status"
    exit $status
fi

# The whole suite in three groups: unit tests and the shipped recipes on
# both cores (pytest-xdist, one thread per worker), the fault-injection
# suite (kill timings) on its own.
PARALLEL=()
if "$PYTHON" -c 'import xdist' 2>/dev/null; then
    PARALLEL=(-n 2)
fi
status=0
run_group() {
    local threads=$1
    shift
    echo "== python -m pytest -q $*"
    OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
        "$PYTHON" -m pytest -q -p no:cacheprovider "$@"
    local code=$?
    # 5: no test in the group (e.g. a marker selecting nothing).
    if [ $code -ne 0 ] && [ $code -ne 5 ]; then
        status=$code
    fi
    echo "== pytest exit code: $code"
}
one=$([ ${#PARALLEL[@]} -gt 0 ] && echo 1 || echo "$OMP_NUM_THREADS")
run_group "$one" tests -m "not recipe and not slow" "${PARALLEL[@]}"
run_group "$OMP_NUM_THREADS" tests -m "slow and not recipe"
run_group "$one" tests -m "recipe" "${PARALLEL[@]}" --durations=15
echo "== tools/test.sh exit code: $status"
exit $status
