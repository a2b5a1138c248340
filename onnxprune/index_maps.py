"""Channel index maps: where each channel of one channel space lands on another tensor's axis.

A map is plain data: for each of the `src_size` source channels, the positions it occupies on a
destination axis of `dst_size` positions (a row of `positions`, padded with -1). Concat input k
is an offset; a Split/Slice output is a sub-range (channels outside it land nowhere); Flatten or
Reshape from NCHW to N(C*H*W) repeats each channel H*W times (and its inverse gathers the H*W
positions back into the channel). Maps compose and invert, and
`removed_positions` turns a keep mask of the source space into the positions to delete on the
destination axis, which is all the surgery needs from them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IndexMap", "compose", "identity", "inverse", "offset", "removed_positions", "repeat", "sub_range"]


@dataclass(frozen=True, eq=False)
class IndexMap:
    """positions[c] = destination positions of source channel c (-1 = none), on an axis of dst_size."""

    positions: np.ndarray  # int64 (src_size, width), read-only
    dst_size: int

    def __post_init__(self) -> None:
        p = np.array(self.positions, dtype=np.int64, ndmin=2, copy=True)
        if p.ndim != 2:
            raise ValueError(f"positions must be 2-D (channels, width); got shape {p.shape}")
        if p.size and (p.min() < -1 or p.max() >= self.dst_size):
            raise ValueError(f"positions must lie in [0, {self.dst_size}) or be -1")
        ordered = np.sort(p, axis=1)
        if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] >= 0)).any():
            raise ValueError("a source channel lists the same position twice")
        p.setflags(write=False)
        object.__setattr__(self, "positions", p)

    @property
    def src_size(self) -> int:
        return self.positions.shape[0]

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, IndexMap)
            and self.dst_size == other.dst_size
            and _canonical(self.positions).shape == _canonical(other.positions).shape
            and bool(np.array_equal(_canonical(self.positions), _canonical(other.positions)))
        )

    __hash__ = None  # type: ignore[assignment]


def identity(size: int) -> IndexMap:
    """Channel c lands on position c (Relu, BatchNorm, a conv's input reading this space)."""
    return IndexMap(np.arange(size)[:, None], size)


def offset(size: int, start: int, dst_size: int) -> IndexMap:
    """Channel c lands on position start + c of a larger axis (Concat input, Pad on channels)."""
    if start < 0 or start + size > dst_size:
        raise ValueError(f"offset {start} + {size} channels does not fit an axis of {dst_size}")
    return IndexMap((np.arange(size) + start)[:, None], dst_size)


def sub_range(size: int, start: int, stop: int) -> IndexMap:
    """Channels [start, stop) of a space of `size` land on positions 0.. of the slice; the others
    land nowhere (Split output, Slice on channels)."""
    if not 0 <= start <= stop <= size:
        raise ValueError(f"range [{start}, {stop}) is not inside {size} channels")
    p = np.full((size, 1), -1, dtype=np.int64)
    p[start:stop, 0] = np.arange(stop - start)
    return IndexMap(p, stop - start)


def repeat(size: int, factor: int) -> IndexMap:
    """Channel c lands on positions [c*factor, (c+1)*factor) (Flatten of NCHW: factor = H*W)."""
    if factor < 1:
        raise ValueError(f"factor must be >= 1; got {factor}")
    return IndexMap(np.arange(size * factor).reshape(size, factor), size * factor)


def compose(first: IndexMap, second: IndexMap) -> IndexMap:
    """Apply `first`, then `second` (first's destination axis is second's source space)."""
    if first.dst_size != second.src_size:
        raise ValueError(f"cannot compose: {first.dst_size} positions feed a space of {second.src_size}")
    padded = np.vstack([second.positions, np.full((1, second.positions.shape[1]), -1)])
    rows = padded[first.positions]  # -1 in first picks the padding row
    return IndexMap(rows.reshape(first.src_size, rows.shape[1] * rows.shape[2]), second.dst_size)


def inverse(index_map: IndexMap) -> IndexMap:
    """The map back: each destination position lands on the source channels that reached it."""
    channels, _ = np.nonzero(index_map.positions >= 0)
    reached = index_map.positions[index_map.positions >= 0]
    rows = [np.unique(channels[reached == d]) for d in range(index_map.dst_size)]
    width = max((len(r) for r in rows), default=1) or 1
    src = np.full((index_map.dst_size, width), -1, dtype=np.int64)
    for d, r in enumerate(rows):
        src[d, : len(r)] = r
    return IndexMap(src, index_map.src_size)


def removed_positions(index_map: IndexMap, keep: np.ndarray) -> np.ndarray:
    """Sorted destination positions reached by channels that `keep` (bool, src_size) drops and by
    no channel it keeps (a position several channels share goes only when all of them go)."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (index_map.src_size,):
        raise ValueError(f"keep mask has shape {keep.shape}; the space has {index_map.src_size} channels")
    dropped, kept = index_map.positions[~keep], index_map.positions[keep]
    return np.setdiff1d(dropped[dropped >= 0], kept[kept >= 0])


def _canonical(positions: np.ndarray) -> np.ndarray:
    """Rows with their -1 padding removed and sorted, padded to the narrowest common width."""
    rows = [np.sort(r[r >= 0]) for r in positions]
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out
