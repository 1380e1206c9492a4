"""PASCAL VOC's segmentation layout: semantic labels, and instances from its object masks.

A VOC folder (``VOCdevkit/VOC2012`` or any folder laid out the same way) holds::

    JPEGImages/<id>.jpg                 the images
    SegmentationClass/<id>.png          palette PNGs: class index per pixel, 0 background, 255 void
    SegmentationObject/<id>.png         palette PNGs: object index per pixel (1, 2, ...), 0, 255
    ImageSets/Segmentation/<split>.txt  the ids of each split, one per line

:class:`VOCSemantic` reads the class maps (FCN's training data); :class:`VOCInstances` turns
each object of the object maps into an instance, whose class is read from the class map
(Mask R-CNN's). Both take the folder holding ``VOCdevkit`` (torchvision's layout, as
``torchvision.datasets.VOCSegmentation(root, download=True)`` leaves it) or the VOC folder itself.
"""
from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.voc import DATASET_YEAR_DICT

from .._checks import check_choice, describe
from .datasets import _load_label, image_size, load_rgb

__all__ = ["VOC_CLASSES", "VOCSemantic", "VOCInstances", "voc_folder", "voc_class_name"]

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")


def voc_class_name(index: int) -> str:
    """VOC's name of class ``index`` (``"person"`` for 15), or ``"class_<index>"`` beyond its 20 classes."""
    return VOC_CLASSES[index] if 0 <= index < len(VOC_CLASSES) else f"class_{index}"


def voc_folder(fn: str, root, year: str = "2012") -> Path:
    """The VOC folder under ``root``: ``root`` itself when it holds ``ImageSets/Segmentation``, else
    torchvision's ``root/VOCdevkit/VOC<year>``.

    Raises:
        TypeError: ``root`` is not a path.
        FileNotFoundError: neither exists; says how to download VOC.
    """
    if not isinstance(root, (str, os.PathLike)):
        raise TypeError(f"{fn}: root must be a str or os.PathLike, got {describe(root)}")
    root = Path(root).expanduser()
    if (root / "ImageSets" / "Segmentation").is_dir():
        return root
    check_choice(fn, "year", year, list(DATASET_YEAR_DICT))
    folder = root / DATASET_YEAR_DICT[year]["base_dir"]
    if not (folder / "ImageSets" / "Segmentation").is_dir():
        raise FileNotFoundError(
            f"{fn}: no VOC{year} at {folder} (nor a VOC layout with ImageSets/Segmentation in {root}); download it "
            f"with `torchvision.datasets.VOCSegmentation({str(root)!r}, year={year!r}, download=True)`"
        )
    return folder


def _split_ids(fn: str, folder: Path, split: str) -> list[str]:
    """The ids listed in ``ImageSets/Segmentation/<split>.txt``."""
    splits = folder / "ImageSets" / "Segmentation"
    path = splits / f"{split}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in splits.glob("*.txt"))
        raise FileNotFoundError(f"{fn}: no split file {path}; the splits there: {', '.join(known) or 'none'}")
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _image_paths(fn: str, folder: Path, ids: list[str], split: str) -> list[Path]:
    """``JPEGImages/<id>.jpg`` (or another image suffix) for each id, or an error naming the missing one."""
    stems = {}
    for path in sorted((folder / "JPEGImages").glob("*")):
        if path.suffix in _IMAGE_SUFFIXES:
            stems.setdefault(path.stem, path)
    missing = [i for i in ids if i not in stems]
    if missing:
        raise FileNotFoundError(f"{fn}: {len(missing)} image(s) listed in ImageSets/Segmentation/{split}.txt are "
                                f"missing, e.g. {folder / 'JPEGImages' / (missing[0] + '.jpg')}")
    return [stems[i] for i in ids]


class _VOCBase(Dataset):
    """What both readers share: the folder, the split's ids, the image and mask paths, the size checks."""

    _masks: tuple[str, ...] = ("SegmentationClass",)

    def __init__(self, root, image_set: str = "train", year: str = "2012", transforms=None):
        fn = type(self).__name__
        if transforms is not None and not callable(transforms):
            raise TypeError(f"{fn}: transforms must be callable or None, got {describe(transforms)}")
        self.folder = voc_folder(fn, root, year)
        self.image_set, self.transforms = image_set, transforms
        self.ids = _split_ids(fn, self.folder, image_set)
        self.images = _image_paths(fn, self.folder, self.ids, image_set)
        for kind in self._masks:
            missing = [i for i in self.ids if not (self.folder / kind / f"{i}.png").is_file()]
            if missing:
                raise FileNotFoundError(f"{fn}: {len(missing)} mask(s) of split {image_set!r} are missing, e.g. "
                                        f"{self.folder / kind / (missing[0] + '.png')}")
        self.masks = [self.folder / "SegmentationClass" / f"{i}.png" for i in self.ids]  # torchvision's name

    def __len__(self) -> int:
        return len(self.ids)

    def _mask_path(self, kind: str, index: int) -> Path:
        return self.folder / kind / f"{self.ids[index]}.png"

    def _check_sizes(self, index: int, size: tuple[int, int], masks: dict) -> None:
        for kind, mask_size in masks.items():
            if tuple(mask_size) != tuple(size):
                raise ValueError(
                    f"{type(self).__name__}: label {self._mask_path(kind, index)} is {mask_size[0]} x {mask_size[1]} "
                    f"pixels (H x W), but its image is {size[0]} x {size[1]} ({self.images[index]})"
                )

    def check_files(self) -> None:
        """Check that every image and mask is readable and each mask has its image's size.

        Reads the headers only. Raises ValueError naming the files that differ.
        """
        fn = type(self).__name__
        for index in range(len(self)):
            size = image_size(self.images[index], fn)
            masks = {kind: image_size(self._mask_path(kind, index), fn, "mask") for kind in self._masks}
            self._check_sizes(index, size, masks)

    def _read(self, index: int) -> tuple[Tensor, dict]:
        fn = type(self).__name__
        image = load_rgb(self.images[index], fn)
        masks = {kind: _load_label(fn, self._mask_path(kind, index), None) for kind in self._masks}
        self._check_sizes(index, tuple(image.shape[1:]), {k: tuple(m.shape) for k, m in masks.items()})
        return image, masks

    def label_values(self) -> set[int]:
        """The class indices the split's class maps use (0 and 255 left out): reads every class map."""
        fn = type(self).__name__
        values: set[int] = set()
        for index in range(len(self)):
            values |= set(np.unique(_load_label(fn, self._mask_path("SegmentationClass", index), None).numpy()).tolist())
        return values - {0, 255}


class VOCSemantic(_VOCBase):
    """PASCAL VOC semantic segmentation as tensors (no download).

    Args:
        root: the folder holding ``VOCdevkit`` (torchvision's layout), or a VOC folder itself.
        image_set: the split, a file ``ImageSets/Segmentation/<image_set>.txt`` (VOC's ``train``,
            ``val``, ``trainval``, or any other in a VOC folder).
        year: ``"2007"`` to ``"2012"`` (torchvision's layout only).
        transforms: optional ``transforms(image, label) -> (image, label)`` on tensors.

    Item ``(image, label)``:
        image (FloatTensor[3, H, W]): RGB in [0, 1].
        label (LongTensor[H, W]): 0 background, 1..20 classes, 255 void (kept as ignore).
    """

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image, masks = self._read(index)
        label = masks["SegmentationClass"]
        if self.transforms is not None:
            image, label = self.transforms(image, label)
        return image, label


class VOCInstances(_VOCBase):
    """PASCAL VOC instance segmentation: each object of ``SegmentationObject`` is an instance.

    An object's class is the class map's value under it (VOC draws both maps from one annotation,
    so the object's pixels share one class). Boxes are the masks' bounding boxes, as COCO's
    (x1 y1 x2 y2 with x2 = last column + 1). ``coco`` holds the split as a COCO data set (RLE
    masks), built at construction by reading every mask pair once, for COCO AP.

    Args:
        root, image_set, year: as :class:`VOCSemantic`.
        transforms: optional ``transforms(image, target) -> (image, target)``.

    Item ``(image, target)``: as :class:`~segnotes.data.CocoInstances` (``image_id`` is the
    position in the split plus 1; ``labels`` are VOC class indices).

    Raises:
        ValueError: a mask whose size differs from its image's, or an object on background or
            void only in the class map; the message names the files.
    """

    _masks = ("SegmentationClass", "SegmentationObject")

    def __init__(self, root, image_set: str = "train", year: str = "2012", transforms=None):
        super().__init__(root, image_set, year, transforms)
        annotations, images = [], []
        for index in range(len(self)):
            _, masks = self._read_masks(index)
            height, width = masks["SegmentationObject"].shape
            images.append({"id": index + 1, "file_name": self.images[index].name, "height": height, "width": width})
            for label, mask in self._objects(index, masks):
                rle = mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))
                rle["counts"] = rle["counts"].decode("ascii")
                annotations.append({
                    "id": len(annotations) + 1, "image_id": index + 1, "category_id": label, "segmentation": rle,
                    "area": float(mask.sum()), "bbox": mask_utils.toBbox(rle).tolist(), "iscrowd": 0,
                })
        present = sorted({a["category_id"] for a in annotations})
        self.coco = COCO()
        self.coco.dataset = {"images": images, "annotations": annotations,
                             "categories": [{"id": c, "name": voc_class_name(c)} for c in present]}
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self._ann_ids = {}
        for annotation in annotations:
            self._ann_ids.setdefault(annotation["image_id"], []).append(annotation["id"])

    @property
    def categories(self) -> list[dict]:
        """The classes present in the split, as COCO category dicts sorted by id."""
        return list(self.coco.dataset["categories"])

    def _read_masks(self, index: int) -> tuple[tuple[int, int], dict]:
        fn = type(self).__name__
        masks = {kind: _load_label(fn, self._mask_path(kind, index), None) for kind in self._masks}
        shapes = {k: tuple(m.shape) for k, m in masks.items()}
        if shapes["SegmentationClass"] != shapes["SegmentationObject"]:
            (h1, w1), (h2, w2) = shapes["SegmentationObject"], shapes["SegmentationClass"]
            raise ValueError(f"{fn}: label {self._mask_path('SegmentationObject', index)} is {h1} x {w1} pixels (H x W), "
                             f"but {self._mask_path('SegmentationClass', index)} is {h2} x {w2}")
        return shapes["SegmentationClass"], masks

    def _objects(self, index: int, masks: dict) -> list[tuple[int, Tensor]]:
        """``(class, BoolTensor[H, W] mask)`` of each object, in object-index order."""
        objects, classes = masks["SegmentationObject"], masks["SegmentationClass"]
        found = []
        for value in torch.unique(objects).tolist():
            if value in (0, 255):
                continue
            mask = objects == value
            under = classes[mask]
            under = under[(under != 0) & (under != 255)]
            if under.numel() == 0:
                raise ValueError(f"{type(self).__name__}: object {value} of {self._mask_path('SegmentationObject', index)} "
                                 f"lies on background or void only in {self._mask_path('SegmentationClass', index)}")
            found.append((int(torch.mode(under).values), mask))
        return found

    def __getitem__(self, index: int) -> tuple[Tensor, dict]:
        image, masks = self._read(index)
        objects = self._objects(index, masks)
        height, width = image.shape[1:]
        stacked = torch.zeros(len(objects), height, width, dtype=torch.uint8)
        for k, (_, mask) in enumerate(objects):
            stacked[k] = mask
        boxes = torch.zeros(len(objects), 4)
        for k, (_, mask) in enumerate(objects):
            rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
            boxes[k] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=torch.float32)
        target = dict(
            boxes=boxes,
            labels=torch.tensor([c for c, _ in objects], dtype=torch.int64),
            masks=stacked,
            image_id=torch.tensor(index + 1, dtype=torch.int64),
            ann_ids=torch.tensor(self._ann_ids.get(index + 1, []), dtype=torch.int64),
            area=stacked.flatten(1).sum(1).float(),
            iscrowd=torch.zeros(len(objects), dtype=torch.int64),
        )
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
