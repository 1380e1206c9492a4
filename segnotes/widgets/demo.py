"""A simulated detector, so the metrics chapter and the widgets have realistic detections before any model is trained.

It is *not* a model: it starts from the ground truth and damages it the ways real detectors go wrong, so AP has
something to measure. Later chapters repeat every check on trained models.
"""
from __future__ import annotations

import torch
from pycocotools import mask as mask_utils

from .._checks import check_int, check_positive, describe
from ..metrics.coco import decode_segmentation, encode_masks
from ..utils import num_threads
from ..viz.compare import perturb_mask

__all__ = ["simulated_detections"]


def _load(coco_gt) -> dict:
    if isinstance(coco_gt, dict):
        return coco_gt
    if hasattr(coco_gt, "dataset") and isinstance(coco_gt.dataset, dict):  # pycocotools COCO
        return coco_gt.dataset
    if isinstance(coco_gt, str) or hasattr(coco_gt, "__fspath__"):
        import json

        with open(coco_gt) as f:
            return json.load(f)
    raise TypeError(f"simulated_detections: coco_gt must be a COCO dict, a pycocotools COCO or a JSON path, "
                    f"got {describe(coco_gt)}")


def _encode(mask: torch.Tensor) -> tuple[dict, list[float]]:
    """A bool mask [H, W] -> (compressed RLE, its xywh box)."""
    rle = encode_masks(mask)[0]
    return rle, mask_utils.toBbox(rle).tolist()


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return (a & b).sum().item() / union if union else 0.0


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    return low + (high - low) * torch.rand((), generator=generator).item()


def _integer(generator: torch.Generator, low: int, high: int) -> int:
    """Uniform in [low, high], both ends included."""
    return int(torch.randint(low, high + 1, (), generator=generator))


def _blob(generator: torch.Generator, height: int, width: int) -> torch.Tensor:
    """A random ellipse or rectangle: a false positive where there is no object."""
    cy, cx = _uniform(generator, 0, height), _uniform(generator, 0, width)
    ry, rx = _uniform(generator, 3, height / 5), _uniform(generator, 3, width / 5)
    yy = torch.arange(height, dtype=torch.float64)[:, None] + 0.5 - cy
    xx = torch.arange(width, dtype=torch.float64)[None, :] + 0.5 - cx
    if _uniform(generator) < 0.5:
        return (yy / ry) ** 2 + (xx / rx) ** 2 <= 1
    return (yy.abs() <= ry) & (xx.abs() <= rx)


def simulated_detections(
    coco_gt,
    seed: int = 0,
    *,
    miss_rate: float = 0.1,
    duplicate_rate: float = 0.15,
    wrong_class_rate: float = 0.05,
    false_positives_per_image: float = 1.5,
    max_shift: int = 1,
    coarsen: tuple[int, ...] = (1, 1, 2, 4),
) -> list[dict]:
    """Detections made from the ground truth by damaging it: a stand-in for a detector while none is trained.

    For each object that is not a crowd region (drawn independently, from one ``torch.Generator`` seeded
    with ``seed``):

    - with probability ``miss_rate`` it gets no detection (a false negative);
    - otherwise one detection whose mask is :func:`segnotes.viz.perturb_mask` of the object's mask, with a
      random shift of up to ``max_shift`` pixels each way, a dilation or erosion of up to 1 pixel and a
      coarsening factor drawn from ``coarsen`` (so masks range from exact to blocky); its category is wrong
      with probability ``wrong_class_rate``; its score is 0.3 + 0.6 x (IoU with the object) + noise in
      [-0.15, 0.15], clipped to [0.01, 0.99], so better masks tend to score higher, as with a real detector;
    - with probability ``duplicate_rate`` a second, worse-placed detection of it with a lower score (COCO's
      matching counts it as a false positive).

    Each crowd region gets a detection with probability 0.5 (COCO ignores it), and each image a Poisson number
    (mean ``false_positives_per_image``) of random ellipses and rectangles of random categories with scores
    uniform in [0.05, 0.7] (false positives).

    Args:
        coco_gt: COCO ground truth (a dict, a JSON path or a pycocotools COCO) with RLE or polygon masks.
        seed: seed of the generator; the same seed gives the same detections.
        miss_rate, duplicate_rate, wrong_class_rate: probabilities in [0, 1].
        false_positives_per_image: mean number of random false positives per image.
        max_shift: largest shift in pixels.
        coarsen: coarsening factors to draw from (1 = full resolution).

    Returns:
        list of dict: COCO results (``image_id``, ``category_id``, ``score``, ``bbox`` [x, y, w, h],
        ``segmentation`` compressed RLE with counts as str), image by image.
    """
    fn = "simulated_detections"
    check_int(fn, "seed", seed, minimum=0)
    for name, value in (("miss_rate", miss_rate), ("duplicate_rate", duplicate_rate),
                        ("wrong_class_rate", wrong_class_rate)):
        check_positive(fn, name, value, allow_zero=True)
        if value > 1:
            raise ValueError(f"{fn}: {name} must be a probability in [0, 1], got {value}")
    check_positive(fn, "false_positives_per_image", false_positives_per_image, allow_zero=True)
    check_int(fn, "max_shift", max_shift, minimum=0)
    if not coarsen or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in coarsen):
        raise ValueError(f"{fn}: coarsen must be a non-empty tuple of ints >= 1, got {coarsen!r}")
    dataset = _load(coco_gt)
    # Many small tensor operations: one thread is faster (see FigureWidget._redraw); restored on exit.
    with num_threads(1):
        return _simulate(dataset, torch.Generator().manual_seed(seed), miss_rate, duplicate_rate, wrong_class_rate,
                         false_positives_per_image, max_shift, coarsen)


def _simulate(dataset: dict, generator: torch.Generator, miss_rate: float, duplicate_rate: float,
              wrong_class_rate: float, false_positives_per_image: float, max_shift: int,
              coarsen: tuple[int, ...]) -> list[dict]:
    category_ids = sorted(c["id"] for c in dataset["categories"])
    by_image: dict = {image["id"]: [] for image in dataset["images"]}
    for annotation in dataset.get("annotations", []):
        by_image.setdefault(annotation["image_id"], []).append(annotation)

    def other_category(category_id: int) -> int:
        others = [c for c in category_ids if c != category_id] or [category_id]
        return others[_integer(generator, 0, len(others) - 1)]

    def detection(image_id, category_id, mask, score) -> dict:
        rle, box = _encode(mask)
        return {"image_id": image_id, "category_id": int(category_id), "score": round(float(score), 4),
                "bbox": box, "segmentation": rle}

    results = []
    for image in dataset["images"]:
        image_id, height, width = image["id"], image["height"], image["width"]
        for annotation in by_image.get(image_id, []):
            truth = torch.from_numpy(decode_segmentation(annotation["segmentation"], height, width))
            if annotation.get("iscrowd", 0):
                if _uniform(generator) < 0.5:
                    results.append(detection(image_id, annotation["category_id"], truth, _uniform(generator, 0.3, 0.9)))
                continue
            if _uniform(generator) < miss_rate:
                continue
            shift = (_integer(generator, -max_shift, max_shift), _integer(generator, -max_shift, max_shift))
            factor = coarsen[_integer(generator, 0, len(coarsen) - 1)]
            mask = perturb_mask(truth, shift=shift, dilate=_integer(generator, -1, 1), coarsen=factor)
            if not mask.any():  # eroded or coarsened away: the detector missed it
                continue
            category_id = annotation["category_id"]
            if _uniform(generator) < wrong_class_rate:
                category_id = other_category(category_id)
            score = min(max(0.3 + 0.6 * _iou(mask, truth) + _uniform(generator, -0.15, 0.15), 0.01), 0.99)
            results.append(detection(image_id, category_id, mask, score))
            if _uniform(generator) < duplicate_rate:
                far = max(max_shift, 1) * 2
                duplicate = perturb_mask(truth, shift=(_integer(generator, -far, far), _integer(generator, -far, far)),
                                         dilate=_integer(generator, -1, 2))
                if duplicate.any():
                    results.append(detection(image_id, category_id, duplicate, score * _uniform(generator, 0.5, 0.9)))
        count = int(torch.poisson(torch.tensor(float(false_positives_per_image)), generator=generator))
        for _ in range(count):
            mask = _blob(generator, height, width)
            if mask.any():
                category_id = category_ids[_integer(generator, 0, len(category_ids) - 1)]
                results.append(detection(image_id, category_id, mask, _uniform(generator, 0.05, 0.7)))
    return results
