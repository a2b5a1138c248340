"""Data specs (`--data`): where images (and labels) come from, and how they become model inputs.

    imagefolder:DIR   one sub-folder per class (sorted names are class 0, 1, ...)
    images:DIR        unlabelled images (any depth), for distillation and fidelity
    npz:FILE          arrays `x` (N,H,W,3 uint8 or N,3,H,W float) and `y`; or JPEG bytes `jpeg` +
                      `offsets` (N+1) + `labels` (the CIFAR-10 files of ../shared/assets/data)
    voc:DIR           PASCAL VOC: JPEGImages/ with boxes from Annotations/ when present
    coco:ANNOTATIONS.json:IMAGES_DIR   COCO detection JSON: images with their boxes
    shapes:SPLIT[:N]  the built-in detection set (`onnxprune.datasets.shapes`), drawn at the model's size

Images are decoded once, resized to the model's input size and kept as uint8 (N, H, W, 3) RGB;
`Preprocess` turns a batch into the model's input: `(pixel * scale - mean) / std`, RGB or BGR,
NCHW or NHWC. `PRESETS` holds the preprocessing of the models in ../shared/assets.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from onnxprune.model_io import InputError

__all__ = ["PRESETS", "ImageSet", "Preprocess", "check_labels", "load_images", "spread"]

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}


@dataclass(frozen=True)
class Preprocess:
    """uint8 RGB images -> model input: `(pixel * scale - mean) / std` per channel."""

    size: tuple[int, int] | None = None  # (W, H); None: the model's input size
    scale: float = 1 / 255
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False
    nhwc: bool = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> float32 model input."""
        x = images.float() * self.scale
        if self.bgr:
            x = x.flip(-1)
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device)
        x = (x - mean) / std
        return x if self.nhwc else x.permute(0, 3, 1, 2).contiguous()


PRESETS = {
    "cifar": Preprocess((32, 32), 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "ulfd": Preprocess((320, 240), 1.0, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0)),
    "yunet": Preprocess((320, 320), 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), bgr=True),
    "imagenet": Preprocess((224, 224), 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass
class ImageSet:
    """Decoded images (uint8, N x H x W x 3, RGB) with labels (-1 where there are none); detection
    sets also have `boxes`: per image a (K, 5) float32 array [class, x1, y1, x2, y2], normalised."""

    images: np.ndarray
    labels: np.ndarray
    classes: list[str] = field(default_factory=list)
    source: str = ""
    boxes: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


def load_images(spec: str, size: tuple[int, int], limit: int | None = None) -> ImageSet:
    """The images of a data spec, resized to `size` (W, H); `limit` keeps N of them, spread
    evenly over the set (files are often sorted by class: the first N would be one class)."""
    if limit is not None and limit < 1:
        raise InputError(f"--limit must be >= 1; got {limit}")
    kind, _, rest = spec.partition(":")
    if not rest:
        raise InputError(f"--data {spec!r}: expected KIND:PATH with KIND one of imagefolder, images, npz, voc, coco, shapes")
    from onnxprune.datasets.shapes import load_shapes

    loaders = {"imagefolder": _imagefolder, "images": _images, "npz": _npz, "voc": _voc, "coco": _coco,
               "shapes": load_shapes}  # fmt: skip
    if kind not in loaders:
        raise InputError(f"--data {spec!r}: unknown kind {kind!r}; use one of {', '.join(loaders)}")
    data = loaders[kind](rest, size, limit)
    if not len(data):
        raise InputError(f"--data {spec!r}: no images found")
    data.source = spec
    return data


def spread(count: int, limit: int | None) -> np.ndarray:
    """Indices of `limit` items spread evenly over `count` (all when no limit)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(np.int64))


def _decode(raw: bytes | Path, size: tuple[int, int], name: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else raw) as img:
            img = img.convert("RGB")
            if img.size != tuple(size):
                img = img.resize(tuple(size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"{name}: not a readable image ({err})") from err


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _folder(path: str, spec_kind: str) -> Path:
    folder = Path(path)
    if not folder.is_dir():
        raise InputError(f"--data {spec_kind}:{path}: no such folder")
    return folder


def _stack(arrays: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    return np.stack(arrays) if arrays else np.zeros((0, size[1], size[0], 3), np.uint8)


def _imagefolder(path: str, size, limit) -> ImageSet:
    folder = _folder(path, "imagefolder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise InputError(f"--data imagefolder:{path}: no class sub-folders (one folder per class)")
    images, labels = [], []
    for label, name in enumerate(classes):
        for file in _files(folder / name):
            images.append(_decode(file, size, str(file)))
            labels.append(label)
    keep = spread(len(images), limit)
    return ImageSet(_stack([images[i] for i in keep], size), np.array(labels, np.int64)[keep], classes)


def _images(path: str, size, limit) -> ImageSet:
    files = _files(_folder(path, "images"))
    files = [files[i] for i in spread(len(files), limit)]
    return ImageSet(_stack([_decode(f, size, str(f)) for f in files], size), np.full(len(files), -1, np.int64))


VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip


def _voc(path: str, size, limit) -> ImageSet:
    """VOC folder: JPEGImages/ and, when present, Annotations/<stem>.xml (objects marked difficult
    are left out, as VOC's own evaluation ignores them). Classes: the lines of `classes.txt` in DIR
    when present (so that every split numbers them alike), else VOC's 20 when every name is one of
    them, else the sorted names found."""
    import xml.etree.ElementTree as ET

    folder = _folder(path, "voc")
    notes = folder / "Annotations"
    if not notes.is_dir():
        return _images(str(folder / "JPEGImages" if (folder / "JPEGImages").is_dir() else folder), size, limit)
    files = _files(folder / "JPEGImages")
    files = [files[i] for i in spread(len(files), limit)]
    objects = []
    for file in files:
        xml = notes / f"{file.stem}.xml"
        try:
            root = ET.parse(xml).getroot()
            width, height = float(root.findtext("size/width")), float(root.findtext("size/height"))
            found = []
            for obj in root.iter("object"):
                if obj.findtext("difficult", "0").strip() == "1":
                    continue
                box = obj.find("bndbox")
                x1, y1, x2, y2 = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
                found.append((obj.findtext("name").strip(), [(x1 - 1) / width, (y1 - 1) / height, x2 / width, y2 / height]))
        except (OSError, ET.ParseError, AttributeError, TypeError, ValueError) as err:
            raise InputError(f"--data voc:{path}: cannot read {xml} ({err})") from err
        objects.append(found)
    names = {name for found in objects for name, _ in found}
    listed = folder / "classes.txt"
    if listed.is_file():
        classes = [line.strip() for line in listed.read_text().splitlines() if line.strip()]
        unknown = sorted(names - set(classes))
        if unknown:
            raise InputError(f"--data voc:{path}: {unknown[0]!r} is not in {listed}")
    else:
        classes = list(VOC_CLASSES) if names <= set(VOC_CLASSES) else sorted(names)
    boxes = [_box_array([(classes.index(n), b) for n, b in found]) for found in objects]
    images = _stack([_decode(f, size, str(f)) for f in files], size)
    return ImageSet(images, np.full(len(files), -1, np.int64), classes, boxes=boxes)


def _box_array(found: list[tuple[int, list[float]]]) -> np.ndarray:
    rows = [[c, *np.clip(b, 0.0, 1.0)] for c, b in found]
    return np.asarray(rows, dtype=np.float32).reshape(-1, 5)


def _coco(rest: str, size, limit) -> ImageSet:
    """COCO detection JSON: every image with its boxes (crowd boxes left out); category ids map to
    classes 0, 1, ... in id order."""
    annotations, _, images = rest.partition(":")
    try:
        coco = json.loads(Path(annotations).read_text())
        entries = coco["images"]
        categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        by_image: dict = {}
        for note in coco.get("annotations", []):
            by_image.setdefault(note["image_id"], []).append(note)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(f"--data coco:{rest}: cannot read the annotations ({err})") from err
    folder = _folder(images, "coco")
    entries = [entries[i] for i in spread(len(entries), limit)]
    index = {c["id"]: k for k, c in enumerate(categories)}
    boxes = []
    for entry in entries:
        w, h = float(entry.get("width", 0)), float(entry.get("height", 0))
        found = []
        for note in by_image.get(entry["id"], []):
            if note.get("iscrowd", 0) or note["category_id"] not in index or not (w > 0 and h > 0):
                continue
            x, y, bw, bh = note["bbox"]
            found.append((index[note["category_id"]], [x / w, y / h, (x + bw) / w, (y + bh) / h]))
        boxes.append(_box_array(found))
    stacked = _stack([_decode(folder / e["file_name"], size, e["file_name"]) for e in entries], size)
    return ImageSet(stacked, np.full(len(entries), -1, np.int64), [c["name"] for c in categories], boxes=boxes)


def _npz(path: str, size, limit) -> ImageSet:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"--data npz:{path}: no such file")
    try:
        data = np.load(file)
    except (OSError, ValueError) as err:
        raise InputError(f"--data npz:{path}: not a readable .npz file ({err})") from err
    classes = [str(c) for c in data["classes"]] if "classes" in data.files else []
    if "jpeg" in data.files:
        if "offsets" not in data.files:
            raise InputError(f"--data npz:{path}: JPEG bytes need an `offsets` array (N+1 entries)")
        jpeg, offsets = data["jpeg"], data["offsets"]
        keep = spread(len(offsets) - 1, limit)
        images = [_decode(jpeg[offsets[i] : offsets[i + 1]].tobytes(), size, f"{path}[{i}]") for i in keep]
        labels = data["labels"][keep].astype(np.int64) if "labels" in data.files else np.full(len(keep), -1, np.int64)
        return ImageSet(_stack(images, size), labels, classes)
    if "x" not in data.files:
        raise InputError(f"--data npz:{path}: needs arrays `x` (+ `y`) or `jpeg` + `offsets` (+ `labels`)")
    keep = spread(len(data["x"]), limit)
    x = data["x"][keep]
    if x.ndim != 4:
        raise InputError(f"--data npz:{path}: `x` must be 4-D images; got shape {x.shape}")
    if x.shape[1] == 3 and x.shape[-1] != 3:
        x = np.transpose(x, (0, 2, 3, 1))
    if x.dtype != np.uint8:
        x = np.clip(np.rint(x * (255.0 if x.max() <= 1.0 else 1.0)), 0, 255).astype(np.uint8)
    if (x.shape[2], x.shape[1]) != tuple(size):
        x = np.stack([_decode_array(img, size) for img in x])
    labels = data["y"][keep].astype(np.int64) if "y" in data.files else np.full(len(x), -1, np.int64)
    return ImageSet(x, labels, classes)


def _decode_array(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(img).resize(tuple(size), Image.BILINEAR), dtype=np.uint8)


def check_labels(data: ImageSet, classes: int) -> None:
    """Labels must lie in [0, classes): one clear line otherwise."""
    bad = data.labels[(data.labels < 0) | (data.labels >= classes)]
    if data.labelled and bad.size:
        raise InputError(f"--data {data.source}: label {int(bad[0])} is outside the model's {classes} classes")

