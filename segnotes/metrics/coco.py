"""COCO average precision, written out step by step.

The COCO detection metric (Lin et al., "Microsoft COCO: Common Objects in Context", 2014; the
``pycocotools`` code by Dollár and Lin) in four steps:

1. **IoU.** For each image and category, the IoU of every detection with every ground-truth
   object (masks for ``"segm"``, boxes for ``"bbox"``). Against a *crowd* region the "IoU" is
   intersection / detection area, so that a detection inside a crowd is not punished.
2. **Matching.** At each IoU threshold t in 0.50:0.05:0.95, detections are taken from the highest
   score down, and each claims the unclaimed ground-truth object it overlaps most (IoU >= t).
   Ground truth outside the area range being scored, or crowd regions, is *ignored*: it is only
   matched when no regular object is, and a detection matched to it counts neither as right nor
   wrong. A crowd region may be claimed many times. Unmatched detections outside the area range
   are ignored too.
3. **Precision and recall.** Per category, all detections of all images are sorted by score;
   the running counts of true and false positives give a precision-recall curve. Its *envelope*
   (precision made non-increasing from the right) is read at 101 recall points 0:0.01:1.
4. **Averages.** AP is the mean over thresholds, recall points and categories (those with
   ground truth); AP50 and AP75 fix the threshold; APs, APm, APl the area range.

:func:`average_precision` does all four with NumPy and agrees with :func:`coco_evaluate`, which
runs ``pycocotools.cocoeval.COCOeval``, to 1e-6; only the IoU of step 1 comes from
``pycocotools.mask.iou``. Differences from a textbook description are COCOeval's and kept on
purpose: detections with equal scores keep their order (images by id, then the input order: a
stable sort), each image and category keeps its ``max_dets`` best-scored detections, and a
detection's *area* (for the area ranges) is its box's ``w * h`` when the first detection of the
list has a ``bbox``, its mask area otherwise.
One departure: COCOeval treats a match to a ground-truth annotation with id 0 as no match, since
it stores matched ids with 0 meaning "none"; here matches are tracked by position, so give your
annotations ids from 1 (as COCO does) when comparing the two.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pycocotools.mask as mask_utils
import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_int, describe

__all__ = [
    "COCO_AREA_RANGES",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
    "average_precision",
    "coco_evaluate",
    "greedy_match",
    "interpolated_precision",
    "decode_segmentation",
    "encode_masks",
    "detections_from_predictions",
]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


# The same expressions as pycocotools' Params, so that `iou == threshold` tests agree bit for bit.
IOU_THRESHOLDS = _read_only(np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True))
RECALL_THRESHOLDS = _read_only(np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True))
# Object area in pixels (mask area for ground truth): small < 32², medium 32²–96², large > 96².
COCO_AREA_RANGES = MappingProxyType(
    {"all": (0**2, 1e5**2), "small": (0**2, 32**2), "medium": (32**2, 96**2), "large": (96**2, 1e5**2)}
)
_AREA_NAMES = ("all", "small", "medium", "large")
_IOU_TYPES = ("segm", "bbox")


# ----------------------------------------------------------------------------------------------
# Inputs: ground truth and detections as flat NumPy arrays
# ----------------------------------------------------------------------------------------------


@dataclass
class _Instances:
    """Objects of one side (ground truth or detections), one entry per object.

    ``regions`` holds what pycocotools.mask.iou compares: RLE dicts (segm) or an array of
    [x, y, w, h] boxes (bbox).
    """

    image_index: np.ndarray  # int64 [N], position in the sorted image ids
    category_index: np.ndarray  # int64 [N], position in the sorted category ids
    area: np.ndarray  # float64 [N]
    regions: list | np.ndarray
    ids: np.ndarray  # int64 [N]: annotation ids (ground truth) or positions in the input list (detections)
    crowd: np.ndarray | None = None  # bool [N], ground truth only
    score: np.ndarray | None = None  # float64 [N], detections only


@dataclass
class _GroundTruth:
    image_ids: np.ndarray  # int64 [I], sorted
    image_sizes: dict  # image id -> (height, width)
    category_ids: np.ndarray  # int64 [K], sorted
    objects: _Instances


def _load_dataset(fn: str, coco_gt) -> dict:
    """The COCO-format dict behind ``coco_gt`` (a dict, a JSON path or a pycocotools COCO)."""
    if isinstance(coco_gt, (str, os.PathLike)):
        path = Path(coco_gt)
        try:
            with open(path) as f:
                dataset = json.load(f)
        except FileNotFoundError:
            raise ValueError(f"{fn}: coco_gt file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{fn}: coco_gt file {str(path)!r} could not be read as COCO JSON: {error}") from None
    elif isinstance(coco_gt, Mapping):
        dataset = coco_gt
    elif hasattr(coco_gt, "dataset") and isinstance(coco_gt.dataset, Mapping):  # pycocotools (or compatible) COCO
        dataset = coco_gt.dataset
    else:
        raise TypeError(
            f"{fn}: coco_gt must be a COCO-format dict, a JSON path or a pycocotools COCO, got {describe(coco_gt)}"
        )
    if not isinstance(dataset, Mapping):
        raise ValueError(f"{fn}: coco_gt must hold a COCO-format dict, got {describe(dataset)}")
    for key in ("images", "categories"):
        if key not in dataset:
            raise ValueError(f"{fn}: coco_gt is missing the key {key!r} (COCO format: images, annotations, categories)")
    return dataset


def _require(fn: str, where: str, item, keys: Sequence[str]) -> None:
    if not isinstance(item, Mapping):
        raise TypeError(f"{fn}: {where} must be a dict, got {describe(item)}")
    for key in keys:
        if key not in item:
            raise ValueError(f"{fn}: {where} is missing the key {key!r}, got keys {sorted(item)}")


def _to_rle(fn: str, where: str, segmentation, size: tuple[int, int], *, check_compressed: bool = True) -> dict:
    """Compressed RLE from a polygon list, an uncompressed RLE or a compressed RLE (as COCO.annToRLE).

    Every form is checked first (see :func:`_check_polygons`, :func:`_check_rle_size_and_counts`):
    pycocotools trusts its input, and a run-length list that does not add up to the image makes
    its C code read and write past its buffers (garbage masks, or a hang in ``iou``).
    ``check_compressed=False`` leaves compressed RLEs to a caller that checks many at once.
    """
    height, width = size
    if isinstance(segmentation, list):  # polygons: one object may have several parts
        _check_polygons(fn, f"{where}['segmentation']", segmentation)
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation, Mapping) and "counts" in segmentation and "size" in segmentation:
        if isinstance(segmentation["counts"], list):  # uncompressed RLE
            _check_uncompressed_rle(fn, f"{where}['segmentation']", segmentation)
            return mask_utils.frPyObjects(segmentation, height, width)
        if check_compressed:
            _check_compressed_rles(fn, [f"{where}['segmentation']"], [segmentation])
        return segmentation
    raise ValueError(
        f"{fn}: {where}['segmentation'] must be polygons (list) or RLE (dict with counts and size), "
        f"got {describe(segmentation)}"
    )


def _check_polygons(fn: str, what: str, polygons: list) -> None:
    """Polygons: a non-empty list of lists of finite numbers ``x1, y1, x2, y2, ...``, 3 points or more.

    ``what`` names them in errors. pycocotools reads a polygon of 4 numbers as a box, and fails on
    fewer without naming anything.
    """
    if not polygons:
        raise ValueError(f"{fn}: {what} must hold at least one polygon, got an empty list")
    for j, polygon in enumerate(polygons):
        if not isinstance(polygon, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in polygon
        ):
            raise ValueError(
                f"{fn}: {what}[{j}] must be a polygon, a list of numbers x1, y1, x2, y2, ..., "
                f"got {describe(polygon)}"
            )
        if len(polygon) < 6 or len(polygon) % 2:
            raise ValueError(
                f"{fn}: {what}[{j}] must be a polygon of at least 3 points (an even number of "
                f"coordinates, 6 or more), got {len(polygon)} numbers"
            )
        if not np.isfinite(np.asarray(polygon, dtype=np.float64)).all():
            raise ValueError(f"{fn}: {what}[{j}] must hold finite coordinates, got {list(polygon)}")


def _rle_size(fn: str, what: str, rle: Mapping) -> tuple[int, int]:
    """The ``size`` [height, width] of an RLE: two non-negative ints."""
    size = rle["size"]
    if (not isinstance(size, (list, tuple)) or len(size) != 2
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in size)):
        raise ValueError(f"{fn}: {what}['size'] must be [height, width], two ints >= 0, got {size!r}")
    return int(size[0]), int(size[1])


def _check_uncompressed_rle(fn: str, what: str, rle: Mapping) -> None:
    """Uncompressed RLE: ``counts`` a list of ints >= 0 that add up to height * width."""
    height, width = _rle_size(fn, what, rle)
    counts = rle["counts"]
    if not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) for c in counts):
        raise ValueError(f"{fn}: {what}['counts'] must be a list of ints (run lengths)")
    _check_runs(fn, what, np.asarray(counts, dtype=np.float64), height, width)


def _check_runs(fn: str, what: str, runs: np.ndarray, height: int, width: int) -> None:
    if runs.size and runs.min() < 0:
        raise ValueError(f"{fn}: {what} has a negative run length {int(runs.min())}")
    total = runs.sum()
    if total != height * width:
        raise ValueError(
            f"{fn}: {what} run lengths add up to {int(total)}, not height * width = "
            f"{height} * {width} = {height * width}"
        )


# Characters per value in a compressed RLE: 5 bits each. The encoder needs 6 for any run of an
# image under 2**29 pixels; longer groups would overflow pycocotools' shifts.
_RLE_MAX_CHARS = 6


def _check_compressed_rles(fn: str, whats: Sequence[str], rles: Sequence[Mapping]) -> None:
    """Check compressed RLEs (``counts`` a str or bytes): well-formed, runs >= 0 adding up to height * width.

    ``whats`` name each RLE in the error. All strings are decoded at once (see
    :func:`_decode_rle_strings`).
    """
    if not rles:
        return
    sizes = [_rle_size(fn, what, rle) for what, rle in zip(whats, rles)]
    texts = [rle["counts"].encode("ascii", "replace") if isinstance(rle["counts"], str) else bytes(rle["counts"])
             for rle in rles]
    runs, owner, malformed = _decode_rle_strings(texts)
    totals = np.bincount(owner, weights=runs.astype(np.float64), minlength=len(texts))
    lowest = np.full(len(texts), np.inf)
    np.minimum.at(lowest, owner, runs.astype(np.float64))
    area = np.asarray([height * width for height, width in sizes], dtype=np.float64)
    wrong = np.flatnonzero(malformed | (lowest < 0) | (totals != area))
    if wrong.size == 0:
        return
    i = wrong[0]
    what, (height, width) = whats[i], sizes[i]
    if malformed[i]:
        raise ValueError(
            f"{fn}: {what}['counts'] is not a compressed RLE string (characters '0' to 'o', "
            f"each value at most {_RLE_MAX_CHARS} characters, the last one complete)"
        )
    if lowest[i] < 0:
        raise ValueError(f"{fn}: {what} has a negative run length {int(lowest[i])}")
    raise ValueError(
        f"{fn}: {what} run lengths add up to {int(totals[i])}, not height * width = "
        f"{height} * {width} = {height * width}"
    )


def _decode_rle_strings(texts: list[bytes]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The runs of compressed RLE strings, read as pycocotools' ``rleFrString`` reads them, with NumPy.

    Each character is ``48 + 6 bits``: 5 bits of value (least significant first), bit 0x20
    "more characters follow", and in the last character of a value bit 0x10 its sign. From the
    fourth value on, each is stored as the difference from the value two places before it.

    Returns:
        runs (ndarray[V], int64): every string's runs, string after string.
        owner (ndarray[V], int64): the string each run belongs to.
        malformed (ndarray[S], bool): a character outside '0'..'o', a value longer than
            ``_RLE_MAX_CHARS`` characters, or a last value cut short.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    chars = np.frombuffer(b"".join(texts), dtype=np.uint8).astype(np.int64) - 48  # [C]
    char_owner = np.repeat(np.arange(len(texts)), lengths)  # [C]
    malformed = np.zeros(len(texts), dtype=bool)
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), malformed
    malformed[char_owner[(chars < 0) | (chars > 63)]] = True
    last_char = (np.cumsum(lengths) - 1)[lengths > 0]  # of each non-empty string
    more = (chars & 0x20) != 0
    malformed[lengths > 0] |= more[last_char]
    ends = ~more
    ends[last_char] = True  # a value never runs into the next string
    value_of_char = np.cumsum(np.r_[0, ends[:-1]])  # [C]
    value_start = np.flatnonzero(np.r_[True, ends[:-1]])  # [V], first char of each value
    k = np.arange(chars.size) - value_start[value_of_char]  # position of each char in its value
    malformed[char_owner[k >= _RLE_MAX_CHARS]] = True
    k = np.minimum(k, _RLE_MAX_CHARS - 1)
    value = np.bincount(value_of_char, weights=(chars & 0x1F) << (5 * k)).astype(np.int64)  # [V]
    last = np.flatnonzero(ends)  # last char of each value
    value -= np.where((chars[last] & 0x10) != 0, np.left_shift(1, 5 * (k[last] + 1)), 0)  # sign
    owner = char_owner[last]  # [V]
    # Undo the differences: runs m >= 3 hold run[m] - run[m - 2], so odd runs, and even runs from
    # the third on, are each a running sum within their string.
    first_of_string = np.r_[0, np.cumsum(np.bincount(owner, minlength=len(texts)))[:-1]]
    m = np.arange(value.size) - first_of_string[owner]  # index of each value within its string
    runs = value.copy()
    for chain in (np.flatnonzero(m % 2 == 1), np.flatnonzero((m >= 2) & (m % 2 == 0))):
        if chain.size:
            running = np.cumsum(value[chain])
            new_string = np.r_[True, owner[chain][1:] != owner[chain][:-1]]
            # Subtract what the running sum held before each string's first value in the chain.
            first = np.maximum.accumulate(np.where(new_string, np.arange(chain.size), 0))
            runs[chain] = running - (running - value[chain])[first]
    return runs, owner, malformed


def encode_masks(masks) -> list[dict]:
    """Binary masks as COCO compressed RLEs, the inverse of :func:`decode_segmentation`.

    Args:
        masks (ndarray or Tensor [N, H, W] or [H, W], bool or integer 0/1): one mask per instance
            (a single [H, W] mask counts as N = 1). Probabilities must be thresholded first.

    Returns:
        list of N dicts ``{"size": [H, W], "counts": str}``: the counts as ASCII text, as a COCO
        JSON file holds them (pycocotools returns bytes).
    """
    fn = "encode_masks"
    if isinstance(masks, Tensor):
        masks = masks.detach().cpu().numpy()
    if not isinstance(masks, np.ndarray):
        raise TypeError(f"{fn}: masks must be a numpy array or a torch.Tensor, got {describe(masks)}")
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{fn}: masks must be [N, H, W] or [H, W], got shape {tuple(masks.shape)}")
    if masks.dtype != np.bool_:
        if not np.issubdtype(masks.dtype, np.integer):
            raise TypeError(f"{fn}: masks must be bool or integer 0/1 (threshold probabilities first), got dtype {masks.dtype}")
        if masks.size and (masks.min() < 0 or masks.max() > 1):
            raise ValueError(f"{fn}: integer masks must hold only 0 and 1, got values from {masks.min()} to {masks.max()}")
    if masks.shape[0] == 0:
        return []
    # pycocotools wants (H, W, N) uint8 in Fortran order.
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    return [dict(size=[int(s) for s in rle["size"]], counts=rle["counts"].decode("ascii")) for rle in rles]


def decode_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO segmentation as a mask.

    Args:
        segmentation: polygons (list of ``[x1, y1, x2, y2, ...]``), an uncompressed RLE (``counts``
            a list) or a compressed RLE (``counts`` str or bytes), with ``size`` ``[height, width]``.
        height, width (int): the image's size (polygons and uncompressed RLE need it).

    Returns:
        ndarray[height, width] (bool)

    Raises:
        ValueError: malformed polygons or RLE (e.g. run lengths that do not add up to
            height * width, which pycocotools would decode into garbage), or an RLE of another size.
    """
    fn = "decode_segmentation"
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{fn}: {name} must be an int >= 0, got {describe(value)}")
    if isinstance(segmentation, Mapping) and "size" in segmentation and "counts" in segmentation:
        if tuple(_rle_size(fn, "annotation['segmentation']", segmentation)) != (height, width):
            raise ValueError(f"{fn}: the RLE has size {list(segmentation['size'])}, not [height, width] = "
                             f"[{height}, {width}]")
    rle = dict(_to_rle(fn, "annotation", segmentation, (int(height), int(width))))
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode("ascii")
    return mask_utils.decode(rle).astype(bool)


def _load_ground_truth(fn: str, coco_gt, iou_type: str) -> _GroundTruth:
    dataset = _load_dataset(fn, coco_gt)
    image_sizes = {}
    for i, image in enumerate(dataset["images"]):
        _require(fn, f"coco_gt['images'][{i}]", image, ("id",))
        image_sizes[image["id"]] = (image.get("height"), image.get("width"))
    category_ids = []
    for i, category in enumerate(dataset["categories"]):
        _require(fn, f"coco_gt['categories'][{i}]", category, ("id",))
        category_ids.append(category["id"])
    image_ids = np.unique(np.asarray(list(image_sizes), dtype=np.int64))
    category_ids = np.unique(np.asarray(category_ids, dtype=np.int64))
    image_position = {image_id: i for i, image_id in enumerate(image_ids.tolist())}
    category_position = {category_id: k for k, category_id in enumerate(category_ids.tolist())}

    region_key = "segmentation" if iou_type == "segm" else "bbox"
    rows, regions = [], []
    compressed = ([], [])  # (where, RLE) of the compressed RLEs, checked at once below
    for i, ann in enumerate(dataset.get("annotations", [])):
        where = f"coco_gt['annotations'][{i}]"
        _require(fn, where, ann, ("id", "image_id", "category_id", "area", region_key))
        # Like COCOeval, evaluate only annotations of listed images and categories.
        if ann["image_id"] not in image_position or ann["category_id"] not in category_position:
            continue
        if iou_type == "segm":
            size = _image_size(fn, image_sizes, ann["image_id"], where)
            regions.append(_to_rle(fn, where, ann["segmentation"], size, check_compressed=False))
            if regions[-1] is ann["segmentation"]:
                compressed[0].append(f"{where}['segmentation']")
                compressed[1].append(regions[-1])
        else:
            regions.append(_check_box(fn, f"{where}['bbox']", ann["bbox"]))
        # Missing iscrowd means an ordinary object (COCOeval would raise a KeyError).
        rows.append((image_position[ann["image_id"]], category_position[ann["category_id"]], ann["id"],
                     ann["area"], bool(ann.get("iscrowd", 0))))
    _check_compressed_rles(fn, *compressed)
    columns = list(zip(*rows)) if rows else [[]] * 5
    objects = _Instances(
        image_index=np.asarray(columns[0], dtype=np.int64),
        category_index=np.asarray(columns[1], dtype=np.int64),
        ids=np.asarray(columns[2], dtype=np.int64),
        area=np.asarray(columns[3], dtype=np.float64),
        crowd=np.asarray(columns[4], dtype=bool),
        regions=regions if iou_type == "segm" else np.asarray(regions, dtype=np.float64).reshape(-1, 4),
    )
    return _GroundTruth(image_ids, image_sizes, category_ids, objects)


def _check_box(fn: str, what: str, box) -> list:
    """A ground-truth ``bbox`` (``what`` names it): [x, y, width, height], four finite numbers, width and height >= 0."""
    if (not isinstance(box, (list, tuple)) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            or not all(math.isfinite(v) for v in box) or box[2] < 0 or box[3] < 0):
        raise ValueError(
            f"{fn}: {what} must be [x, y, width, height], four finite numbers with width and height >= 0, "
            f"got {box!r}"
        )
    return box


def _image_size(fn: str, image_sizes: dict, image_id, where: str) -> tuple[int, int]:
    height, width = image_sizes[image_id]
    if height is None or width is None:
        raise ValueError(f"{fn}: coco_gt image {image_id} needs 'height' and 'width' to rasterise {where}'s polygons")
    return height, width


def _column(fn: str, detections: Sequence, key: str, hint: str = "") -> list:
    """``[d[key] for d in detections]``, or an error naming the first bad detection."""
    try:
        return [d[key] for d in detections]
    except (KeyError, TypeError, IndexError):
        for i, d in enumerate(detections):
            if not isinstance(d, Mapping):
                raise TypeError(f"{fn}: detections[{i}] must be a dict, got {describe(d)}") from None
            if key not in d:
                hint = f" ({hint})" if hint else ""
                raise ValueError(
                    f"{fn}: detections[{i}] is missing the key {key!r}{hint}, got keys {sorted(d)}"
                ) from None
        raise


def _positions(fn: str, values: list, known: np.ndarray, what: str) -> np.ndarray:
    """Position of each id in the sorted array ``known``; ValueError for an unknown id."""
    try:
        ids = np.asarray(values, dtype=np.int64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: detections' {what} values must be integers") from None
    position = np.searchsorted(known, ids).clip(max=max(len(known) - 1, 0))
    unknown = np.flatnonzero(known[position] != ids) if len(known) else np.arange(len(ids))
    if unknown.size:
        i = unknown[0]
        raise ValueError(f"{fn}: detections[{i}] has {what} {values[i]!r}, which coco_gt does not list")
    return position


def _load_detections(fn: str, detections, gt: _GroundTruth, iou_type: str) -> _Instances:
    if not isinstance(detections, Sequence) or isinstance(detections, (str, bytes)):
        raise TypeError(f"{fn}: detections must be a list of COCO result dicts, got {describe(detections)}")
    image_index = _positions(fn, _column(fn, detections, "image_id"), gt.image_ids, "image_id")
    category_index = _positions(fn, _column(fn, detections, "category_id"), gt.category_ids, "category_id")
    scores = _column(fn, detections, "score")
    try:
        score = np.asarray(scores, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: detections' score values must be numbers") from None
    if score.shape[0] != len(detections):
        raise TypeError(f"{fn}: each of detections' score values must be a single number")
    if not np.isfinite(score).all():
        i = np.flatnonzero(~np.isfinite(score))[0]
        raise ValueError(f"{fn}: detections[{i}]['score'] must be a finite number, got {score[i]}")

    if len(detections) == 0:
        regions = [] if iou_type == "segm" else np.zeros((0, 4))
        return _Instances(image_index, category_index, np.zeros(0), regions, np.zeros(0, dtype=np.int64), score=score)

    # As COCO.loadRes: when the first detection has a box, every area is its box's w * h;
    # otherwise areas (and missing boxes) come from the masks.
    boxes_given = "bbox" in detections[0] and len(detections[0]["bbox"]) > 0
    masks = _detection_masks(fn, detections, gt, iou_type) if iou_type == "segm" or not boxes_given else None
    boxes = None
    if boxes_given or iou_type == "bbox":
        boxes = _detection_boxes(fn, detections, None if boxes_given else masks)
    area = boxes[:, 2] * boxes[:, 3] if boxes_given else _mask_areas(masks)
    return _Instances(
        image_index=image_index,
        category_index=category_index,
        area=area.reshape(-1),
        regions=masks if iou_type == "segm" else boxes,
        ids=np.arange(len(detections), dtype=np.int64),
        score=score,
    )


def _mask_areas(masks: list[dict]) -> np.ndarray:
    """float64 [N]: pixel count of each RLE mask."""
    # pycocotools.mask.area sizes its output with a uint8 (OverflowError past 255 masks on NumPy 2),
    # so ask in chunks.
    chunks = [mask_utils.area(masks[i : i + 255]) for i in range(0, len(masks), 255)]
    return np.concatenate(chunks).astype(np.float64) if chunks else np.zeros(0)


def _is_compressed_rle(segmentation) -> bool:
    # type() first: isinstance against the Mapping ABC is slow, and this runs once per detection.
    return (type(segmentation) is dict or isinstance(segmentation, Mapping)) and type(
        segmentation.get("counts")) in (str, bytes)


def _detection_masks(fn: str, detections: Sequence, gt: _GroundTruth, iou_type: str) -> list[dict]:
    """Compressed RLE of each detection; polygons and uncompressed RLE are converted."""
    masks = _column(fn, detections, "segmentation", hint=(
        "iou_type='segm' needs masks" if iou_type == "segm" else "without a 'bbox' it is the box's source"))
    compressed = []
    for i, segmentation in enumerate(masks):
        if not _is_compressed_rle(segmentation):
            where = f"detections[{i}]"
            image_size = _image_size(fn, gt.image_sizes, detections[i]["image_id"], where)
            masks[i] = _to_rle(fn, where, segmentation, image_size)
        else:
            compressed.append(i)
    _check_compressed_rles(fn, [f"detections[{i}]['segmentation']" for i in compressed], [masks[i] for i in compressed])
    return masks


def _detection_boxes(fn: str, detections: Sequence, segmentations: list | None) -> np.ndarray:
    """[D, 4] float64 boxes (x, y, w, h): given ones, else the masks' bounding boxes (as COCO.loadRes)."""
    if segmentations is None:
        boxes = _column(fn, detections, "bbox", hint="the first detection has one, so COCO takes every "
                        "detection's area from its box")
    elif not any("bbox" in d for d in detections):
        return np.asarray(mask_utils.toBbox(segmentations), dtype=np.float64).reshape(-1, 4)
    else:
        boxes = [d["bbox"] if "bbox" in d else mask_utils.toBbox(segmentations[i]).tolist()
                 for i, d in enumerate(detections)]
    try:
        boxes = np.asarray(boxes, dtype=np.float64).reshape(len(detections), 4)
    except (TypeError, ValueError):
        raise ValueError(f"{fn}: each detection's 'bbox' must be [x, y, width, height]") from None
    bad = np.flatnonzero(~np.isfinite(boxes).all(axis=1) | (boxes[:, 2] < 0) | (boxes[:, 3] < 0))
    if bad.size:
        raise ValueError(f"{fn}: detections[{bad[0]}]['bbox'] must be [x, y, width, height], finite with width and "
                         f"height >= 0, got {boxes[bad[0]].tolist()}")
    return boxes


def _check_options(fn: str, iou_type: str, area_ranges, max_dets: int) -> dict:
    """Validate the shared options; returns the area ranges as an ordered dict name -> (lo, hi)."""
    check_choice(fn, "iou_type", iou_type, _IOU_TYPES)
    check_int(fn, "max_dets", max_dets, minimum=10)
    if area_ranges is None:
        return dict(COCO_AREA_RANGES)
    if not isinstance(area_ranges, Mapping):
        raise TypeError(f"{fn}: area_ranges must be a dict name -> (low, high), got {describe(area_ranges)}")
    missing = [name for name in _AREA_NAMES if name not in area_ranges]
    if missing:
        raise ValueError(f"{fn}: area_ranges must have the keys {list(_AREA_NAMES)}, missing {missing}")
    ranges = {}
    for name, bounds in area_ranges.items():
        if not (isinstance(bounds, Sequence) and len(bounds) == 2 and all(isinstance(b, (int, float)) for b in bounds)):
            raise ValueError(
                f"{fn}: area_ranges[{name!r}] must be a pair (low, high) of numbers, got {describe(bounds)}"
            )
        if math.isnan(bounds[0]) or math.isnan(bounds[1]):  # inf is fine (an open-ended range); NaN is no bound
            raise ValueError(f"{fn}: area_ranges[{name!r}] must be numbers, not NaN, got {tuple(bounds)}")
        if bounds[0] > bounds[1]:
            raise ValueError(f"{fn}: area_ranges[{name!r}] must have low <= high, got {tuple(bounds)}")
        ranges[name] = (bounds[0], bounds[1])
    return ranges


# ----------------------------------------------------------------------------------------------
# Steps 1 and 2: IoU and greedy matching, per image and category
# ----------------------------------------------------------------------------------------------


def _outside(area: np.ndarray, area_ranges: np.ndarray) -> np.ndarray:
    """bool [A, N]: area outside each [lo, hi] range (both ends inclusive, as COCOeval)."""
    return (area[None, :] < area_ranges[:, :1]) | (area[None, :] > area_ranges[:, 1:])


def greedy_match(
    ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, iou_thresholds: np.ndarray
) -> np.ndarray:
    """Match detections to ground truth in score order, at every area range and threshold at once.

    COCO's matching step for one image and category, as :func:`average_precision` runs it: going down
    the detections by score, each takes the free object it overlaps most, at or above the threshold,
    preferring objects that are not ignored; a crowd region can be taken any number of times.

    Args:
        ious (ndarray[D, G], float64): detections sorted by decreasing score.
        gt_ignore (ndarray[A, G], bool): ground truth ignored at each area range (crowd or outside).
        gt_crowd (ndarray[G], bool): crowd regions, which may be matched any number of times.
        iou_thresholds (ndarray[T], float64).

    Returns:
        ndarray[A, T, D] (int64): index of the matched ground truth, -1 for none.
    """
    _check_match_inputs(ious, gt_ignore, gt_crowd, iou_thresholds)
    num_dets, num_gts = ious.shape
    num_areas = gt_ignore.shape[0]
    thresholds = np.minimum(iou_thresholds, 1 - 1e-10)[:, None]  # (T, 1), as COCOeval
    if (np.count_nonzero(ious >= thresholds.min(), axis=1) <= 1).all():
        # The common case: no detection has a choice to make.
        matched = _match_unambiguous(ious, gt_crowd, thresholds)  # (T, D)
        return np.repeat(matched[None], num_areas, axis=0)
    matched = np.full((num_areas, len(thresholds), num_dets), -1, dtype=np.int64)
    taken = np.zeros((num_areas, len(thresholds), num_gts), dtype=bool)  # (A, T, G)
    regular = ~gt_ignore[:, None, :]  # (A, 1, G)
    # The order matters (an earlier detection takes the object), so this loop over detections
    # stays; those below the lowest threshold everywhere match nothing and are skipped.
    for d in np.flatnonzero(ious.max(axis=1, initial=-1.0) >= thresholds.min()):
        free = (ious[d] >= thresholds) & ~taken  # (A, T, G)
        # COCOeval visits regular objects before ignored ones, and stops at the first ignored one
        # once it holds a regular match: an ignored object is taken only when no regular one fits.
        free_regular = free & regular
        candidates = np.where(free_regular.any(axis=2, keepdims=True), free_regular, free)
        # Highest IoU wins; on a tie the later object, as COCOeval's `if iou < best: continue`.
        iou_or_minus_one = np.where(candidates, ious[d], -1.0)  # (A, T, G)
        best = num_gts - 1 - iou_or_minus_one[..., ::-1].argmax(axis=2)  # (A, T)
        found = candidates.any(axis=2)  # (A, T)
        matched[:, :, d] = np.where(found, best, -1)
        a, t = np.nonzero(found)
        taken[a, t, best[a, t]] = ~gt_crowd[best[a, t]]
    return matched


def _check_match_inputs(ious, gt_ignore, gt_crowd, iou_thresholds) -> None:
    """Shapes only (O(1)): greedy_match runs once per image and category inside average_precision."""
    shapes = tuple(np.shape(x) for x in (ious, gt_ignore, gt_crowd, iou_thresholds))
    if (len(shapes[0]) != 2 or len(shapes[1]) != 2 or shapes[1][1] != shapes[0][1]
            or shapes[2] != shapes[0][1:] or len(shapes[3]) != 1):
        raise ValueError(f"greedy_match: expected ious [D, G], gt_ignore [A, G], gt_crowd [G] and "
                         f"iou_thresholds [T], got shapes {shapes}")


def _match_unambiguous(ious: np.ndarray, gt_crowd: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """:func:`greedy_match` when each detection reaches the lowest threshold with one object at most.

    Then nothing is chosen: each object goes to the first detection (by score) over the threshold,
    or, for a crowd region, to every such detection; area ranges and ignore flags play no part.

    Returns:
        ndarray[T, D] (int64): index of the matched ground truth, -1 for none.
    """
    over = ious[None, :, :] >= thresholds[:, :, None]  # (T, D, G)
    first = over & (np.cumsum(over, axis=1) == 1)  # the first detection over the threshold, per object
    claims = np.where(gt_crowd, over, first)  # (T, D, G), one True per detection at most
    return np.where(claims.any(axis=2), claims.argmax(axis=2), -1)


def _group_starts(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values of a sorted array and the [start, end) of each run."""
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], keys.size]
    return keys[starts], starts, ends


def _evaluate_images(fn: str, gt: _GroundTruth, dets: _Instances, area_ranges: np.ndarray, max_dets: int,
                     iou_thresholds: np.ndarray) -> dict:
    """Per-detection results for every image and category: the part COCOeval.evaluate does.

    Returns a dict of arrays over the kept detections, in (image, category, score rank) order:
    ``index`` into ``dets``, ``rank`` within its image and category, ``matched`` (int64 [A, T, D],
    gt index or -1), ``ignored`` (bool [A, T, D]) and ``best_iou`` (float64 [D]); and ``gt_ignore``
    (bool [A, G]).
    """
    num_categories = len(gt.category_ids)
    objects = gt.objects
    gt_ignore = objects.crowd[None, :] | _outside(objects.area, area_ranges)  # (A, G)

    # Detections sorted by (image, category), then by decreasing score. Stable sorts keep the input
    # order on ties, as COCOeval's mergesort does.
    det_key = dets.image_index * num_categories + dets.category_index
    order = np.argsort(-dets.score, kind="stable")
    order = order[np.argsort(det_key[order], kind="stable")]
    det_keys, det_starts, det_ends = _group_starts(det_key[order])
    rank = np.arange(order.size) - np.repeat(det_starts, det_ends - det_starts)
    keep = rank < max_dets  # each image and category keeps its max_dets best
    order, rank = order[keep], rank[keep]
    det_keys, det_starts, det_ends = _group_starts(det_key[order])

    gt_key = objects.image_index * num_categories + objects.category_index
    gt_order = np.argsort(gt_key, kind="stable")  # data set order within a group
    gt_keys, gt_starts, gt_ends = _group_starts(gt_key[gt_order])
    gt_group = dict(zip(gt_keys.tolist(), zip(gt_starts.tolist(), gt_ends.tolist())))

    num_areas, num_thresholds = len(area_ranges), len(iou_thresholds)
    matched = np.full((num_areas, num_thresholds, order.size), -1, dtype=np.int64)
    best_iou = np.zeros(order.size)
    for key, start, end in zip(det_keys.tolist(), det_starts.tolist(), det_ends.tolist()):
        if key not in gt_group:
            continue  # no ground truth: every detection is a false positive
        gt_start, gt_end = gt_group[key]
        g = gt_order[gt_start:gt_end]
        d = order[start:end]
        if isinstance(dets.regions, list):  # RLE masks
            det_regions = [dets.regions[i] for i in d]
            gt_regions = [objects.regions[i] for i in g]
        else:  # [x, y, w, h] boxes
            det_regions, gt_regions = dets.regions[d], objects.regions[g]
        ious = np.asarray(mask_utils.iou(det_regions, gt_regions, objects.crowd[g].astype(np.uint8)))  # (D, G)
        if ious.min() < 0:  # pycocotools' answer for masks of different sizes
            i, j = np.argwhere(ious < 0)[0]
            raise ValueError(
                f"{fn}: detections[{dets.ids[d[i]]}] has a mask of size {list(det_regions[i]['size'])}, "
                f"but ground-truth annotation {objects.ids[g[j]]} of image {gt.image_ids[dets.image_index[d[i]]]} "
                f"has size {list(gt_regions[j]['size'])}"
            )
        best_iou[start:end] = ious.max(axis=1)
        local = greedy_match(ious, gt_ignore[:, g], objects.crowd[g], iou_thresholds)  # (A, T, D)
        matched[:, :, start:end] = np.where(local >= 0, g[local.clip(min=0)], -1)

    # A detection matched to ignored ground truth is ignored; so is an unmatched one outside the range.
    det_outside = _outside(dets.area[order], area_ranges)[:, None, :]  # (A, 1, D)
    ignored = det_outside | np.zeros(matched.shape, dtype=bool)  # (A, T, D)
    if objects.ids.size:
        matched_ignored = np.take_along_axis(gt_ignore[:, None, :], matched.clip(min=0), axis=2)  # (A, T, D)
        ignored = np.where(matched >= 0, matched_ignored, ignored)
    return {"index": order, "rank": rank, "matched": matched, "ignored": ignored, "best_iou": best_iou,
            "gt_ignore": gt_ignore}


# ----------------------------------------------------------------------------------------------
# Steps 3 and 4: precision-recall curves and their averages
# ----------------------------------------------------------------------------------------------


def interpolated_precision(tp_sum: np.ndarray, fp_sum: np.ndarray, num_positives: np.ndarray,
                           sorted_scores: np.ndarray, recall_thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Precision at each recall point, from running true/false positive counts: COCO's 101-point
    interpolation, as :func:`average_precision` computes it.

    After each detection (by decreasing score) precision is TP / (TP + FP) and recall TP / positives; the
    envelope makes precision non-increasing from the right (the best precision at this recall or any higher
    one), and it is read at each recall threshold at the first detection whose recall reaches it.

    Args:
        tp_sum, fp_sum (ndarray[D, ...], float64): counts after each detection, by decreasing
            score (one curve per trailing index, e.g. per area range and IoU threshold).
        num_positives (ndarray[...]): ground-truth objects that are not ignored (> 0).
        sorted_scores (ndarray[D], float64).
        recall_thresholds (ndarray[R], float64).

    Returns:
        precision (ndarray[..., R]), recall (ndarray[...]: the final recall), scores
        (ndarray[..., R]: the score at which each recall point is reached); 0 past the highest
        recall reached.
    """
    if tp_sum.shape != fp_sum.shape or tp_sum.shape[:1] != np.shape(sorted_scores):
        raise ValueError(f"interpolated_precision: tp_sum and fp_sum must have one row per score, got shapes "
                         f"{tp_sum.shape}, {fp_sum.shape} and {np.shape(sorted_scores)}")
    num_dets, curves = tp_sum.shape[0], tp_sum.shape[1:]
    recall = tp_sum / num_positives  # (D, ...)
    precision = tp_sum / (fp_sum + tp_sum + np.spacing(1))  # (D, ...)
    # The envelope: the best precision at this recall or any higher one.
    precision = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    interpolated = np.zeros(curves + recall_thresholds.shape)
    scores = np.zeros(curves + recall_thresholds.shape)
    for curve in np.ndindex(curves):
        # First detection whose recall reaches each recall point; none past the final recall.
        first = np.searchsorted(recall[(slice(None),) + curve], recall_thresholds, side="left")
        reached = first < num_dets
        interpolated[curve][reached] = precision[(first[reached],) + curve]
        scores[curve][reached] = sorted_scores[first[reached]]
    final_recall = recall[-1] if num_dets else np.zeros(curves)
    return interpolated, final_recall, scores


def _accumulate(gt: _GroundTruth, dets: _Instances, per_det: dict, max_dets_list: list[int],
                recall_thresholds: np.ndarray) -> dict:
    """Precision [T, R, K, A, M], recall [T, K, A, M] and scores [T, R, K, A, M]; -1 where a
    category has no ground truth that is not ignored (COCOeval.accumulate)."""
    num_areas, num_thresholds, _ = per_det["matched"].shape
    shape = (num_thresholds, len(recall_thresholds), len(gt.category_ids), num_areas, len(max_dets_list))
    precision, scores = -np.ones(shape), -np.ones(shape)
    recall = -np.ones((num_thresholds, len(gt.category_ids), num_areas, len(max_dets_list)))

    det_category = dets.category_index[per_det["index"]]
    det_score = dets.score[per_det["index"]]
    # Detections first, so that taking a subset of them copies whole rows.
    matched = np.moveaxis(per_det["matched"] >= 0, 2, 0)  # (D, A, T)
    counted = ~np.moveaxis(per_det["ignored"], 2, 0)
    true_positive = np.ascontiguousarray(matched & counted)
    false_positive = np.ascontiguousarray(~matched & counted)
    # Non-ignored ground truth per category and area range.
    num_positives = np.zeros((len(gt.category_ids), num_areas), dtype=np.int64)
    np.add.at(num_positives, gt.objects.category_index, (~per_det["gt_ignore"]).T.astype(np.int64))

    for k in range(len(gt.category_ids)):
        areas = np.flatnonzero(num_positives[k] > 0)  # the others stay -1
        # Detections of category k in (image, rank) order, then sorted by score: ties keep that
        # order, as COCOeval's mergesort over images concatenated in id order.
        of_k = np.flatnonzero(det_category == k)
        of_k = of_k[np.argsort(-det_score[of_k], kind="stable")]
        for m, max_det in enumerate(max_dets_list):
            d = of_k[per_det["rank"][of_k] < max_det]
            tp_sum = np.cumsum(true_positive[d][:, areas], axis=0).astype(np.float64)  # (D, A', T)
            fp_sum = np.cumsum(false_positive[d][:, areas], axis=0).astype(np.float64)
            p, r, s = interpolated_precision(tp_sum, fp_sum, num_positives[k, areas][:, None], det_score[d],
                                              recall_thresholds)  # (A', T, R), (A', T), (A', T, R)
            precision[:, :, k, areas, m] = p.transpose(1, 2, 0)
            recall[:, k, areas, m] = r.T
            scores[:, :, k, areas, m] = s.transpose(1, 2, 0)
    return {"precision": precision, "recall": recall, "scores": scores}


def _mean_defined(values: np.ndarray) -> float:
    """Mean over the entries that are not -1 (undefined); -1 when there are none."""
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _summary(precision: np.ndarray, area_names: list[str], iou_thresholds: np.ndarray) -> dict:
    """AP, AP50, AP75, APs, APm, APl from precision [T, R, K, A, M], at the last (largest) max_dets."""
    all_ = area_names.index("all")
    at_iou = {iou: np.flatnonzero(iou_thresholds == iou) for iou in (0.5, 0.75)}
    return {
        "AP": _mean_defined(precision[:, :, :, all_, -1]),
        "AP50": _mean_defined(precision[at_iou[0.5]][:, :, :, all_, -1]),
        "AP75": _mean_defined(precision[at_iou[0.75]][:, :, :, all_, -1]),
        "APs": _mean_defined(precision[:, :, :, area_names.index("small"), -1]),
        "APm": _mean_defined(precision[:, :, :, area_names.index("medium"), -1]),
        "APl": _mean_defined(precision[:, :, :, area_names.index("large"), -1]),
    }


def average_precision(coco_gt, detections: Sequence[dict], iou_type: str = "segm",
                      area_ranges: Mapping[str, tuple[float, float]] | None = None, max_dets: int = 100) -> dict:
    """COCO average precision, computed from scratch (see the module docstring for the steps).

    Args:
        coco_gt: ground truth as a COCO-format dict (images, annotations, categories), the path of
            such a JSON file, or a ``pycocotools.coco.COCO``. Annotations need ``id``,
            ``image_id``, ``category_id``, ``area``, ``segmentation`` (segm) or ``bbox`` (bbox);
            ``iscrowd`` defaults to 0.
        detections: COCO results: dicts with ``image_id``, ``category_id``, ``score`` and
            ``segmentation`` (RLE, counts str or bytes, or polygons; needed for segm) and/or
            ``bbox`` [x, y, w, h]. May be empty.
        iou_type: ``"segm"`` (mask IoU) or ``"bbox"`` (box IoU).
        area_ranges: dict name -> (low, high) pixel areas with at least the keys all, small,
            medium, large; default :data:`COCO_AREA_RANGES`. The A axis follows its order.
        max_dets: detections kept per image and category (>= 10); the M axis is [1, 10, max_dets].

    Returns:
        dict with
        ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (float in [0, 1], -1 if undefined:
        no ground truth in that area range), as COCOeval.stats[:6];
        ``precision`` (ndarray[T, R, K, A, M]), ``recall`` (ndarray[T, K, A, M]), ``scores``
        (ndarray[T, R, K, A, M]) as COCOeval.eval, -1 where undefined;
        ``iou_thresholds`` [T=10], ``recall_thresholds`` [R=101], ``category_ids`` [K],
        ``area_ranges`` (dict), ``max_dets`` ([1, 10, max_dets]);
        ``matches``: per kept detection (area range "all"), a dict of arrays ``image_id``,
        ``category_id``, ``score``, ``detection_index`` (position in ``detections``), ``iou``
        (best IoU with same-category ground truth), ``gt_id`` (int64 [D, T], matched annotation id
        or 0) and ``ignored`` (bool [D, T]), by image, category and decreasing score;
        ``gt_matches``: per ground-truth annotation, ``image_id``, ``category_id``, ``gt_id``,
        ``ignored`` (bool [G], crowd or outside the "all" range) and ``detection_index``
        (int64 [G, T], the detection that matched it, -1 for none: a miss).
    """
    fn = "average_precision"
    ranges = _check_options(fn, iou_type, area_ranges, max_dets)
    gt = _load_ground_truth(fn, coco_gt, iou_type)
    dets = _load_detections(fn, detections, gt, iou_type)
    area_array = np.asarray(list(ranges.values()), dtype=np.float64).reshape(-1, 2)
    max_dets_list = [1, 10, max_dets]

    per_det = _evaluate_images(fn, gt, dets, area_array, max_dets, IOU_THRESHOLDS)
    curves = _accumulate(gt, dets, per_det, max_dets_list, RECALL_THRESHOLDS)
    result = _summary(curves["precision"], list(ranges), IOU_THRESHOLDS)
    result.update(curves)
    result.update(
        iou_thresholds=IOU_THRESHOLDS.copy(),
        recall_thresholds=RECALL_THRESHOLDS.copy(),
        category_ids=gt.category_ids,
        area_ranges=ranges,
        max_dets=max_dets_list,
    )
    result.update(_match_tables(gt, dets, per_det, list(ranges).index("all")))
    return result


def _match_tables(gt: _GroundTruth, dets: _Instances, per_det: dict, area: int) -> dict:
    """Who matched whom, at one area range, for drawing (see :func:`average_precision`)."""
    index = per_det["index"]
    matched = per_det["matched"][area].T  # (D, T)
    gt_ids = np.where(matched >= 0, gt.objects.ids[matched.clip(min=0)] if gt.objects.ids.size else 0, 0)
    detection_of_gt = np.full((gt.objects.ids.size, matched.shape[1]), -1, dtype=np.int64)  # (G, T)
    d, t = np.nonzero(matched >= 0)
    detection_of_gt[matched[d, t], t] = dets.ids[index[d]]
    return {
        "matches": {
            "image_id": gt.image_ids[dets.image_index[index]],
            "category_id": gt.category_ids[dets.category_index[index]],
            "score": dets.score[index],
            "detection_index": dets.ids[index],
            "iou": per_det["best_iou"],
            "gt_id": gt_ids,
            "ignored": per_det["ignored"][area].T.copy(),
        },
        "gt_matches": {
            "image_id": gt.image_ids[gt.objects.image_index],
            "category_id": gt.category_ids[gt.objects.category_index],
            "gt_id": gt.objects.ids,
            "ignored": per_det["gt_ignore"][area].copy(),
            "detection_index": detection_of_gt,
        },
    }


# ----------------------------------------------------------------------------------------------
# The reference, and model outputs as COCO results
# ----------------------------------------------------------------------------------------------


def coco_evaluate(coco_gt, detections: Sequence[dict], iou_type: str = "segm",
                  area_ranges: Mapping[str, tuple[float, float]] | None = None, max_dets: int = 100) -> dict:
    """The same numbers as :func:`average_precision`, from ``pycocotools.cocoeval.COCOeval``.

    Runs evaluate, accumulate and summarize with COCOeval's printing silenced, on copies (COCOeval
    rewrites annotations in place). Beyond COCOeval itself: an empty ``detections`` list gives
    AP 0 (COCO.loadRes raises on it), polygon detections are rasterised first (loadRes cannot
    take their area), and a missing ``iscrowd`` means 0.

    Args: as :func:`average_precision`.

    Returns:
        dict with ``AP``, ``AP50``, ``AP75``, ``APs``, ``APm``, ``APl`` (floats; from
        COCOeval.stats, except AP when ``max_dets`` != 100, where COCOeval's summary looks for
        maxDets=100 and prints -1), ``precision``, ``recall``, ``scores``, ``stats``.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    fn = "coco_evaluate"
    ranges = _check_options(fn, iou_type, area_ranges, max_dets)
    gt = _load_ground_truth(fn, coco_gt, iou_type)
    _load_detections(fn, detections, gt, iou_type)  # the same input checks as average_precision
    dataset = copy.deepcopy(dict(_load_dataset(fn, coco_gt)))
    dataset.setdefault("annotations", [])
    for ann in dataset["annotations"]:
        ann.setdefault("iscrowd", 0)
    results = copy.deepcopy(list(detections))
    for i, det in enumerate(results):
        if "segmentation" in det and not _is_compressed_rle(det["segmentation"]):
            det["segmentation"] = _to_rle(fn, f"detections[{i}]", det["segmentation"],
                                       _image_size(fn, gt.image_sizes, det["image_id"], f"detections[{i}]"))

    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = dataset
        coco.createIndex()
        if results:
            coco_dt = coco.loadRes(results)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {"images": dataset["images"], "categories": dataset["categories"], "annotations": []}
            coco_dt.createIndex()
        evaluator = COCOeval(coco, coco_dt, iouType=iou_type)
        evaluator.params.areaRng = [list(r) for r in ranges.values()]
        evaluator.params.areaRngLbl = list(ranges)
        evaluator.params.maxDets = [1, 10, max_dets]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    result = dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"), map(float, stats[:6])))
    if max_dets != 100:
        result["AP"] = _mean_defined(evaluator.eval["precision"][:, :, :, list(ranges).index("all"), -1])
    result.update(precision=evaluator.eval["precision"], recall=evaluator.eval["recall"],
                  scores=evaluator.eval["scores"], stats=stats)
    return result


def detections_from_predictions(predictions: Sequence[dict], image_ids: Sequence[int],
                                score_threshold: float = 0.0) -> list[dict]:
    """Turn torchvision-style detection outputs into a COCO results list.

    Args:
        predictions: one dict per image, as ``MaskRCNN`` returns in eval mode: ``boxes``
            (Tensor[N, 4], float, x1 y1 x2 y2), ``labels`` (Tensor[N], int64, used as COCO
            category ids), ``scores`` (Tensor[N], float) and optionally ``masks``
            (Tensor[N, 1, H, W] or [N, H, W]: float probabilities, kept where > 0.5, or bool).
        image_ids: the COCO image id of each prediction (a list, Tensor or array).
        score_threshold: keep detections with score >= this.

    Returns:
        list of dicts with ``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h] and,
        given masks, ``segmentation`` (compressed RLE, counts as str so that it fits in JSON).
    """
    fn = "detections_from_predictions"
    if not isinstance(predictions, Sequence):
        raise TypeError(f"{fn}: predictions must be a list of dicts, got {describe(predictions)}")
    if isinstance(image_ids, (Tensor, np.ndarray)):
        image_ids = image_ids.tolist()
    if not isinstance(image_ids, Sequence) or len(image_ids) != len(predictions):
        raise ValueError(f"{fn}: image_ids must be a list with one id per prediction ({len(predictions)}), "
                         f"got {describe(image_ids)}")
    check_finite(fn, "score_threshold", score_threshold)  # a NaN threshold would keep nothing
    results = []
    for i, (prediction, image_id) in enumerate(zip(predictions, image_ids)):
        _require(fn, f"predictions[{i}]", prediction, ("boxes", "labels", "scores"))
        boxes, labels, scores = prediction["boxes"], prediction["labels"], prediction["scores"]
        for name, x in (("boxes", boxes), ("labels", labels), ("scores", scores)):
            if not isinstance(x, Tensor):
                raise TypeError(f"{fn}: predictions[{i}]['{name}'] must be a torch.Tensor, got {describe(x)}")
        if boxes.ndim != 2 or boxes.shape[1] != 4 or labels.shape != (len(boxes),) or scores.shape != (len(boxes),):
            raise ValueError(f"{fn}: predictions[{i}] must hold boxes [N, 4], labels [N] and scores [N], got "
                             f"{tuple(boxes.shape)}, {tuple(labels.shape)} and {tuple(scores.shape)}")
        for name, x in (("boxes", boxes), ("scores", scores)):
            # A NaN score fails every threshold test: the detection would vanish without a word.
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{fn}: predictions[{i}]['{name}'] must be finite, got {describe(x)} holding "
                                 f"{x[~torch.isfinite(x)].flatten()[0].item()}")
        keep = scores >= score_threshold
        boxes, labels, scores = boxes[keep].detach().cpu(), labels[keep].cpu(), scores[keep].detach().cpu()
        xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1).double()  # (N, 4)
        rles = None
        if "masks" in prediction:
            rles = _encode_masks(fn, f"predictions[{i}]['masks']", prediction["masks"], keep)
        for j, (box, label, score) in enumerate(zip(xywh.tolist(), labels.tolist(), scores.tolist())):
            det = {"image_id": int(image_id), "category_id": int(label), "score": float(score), "bbox": box}
            if rles is not None:
                det["segmentation"] = rles[j]
            results.append(det)
    return results


def _encode_masks(fn: str, where: str, masks, keep: Tensor) -> list[dict]:
    """Compressed RLEs (counts as str) of the kept masks."""
    if not isinstance(masks, Tensor):
        raise TypeError(f"{fn}: {where} must be a torch.Tensor, got {describe(masks)}")
    if masks.ndim == 4 and masks.shape[1] == 1:
        masks = masks[:, 0]
    if masks.ndim != 3 or masks.shape[0] != keep.shape[0]:
        raise ValueError(
            f"{fn}: {where} must be Tensor[N, 1, H, W] or [N, H, W] with N = len(boxes), got {describe(masks)}"
        )
    masks = masks[keep.to(masks.device)]
    return encode_masks(masks if masks.dtype == torch.bool else masks > 0.5)
