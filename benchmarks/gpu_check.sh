#!/usr/bin/env bash
# The GPU check of the native statistics, prepared for a session lent a GPU (the device tool):
# build onnxprune with CUDA for the card there, run the CUDA parity tests, then time the sweep,
# then run the CUDA functions once under compute-sanitizer (memcheck).
# On the device machine, from the repository root:  bash benchmarks/gpu_check.sh
# It uses that machine's python3 (torch, pybind11, scikit-build-core, pytest are there); a missing
# pure-Python dependency (onnx-graphsurgeon) travels as a wheel in .whl/ (carry it). Logs go to
# $OUT (the device tool brings them back).
set -euo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/device.txt"
nvcc --version | tail -2 | tee -a "$OUT/device.txt"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
fi
python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/site -Cbuild-dir=/tmp/build-cuda \
  -Ccmake.define.ONNXPRUNE_CUDA=ON -Ccmake.define.ONNXPRUNE_CUDA_ARCHITECTURES=90 . 2>&1 | tail -20
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
python3 -P -c "from onnxprune import stats; assert stats.cuda_available(), 'no CUDA device seen'"
# -W default: warnings of that machine's library versions are shown, not turned into errors.
python3 -P -m pytest -q -p no:cacheprovider -W default -o addopts="--import-mode=importlib" \
  tests/test_stats_cuda.py tests/test_stats.py 2>&1 | tee "$OUT/pytest.log"
(cd benchmarks && python3 bench_stats_cuda.py 2>&1 | tee "$OUT/timing.txt")
# memcheck over every CUDA entry point on odd, empty, 1-D and 5-D shapes; no torch kernels here
# (CuPy arrays expose __cuda_array_interface__ too), so the sanitizer sees our kernels alone.
timeout 240 compute-sanitizer --tool memcheck --error-exitcode 3 python3 -P -c "
import cupy as cp, numpy as np
from onnxprune import stats
rng = np.random.default_rng(0)
t = np.sort(rng.uniform(0, 0.1, 300))
for shape, dt in [((0, 3, 3, 3), np.float32), ((5,), np.float64), ((7, 1), np.float64),
                  ((3, 2, 1, 1, 4), np.float32), ((33, 17, 3, 3), np.float32), ((2, 100003), np.float32)]:
    h = (rng.standard_normal(shape) * 0.05).astype(dt)
    g = cp.asarray(h)
    for k in (1, 7, 300):
        assert np.array_equal(stats.zero_fraction_sweep(g, t[:k]), stats.zero_fraction_sweep(h, t[:k]), equal_nan=True)
    assert np.array_equal(stats.filter_zero_fractions(g, 0.02), stats.filter_zero_fractions(h, 0.02), equal_nan=True)
    if len(shape) > 1:
        assert np.array_equal(stats.input_channel_zero_fractions(g, 0.02), stats.input_channel_zero_fractions(h, 0.02), equal_nan=True)
    assert np.array_equal(stats.sparsity_curve([g, g], t), stats.sparsity_curve([h, h], t), equal_nan=True)
    if h.size:
        assert stats.threshold_for_sparsity([g], 0.5) == stats.threshold_for_sparsity([h], 0.5)
print('memcheck run: all CUDA entry points equal the CPU path')
" 2>&1 | tail -25 | tee "$OUT/memcheck.txt"
