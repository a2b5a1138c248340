"""The built-in detection data: procedurally generated images of circles, squares and triangles
on cluttered backgrounds, with their boxes. Deterministic (image i of a split is the same on every
machine), drawn at any input size, and sized so every SSD head has work: objects span 8% to 85%
of the image side.

Data spec: `shapes:SPLIT[:COUNT]`, SPLIT `train` or `val` (default 2000 / 300 images).
"""

from __future__ import annotations

import functools

import numpy as np

from onnxprune.datasets.specs import ImageSet
from onnxprune.model_io import InputError

__all__ = ["SHAPE_CLASSES", "load_shapes", "render_shapes"]

SHAPE_CLASSES = ("circle", "square", "triangle")
SPLIT_SEEDS = {"train": 1, "val": 2}
DEFAULT_COUNTS = {"train": 2000, "val": 300}


def render_shapes(index: int, split: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Image `index` of `split` at `size` (W, H): uint8 (H, W, 3) RGB and (K, 5) float32 boxes
    [class, x1, y1, x2, y2] normalised to [0, 1]."""
    w, h = size
    rng = np.random.default_rng([SPLIT_SEEDS[split], index])
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = (yy + 0.5) / h, (xx + 0.5) / w
    # Background: a colour gradient, soft blobs and thin lines (clutter that is not an object).
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    angle = rng.uniform(0, np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)[..., None]
    image = c0 * (1 - t) + c1 * t
    for _ in range(rng.integers(3, 8)):
        cx, cy, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.3)
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))[..., None]
        image = image * (1 - 0.5 * blob) + rng.uniform(0, 255, 3) * 0.5 * blob
    for _ in range(rng.integers(2, 6)):
        a, b = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
        d = b - a
        dist = np.abs(d[1] * (xx - a[0]) - d[0] * (yy - a[1])) / (np.hypot(*d) + 1e-6)
        along = ((xx - a[0]) * d[0] + (yy - a[1]) * d[1]) / (d @ d + 1e-6)
        line = (dist < 0.006) & (along >= 0) & (along <= 1)
        image[line] = rng.uniform(0, 255, 3)
    boxes: list[list[float]] = []
    for _ in range(rng.integers(1, 5)):
        side = float(np.exp(rng.uniform(np.log(0.08), np.log(0.85))))
        bw, bh = side * rng.uniform(0.8, 1.2) * h / w, side * rng.uniform(0.8, 1.2)
        bw, bh = min(bw, 0.95), min(bh, 0.95)
        x1, y1 = rng.uniform(0, 1 - bw), rng.uniform(0, 1 - bh)
        box = [x1, y1, x1 + bw, y1 + bh]
        if any(_iou(box, other[1:]) > 0.2 for other in boxes):
            continue
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        mask = _mask(cls, box, xx, yy)
        if not mask.any():
            continue
        image[mask] = rng.uniform(0, 255, 3)
        boxes.append([cls, *box])
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), np.asarray(boxes, dtype=np.float32).reshape(-1, 5)


def _mask(cls: int, box: list[float], xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box
    u, v = (xx - x1) / (x2 - x1), (yy - y1) / (y2 - y1)  # 0..1 inside the box
    inside = (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1)
    if SHAPE_CLASSES[cls] == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25
    if SHAPE_CLASSES[cls] == "square":
        return inside
    return inside & (np.abs(u - 0.5) <= 0.5 * v)  # apex at the top, base at the bottom


def _iou(a: list[float], b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def load_shapes(rest: str, size: tuple[int, int], limit: int | None = None) -> ImageSet:
    """`shapes:SPLIT[:COUNT]` (see the module docstring) at `size` (W, H)."""
    split, _, count_text = rest.partition(":")
    if split not in SPLIT_SEEDS:
        raise InputError(f"--data shapes:{rest}: the split must be one of {', '.join(SPLIT_SEEDS)}")
    try:
        count = int(count_text) if count_text else DEFAULT_COUNTS[split]
    except ValueError:
        count = 0
    if count < 1:
        raise InputError(f"--data shapes:{rest}: the image count must be a positive integer")
    if limit is not None:
        count = min(count, limit)
    images, boxes = _render_set(split, count, tuple(size))
    return ImageSet(images, np.full(count, -1, np.int64), list(SHAPE_CLASSES), boxes=list(boxes))


@functools.lru_cache(maxsize=4)
def _render_set(split: str, count: int, size: tuple[int, int]) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Rendered once per process: `compress` loads the same set for every training stage."""
    rendered = [render_shapes(i, split, size) for i in range(count)]
    return np.stack([r[0] for r in rendered]), tuple(r[1] for r in rendered)
