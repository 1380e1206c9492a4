"""Synthetic instance-segmentation cases for testing and benchmarking COCO AP (private).

Ground truth: random rectangles and ellipses with random categories, as a COCO-format dict with
RLE masks. Detections: perturbed copies of the ground truth (shifted, resized, sometimes with the
wrong category) plus random false positives, as a COCO results list. Everything is drawn from one
``numpy.random.Generator`` seeded by ``seed``.
"""
from __future__ import annotations

import numpy as np
import pycocotools.mask as mask_utils

from .coco import encode_masks

__all__ = ["synthetic_instances"]


def _draw(shape: str, cx: float, cy: float, rx: float, ry: float, out: np.ndarray) -> None:
    """Set the pixels of a filled rectangle or ellipse (centre (cx, cy), half-sizes (rx, ry)) in out [H, W]."""
    height, width = out.shape
    # Only the pixels of the bounding box can be inside.
    x0, x1 = max(int(cx - rx), 0), min(int(np.ceil(cx + rx)) + 1, width)
    y0, y1 = max(int(cy - ry), 0), min(int(np.ceil(cy + ry)) + 1, height)
    if x0 >= x1 or y0 >= y1:
        return
    xx = np.arange(x0, x1)[None, :] + 0.5 - cx  # pixel centres relative to the centre
    yy = np.arange(y0, y1)[:, None] + 0.5 - cy
    if shape == "rectangle":
        out[y0:y1, x0:x1] = (np.abs(xx) <= rx) & (np.abs(yy) <= ry)
    else:
        out[y0:y1, x0:x1] = (xx / rx) ** 2 + (yy / ry) ** 2 <= 1.0


def _half_sizes(rng: np.random.Generator, image_size: int) -> tuple[float, float]:
    """Half-width and half-height: scale log-uniform in [1, 0.6 * size] (small to large objects), aspect 1:2 to 2:1."""
    scale = np.exp(rng.uniform(0.0, np.log(0.6 * image_size)))
    aspect = np.exp(rng.uniform(-np.log(2), np.log(2)))
    return scale * np.sqrt(aspect), scale / np.sqrt(aspect)


def _encode(shapes: list[tuple], size: int) -> tuple[list[dict], np.ndarray]:
    """Compressed RLEs of the shapes (counts as str, as a JSON file holds them) and their areas."""
    masks = np.zeros((len(shapes), size, size), dtype=np.uint8)
    for i, shape in enumerate(shapes):
        _draw(*shape, out=masks[i])
    return encode_masks(masks), masks.sum(axis=(1, 2))


def synthetic_instances(
    num_images: int = 20,
    image_size: int = 64,
    num_categories: int = 3,
    detections_per_image: int = 20,
    *,
    max_objects: int = 6,
    crowd_fraction: float = 0.0,
    empty_image_fraction: float = 0.1,
    score_decimals: int | None = None,
    shuffle: bool = True,
    seed: int = 0,
) -> tuple[dict, list[dict]]:
    """A ground-truth dict and a detections list over the same images.

    Args:
        num_images: images, with ids 1..num_images.
        image_size: images are image_size x image_size pixels.
        num_categories: categories, with ids 1..num_categories.
        detections_per_image: detections per image (true-positive candidates first, then false
            positives up to this number; more when the objects alone need more).
        max_objects: objects per image, drawn from 1..max_objects.
        crowd_fraction: probability that an object is a crowd region.
        empty_image_fraction: probability that an image has no annotations.
        score_decimals: round scores to this many decimals (to create ties); None keeps them.
        shuffle: shuffle the detections list (else grouped by image).
        seed: seed of the generator.

    Returns:
        (coco_gt, detections): a COCO-format dict and a COCO results list (segmentation as RLE
        with str counts, bbox [x, y, w, h], score).
    """
    rng = np.random.default_rng(seed)
    images, annotations, detections = [], [], []
    shapes = ("rectangle", "ellipse")
    for image_id in range(1, num_images + 1):
        images.append({"id": image_id, "height": image_size, "width": image_size, "file_name": f"{image_id}.png"})
        num_objects = 0 if rng.random() < empty_image_fraction else int(rng.integers(1, max_objects + 1))
        objects = []
        for _ in range(num_objects):
            rx, ry = _half_sizes(rng, image_size)
            cx, cy = rng.uniform(0, image_size, size=2)
            objects.append((shapes[rng.integers(2)], cx, cy, rx, ry, int(rng.integers(1, num_categories + 1))))
        rles, areas = _encode([obj[:5] for obj in objects], image_size)
        objects = [obj for obj, area in zip(objects, areas) if area > 0]  # drop shapes outside the image
        for obj, rle in zip(objects, [rle for rle, area in zip(rles, areas) if area > 0]):
            annotations.append({
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": obj[5],
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": mask_utils.toBbox(rle).tolist(),
                "iscrowd": int(rng.random() < crowd_fraction),
            })

        det_shapes, det_info = [], []
        for shape, cx, cy, rx, ry, category in objects:
            for _ in range(int(rng.integers(0, 4))):  # 0 to 3 attempts per object
                jitter = rng.uniform(0.0, 0.3)  # relative error: small jitter means a good detection
                dx, dy = rng.normal(0.0, jitter, size=2) * (rx, ry)
                sx, sy = np.exp(rng.normal(0.0, jitter, size=2))
                wrong_category = rng.random() < 0.1
                det_category = int(rng.integers(1, num_categories + 1)) if wrong_category else category
                score = float(np.clip(1.0 - jitter * 2 + rng.normal(0.0, 0.15), 0.01, 1.0))
                det_shapes.append((shape, cx + dx, cy + dy, rx * sx, ry * sy))
                det_info.append((det_category, score))
        while len(det_shapes) < detections_per_image:  # false positives, mostly with low scores
            rx, ry = _half_sizes(rng, image_size)
            cx, cy = rng.uniform(0, image_size, size=2)
            det_shapes.append((shapes[rng.integers(2)], cx, cy, rx, ry))
            det_info.append((int(rng.integers(1, num_categories + 1)), float(rng.beta(1.5, 4.0))))
        rles, _ = _encode(det_shapes, image_size)
        boxes = mask_utils.toBbox(rles).tolist() if rles else []
        for (category, score), rle, box in zip(det_info, rles, boxes):
            if score_decimals is not None:
                score = round(score, score_decimals)
            detections.append({"image_id": image_id, "category_id": category, "segmentation": rle, "bbox": box,
                               "score": score})
    if shuffle:
        detections = [detections[i] for i in rng.permutation(len(detections))]
    categories = [{"id": k, "name": f"class{k}"} for k in range(1, num_categories + 1)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections
