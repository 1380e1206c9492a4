#!/usr/bin/env bash
# The GPU checks of a session with a CUDA machine, in one short run: the whole test suite (the CUDA cases
# run there and are skipped elsewhere), then the CUDA benchmarks. Usage: bash tools/gpu_check.sh [OUT_DIR]
#
# Works with the machine's own torch (no virtual environment). Wheels the machine lacks (pycocotools,
# ipywidgets and its dependencies, faster-coco-eval) are installed from ./.whl if that folder exists.
# Per-test lines (-v) keep the failures readable even if a time limit stops the run; nothing else should
# use the GPU meanwhile (training beside it made pytest miss its time limit once).
set -u
mkdir -p "${1:-gpu-check}"
out=$(cd "${1:-gpu-check}" && pwd)  # absolute: the script works from the repository root
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/segnotes-site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/segnotes-site:$PWD
else
  export PYTHONPATH=$PWD
fi
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, torch.cuda.get_device_name())" || exit 1
# the detector benchmark trains on the shapes data; generate it while the tests run, with the
# Makefile's arguments (the set `make data` makes and data/shapes.sha256 describes)
data_args=$(sed -n 's/^DATA_ARGS := //p' Makefile)
[ -n "$data_args" ] || { echo "gpu_check.sh: no 'DATA_ARGS := ...' line in the Makefile" >&2; exit 1; }
# shellcheck disable=SC2086  # the arguments are words
python3 -m segnotes.cli data shapes --root data/shapes $data_args >/dev/null 2>&1 &
data=$!
timeout "${PYTEST_SECONDS:-240}" python3 -m pytest tests -v -n "${PYTEST_WORKERS:-8}" -p no:cacheprovider -p no:benchmark \
  --tb=short -W ignore >"$out/pytest.log" 2>&1
stamp "pytest exit $?"
grep -a "FAILED\|ERROR" "$out/pytest.log" | grep -v "^E " | sort -u | head -40
tail -1 "$out/pytest.log"
wait "$data"
python3 -m segnotes.cli data verify --root data/shapes --checksums data/shapes.sha256 >/dev/null 2>&1
stamp "data ready (checksums: exit $? with 0 = identical to the committed set)"
timeout "${BENCH_SECONDS:-240}" python3 benchmarks/run.py --devices cuda --only "${BENCH_ONLY:-detector,fcn,metrics,ops}" \
  --output "$out/bench_cuda.md" >"$out/bench.log" 2>&1
stamp "benchmarks exit $?"
cat "$out/bench_cuda.md" 2>/dev/null || tail -20 "$out/bench.log"
