"""A user's own annotated photographs for detection: a folder of images with Pascal VOC XML files
(one per image) or one COCO JSON file of boxes.

Every box is checked as it is read (inside its image, of positive size, of a known class), each
violation a one-line error that names the file and the box. A detector takes images of one size,
so each photograph is cut into square tiles (`data.tile` pixels, zero-padded at the right and
bottom edges); a box belongs to the tile that holds its centre and is clipped to it. Tiles are
split into train / validation / test at random, or whole images are held out by name.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from dlab.data.bundle import DataBundle
from dlab.data.scene_augment import SceneAugmentConfig
from dlab.data.scenes import NO_OBJECT, Scenes, scene_bundle
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


@dataclass
class Photo:
    """One annotated photograph."""

    name: str  # the image file's name
    image: np.ndarray  # (H, W, 3) uint8
    boxes: np.ndarray  # (n, 4) x0, y0, x1, y1 in pixels
    labels: list[str]  # the class of each box


def _open_image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None


def check_boxes(
    source: str,
    boxes: np.ndarray,
    labels: list[str],
    size: tuple[int, int],
    known: list[str] | None,
) -> None:
    """A DataError naming `source` and the first box that lies outside the (height, width)
    image, has no area, or names a class not in `known`."""
    height, width = size
    for k, ((x0, y0, x1, y1), label) in enumerate(zip(boxes.tolist(), labels, strict=True)):
        where = f"{source}: box {k + 1} ({label} at x0 {x0:g}, y0 {y0:g}, x1 {x1:g}, y1 {y1:g})"
        if known is not None and label not in known:
            raise DataError(f"{where} has class '{label}', not one of {', '.join(known)}")
        if x1 <= x0 or y1 <= y0:
            raise DataError(f"{where} has no area: x1 must exceed x0 and y1 must exceed y0")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise DataError(f"{where} lies outside the {width}×{height} image")


def _number(node: ElementTree.Element, tag: str, source: str) -> float:
    found = node.find(tag)
    try:
        return float(found.text)  # type: ignore[union-attr, arg-type]
    except (AttributeError, TypeError, ValueError):
        raise DataError(f"{source}: <{tag}> is missing or not a number") from None


def read_voc(folder: Path, known: list[str] | None) -> list[Photo]:
    """Every `*.xml` of `folder` (Pascal VOC) with its image: the file the XML names, else the
    image of the same stem."""
    photos = []
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DataError(f"{folder}: no Pascal VOC .xml files")
    for file in files:
        try:
            root = ElementTree.parse(file).getroot()
        except ElementTree.ParseError as exc:
            raise DataError(f"{file}: not readable XML ({exc})") from None
        named = folder / (root.findtext("filename") or "")
        candidates = [named] + [file.with_suffix(s) for s in IMAGE_SUFFIXES]
        image_path = next((p for p in candidates if p.is_file()), None)
        if image_path is None:
            raise DataError(
                f"{file}: its image ({named.name}, or {file.stem}.png/.jpg) is not in {folder}"
            )
        image = _open_image(image_path)
        boxes, labels = [], []
        for k, node in enumerate(root.iter("object")):
            box = node.find("bndbox")
            source = f"{file.name}: object {k + 1}"
            if box is None:
                raise DataError(f"{source} has no <bndbox>")
            boxes.append([_number(box, tag, source) for tag in ("xmin", "ymin", "xmax", "ymax")])
            labels.append((node.findtext("name") or "").strip())
        array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        check_boxes(file.name, array, labels, image.shape[:2], known)
        photos.append(Photo(image_path.name, image, array, labels))
    return photos


def read_coco(file: Path, folder: Path, known: list[str] | None) -> list[Photo]:
    """The images and boxes of one COCO JSON file (bbox as x, y, width, height)."""
    try:
        data = json.loads(file.read_text())
        categories = {c["id"]: c["name"] for c in data["categories"]}
        images = {i["id"]: i["file_name"] for i in data["images"]}
        annotations = data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{file}: not a COCO file with images, annotations and categories ({exc})"
        ) from None
    grouped: dict[int, list[dict]] = {i: [] for i in images}
    for k, note in enumerate(annotations):
        if note.get("image_id") not in grouped or note.get("category_id") not in categories:
            raise DataError(f"{file}: annotation {k + 1} names an unknown image or category")
        grouped[note["image_id"]].append(note)
    photos = []
    for image_id, name in images.items():
        image = _open_image(folder / name)
        boxes = np.asarray([n["bbox"] for n in grouped[image_id]], dtype=np.float64).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # (x, y, w, h) -> (x0, y0, x1, y1)
        labels = [categories[n["category_id"]] for n in grouped[image_id]]
        check_boxes(f"{file.name}: {name}", boxes, labels, image.shape[:2], known)
        photos.append(Photo(name, image, boxes, labels))
    return photos


def cut_tiles(photo: Photo, tile: int, classes: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """`photo` as (tile × tile × 3 image, (n, 5) boxes: class, x0, y0, x1, y1) pairs, row by
    row; each box in the tile that holds its centre, clipped to it."""
    height, width = photo.image.shape[:2]
    centres = (photo.boxes[:, :2] + photo.boxes[:, 2:]) / 2
    index = np.asarray([classes.index(label) for label in photo.labels], dtype=np.float64)
    found = []
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            image = np.zeros((tile, tile, 3), dtype=np.uint8)
            part = photo.image[top : top + tile, left : left + tile]
            image[: part.shape[0], : part.shape[1]] = part
            inside = (
                (centres[:, 0] >= left)
                & (centres[:, 0] < left + tile)
                & (centres[:, 1] >= top)
                & (centres[:, 1] < top + tile)
            )
            boxes = photo.boxes[inside] - [left, top, left, top]
            boxes = np.clip(boxes, 0, [part.shape[1], part.shape[0]] * 2)
            found.append((image, np.column_stack([index[inside], boxes])))
    return found


class DetectionFolderConfig(DataConfig):
    """Annotated photographs of your own: images with Pascal VOC XML files, or a COCO JSON file."""

    task: Literal["detection"] = Field("detection", description="what to learn: boxes")
    path: str = Field(..., description="the folder of images (and of the VOC .xml files)")
    coco: str | None = Field(None, description="a COCO JSON file of boxes (else VOC XML files)")
    classes: list[str] | None = Field(
        None, description="the classes, in order; a box of any other class is an error"
    )
    one_class: str | None = Field(
        None, description="call every box this one class (e.g. 'tree' for Alive and Dead trees)"
    )
    tile: int = Field(256, ge=32, description="side of the square tiles cut from each photo")
    augment: SceneAugmentConfig | None = Field(
        None, description="training-time augmentation (flips, quarter turns, colour); boxes follow"
    )
    test_images: list[str] = Field(
        default_factory=list, description="whole images held out as the test split, by file name"
    )
    val_size: float = Field(0.15, ge=0, lt=1, description="share of the tiles for validation")
    test_size: float = Field(
        0.15, ge=0, lt=1, description="share of the tiles for testing (without test_images)"
    )
    batch_size: int = Field(8, gt=0, description="training batch size")
    eval_batch_size: int = Field(16, gt=0, description="batch size for validation and test")

    @field_validator("tile")
    @classmethod
    def _multiple_of_16(cls, value: int) -> int:
        if value % 16:
            raise ValueError(f"should be a multiple of 16 (got {value})")
        return value


def _stack(pairs: list[tuple[np.ndarray, np.ndarray]], most: int) -> Scenes:
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255
    boxes = torch.full((len(pairs), max(most, 1), 5), NO_OBJECT)
    for k, (_, found) in enumerate(pairs):
        boxes[k, : len(found)] = torch.from_numpy(found).float()
    return Scenes(images, boxes, torch.zeros(len(pairs), 0, dtype=torch.int64))


@DATASETS.register(
    "detection_folder",
    config=DetectionFolderConfig,
    summary="your annotated photos: Pascal VOC XML or COCO JSON boxes, cut into tiles",
    tasks=("detection",),
    splits="tiles split at random, or whole images held out (data.test_images)",
    source="a folder of images (data.path) with .xml files or one COCO .json",
)
def build_detection_folder(config: DetectionFolderConfig, seed: int = 0) -> DataBundle:
    """Tiles of the photographs in `config.path` with their checked boxes."""
    folder = Path(config.path).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.path: {folder} is not a folder")
    photos = (
        read_coco(Path(config.coco).expanduser(), folder, config.classes)
        if config.coco
        else read_voc(folder, config.classes)
    )
    if config.one_class is not None:
        for photo in photos:
            photo.labels = [config.one_class] * len(photo.labels)
    missing = sorted(set(config.test_images) - {p.name for p in photos})
    if missing:
        raise DataError(f"data.test_images: {missing[0]} is not an annotated image in {folder}")
    classes = config.classes or sorted({label for p in photos for label in p.labels})
    held = [
        t
        for p in photos
        if p.name in config.test_images
        for t in cut_tiles(p, config.tile, classes)
    ]
    rest = [
        t
        for p in photos
        if p.name not in config.test_images
        for t in cut_tiles(p, config.tile, classes)
    ]
    order = np.random.default_rng(config.split_seed).permutation(len(rest))
    n_val = math.floor(config.val_size * len(rest))
    n_test = 0 if held else math.floor(config.test_size * len(rest))
    parts = {
        "val": [rest[i] for i in order[:n_val]],
        "test": held or [rest[i] for i in order[n_val : n_val + n_test]],
        "train": [rest[i] for i in order[n_val + n_test :]],
    }
    if not parts["train"]:
        raise DataError(f"{folder}: no tiles left to train on ({len(rest)} in all)")
    most = max(len(found) for pairs in parts.values() for _, found in pairs)
    scenes = {split: _stack(pairs, most) for split, pairs in parts.items() if pairs}
    return scene_bundle(
        scenes, config, classes, dataset="detection_folder", seed=seed, dark_background=None
    )
