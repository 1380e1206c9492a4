"""Metrics: the confusion matrix and the FCN paper's four scores, mask and box IoU, COCO AP.

- :mod:`.confusion`: :func:`confusion_matrix`, :class:`ConfusionMatrix`, :func:`segmentation_scores`
  (pixel accuracy, mean accuracy, mean IU, frequency weighted IU), :func:`pair_counts` (its counting step).
- :mod:`.iou`: :func:`mask_iou`, :func:`box_iou`.
- :mod:`.coco`: :func:`average_precision` (COCO AP written out with NumPy), :func:`coco_evaluate`
  (the same numbers from pycocotools' COCOeval), :func:`detections_from_predictions`; its steps
  :func:`greedy_match` (matching) and :func:`interpolated_precision` (the 101-point curve).
"""
from .coco import (
    COCO_AREA_RANGES,
    IOU_THRESHOLDS,
    RECALL_THRESHOLDS,
    average_precision,
    coco_evaluate,
    decode_segmentation,
    greedy_match,
    interpolated_precision,
    encode_masks,
    detections_from_predictions,
)
from .confusion import ConfusionMatrix, confusion_matrix, pair_counts, segmentation_scores
from .iou import box_iou, mask_iou

__all__ = [
    "confusion_matrix",
    "ConfusionMatrix",
    "segmentation_scores",
    "pair_counts",
    "mask_iou",
    "box_iou",
    "average_precision",
    "coco_evaluate",
    "greedy_match",
    "interpolated_precision",
    "decode_segmentation",
    "encode_masks",
    "detections_from_predictions",
    "COCO_AREA_RANGES",
    "IOU_THRESHOLDS",
    "RECALL_THRESHOLDS",
]
