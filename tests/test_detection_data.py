"""Detection data: the built-in shapes set, VOC and COCO boxes, the multibox loss and mAP@0.5
against labelled boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from onnxprune.datasets import load_images
from onnxprune.datasets.shapes import SHAPE_CLASSES, render_shapes
from onnxprune.evaluate.detection import _mean_ap
from onnxprune.model_io import InputError
from onnxprune.train.multibox import MultiboxLoss, encode_boxes
from onnxprune.zoo import tiny_ssd
from onnxprune.zoo.ssd import decode_boxes


def test_shapes_are_deterministic_boxed_and_span_every_head():
    a = load_images("shapes:train:64", (160, 160))
    b = load_images("shapes:train:64", (160, 160))
    np.testing.assert_array_equal(a.images, b.images)
    assert a.classes == list(SHAPE_CLASSES) and not a.labelled and len(a.boxes) == 64
    boxes = np.concatenate(a.boxes)
    assert ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all()
    assert (boxes[:, 3] > boxes[:, 1]).all() and (boxes[:, 4] > boxes[:, 2]).all()
    assert set(boxes[:, 0].astype(int)) == {0, 1, 2}
    sides = np.sqrt((boxes[:, 3] - boxes[:, 1]) * (boxes[:, 4] - boxes[:, 2]))
    assert sides.min() < 0.12 and sides.max() > 0.6  # the smallest and the largest priors get work
    val = load_images("shapes:val:8", (160, 160))
    assert not np.array_equal(val.images, a.images[:8])


def test_shapes_draw_the_object_inside_its_box():
    image, boxes = render_shapes(5, "val", (96, 64))
    assert image.shape == (64, 96, 3) and image.dtype == np.uint8
    other, _ = render_shapes(5, "val", (96, 64))
    np.testing.assert_array_equal(image, other)
    assert len(boxes) >= 1


@pytest.mark.parametrize("spec", ["shapes:test", "shapes:train:0", "shapes:train:many"])
def test_bad_shapes_specs_say_what_is_wrong(spec):
    with pytest.raises(InputError, match="shapes"):
        load_images(spec, (32, 32))


def _image(path, size=(40, 30)):
    Image.fromarray(np.full((size[1], size[0], 3), 128, np.uint8)).save(path)


def test_voc_folders_give_boxes_without_difficult_objects(tmp_path):
    (tmp_path / "JPEGImages").mkdir()
    (tmp_path / "Annotations").mkdir()
    _image(tmp_path / "JPEGImages" / "a.jpg")
    (tmp_path / "Annotations" / "a.xml").write_text(
        "<annotation><size><width>40</width><height>30</height></size>"
        "<object><name>dog</name><difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
        "<ymax>30</ymax></bndbox></object>"
        "<object><name>cat</name><difficult>1</difficult><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>9</xmax>"
        "<ymax>9</ymax></bndbox></object></annotation>"
    )
    data = load_images(f"voc:{tmp_path}", (20, 20))
    assert data.classes[11] == "dog" and len(data.classes) == 20
    np.testing.assert_allclose(data.boxes[0], [[11, 0.0, 0.0, 0.5, 1.0]])
    (tmp_path / "classes.txt").write_text("cat\ndog\n")  # a split's own numbering
    assert load_images(f"voc:{tmp_path}", (20, 20)).boxes[0][0, 0] == 1
    (tmp_path / "classes.txt").write_text("cat\n")
    with pytest.raises(InputError, match="'dog' is not in"):
        load_images(f"voc:{tmp_path}", (20, 20))
    (tmp_path / "classes.txt").unlink()
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation>")
    with pytest.raises(InputError, match="a.xml"):
        load_images(f"voc:{tmp_path}", (20, 20))


def test_coco_json_gives_boxes_in_category_order_without_crowds(tmp_path):
    _image(tmp_path / "x.png")
    coco = {
        "images": [{"id": 7, "file_name": "x.png", "width": 40, "height": 30}],
        "categories": [{"id": 9, "name": "b"}, {"id": 3, "name": "a"}],
        "annotations": [
            {"image_id": 7, "category_id": 9, "bbox": [4, 3, 20, 15], "iscrowd": 0},
            {"image_id": 7, "category_id": 3, "bbox": [0, 0, 40, 30], "iscrowd": 1},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(coco))
    data = load_images(f"coco:{tmp_path / 'a.json'}:{tmp_path}", (20, 20))
    assert data.classes == ["a", "b"]
    np.testing.assert_allclose(data.boxes[0], [[1, 0.1, 0.1, 0.6, 0.6]], atol=1e-6)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.02, 0.98), min_size=4, max_size=4), st.floats(0.02, 0.5), st.floats(0.02, 0.5))
def test_encoding_inverts_decoding(prior, w, h):
    priors = torch.tensor([prior], dtype=torch.float32)
    box = torch.tensor([[0.3, 0.2, 0.3 + w, 0.2 + h]])
    back = decode_boxes(encode_boxes(box, priors, (0.1, 0.2)), priors, (0.1, 0.2))
    torch.testing.assert_close(back, box, atol=1e-5, rtol=1e-4)


def test_multibox_loss_matches_every_box_and_rewards_the_right_answer():
    model = tiny_ssd()
    loss = MultiboxLoss(model.priors)
    target = torch.tensor([[0, 0.1, 0.1, 0.3, 0.3], [2, 0.02, 0.5, 0.12, 0.58], [1, 0.2, 0.1, 0.95, 0.9]])
    classes, offsets = loss.match(target)
    assert set(classes.unique().tolist()) == {0, 1, 2, 3}  # every box has a prior, background the rest
    priors = len(model.priors)
    perfect_scores = torch.nn.functional.one_hot(classes, 4).float()[None] * 0.999 + 0.00025
    perfect = loss([perfect_scores, offsets[None]], [target])
    uniform = loss([torch.full((1, priors, 4), 0.25), torch.zeros(1, priors, 4)], [target])
    assert float(perfect) < 0.01 < float(uniform)
    empty = loss([torch.full((1, priors, 4), 0.25), torch.zeros(1, priors, 4)], [torch.zeros(0, 5)])
    assert float(empty) == 0.0  # as in SSD: negatives are mined in proportion to positives


def test_map_is_one_for_the_truth_and_zero_for_wrong_places():
    truth = [{"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.4]]), "labels": torch.tensor([2])}]
    same = [{"boxes": truth[0]["boxes"], "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}]
    moved = [{"boxes": truth[0]["boxes"] + 0.5, "scores": torch.tensor([0.9]), "labels": torch.tensor([2])}]
    # IoU 0.78 with the truth: a hit at IoU 0.5..0.75, a miss at 0.8..0.95 (6 of 10 COCO thresholds)
    near = [{"boxes": torch.tensor([[0.1, 0.1, 0.4, 0.1 + 0.3 * 0.78]]), "scores": torch.tensor([0.9]),
             "labels": torch.tensor([2])}]  # fmt: skip
    assert _mean_ap(same, truth) == pytest.approx(1.0) == _mean_ap(same, truth, coco=True)
    assert _mean_ap(moved, truth) == 0.0
    assert _mean_ap(near, truth) == pytest.approx(1.0)
    assert _mean_ap(near, truth, coco=True) == pytest.approx(0.6)
