"""A served detector and segmenter as a user meets them: `dlab predict --out` draws the boxes,
and the page draws them (or the mask) over an uploaded scene in headless Chromium."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import pytest
from PIL import Image

import dlab
from dlab.cli import main as cli_main
from dlab.report.images import PALETTE
from dlab.serve.process import serving

# small scenes a detector learns in seconds: 64 px, one to three digits
SMALL = [
    "data.canvas=64",
    "data.max_scale=1.4",
    "data.max_objects=3",
    "data.clutter=0",
    "data.train_scenes=640",
    "data.val_scenes=64",
    "data.test_scenes=64",
    "train.epochs=8",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    runs = tmp_path_factory.mktemp("runs")
    detector = dlab.train("scenes_centernet", SMALL, runs_dir=runs, progress=False)
    segmenter = dlab.train("scenes_unet", SMALL, runs_dir=runs, progress=False)
    bundle = dlab.data.build(detector.recipe.data, detector.recipe.seed)
    scene = tmp_path_factory.mktemp("scene") / "scene.png"
    Image.fromarray((bundle.test.inputs[3, 0].numpy() * 255).round().astype(np.uint8)).save(scene)
    return detector, segmenter, scene


def test_predict_prints_the_boxes_and_draws_them(trained, tmp_path, capsys):
    detector, _, scene = trained
    out = tmp_path / "annotated.png"
    assert cli_main(["predict", str(detector.path), str(scene), "--out", str(out)]) in (0, None)
    printed = capsys.readouterr().out
    (prediction,) = detector.predict([scene])
    boxes = prediction.answer["boxes"]
    assert boxes, "the detector found nothing in a test scene"
    assert f"{len(boxes)} objects" in printed and boxes[0]["class"] in printed
    picture = np.asarray(Image.open(out).convert("RGB"))
    assert picture.shape == (64 * 4, 64 * 4, 3)  # the scene enlarged four times
    for found in boxes:  # each box's outline in its class's colour, at its place
        x0, y0 = (round(v * 4) for v in found["box"][:2])
        colour = PALETTE[detector.meta.classes.index(found["class"])]
        edge = picture[max(y0, 0) : y0 + 2, x0 : x0 + 8].reshape(-1, 3)
        assert (edge == colour).all(axis=1).any(), f"no outline of {found} at ({x0}, {y0})"


def test_the_page_draws_the_boxes_of_an_uploaded_scene(trained, chromium, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    detector, _, scene = trained
    errors: list[str] = []
    with serving(detector.path) as url, playwright.sync_playwright() as p:
        expected = httpx.post(
            f"{url}/predict", files={"file": ("scene.png", scene.read_bytes(), "image/png")}
        ).json()["predictions"][0]
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 900, "height": 700})
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        page.wait_for_selector("#image-panel:not(.hidden)")
        page.set_input_files("#upload", str(scene))
        page.wait_for_function("document.querySelector('#pad').dataset.drawn !== undefined")
        drawn, label = page.get_attribute("#pad", "data-drawn"), page.inner_text("#result")
        shot = tmp_path / "page.png"
        page.locator("#pad").screenshot(path=str(shot))
        browser.close()
    assert not errors, errors
    assert expected["boxes"] and drawn == str(len(expected["boxes"]))
    assert label == expected["label"]
    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3)
    colour = PALETTE[detector.meta.classes.index(expected["boxes"][0]["class"])]
    near = np.abs(pixels.astype(int) - colour).sum(1) < 40  # the box's colour, anti-aliased
    assert near.sum() > 40, "the first box's outline is not on the page's canvas"


def test_a_served_segmenter_answers_with_its_mask_as_a_png(trained):
    _, segmenter, scene = trained
    with serving(segmenter.path) as url:
        answer = httpx.post(
            f"{url}/predict", files={"file": ("scene.png", scene.read_bytes(), "image/png")}
        ).json()["predictions"][0]
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["mask_png"]))))
    (prediction,) = segmenter.predict([scene])
    local = np.asarray(Image.open(io.BytesIO(base64.b64decode(prediction.answer["mask_png"]))))
    assert mask.shape == (64, 64) and np.array_equal(mask, local)
    counts = {segmenter.meta.classes[v - 1]: int((mask == v).sum()) for v in np.unique(mask) if v}
    assert counts == answer["pixels"] and counts, "no digit pixels found in a test scene"
