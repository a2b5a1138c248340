"""Input-independent spatial maps: what a removed constant channel becomes behind a zero-padded
conv, and how the surgery folds it exactly.

A constant channel read by a zero-padded k x k conv is not constant at the output: border pixels
see fewer taps. The value pass keeps such channels as maps (one float64 array per channel, for
static spatial sizes), carries them through depthwise convs and elementwise ops, and folds them
into the reader as a constant map added to its output. Maps are constant away from the borders,
so `compress` stores one row and column per run of equal ones, and two Gathers expand them again
(`prune --exact-borders`); by default the reader's bias takes the interior value instead.
"""

from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

__all__ = ["compress", "conv2d", "conv_geometry", "expanded", "interior", "uniform"]


def conv_geometry(node: gs.Node, in_hw: tuple[int, int], kernel: tuple[int, int]) -> tuple | None:
    """(strides, dilations, (top, left, bottom, right) pads) of a 2-D Conv or pool, or None when
    its padding cannot be known (an auto_pad this code does not follow)."""
    strides = tuple(int(s) for s in node.attrs.get("strides", (1, 1)))
    dilations = tuple(int(d) for d in node.attrs.get("dilations", (1, 1)))
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if len(strides) != 2 or len(dilations) != 2:
        return None
    if auto_pad in ("NOTSET", ""):
        pads = tuple(int(p) for p in node.attrs.get("pads", (0, 0, 0, 0)))
        return (strides, dilations, pads) if len(pads) == 4 else None
    if auto_pad == "VALID":
        return strides, dilations, (0, 0, 0, 0)
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        return None
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations, strict=True):
        total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return strides, dilations, (begin[0], begin[1], end[0], end[1])


def conv2d(maps: np.ndarray, w: np.ndarray, strides, dilations, pads, out_hw, depthwise: bool = False) -> np.ndarray:
    """A 2-D convolution with zero padding, in float64, without bias: `maps` (P, H, W) by `w`
    (O, P, kh, kw), or with `depthwise` by `w` (P, 1, kh, kw), one filter per map."""
    top, left, bottom, right = pads
    padded = np.pad(maps.astype(np.float64), ((0, 0), (top, bottom), (left, right)))
    oh, ow = out_hw
    (sh, sw), (dh, dw) = strides, dilations
    out = np.zeros((maps.shape[0] if depthwise else w.shape[0], oh, ow))
    w = w.astype(np.float64)
    for i in range(w.shape[2]):
        for j in range(w.shape[3]):
            window = padded[:, i * dh : i * dh + (oh - 1) * sh + 1 : sh, j * dw : j * dw + (ow - 1) * sw + 1 : sw]
            if depthwise:
                out += w[:, 0, i, j, None, None] * window
            else:
                out += np.einsum("op,phw->ohw", w[:, :, i, j], window)
    return out


def uniform(m: np.ndarray) -> bool:
    """True when every channel of the (C, H, W) map holds one value."""
    flat = m.reshape(m.shape[0], -1)
    return bool(np.all(flat == flat[:, :1]))


def interior(m: np.ndarray) -> np.ndarray:
    """Per channel of the (C, H, W) map, its value away from the borders (the centre pixel)."""
    return m[:, m.shape[1] // 2, m.shape[2] // 2]


def _runs(m: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The first index of each run of equal slices along `axis`, and each index's run."""
    moved = np.moveaxis(m, axis, 0)
    changes = (moved[1:] != moved[:-1]).reshape(len(moved) - 1, int(np.prod(moved.shape[1:])))
    starts = np.concatenate([[True], np.any(changes, axis=1)])
    return np.nonzero(starts)[0], np.cumsum(starts) - 1


def compress(m: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, rows, cols): the (C, H, W) map with each run of equal rows and of equal columns kept
    once, and the index of each row's and column's run, so that grid[:, rows][:, :, cols] == m."""
    row_starts, rows = _runs(m, 1)
    m = m[:, row_starts]
    col_starts, cols = _runs(m, 2)
    return m[:, :, col_starts], rows.astype(np.int64), cols.astype(np.int64)


def expanded(grid: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The map `compress` took apart (what the two Gathers compute)."""
    return grid[:, rows][:, :, cols]
