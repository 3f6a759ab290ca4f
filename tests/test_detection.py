"""Detection and segmentation: the scenes, CenterNet's targets, loss and decoding, COCO mAP and
mean IoU, each against an independent reference; then a run end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import dlab
from dlab.data.scenes import INK, compose_scenes
from dlab.errors import DlabError, RecipeError
from dlab.models.unet import scenes_meta
from dlab.recipe import from_dict
from dlab.tasks.detection import (
    STRIDE,
    CenterNetLoss,
    CenterNetLossConfig,
    box_iou,
    centres,
    coco_map,
    decode,
    error_kinds,
    focal_loss,
    heatmaps,
)
from dlab.tasks.segmentation import PixelCrossEntropy


@pytest.fixture(scope="module")
def digits():
    """A few hundred real MNIST digits (the packaged sample) and their labels."""
    from dlab.data.mnist import MnistSampleConfig, build_mnist_sample

    x, y = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).train
    x, y = x[::15][:300], y[::15][:300]  # the sample is sorted by class: take every 15th
    assert len(set(y.tolist())) == 10
    return x, y


# --- scenes ---


def test_scenes_are_a_function_of_their_seed(digits):
    a = compose_scenes(*digits, 12, canvas=64, objects=(1, 4), seed=5, clutter=2)
    b = compose_scenes(*digits, 12, canvas=64, objects=(1, 4), seed=5, clutter=2)
    c = compose_scenes(*digits, 12, canvas=64, objects=(1, 4), seed=6, clutter=2)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    assert torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)


def test_each_box_is_the_tight_box_of_its_digits_mask(digits):
    scenes = compose_scenes(*digits, 40, canvas=96, objects=(1, 6), max_overlap=0.0, seed=1)
    assert scenes.objects() >= 40
    for image, boxes, mask in zip(scenes.images, scenes.boxes, scenes.masks, strict=True):
        real = boxes[boxes[:, 0] >= 0]
        assert ((real[:, 1:] >= 0) & (real[:, 1:] <= 96)).all()
        assert (real[:, 3] > real[:, 1]).all() and (real[:, 4] > real[:, 2]).all()
        for c, x0, y0, x1, y1 in real.int().tolist():
            inside = mask[y0:y1, x0:x1] == c + 1
            # without overlap a box holds only its own digit: its ink touches all four sides
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )
            assert (image[0, y0:y1, x0:x1][inside] >= INK).all()
        # every labelled pixel lies in a box of its class
        for value in mask.unique().tolist():
            if value:
                ys, xs = (mask == value).nonzero(as_tuple=True)
                own = real[real[:, 0] == value - 1]
                covered = torch.zeros(len(ys), dtype=torch.bool)
                for _, x0, y0, x1, y1 in own.tolist():
                    covered |= (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
                assert covered.all()


def test_placed_digits_overlap_at_most_the_allowed_share(digits):
    scenes = compose_scenes(*digits, 30, canvas=64, objects=(6, 8), max_overlap=0.1, seed=2)
    for boxes in scenes.boxes:
        real = boxes[boxes[:, 0] >= 0][:, 1:].numpy()
        iou = box_iou(real, real)
        np.fill_diagonal(iou, 0)
        assert iou.max(initial=0) < 0.1


def test_test_scenes_are_drawn_from_test_digits_only(monkeypatch):
    from dlab.data import scenes as scenes_module

    seen = {}

    def spy(digits, labels, count, **kwargs):
        seen[len(seen)] = digits
        return compose_scenes(digits, labels, count, **kwargs)

    monkeypatch.setattr(scenes_module, "compose_scenes", spy)
    recipe = from_dict(
        {
            "data": {
                "name": "digit_scenes",
                "train_scenes": 8,
                "val_scenes": 4,
                "test_scenes": 4,
                "canvas": 32,
                "max_scale": 1.0,
            },
            "model": {"name": "centernet"},
        }
    )
    dlab.data.build(recipe.data)
    from dlab.data.mnist import MnistSampleConfig, build_mnist_sample

    splits = build_mnist_sample(MnistSampleConfig(name="mnist_sample"))
    assert len(seen[0]) + len(seen[1]) == len(splits.train[0]) and len(seen[1]) == 500
    assert np.array_equal(seen[2], splits.test[0])


def test_scene_settings_that_cannot_work_are_refused_by_name():
    for data, words in (
        ({"canvas": 100}, "canvas should be a multiple of 16 (got 100)"),
        ({"min_objects": 5, "max_objects": 2}, "min_objects (5) is above max_objects (2)"),
        ({"min_scale": 2.0, "max_scale": 1.0}, "min_scale (2.0) is above max_scale (1.0)"),
    ):
        with pytest.raises(RecipeError, match=words.replace("(", r"\(").replace(")", r"\)")):
            from_dict({"data": {"name": "digit_scenes", **data}, "model": {"name": "centernet"}})
    recipe = from_dict({"data": {"name": "digit_scenes"}, "model": {"name": "unet"}})
    with pytest.raises(
        RecipeError, match="unet serves segmentation of image; digit_scenes is detection data"
    ):
        dlab.models.build(recipe.model, scenes_meta("detection"))


# --- CenterNet's targets and loss ---


def test_target_heat_maps_peak_at_one_on_each_centre_cell():
    boxes = torch.tensor([[[2, 10, 12, 30, 38], [2, 30, 8, 50, 20], [-1, 0, 0, 0, 0]]]).float()
    target = centres(boxes, (16, 16))
    assert target["iy"].tolist() == [6, 3] and target["ix"].tolist() == [5, 10]
    assert target["offset"].tolist() == [[0.0, 0.25], [0.0, 0.5]]
    assert target["size"].tolist() == [[5.0, 6.5], [5.0, 3.0]]
    heat = heatmaps(target, (1, 3, 16, 16))
    assert heat[0, 2, 6, 5] == 1 and heat[0, 2, 3, 10] == 1
    assert heat[0, :2].abs().sum() == 0  # nothing in the other classes
    # one Gaussian per object, σ = 0.54 size / 6 per axis; where they meet, the larger
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    blobs = []
    for (cy, cx), (w, h) in zip([(6, 5), (3, 10)], [(5, 6.5), (5, 3)], strict=True):
        sx, sy = 0.54 * w / 6, 0.54 * h / 6
        blobs.append(torch.exp(-((xs - cx) ** 2 / (2 * sx**2) + (ys - cy) ** 2 / (2 * sy**2))))
    torch.testing.assert_close(heat[0, 2], torch.maximum(*blobs))


def test_focal_loss_matches_its_formula_written_out():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    heat = torch.rand(2, 3, 5, 5, dtype=torch.float64) * 0.9
    heat[0, 1, 2, 2] = heat[1, 0, 4, 1] = 1.0
    expected = 0.0
    for value, y in zip(logits.flatten().tolist(), heat.flatten().tolist(), strict=True):
        p = 1 / (1 + math.exp(-value))
        if y == 1:
            expected -= (1 - p) ** 2 * math.log(p)
        else:
            expected -= (1 - y) ** 4 * p**2 * math.log(1 - p)
    assert float(focal_loss(logits, heat, 2.0, 4.0)) == pytest.approx(expected, rel=1e-12)


def test_centernet_loss_has_the_gradient_of_its_value():
    torch.manual_seed(1)
    outputs = torch.randn(2, 3 + 4, 8, 8, dtype=torch.float64, requires_grad=True)
    boxes = torch.tensor(
        [[[1, 3, 4, 20, 17], [0, 12, 9, 30, 31]], [[2, 0, 0, 9, 12], [-1, 0, 0, 0, 0]]]
    ).double()
    loss = CenterNetLoss(CenterNetLossConfig(name="centernet"))

    def value(out):  # in float64 throughout (the module casts to float32 for training)
        c = loss.config
        target = centres(boxes, (8, 8))
        heat = heatmaps(target, (2, 3, 8, 8)).double()
        total = focal_loss(out[:, :3], heat, c.alpha, c.beta) / 3
        at = out[target["batch"], :, target["iy"], target["ix"]]
        total = total + c.size_weight * F.l1_loss(at[:, 3:5], target["size"].double())
        return total + c.offset_weight * F.l1_loss(at[:, 5:], target["offset"].double())

    assert torch.autograd.gradcheck(value, (outputs,))
    assert loss(outputs.detach().float(), boxes.float()).item() == pytest.approx(
        value(outputs).item(), rel=1e-5
    )


def test_a_perfect_prediction_costs_only_the_focal_floor():
    boxes = torch.tensor([[[1, 8, 8, 24, 28], [-1, 0, 0, 0, 0]]]).float()
    target = centres(boxes, (8, 8))
    heat = heatmaps(target, (1, 2, 8, 8))
    outputs = torch.zeros(1, 6, 8, 8)
    outputs[:, :2] = torch.logit(heat.clamp(1e-6, 1 - 1e-6))
    outputs[0, 2:4, target["iy"], target["ix"]] = target["size"].T
    outputs[0, 4:, target["iy"], target["ix"]] = target["offset"].T
    perfect = float(CenterNetLoss(CenterNetLossConfig(name="centernet"))(outputs, boxes))
    outputs[0, 2, target["iy"], target["ix"]] += 2.0  # a box two cells too wide
    wider = float(CenterNetLoss(CenterNetLossConfig(name="centernet"))(outputs, boxes))
    assert perfect < 0.02 and wider == pytest.approx(perfect + 0.1 * 2.0 / 2, abs=1e-6)


# --- decoding ---


def brute_force_decode(outputs: torch.Tensor, top_k: int) -> list[list[tuple]]:
    """Every cell that is the strict largest of its 3×3 neighbourhood in its class, best first."""
    batch, channels, rows, cols = outputs.shape
    classes = channels - 4
    heat = outputs[:, :classes].sigmoid()
    found = []
    for b in range(batch):
        peaks = []
        for c in range(classes):
            for y in range(rows):
                for x in range(cols):
                    near = heat[b, c, max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
                    if heat[b, c, y, x] >= near.max():
                        w, h, dx, dy = outputs[b, classes:, y, x].tolist()
                        cx, cy = (x + dx) * STRIDE, (y + dy) * STRIDE
                        box = [
                            cx - w * STRIDE / 2,
                            cy - h * STRIDE / 2,
                            cx + w * STRIDE / 2,
                            cy + h * STRIDE / 2,
                        ]
                        box = [
                            min(max(v, 0), side * STRIDE)
                            for v, side in zip(box, [cols, rows] * 2, strict=True)
                        ]
                        peaks.append((float(heat[b, c, y, x]), c, *box))
        found.append(sorted(peaks, reverse=True)[:top_k])
    return found


def test_decoding_finds_the_peaks_a_brute_force_search_finds():
    torch.manual_seed(3)
    outputs = torch.randn(3, 5 + 4, 6, 7) * 2
    outputs[:, 5:7] = outputs[:, 5:7].abs() * 3  # sizes are positive
    decoded = decode(outputs, top_k=20)
    for b, expected in enumerate(brute_force_decode(outputs, 20)):
        got = decoded[b][: len(expected)]
        torch.testing.assert_close(got[:, 4], torch.tensor([e[0] for e in expected]))
        assert got[:, 5].tolist() == [e[1] for e in expected]
        torch.testing.assert_close(
            got[:, :4], torch.tensor([e[2:] for e in expected]), atol=1e-4, rtol=0
        )


# --- COCO mAP and the error kinds ---


def test_coco_map_of_a_ranked_list_computed_by_hand():
    truth = [np.array([[0, 10, 10, 30, 30], [0, 50, 50, 70, 70]], float)]
    found = [
        np.array(
            [[10, 10, 30, 30, 0.9, 0], [80, 80, 90, 90, 0.8, 0], [50, 50, 70, 70, 0.7, 0]], float
        )
    ]
    report = coco_map(truth, found, ["a"], (100, 100))
    # precision 1 up to recall .5, then 2/3 up to recall 1; COCO reads it at 101 recall points
    assert report["map50"] == pytest.approx((51 * 1 + 50 * 2 / 3) / 101, abs=1e-9)
    assert report["map"] == pytest.approx(report["map50"], abs=1e-9)  # every true box is exact
    assert report["ap50_per_class"] == {"a": pytest.approx(report["map50"])}


def test_coco_map_is_one_for_perfect_boxes_and_zero_for_the_wrong_class():
    truth = [np.array([[0, 5, 5, 25, 30]], float), np.array([[1, 40, 10, 60, 40]], float)]
    perfect = [np.array([[5, 5, 25, 30, 0.9, 0]]), np.array([[40, 10, 60, 40, 0.8, 1]])]
    assert coco_map(truth, perfect, ["a", "b"], (64, 64))["map"] == pytest.approx(1.0)
    swapped = [np.array([[5, 5, 25, 30, 0.9, 1]]), np.array([[40, 10, 60, 40, 0.8, 0]])]
    assert coco_map(truth, swapped, ["a", "b"], (64, 64))["map50"] == pytest.approx(0.0)


def test_every_kind_of_error_is_counted_once():
    truth = [np.array([[0, 0, 0, 20, 20], [1, 40, 40, 60, 60], [2, 70, 0, 90, 20]], float)]
    found = [
        np.array(
            [
                [0, 0, 20, 20, 0.9, 0],  # correct
                [0, 0, 20, 20, 0.8, 0],  # the same box again: a duplicate, localisation
                [40, 40, 60, 60, 0.7, 2],  # on the 1 but called 2: classification
                [70, 10, 90, 40, 0.6, 2],  # the 2, IoU 1/3: localisation
                [30, 80, 40, 90, 0.5, 1],  # nothing there: false alarm
                [0, 0, 20, 20, 0.1, 1],  # below the score read: not counted
            ],
            float,
        )
    ]
    counts = error_kinds(truth, found)
    assert counts == {
        "correct": 1,
        "localisation": 2,
        "classification": 1,
        "false_alarm": 1,
        "missed": 2,
    }


def test_detection_metrics_need_pycocotools_and_say_how_to_install_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pycocotools", None)  # importing it fails, as if absent
    with pytest.raises(DlabError) as info:
        coco_map([np.zeros((1, 5))], [np.zeros((1, 6))], ["a"], (8, 8))
    assert str(info.value) == (
        "detection metrics (COCO's protocol) needs pycocotools: "
        'pip install "dlab-toolkit[detection]"'
    )


# --- segmentation ---


def test_pixel_cross_entropy_and_mean_iou_against_independent_references():
    from sklearn.metrics import jaccard_score
    from torchmetrics.classification import MulticlassJaccardIndex

    torch.manual_seed(4)
    logits = torch.randn(2, 4, 6, 5, dtype=torch.float64)
    masks = torch.randint(0, 4, (2, 6, 5))
    flat = logits.permute(0, 2, 3, 1).reshape(-1, 4)
    expected = -flat.log_softmax(1)[torch.arange(60), masks.flatten()].mean()
    assert float(PixelCrossEntropy()(logits, masks)) == pytest.approx(float(expected), rel=1e-6)
    predicted = logits.argmax(1)
    ours = MulticlassJaccardIndex(num_classes=4, average="none")(predicted, masks)
    theirs = jaccard_score(masks.flatten(), predicted.flatten(), average=None, labels=range(4))
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=1e-6)


# --- end to end ---


SMALL = [
    "data.train_scenes=192",
    "data.val_scenes=32",
    "data.test_scenes=32",
    "data.canvas=64",
    "data.max_scale=1.4",
    "data.max_objects=4",
    "train.epochs=2",
]


@pytest.fixture(scope="module")
def detection_run(tmp_path_factory):
    return dlab.train(
        "scenes_centernet",
        SMALL,
        runs_dir=tmp_path_factory.mktemp("runs"),
        progress=False,
    )


def test_a_detection_run_is_evaluated_and_answers_with_boxes(detection_run, tmp_path):
    from PIL import Image

    report = json.loads((detection_run.path / "eval" / "test.json").read_text())
    assert report["objects"] > 32 and set(report["errors"]) >= {"missed", "false_alarm"}
    assert 0 <= report["map"] <= report["map50"] <= 1
    bundle = dlab.data.build(detection_run.recipe.data, detection_run.recipe.seed)
    scene = bundle.test.inputs[0, 0].numpy()
    Image.fromarray((scene * 255).round().astype(np.uint8)).save(tmp_path / "scene.png")
    (prediction,) = detection_run.predict([tmp_path / "scene.png"])
    assert prediction.label.startswith(f"{len(prediction.answer['boxes'])} objects")
    for box in prediction.answer["boxes"]:
        assert box["class"] in detection_run.meta.classes and box["score"] >= 0.3
        assert 0 <= box["box"][0] <= box["box"][2] <= 64
    html = (detection_run.path / "report.html").read_text()
    assert "predicted and true boxes" in html and "Precision and recall per class" in html


# --- a user's own annotated photos ---


@pytest.fixture(scope="module")
def aerial_photos(tmp_path_factory):
    """Two real 400×400 aerial photos with Pascal VOC tree-crown boxes, from the files inside
    the deepforest package (found, never imported: its own requirements do not load here)."""
    import importlib.util
    import shutil

    spec = importlib.util.find_spec("deepforest")
    assert spec is not None, "deepforest's data files are missing: run make (it installs them)"
    source = Path(spec.submodule_search_locations[0]) / "data"
    folder = tmp_path_factory.mktemp("aerial")
    for stem in ("OSBS_029", "SOAP_061"):
        for suffix in (".png", ".xml"):
            shutil.copy(source / f"{stem}{suffix}", folder)
    return folder


def folder_recipe(path, **data):
    return from_dict(
        {
            "data": {"name": "detection_folder", "path": str(path), **data},
            "model": {"name": "centernet"},
        }
    )


def test_voc_photos_are_cut_into_tiles_that_keep_every_box(aerial_photos):
    import xml.etree.ElementTree as ElementTree

    settings = {"tile": 128, "test_images": ["SOAP_061.png"], "normalize": False}
    assert dlab.data.build(folder_recipe(aerial_photos, **settings).data).meta.classes == [
        "Alive",  # SOAP_061 tells living trees from dead ones, OSBS_029 does not
        "Dead",
        "Tree",
    ]
    bundle = dlab.data.build(folder_recipe(aerial_photos, one_class="tree", **settings).data)
    # 400 px cut into 128 px tiles: 4 × 4 tiles per photo, the last row and column padded
    assert bundle.meta.sizes == {"val": 2, "test": 16, "train": 14}
    assert bundle.meta.classes == ["tree"] and bundle.meta.input_shape == (3, 128, 128)
    expected = len(list(ElementTree.parse(aerial_photos / "SOAP_061.xml").getroot().iter("object")))
    test_boxes = bundle.test.targets
    assert int((test_boxes[..., 0] >= 0).sum()) == expected == 37
    kept = sum(int((loader.targets[..., 0] >= 0).sum()) for loader in (bundle.train, bundle.val))
    assert kept == 61  # OSBS_029's boxes, each in exactly one tile
    # the first box of SOAP_061 in its tile's coordinates, and the tile's pixels are the photo's
    from PIL import Image

    root = ElementTree.parse(aerial_photos / "SOAP_061.xml").getroot()
    box = [float(root.find("object/bndbox").findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax")]
    row, col = int((box[1] + box[3]) / 2 // 128), int((box[0] + box[2]) / 2 // 128)
    tile = bundle.test.targets[row * 4 + col]
    shifted = [box[0] - col * 128, box[1] - row * 128, box[2] - col * 128, box[3] - row * 128]
    assert any(np.allclose(t[1:].tolist(), np.clip(shifted, 0, 128)) for t in tile if t[0] >= 0)
    photo = np.asarray(Image.open(aerial_photos / "SOAP_061.png").convert("RGB"))
    pixels = (bundle.test.inputs[row * 4 + col].permute(1, 2, 0) * 255).round().byte().numpy()
    height, width = min(128, 400 - row * 128), min(128, 400 - col * 128)
    assert np.array_equal(
        pixels[:height, :width],
        photo[row * 128 : row * 128 + height, col * 128 : col * 128 + width],
    )
    assert (pixels[height:] == 0).all() and (pixels[:, width:] == 0).all()


def voc(folder: Path, boxes: list[tuple], name="photo", size=(64, 48)) -> Path:
    from PIL import Image

    Image.new("RGB", size, (90, 120, 60)).save(folder / f"{name}.png")
    objects = "".join(
        f"<object><name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for label, x0, y0, x1, y1 in boxes
    )
    (folder / f"{name}.xml").write_text(
        f"<annotation><filename>{name}.png</filename>{objects}</annotation>"
    )
    return folder


@pytest.mark.parametrize(
    ("boxes", "words"),
    [
        (
            [("tree", 0, 0, 64, 48), ("tree", 50, 10, 65, 20)],
            "photo.xml: box 2 (tree at x0 50, y0 10, x1 65, y1 20) lies outside the 64×48 image",
        ),
        (
            [("tree", 10, 10, 10, 20)],
            "photo.xml: box 1 (tree at x0 10, y0 10, x1 10, y1 20) has no area",
        ),
        (
            [("tree", 1, 1, 5, 5), ("bush", 1, 1, 5, 5)],
            "photo.xml: box 2 (bush at x0 1, y0 1, x1 5, y1 5) has class 'bush', not one of tree",
        ),
        ([("tree", 1, "one", 5, 5)], "photo.xml: object 1: <ymin> is missing or not a number"),
    ],
)
def test_each_bad_box_is_one_line_naming_its_file_and_box(tmp_path, boxes, words):
    folder = voc(tmp_path, boxes)
    with pytest.raises(DlabError, match=words.replace("(", r"\(").replace(")", r"\)")):
        dlab.data.build(folder_recipe(folder, tile=32, classes=["tree"]).data)


def test_coco_json_boxes_read_as_the_voc_ones(tmp_path):
    voc(tmp_path, [("tree", 1, 2, 30, 20), ("tree", 40, 10, 60, 40)])
    coco = {
        "images": [{"id": 7, "file_name": "photo.png"}],
        "categories": [{"id": 3, "name": "tree"}],
        "annotations": [
            {"image_id": 7, "category_id": 3, "bbox": [1, 2, 29, 18]},
            {"image_id": 7, "category_id": 3, "bbox": [40, 10, 20, 30]},
        ],
    }
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    settings = {"tile": 32, "val_size": 0, "test_size": 0, "normalize": False}
    from_voc = dlab.data.build(folder_recipe(tmp_path, **settings).data)
    from_coco = dlab.data.build(
        folder_recipe(tmp_path, coco=str(tmp_path / "boxes.json"), **settings).data
    )
    assert torch.equal(from_voc.train.targets, from_coco.train.targets)
    assert torch.equal(from_voc.train.inputs, from_coco.train.inputs)
    coco["annotations"][1]["category_id"] = 4
    (tmp_path / "boxes.json").write_text(json.dumps(coco))
    with pytest.raises(
        DlabError, match="boxes.json: annotation 2 names an unknown image or category"
    ):
        dlab.data.build(folder_recipe(tmp_path, coco=str(tmp_path / "boxes.json"), **settings).data)


# --- augmentation: boxes and masks follow the pixels ---


def assert_boxes_are_tight_around_their_masks(boxes: torch.Tensor, masks: torch.Tensor) -> None:
    for found, mask in zip(boxes, masks, strict=True):
        for c, x0, y0, x1, y1 in found[found[:, 0] >= 0].tolist():
            x0, y0, x1, y1 = (round(v) for v in (x0, y0, x1, y1))
            inside = mask[y0:y1, x0:x1] == c + 1
            assert (
                inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            )
            assert int(inside.sum()) == int((mask == c + 1).sum()) or (found[:, 0] == c).sum() > 1


@pytest.mark.parametrize(
    "settings", [{"flip": True}, {"rotate": True}, {"flip": True, "rotate": True, "colour": 0.3}]
)
def test_augmented_boxes_stay_the_tight_boxes_of_the_augmented_masks(digits, settings):
    from dlab.data.scene_augment import SceneAugmentConfig, augment_scenes

    scenes = compose_scenes(*digits, 24, canvas=64, objects=(1, 4), max_overlap=0.0, seed=7)
    assert_boxes_are_tight_around_their_masks(scenes.boxes, scenes.masks)
    config = SceneAugmentConfig(**settings)
    x_boxes, boxes = augment_scenes(
        scenes.images, scenes.boxes, config, torch.Generator().manual_seed(1)
    )
    x_masks, masks = augment_scenes(
        scenes.images, scenes.masks, config, torch.Generator().manual_seed(1)
    )
    assert torch.equal(x_boxes, x_masks)  # the same random numbers move both the same way
    assert not torch.equal(x_boxes, scenes.images)
    assert torch.equal(boxes[..., 0], scenes.boxes[..., 0])  # classes and padding unchanged
    assert (
        boxes[..., 1:][scenes.boxes[..., 0] < 0] == scenes.boxes[..., 1:][scenes.boxes[..., 0] < 0]
    ).all()
    assert_boxes_are_tight_around_their_masks(boxes, masks)
    if "colour" not in settings:  # geometry alone moves pixels without changing them
        assert torch.equal(
            x_boxes.flatten(1).sort(1).values, scenes.images.flatten(1).sort(1).values
        )


def test_augmented_batches_depend_on_seed_epoch_and_batch_alone():
    recipe = from_dict(
        {
            "data": {
                "name": "digit_scenes",
                "train_scenes": 40,
                "val_scenes": 0,
                "test_scenes": 4,
                "canvas": 32,
                "max_scale": 1.0,
                "batch_size": 8,
                "augment": {"rotate": True, "colour": 0.2},
            },
            "model": {"name": "centernet"},
        }
    )
    loader = dlab.data.build(recipe.data, seed=3).train
    whole = list(loader.epoch(2))
    again, resumed = list(loader.epoch(2)), list(loader.epoch(2, start=3))
    for (x, y), (x2, y2) in zip(whole, again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    for (x, y), (x2, y2) in zip(whole[3:], resumed, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    plain = dlab.data.build(recipe.data.model_copy(update={"augment": None}), seed=3).train
    first_plain = next(iter(plain.epoch(2)))
    assert (
        not torch.equal(whole[0][0], first_plain[0]) and whole[0][0].shape == first_plain[0].shape
    )


def test_each_batch_of_an_epoch_draws_its_own_augmentation():
    from dlab.data.scene_augment import AugmentedScenes, SceneAugmentConfig

    image = torch.rand(1, 1, 16, 16).expand(32, -1, -1, -1).contiguous()  # 32 copies of one
    boxes = torch.tensor([[[0, 2, 3, 9, 12]]]).float().expand(32, -1, -1).contiguous()
    config = SceneAugmentConfig(flip=True, rotate=True)
    batches = list(AugmentedScenes(image, boxes, 8, shuffle=True, seed=0, augment=config).epoch(0))
    patterns = {tuple(y[:, 0, 1:].flatten().tolist()) for _, y in batches}
    assert len(patterns) == 4  # four batches of the same images, four different draws


def test_a_zoom_moves_boxes_and_masks_together_and_drops_boxes_that_leave(digits):
    from dlab.data.scene_augment import SceneAugmentConfig, augment_scenes

    scenes = compose_scenes(*digits, 32, canvas=64, objects=(2, 4), max_overlap=0.0, seed=8)
    config = SceneAugmentConfig(zoom=0.8)
    x_boxes, boxes = augment_scenes(
        scenes.images, scenes.boxes, config, torch.Generator().manual_seed(2)
    )
    x_masks, masks = augment_scenes(
        scenes.images, scenes.masks, config, torch.Generator().manual_seed(2)
    )
    assert torch.equal(x_boxes, x_masks) and masks.shape == scenes.masks.shape
    kept, before = int((boxes[..., 0] >= 0).sum()), scenes.objects()
    assert 0 < kept < before  # a window of at most 1/1.8 of the side loses some digits
    # each digit's own pixels (boxes never overlap here), zoomed with the same draws
    instances = torch.zeros_like(scenes.masks)
    for n, found in enumerate(scenes.boxes):
        for k, (c, x0, y0, x1, y1) in enumerate(found.int().tolist()):
            if c >= 0:
                own = scenes.masks[n, y0:y1, x0:x1] == c + 1
                instances[n, y0:y1, x0:x1][own] = k + 1
    _, zoomed = augment_scenes(scenes.images, instances, config, torch.Generator().manual_seed(2))
    for found, instance in zip(boxes, zoomed, strict=True):
        for k, (c, x0, y0, x1, y1) in enumerate(found.tolist()):
            if c < 0:
                continue
            ys, xs = (instance == k + 1).nonzero(as_tuple=True)
            tight = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=float)
            box = np.array([x0, y0, x1, y1])
            # a box the window cut is clipped: it holds what is left of its digit, which may be
            # narrower (a 7 cut at the top keeps its stem). A box left whole stays tight: a mask
            # edge scaled by s with nearest-exact lands at ceil(a·s - 1/2), within half a pixel
            # of the exactly scaled box edge a·s (plain nearest is biased by up to a pixel)
            if not np.isclose(box, [0, 0, 64, 64]).any():
                assert np.allclose(tight, box, atol=0.5), (tight, box)
            assert (tight[:2] >= box[:2] - 1).all() and (tight[2:] <= box[2:] + 1).all(), (
                tight,
                box,
            )
