"""Native zero-fraction statistics (csrc/bindings.cpp). Use onnxprune.stats, which converts inputs.

Host functions take C-contiguous float32/float64 arrays and a float64 threshold array; the cuda_*
functions take raw device pointers from ``__cuda_array_interface__``. ``threads=0`` means OpenMP's
default. Bad input raises ValueError.
"""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

built_with_cuda: bool

def cuda_available() -> bool: ...
def zero_fraction_sweep(
    w: np.ndarray, thresholds: np.ndarray, threads: int = 0, out: npt.NDArray[np.float64] | None = None
) -> npt.NDArray[np.float64]: ...
def input_channel_zero_fractions(
    w: np.ndarray, threshold: float, groups: int = 1, threads: int = 0
) -> npt.NDArray[np.float64]: ...
def sparsity_curve(weights: list[np.ndarray], thresholds: np.ndarray, threads: int = 0) -> npt.NDArray[np.float64]: ...
def threshold_for_sparsity(weights: list[np.ndarray], sparsity: float, threads: int = 0) -> float: ...
def cuda_zero_fraction_sweep(
    ptr: int,
    shape: Sequence[int],
    typestr: str,
    thresholds: np.ndarray,
    stream: int = 0,
    out: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.float64]: ...
def cuda_input_channel_zero_fractions(
    ptr: int, shape: Sequence[int], typestr: str, threshold: float, groups: int = 1, stream: int = 0
) -> npt.NDArray[np.float64]: ...
def cuda_sparsity_curve(
    arrays: Sequence[tuple[int, int, str]], thresholds: np.ndarray, stream: int = 0
) -> npt.NDArray[np.float64]: ...
def cuda_threshold_for_sparsity(arrays: Sequence[tuple[int, int, str]], sparsity: float, stream: int = 0) -> float: ...
