#!/usr/bin/env bash
# Development-only: the CUDA checks for the lent GPU machine, in one call.
#   tools/gpu_checks.sh cuda-tests|suite [benchmark arguments...]
# Installs the carried wheels (.whl: numpy 2.4, whose numba CUDA compiler works,
# scipy, hypothesis) into .site, runs the tests with real kernels
# (NUMBA_ENABLE_CUDASIM=0), then benchmarks/occlusion_gpu.py. Logs go to $OUT.
set -uo pipefail
tests=${1:-cuda-tests}; shift || true
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=$PWD/.site:$PWD NUMBA_ENABLE_CUDASIM=0 NUMBA_CACHE_DIR=/tmp/numba-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import numpy, numba, numba_cuda, scipy; print('numpy', numpy.__version__, 'numba', numba.__version__, 'numba-cuda', numba_cuda.__version__, 'scipy', scipy.__version__)"
start=$(date +%s)
if [ "$tests" = suite ]; then paths=tests; else paths=tests/test_cuda.py; fi
timeout 330 python3 -m pytest -q -p no:cacheprovider "$paths" --durations=10 2>&1 | tee "$OUT/pytest.log" | tail -25
echo "tests: $(( $(date +%s) - start )) s"
start=$(date +%s)
timeout 420 python3 benchmarks/occlusion_gpu.py --json "$OUT/bench.json" "$@" 2>&1 | tee "$OUT/bench.log"
echo "benchmark: $(( $(date +%s) - start )) s"
