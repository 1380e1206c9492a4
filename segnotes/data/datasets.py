"""Torch datasets: COCO-style instances, VOC-style semantic labels, and the shapes data set.

Every dataset returns ``(image, target)`` with ``image`` a FloatTensor[3, H, W] in [0, 1]:

* instance datasets (:class:`CocoInstances`, :class:`ShapesInstances`,
  :class:`~segnotes.data.voc.VOCInstances`) give targets in torchvision's detection format
  (``boxes``, ``labels``, ``masks``, ``image_id``, ``area``, ``iscrowd``), ready for
  ``torchvision.models.detection.MaskRCNN``;
* semantic datasets (:class:`~segnotes.data.voc.VOCSemantic`, :class:`ShapesSemantic`,
  :class:`CocoSemantic`) give a LongTensor[H, W] of class ids with 255 kept as "ignore", ready
  for ``cross_entropy(ignore_index=255)``.

The optional ``transforms(image, target)`` runs on these tensors (e.g.
:mod:`segnotes.data.transforms`). Images of any 8-bit mode (greyscale, palette, RGBA, CMYK) are
converted to RGB; a file that is missing, unreadable or of another kind (16-bit, float) is
reported by name.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from .._checks import check_choice, describe
from .shapes import CATEGORIES, GROUPS, SPLITS, default_root

__all__ = ["CocoInstances", "CocoSemantic", "ShapesInstances", "ShapesSemantic", "image_size", "load_rgb"]

# 8-bit modes Pillow converts to RGB without losing meaning (alpha is dropped, CMYK and YCbCr are mapped).
_RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _open(fn: str, path: Path, what: str = "image") -> Image.Image:
    """``Image.open(path)``, with errors that name the file."""
    try:
        return Image.open(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{fn}: {what} file {path} not found") from None
    except (OSError, ValueError) as error:  # PIL.UnidentifiedImageError is an OSError
        raise ValueError(f"{fn}: cannot read the {what} file {path} ({type(error).__name__}: {error})") from None


def load_rgb(path: Path, fn: str = "load_rgb") -> Tensor:
    """An image file as FloatTensor[3, H, W] in [0, 1].

    Greyscale, palette, RGBA (alpha dropped) and CMYK images are converted to RGB; a missing or
    unreadable file, or a 16-bit or floating-point image, gives an error naming the file.
    """
    with _open(fn, Path(path)) as image:
        if image.mode not in _RGB_MODES:
            raise ValueError(f"{fn}: image {path} has mode {image.mode!r} (16-bit or floating point); "
                             "convert it to 8-bit RGB first")
        try:
            return pil_to_tensor(image.convert("RGB")).float().div_(255.0)
        except OSError as error:  # truncated data shows up when the pixels are decoded
            raise ValueError(f"{fn}: cannot decode the image file {path} ({error})") from None


def image_size(path: Path, fn: str = "image_size", what: str = "image") -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header (the pixels are not decoded).

    For ``what="image"`` the mode is checked too: one :func:`load_rgb` cannot convert (16-bit,
    floating point) gives the same error as loading it would.
    """
    with _open(fn, Path(path), what) as image:
        width, height = image.size
        if what == "image" and image.mode not in _RGB_MODES:
            raise ValueError(f"{fn}: image {path} has mode {image.mode!r} (16-bit or floating point); "
                             "convert it to 8-bit RGB first")
    return height, width


_load_rgb = load_rgb  # the readers below pass their name as ``fn``


def _load_label(fn: str, path: Path) -> Tensor:
    """A palette (or greyscale) label PNG as LongTensor[H, W] of indices; 255 stays 255."""
    with _open(fn, Path(path), "label") as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{fn}: label {path} must be a palette or greyscale PNG, got mode {image.mode!r}")
        return torch.from_numpy(np.array(image, dtype=np.int64))


def _shapes_split(fn: str, root, split: str) -> tuple[Path, Path]:
    """The split directory of a complete shapes data set, or a FileNotFoundError saying how to make it."""
    root = default_root() if root is None else Path(root).expanduser()
    check_choice(fn, "split", split, SPLITS)
    how = f"make it with `segnotes data shapes --root {root}` or `make data` (in Python: segnotes.data.ensure_shapes)"
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{fn}: no shapes data set at {root} ({meta_file} is missing); {how}")
    if json.loads(meta_file.read_text(encoding="utf-8")).get("complete") is not True:
        raise FileNotFoundError(f"{fn}: the shapes data set at {root} is incomplete (interrupted?); {how}")
    return root, root / split


class CocoInstances(Dataset):
    """Instance segmentation in COCO's layout: an image folder and a COCO-format JSON file.

    Works for real COCO (JPEG images, polygon or RLE masks) and for the shapes data set.
    Masks come from pycocotools' ``annToMask``, so polygons, compressed and uncompressed RLE
    all work.

    Args:
        image_dir: folder that the images' ``file_name`` entries are relative to.
        ann_file: the COCO-format JSON file.
        transforms: optional ``transforms(image, target) -> (image, target)``.
        include_crowd: keep ``iscrowd=1`` annotations (default: drop them, as training does).

    Item ``(image, target)``:
        image (FloatTensor[3, H, W]): RGB in [0, 1].
        target (dict): ``boxes`` (Tensor[N, 4], float32, x1 y1 x2 y2 in pixels),
        ``labels`` (Tensor[N], int64, category ids), ``masks`` (Tensor[N, H, W], uint8 0/1),
        ``image_id`` (Tensor[], int64), ``ann_ids`` (Tensor[N], int64, the annotations' ids),
        ``area`` (Tensor[N], float32, the annotation's area),
        ``iscrowd`` (Tensor[N], int64). Images without annotations give N = 0.
        Annotations whose box has no width or height are dropped (detection losses reject them).
    """

    def __init__(self, image_dir, ann_file, transforms=None, include_crowd: bool = False):
        fn = type(self).__name__
        self.image_dir, self.ann_file = Path(image_dir), Path(ann_file)
        if not self.ann_file.is_file():
            raise FileNotFoundError(f"{fn}: annotation file {self.ann_file} not found")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{fn}: image folder {self.image_dir} not found")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"{fn}: transforms must be callable or None, got {describe(transforms)}")
        if not isinstance(include_crowd, bool):
            raise TypeError(f"{fn}: include_crowd must be a bool, got {describe(include_crowd)}")
        self.coco = _read_coco(fn, self.ann_file)
        self.ids = sorted(self.coco.imgs)
        self.transforms = transforms
        self.include_crowd = include_crowd

    def check_files(self) -> None:
        """Check every image file: it exists, is readable and has the size the JSON gives.

        Reads the files' headers only (the pixels are not decoded), so a data set can be checked
        before training starts rather than fail in the middle of it.

        Raises:
            FileNotFoundError: an image file is missing.
            ValueError: a file is unreadable, or its size differs from the JSON's ``height`` and
                ``width``; the message names the file and the annotation file.
        """
        fn = type(self).__name__
        for image_id in self.ids:
            self._check_size(fn, self.coco.imgs[image_id], image_size(self._path(image_id), fn))

    def _path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _check_size(self, fn: str, info: dict, size: tuple[int, int]) -> None:
        if "height" in info and "width" in info and size != (info["height"], info["width"]):
            raise ValueError(
                f"{fn}: image {self.image_dir / info['file_name']} is {size[0]} x {size[1]} pixels but "
                f"{self.ann_file} says {info['height']} x {info['width']} (image id {info['id']})"
            )

    @property
    def categories(self) -> list[dict]:
        """The COCO category dicts, sorted by id."""
        return self.coco.loadCats(sorted(self.coco.getCatIds()))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, target = self._load(index)
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    def _load(self, index: int) -> tuple[Tensor, dict]:
        image_id = self.ids[index]
        info = self.coco.imgs[image_id]
        fn = type(self).__name__
        image = _load_rgb(self._path(image_id), fn)
        height, width = image.shape[1:]
        self._check_size(fn, info, (height, width))
        annotations = [
            a
            for a in self.coco.imgToAnns.get(image_id, [])
            if (self.include_crowd or not a.get("iscrowd", 0)) and a["bbox"][2] > 0 and a["bbox"][3] > 0
        ]
        masks = np.zeros((len(annotations), height, width), np.uint8)
        for k, annotation in enumerate(annotations):
            masks[k] = self.coco.annToMask(annotation)
        boxes = torch.tensor([a["bbox"] for a in annotations], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # x, y, w, h -> x1, y1, x2, y2
        target = dict(
            boxes=boxes,
            labels=torch.tensor([a["category_id"] for a in annotations], dtype=torch.int64),
            masks=torch.from_numpy(masks),
            image_id=torch.tensor(image_id, dtype=torch.int64),
            ann_ids=torch.tensor([a["id"] for a in annotations], dtype=torch.int64),
            area=torch.tensor([a["area"] for a in annotations], dtype=torch.float32),
            iscrowd=torch.tensor([a.get("iscrowd", 0) for a in annotations], dtype=torch.int64),
        )
        return image, target


def _read_coco(fn: str, ann_file: Path) -> COCO:
    """A COCO annotation file, checked: valid JSON, and every annotation's image and category listed."""
    try:
        dataset = json.loads(ann_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{fn}: {ann_file} is not a JSON file ({error})") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise ValueError(f"{fn}: {ann_file} is not a COCO annotation file (no 'images' list)")
    images = {image["id"] for image in dataset["images"]}
    categories = {category["id"] for category in dataset.get("categories", [])}
    for annotation in dataset.get("annotations", []):
        if annotation.get("image_id") not in images:
            raise ValueError(f"{fn}: annotation {annotation.get('id')} in {ann_file} refers to image "
                             f"{annotation.get('image_id')}, which the file's 'images' do not list")
        if annotation.get("category_id") not in categories:
            raise ValueError(f"{fn}: annotation {annotation.get('id')} in {ann_file} has category "
                             f"{annotation.get('category_id')}, which the file's 'categories' do not list")
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
        coco.createIndex()
    return coco


class CocoSemantic(Dataset):
    """A COCO instance data set seen as semantic segmentation: one label map per image.

    Each pixel gets the label of the instance covering it (smaller instances drawn over larger
    ones), 0 where there is none; crowd regions become 255 ("ignore"), as VOC's void.

    Args:
        instances (CocoInstances): the data set, read with its crowd annotations
            (``include_crowd=True``) so that they can be ignored; without them they count as
            background.
        labels (dict of int to int): category id -> label (default: the id itself).
        transforms: optional ``transforms(image, label) -> (image, label)``.

    Item ``(image FloatTensor[3, H, W] in [0, 1], label LongTensor[H, W])``.
    """

    def __init__(self, instances: CocoInstances, labels: dict | None = None, transforms=None):
        fn = type(self).__name__
        if not isinstance(instances, CocoInstances):
            raise TypeError(f"{fn}: instances must be a CocoInstances, got {describe(instances)}")
        if transforms is not None and not callable(transforms):
            raise TypeError(f"{fn}: transforms must be callable or None, got {describe(transforms)}")
        self.instances, self.labels, self.transforms = instances, labels, transforms
        self.coco = instances.coco

    def __len__(self) -> int:
        return len(self.instances)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, target = self.instances._load(index)
        label = torch.zeros(image.shape[1:], dtype=torch.int64)
        order = torch.argsort(target["masks"].flatten(1).sum(1), descending=True, stable=True)  # large first
        for k in order.tolist():
            category = int(target["labels"][k])
            value = 255 if target["iscrowd"][k] else (self.labels[category] if self.labels else category)
            label[target["masks"][k].bool()] = value
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        return image, label


def _withheld_categories(fn: str, partial) -> tuple[int, ...]:
    """The category ids whose masks ``partial`` withholds (see :class:`ShapesInstances`)."""
    if partial is None or isinstance(partial, str):
        check_choice(fn, "partial", partial, (None, *GROUPS))
        return GROUPS[partial] if partial else ()
    ids = [c["id"] for c in CATEGORIES]
    if not isinstance(partial, (tuple, list)) or not all(isinstance(c, int) and not isinstance(c, bool) and c in ids for c in partial):
        raise ValueError(
            f"{fn}: partial must be None, 'A', 'B' or a sequence of category ids from {ids}, got {partial!r}"
        )
    return tuple(partial)


class ShapesInstances(CocoInstances):
    """The shapes data set as instance segmentation (see :class:`CocoInstances` for items).

    For partially supervised training (*Learning to Segment Every Thing*), ``partial``
    withholds one group's masks: ``partial="B"`` keeps boxes and labels for every instance
    but zeroes the masks of group B's categories, so masks come from group A only. Every
    target has ``mask_valid`` (BoolTensor[N]): False where the mask was withheld.

    Args:
        root: the data set's folder (default: :func:`segnotes.data.default_root`).
        split: ``"train"`` or ``"val"``.
        partial: None, ``"A"`` or ``"B"`` (the group whose masks are withheld), or a sequence
            of category ids (1..9) whose masks are withheld.
        transforms: optional ``transforms(image, target) -> (image, target)``.
        include_crowd: keep the ``iscrowd=1`` annotations.
    """

    def __init__(self, root=None, split: str = "train", partial: str | None = None, transforms=None,
                 include_crowd: bool = False):
        fn = type(self).__name__
        root, split_dir = _shapes_split(fn, root, split)
        withheld = _withheld_categories(fn, partial)
        super().__init__(split_dir, split_dir / "instances.json", transforms=transforms, include_crowd=include_crowd)
        self.root, self.split, self.partial = root, split, partial
        self._withheld = torch.tensor(withheld, dtype=torch.int64)

    def _load(self, index: int) -> tuple[Tensor, dict]:
        image, target = super()._load(index)
        valid = ~torch.isin(target["labels"], self._withheld)
        target["masks"][~valid] = 0
        target["mask_valid"] = valid
        return image, target


class ShapesSemantic(Dataset):
    """The shapes data set as semantic segmentation, from its label PNGs.

    Args:
        root: the data set's folder (default: :func:`segnotes.data.default_root`).
        split: ``"train"`` or ``"val"``.
        transforms: optional ``transforms(image, label) -> (image, label)``.

    Item ``(image, label)``:
        image (FloatTensor[3, H, W]): RGB in [0, 1].
        label (LongTensor[H, W]): 0 background, 1..9 categories, 255 void (ignore).
    """

    def __init__(self, root=None, split: str = "train", transforms=None):
        fn = type(self).__name__
        self.root, split_dir = _shapes_split(fn, root, split)
        if transforms is not None and not callable(transforms):
            raise TypeError(f"{fn}: transforms must be callable or None, got {describe(transforms)}")
        self.split, self.transforms = split, transforms
        self.images = sorted((split_dir / "images").glob("*.png"))
        self.labels = [split_dir / "labels" / path.name for path in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = _load_rgb(self.images[index])
        label = _load_label(type(self).__name__, self.labels[index])
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        return image, label
