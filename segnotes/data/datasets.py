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
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms.functional import pil_to_tensor

from .._checks import check_choice, describe
from ..metrics.coco import _check_box, _check_compressed_rles, _check_polygons, _check_uncompressed_rle, _rle_size
from .shapes import CATEGORIES, GROUPS, SPLITS, default_root

__all__ = ["CocoInstances", "CocoSemantic", "ShapesInstances", "ShapesSemantic", "image_size", "load_rgb"]

# 8-bit modes Pillow converts to RGB without losing meaning (alpha is dropped, CMYK and YCbCr are mapped).
_RGB_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")


def _check_mode(fn: str, path: Path, mode: str) -> None:
    if mode not in _RGB_MODES:
        raise ValueError(f"{fn}: image {path} has mode {mode!r} (16-bit or floating point); convert it to 8-bit RGB first")


@contextlib.contextmanager
def _open_image(fn: str, what: str, path: Path):
    """``PIL.Image.open(path)``; a missing, truncated or unreadable file raises an OSError naming it."""
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, inside the try
            yield image
    except (OSError, SyntaxError) as error:  # PIL raises SyntaxError for some broken PNGs
        raise OSError(f"{fn}: cannot read the {what} {path}: {error}") from error


def _load_rgb(fn: str, path: Path) -> Tensor:
    """An image file as FloatTensor[3, H, W] in [0, 1] (any 8-bit mode converted to RGB)."""
    with _open_image(fn, "image", path) as image:
        _check_mode(fn, path, image.mode)
        return pil_to_tensor(image.convert("RGB")).float().div_(255.0)


def load_rgb(path, fn: str = "load_rgb") -> Tensor:
    """An image file as FloatTensor[3, H, W] in [0, 1].

    Greyscale, palette, RGBA (alpha dropped) and CMYK images are converted to RGB; a missing,
    truncated or unreadable file raises an OSError naming it, a 16-bit or floating-point image a
    ValueError.
    """
    return _load_rgb(fn, Path(path))


def image_size(path, fn: str = "image_size", what: str = "image") -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header (the pixels are not decoded).

    For ``what="image"`` the mode is checked too: one :func:`load_rgb` cannot convert gives the
    same error as loading it would.

    Raises:
        FileNotFoundError: no such file.
        OSError: the file is not an image Pillow can read.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: {what} file {path} not found")
    try:
        with Image.open(path) as image:
            width, height = image.size
            mode = image.mode
    except (OSError, SyntaxError) as error:
        raise OSError(f"{fn}: cannot read the {what} {path}: {error}") from error
    if what == "image":
        _check_mode(fn, path, mode)
    return height, width


def _load_label(fn: str, path: Path, size: tuple[int, int] | None) -> Tensor:
    """A palette (or greyscale) label PNG of ``size`` (H, W) as LongTensor[H, W] of indices; 255 stays 255.

    ``size`` None skips the size check (the caller compares several maps itself).
    """
    with _open_image(fn, "label", path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{fn}: label {path} must be a palette or greyscale PNG, got mode {image.mode!r}")
        label = torch.from_numpy(np.array(image, dtype=np.int64))
    if size is not None and tuple(label.shape) != tuple(size):
        raise ValueError(
            f"{fn}: label {path} is {label.shape[0]} x {label.shape[1]} pixels (H x W), but its image is "
            f"{size[0]} x {size[1]}"
        )
    return label


def _shapes_split(fn: str, root, split: str) -> tuple[Path, Path, dict]:
    """The root, split directory and meta.json of a complete shapes data set, or a FileNotFoundError
    saying how to make it."""
    root = default_root() if root is None else Path(root).expanduser()
    check_choice(fn, "split", split, SPLITS)
    how = f"make it with `segnotes data shapes --root {root}` or `make data` (in Python: segnotes.data.ensure_shapes)"
    meta_file = root / "meta.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{fn}: no shapes data set at {root} ({meta_file} is missing); {how}")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("complete") is not True:
        raise FileNotFoundError(f"{fn}: the shapes data set at {root} is incomplete (interrupted?); {how}")
    return root, root / split, meta


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
            OSError, ValueError: a file is unreadable, of a mode that cannot be converted, or of
                another size than the JSON's ``height`` and ``width``; the message names the file.
        """
        fn = type(self).__name__
        for image_id in self.ids:
            self._check_size(fn, image_id, image_size(self._path(image_id), fn))

    def _path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _check_size(self, fn: str, image_id: int, size: tuple[int, int]) -> None:
        info = self.coco.imgs[image_id]
        if tuple(size) != (info["height"], info["width"]):
            raise ValueError(
                f"{fn}: image {self._path(image_id)} is {size[0]} x {size[1]} pixels (H x W), but {self.ann_file} "
                f"says image id {image_id} is {info['height']} x {info['width']}"
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
        image = _load_rgb(fn, self._path(image_id))
        height, width = image.shape[1:]
        self._check_size(fn, image_id, (height, width))
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
    """A COCO annotation file, checked (:func:`_check_coco_file`); a file that is not JSON is named."""
    try:
        dataset = json.loads(Path(ann_file).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{fn}: {ann_file} is not a JSON file ({error})") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("images"), list):
        raise ValueError(f"{fn}: {ann_file} is not a COCO annotation file (no 'images' list)")
    _check_coco_file(fn, Path(ann_file), dataset)
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


_IMAGE_KEYS = ("id", "file_name", "height", "width")
_ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "area", "segmentation")


def _check_coco_file(fn: str, path: Path, dataset: dict) -> None:
    """Every image and annotation of a COCO file is complete and consistent, or an error names it.

    pycocotools loads anything: an annotation of an image that is not listed is silently never
    returned, and malformed polygons, RLEs or boxes fail later (or decode into garbage) without
    saying which annotation is wrong. Here each error names the file and the annotation's id.
    """
    images = {}
    for i, image in enumerate(dataset.get("images", [])):
        if not isinstance(image, dict) or any(key not in image for key in _IMAGE_KEYS):
            raise ValueError(f"{fn}: {path}: images[{i}] must be a dict with the keys {list(_IMAGE_KEYS)}, "
                             f"got {sorted(image) if isinstance(image, dict) else describe(image)}")
        images[image["id"]] = (image["height"], image["width"])
    categories = {category.get("id") for category in dataset.get("categories", []) if isinstance(category, dict)}
    compressed = ([], [])  # checked at once, below
    for i, ann in enumerate(dataset.get("annotations", [])):
        if not isinstance(ann, dict):
            raise ValueError(f"{fn}: {path}: annotations[{i}] must be a dict, got {describe(ann)}")
        name = f"annotation id {ann['id']}" if "id" in ann else f"annotations[{i}] (no id)"
        where = f"{path}, {name}"
        missing = [key for key in _ANNOTATION_KEYS if key not in ann]
        if missing:
            raise ValueError(f"{fn}: {where} is missing the keys {missing}, got keys {sorted(ann)}")
        if ann["image_id"] not in images:
            raise ValueError(f"{fn}: {where} has image_id {ann['image_id']!r}, which the file's images do not list")
        if ann["category_id"] not in categories:
            raise ValueError(
                f"{fn}: {where} has category_id {ann['category_id']!r}, which the file's categories do not list"
            )
        _check_box(fn, f"{where}: bbox", ann["bbox"])
        segmentation, what = ann["segmentation"], f"{where}: segmentation"
        if isinstance(segmentation, list):
            _check_polygons(fn, what, segmentation)
            continue
        if not (isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation):
            raise ValueError(f"{fn}: {what} must be polygons (list) or RLE (dict with counts and size), "
                             f"got {describe(segmentation)}")
        if tuple(_rle_size(fn, what, segmentation)) != tuple(images[ann["image_id"]]):
            raise ValueError(f"{fn}: {what} has size {segmentation['size']}, but image {ann['image_id']} is "
                             f"{list(images[ann['image_id']])} (height, width)")
        if isinstance(segmentation["counts"], list):
            _check_uncompressed_rle(fn, what, segmentation)
        else:
            compressed[0].append(what)
            compressed[1].append(segmentation)
    _check_compressed_rles(fn, *compressed)


def _withheld_categories(fn: str, partial, root: Path, meta: dict) -> tuple[int, ...]:
    """The category ids whose masks ``partial`` withholds (see :class:`ShapesInstances`), with the
    groups and categories of the data set at ``root`` (its ``meta``: the variants differ)."""
    groups = {name: tuple(ids) for name, ids in meta.get("groups", GROUPS).items()}
    ids = [c["id"] for c in meta.get("categories", CATEGORIES)]
    if partial is None or isinstance(partial, str):
        check_choice(fn, "partial", partial, (None, *groups))
        return groups[partial] if partial else ()
    if not isinstance(partial, (tuple, list)) or not all(isinstance(c, int) and not isinstance(c, bool) and c in ids for c in partial):
        shown = f"{ids}" if len(ids) <= 12 else f"{ids[0]}..{ids[-1]}"
        raise ValueError(
            f"{fn}: partial must be None, 'A', 'B' or a sequence of category ids from {shown} (the data set at "
            f"{root}), got {partial!r}"
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
        partial: None, ``"A"`` or ``"B"`` (the group whose masks are withheld, as the data set's
            meta.json defines the groups), or a sequence of category ids (1..9; 1..50 in the
            attributes variant) whose masks are withheld.
        transforms: optional ``transforms(image, target) -> (image, target)``.
        include_crowd: keep the ``iscrowd=1`` annotations.
    """

    def __init__(self, root=None, split: str = "train", partial: str | None = None, transforms=None,
                 include_crowd: bool = False):
        fn = type(self).__name__
        root, split_dir, meta = _shapes_split(fn, root, split)
        withheld = _withheld_categories(fn, partial, root, meta)
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
        self.root, split_dir, _ = _shapes_split(fn, root, split)
        if transforms is not None and not callable(transforms):
            raise TypeError(f"{fn}: transforms must be callable or None, got {describe(transforms)}")
        self.split, self.transforms = split, transforms
        self.images = sorted((split_dir / "images").glob("*.png"))
        self.labels = [split_dir / "labels" / path.name for path in self.images]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        fn = type(self).__name__
        image = _load_rgb(fn, self.images[index])
        label = _load_label(fn, self.labels[index], image.shape[1:])
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        return image, label
