#!/usr/bin/env bash
# The GPU check of the native statistics, prepared for a session lent a GPU (the device tool):
# build onnxprune with CUDA for the card there, run the CUDA parity tests, then time the sweep.
# On the device machine, from the repository root:  bash benchmarks/gpu_check.sh
# It uses that machine's python3 (torch, pybind11, scikit-build-core, pytest are there); logs go
# to $OUT (the device tool brings them back).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site -Cbuild-dir=/tmp/build-cuda \
  -Ccmake.define.ONNXPRUNE_CUDA=ON -Ccmake.define.ONNXPRUNE_CUDA_ARCHITECTURES=90 . 2>&1 | tail -20
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -P -c "from onnxprune import stats; assert stats.cuda_available(), 'no CUDA device seen'"
python3 -P -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib" \
  tests/test_stats_cuda.py tests/test_stats.py 2>&1 | tee "$OUT/pytest.log"
cd benchmarks && python3 bench_stats_cuda.py 2>&1 | tee "$OUT/timing.txt"
