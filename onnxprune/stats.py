"""Zero-fraction statistics of weight tensors, computed by the native extension.

A weight ``w`` counts as zero at threshold ``t`` when ``float64(|w|) <= t``: exactly NumPy's
``np.abs(w) <= t`` with the threshold kept in float64, so ``t = 0`` counts exact zeros and NaN or
inf never count. "Per filter" means along axis 0 of a weight of shape ``(F, ...)``; "per input
channel" means the ``I`` channels that a conv weight ``(O, I/groups, kh, kw)`` reads.

Inputs may be NumPy arrays (or anything ``np.asarray`` takes, torch CPU tensors included) or CUDA
arrays exposing ``__cuda_array_interface__`` (torch CUDA tensors, CuPy), which are read on the GPU
without a copy to the host. Host arrays must end up C-contiguous float32 or float64: this module
converts float16 (exactly) and non-contiguous views with a visible copy; other dtypes are refused.
A fraction over zero weights is NaN, as NumPy's ``mean`` of an empty array.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    from onnxprune import _native
except ImportError as err:  # pragma: no cover - only without a build
    raise ImportError(
        "onnxprune._native is not built: install the package (`make test` or `pip install .`) "
        "and import it from outside the source tree"
    ) from err

__all__ = [
    "cuda_available",
    "filter_zero_fractions",
    "input_channel_zero_fractions",
    "sparsity_curve",
    "threshold_for_sparsity",
    "zero_fraction_sweep",
]


@dataclass(frozen=True)
class _CudaArray:
    """A C-contiguous float32/float64 CUDA array, as its ``__cuda_array_interface__`` describes it."""

    ptr: int
    shape: tuple[int, ...]
    typestr: str
    stream: int
    owner: Any  # keeps the memory alive while the kernels read it

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def cuda_available() -> bool:
    """True when the extension was built with CUDA and a CUDA device can be used."""
    return bool(_native.cuda_available())


def _threads(threads: int | None) -> int:
    if threads is None:
        return 0  # OpenMP's default: OMP_NUM_THREADS, else every core
    if isinstance(threads, bool) or not isinstance(threads, int | np.integer) or threads < 1:
        raise ValueError(f"threads must be a positive integer or None; got {threads!r}")
    return int(threads)


def _thresholds(thresholds: Any) -> np.ndarray:
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim != 1:
        raise ValueError(f"thresholds must be a 1-D sequence; got shape {t.shape}")
    return np.ascontiguousarray(t)


def _cuda_array(w: Any, name: str) -> _CudaArray:
    iface = w.__cuda_array_interface__
    contiguous = iface.get("strides") is None or iface["strides"] == _c_strides(
        iface["shape"], int(iface["typestr"][2:])
    )
    if iface["typestr"] == "<f2" or not contiguous:
        if not (hasattr(w, "float") and hasattr(w, "contiguous")):
            raise ValueError(
                f"{name} must be a C-contiguous float32 or float64 CUDA array; "
                f"got typestr {iface['typestr']!r} and strides {iface.get('strides')}"
            )
        # torch tensors: an explicit copy on the GPU (float16 -> float32 is exact).
        w = w.float() if iface["typestr"] == "<f2" else w
        w = w.contiguous()
        iface = w.__cuda_array_interface__
    if iface["typestr"] not in ("<f4", "<f8"):
        raise ValueError(f"{name} must be floating point; got typestr {iface['typestr']!r}")
    if iface.get("mask") is not None:
        raise ValueError(f"{name} is a masked CUDA array, which is not supported")
    stream = iface.get("stream")
    return _CudaArray(
        ptr=int(iface["data"][0]),
        shape=tuple(int(d) for d in iface["shape"]),
        typestr=iface["typestr"],
        stream=0 if stream is None else int(stream),
        owner=w,
    )


def _c_strides(shape: Sequence[int], itemsize: int) -> tuple[int, ...]:
    strides, step = [], itemsize
    for dim in reversed(shape):
        strides.append(step)
        step *= int(dim)
    return tuple(reversed(strides))


def _host_array(w: Any, name: str) -> np.ndarray:
    a = np.asarray(w)
    if a.dtype == np.float16:
        a = a.astype(np.float32)  # exact: every float16 is a float32
    elif a.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name} must be floating point (float16, float32 or float64); got {a.dtype}")
    if not a.flags.c_contiguous:
        a = np.ascontiguousarray(a)  # a copy: the kernels read contiguous memory
    return a


def _weight(w: Any, name: str = "weight") -> np.ndarray | _CudaArray:
    """The array the kernels read: a host ndarray or a CUDA array, converted visibly if needed."""
    if hasattr(w, "detach"):  # torch tensors that require grad expose no buffer
        w = w.detach()
    if hasattr(w, "__cuda_array_interface__"):
        return _cuda_array(w, name)
    return _host_array(w, name)


def _weights(weights: Sequence[Any]) -> list[np.ndarray] | list[_CudaArray]:
    if isinstance(weights, np.ndarray) or not isinstance(weights, Sequence):
        raise ValueError("weights must be a list of arrays (wrap a single array in a list)")
    arrays = [_weight(w, f"weights[{i}]") for i, w in enumerate(weights)]
    on_cuda = {isinstance(a, _CudaArray) for a in arrays}
    if len(on_cuda) > 1:
        raise ValueError("weights mixes CUDA and host arrays; pass all of one kind")
    return arrays


def zero_fraction_sweep(
    w: Any, thresholds: Sequence[float], *, threads: int | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Fractions ``(K, F)``: row k holds, for each filter (axis 0), the share of its weights with
    ``|w| <= thresholds[k]``. Thresholds must be finite, >= 0 and sorted; all K cost about one read
    of the weights. ``out`` (a C-contiguous float64 ``(K, F)`` array, host memory even for CUDA
    weights) receives the result instead of a new array: worth it in loops, where allocating and
    first touching large new outputs can cost more than the sweep."""
    a, t = _weight(w), _thresholds(thresholds)
    if isinstance(a, _CudaArray):
        return _native.cuda_zero_fraction_sweep(a.ptr, a.shape, a.typestr, t, a.stream, out)
    return _native.zero_fraction_sweep(a, t, _threads(threads), out)


def filter_zero_fractions(w: Any, threshold: float, *, threads: int | None = None) -> np.ndarray:
    """Fraction ``(F,)`` of each filter's weights (axis 0) with ``|w| <= threshold``."""
    return zero_fraction_sweep(w, [threshold], threads=threads)[0]


def input_channel_zero_fractions(
    w: Any, threshold: float, groups: int = 1, *, threads: int | None = None
) -> np.ndarray:
    """Fraction ``(I,)``, for each input channel of a conv weight ``(O, I/groups, ...)``, of the
    weights that read it with ``|w| <= threshold``. With ``groups`` g, filters
    ``[k*O/g, (k+1)*O/g)`` read channels ``[k*I/g, (k+1)*I/g)``."""
    a = _weight(w)
    if isinstance(groups, bool) or not isinstance(groups, int | np.integer):
        raise ValueError(f"groups must be an integer; got {groups!r}")
    if isinstance(a, _CudaArray):
        return _native.cuda_input_channel_zero_fractions(
            a.ptr, a.shape, a.typestr, float(threshold), int(groups), a.stream
        )
    return _native.input_channel_zero_fractions(a, float(threshold), int(groups), _threads(threads))


def sparsity_curve(
    weights: Sequence[Any], thresholds: Sequence[float], *, threads: int | None = None
) -> np.ndarray:
    """Fraction ``(K,)`` of all the weights, pooled over every array, with ``|w| <= thresholds[k]``."""
    arrays, t = _weights(weights), _thresholds(thresholds)
    if arrays and isinstance(arrays[0], _CudaArray):
        return _native.cuda_sparsity_curve(_cuda_list(arrays), t, arrays[0].stream)
    return _native.sparsity_curve(arrays, t, _threads(threads))


def threshold_for_sparsity(weights: Sequence[Any], sparsity: float, *, threads: int | None = None) -> float:
    """The smallest threshold t with ``sparsity_curve(weights, [t])[0] >= sparsity`` (0.0 for
    sparsity 0): the inverse of the curve. t is one of the weights' magnitudes."""
    arrays = _weights(weights)
    if arrays and isinstance(arrays[0], _CudaArray):
        return float(_native.cuda_threshold_for_sparsity(_cuda_list(arrays), float(sparsity), arrays[0].stream))
    return float(_native.threshold_for_sparsity(arrays, float(sparsity), _threads(threads)))


def _cuda_list(arrays: list[_CudaArray]) -> list[tuple[int, int, str]]:
    return [(a.ptr, a.size, a.typestr) for a in arrays]
