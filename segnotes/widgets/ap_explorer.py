"""APExplorer: detections on an image next to the data set's precision-recall curve, with the thresholds as sliders."""
from __future__ import annotations

from collections.abc import Sequence

import ipywidgets
import numpy as np

from .._checks import describe
from ..viz.compare import _new_figure, _rgba8
from ..viz.masks import instance_colors
from ..viz.pr import (
    _CROWD_COLOR,
    _CURVE_COLOR,
    _FOUND_COLOR,
    _MAX_LABELS,
    _MISSED_COLOR,
    _STATUS_COLORS,
    _check_ap_result,
    _DetectionsPlot,
    _image_layers,
    _PRCurvePlot,
    _resolve_image_id,
    _status_legend,
)
from ._base import FigureWidget
from ._static import mask_runs, png_base64

__all__ = ["APExplorer"]


class APExplorer(FigureWidget):
    """How COCO AP judges detections: matches on one image, the precision-recall curve of the whole data set.

    Left, :func:`segnotes.viz.detections_figure`'s picture: the detections scored at least the score threshold,
    green when matched at the IoU threshold, red when not, grey when ignored (a crowd region); objects found
    outlined white, missed ones blue. Right, :func:`segnotes.viz.pr_curve_figure`'s: the curve at the IoU
    threshold for one category or all, its envelope, the 101 recall points and the shaded AP; the circle is
    where the score threshold puts you. Moving the IoU threshold changes the matches and the AP; moving the
    score threshold only moves along the curve (AP does not depend on it).

    Args:
        images (list of FloatTensor[3, H, W] in [0, 1]): images to browse (a few of the evaluated ones).
        targets (list): their ground truth (torchvision target dicts or lists of COCO annotations, see
            :func:`segnotes.viz.detections_figure`).
        detections (list of dict): the COCO results list given to :func:`segnotes.metrics.average_precision`.
        ap_result (dict): what it returned (for the whole data set).
        category_names (dict, optional): id -> name.
        image_ids (list of int, optional): the images' COCO ids (default: ``target["image_id"]``).
        size: height of the figure in inches.

    Controls (names for :meth:`update`): ``image`` (index into ``images``), ``iou_threshold`` (0.5 to 0.95),
    ``score_threshold`` (0 to 1), ``category`` (a category id, or 0 for all).
    """

    def __init__(
        self,
        images: Sequence,
        targets: Sequence,
        detections: Sequence[dict],
        ap_result: dict,
        category_names: dict | None = None,
        image_ids: Sequence[int] | None = None,
        size: float = 4.2,
    ):
        fn = "APExplorer"
        _check_ap_result(fn, ap_result)
        if not isinstance(images, Sequence) or len(images) == 0:
            raise ValueError(f"{fn}: images must be a non-empty list, got {describe(images)}")
        if not isinstance(targets, Sequence) or len(targets) != len(images):
            raise ValueError(f"{fn}: targets must be a list with one entry per image ({len(images)}), "
                             f"got {describe(targets)}")
        if image_ids is not None and len(image_ids) != len(images):
            raise ValueError(f"{fn}: image_ids must have one id per image ({len(images)}), got {describe(image_ids)}")
        self.images, self.targets, self.detections = images, targets, detections
        self.ap_result, self.category_names = ap_result, category_names
        self.image_ids = [_resolve_image_id(fn, target, None if image_ids is None else image_ids[i])
                          for i, target in enumerate(targets)]
        self.figure = _new_figure(size * 2.3, size)
        ax_image, ax_curve = self.figure.subplots(1, 2, width_ratios=[1, 1.25])
        self._detections = _DetectionsPlot(ax_image, ap_result, category_names)
        self._curve = _PRCurvePlot(ax_curve, ap_result, category_names)
        _status_legend(self.figure)
        self._shown_image = None
        self._fn = fn
        thresholds = [round(float(t), 2) for t in ap_result["iou_thresholds"]]
        self._thresholds = np.asarray(thresholds)
        categories = [("all", 0)] + [
            (str(category_names.get(int(c), c)) if category_names else f"category {int(c)}", int(c))
            for c in ap_result["category_ids"]
        ]
        self.controls = {
            "image": ipywidgets.IntSlider(0, 0, len(images) - 1, description="image", continuous_update=True),
            "iou_threshold": ipywidgets.SelectionSlider(options=thresholds, value=thresholds[0],
                                                        description="IoU ≥", continuous_update=True),
            "score_threshold": ipywidgets.FloatSlider(0.5, min=0.0, max=1.0, step=0.05, description="score ≥",
                                                      continuous_update=True),
            "category": ipywidgets.Dropdown(options=categories, value=0, description="category"),
        }
        self._start(rows=[["image", "category"], ["iou_threshold", "score_threshold"]])

    def _draw(self, image: int, iou_threshold: float, score_threshold: float, category: int) -> dict:
        if image != self._shown_image:
            self._detections.set_image(self._fn, self.images[image], self.targets[image], self.detections,
                                       self.image_ids[image])
            self._shown_image = image
        t = int(np.argmin(np.abs(self._thresholds - iou_threshold)))
        counts = self._detections.draw(t, score_threshold)
        curve = self._curve.draw(t, None if category == 0 else category, score_threshold)
        return {"ap": curve["ap"], "counts": counts, "curve": curve}

    def _animated(self):
        return [*self._detections.animated(), *self._curve.animated()]

    _static_kind = "ap-explorer"
    _static_scale = 3  # the page draws the image this many times larger, so that boxes and labels are legible

    def _static_data(self) -> dict:
        # The page redoes the drawing and the curves (segnotes-widgets.js), from COCO's match table as
        # average_precision returned it: per detection its score and, at each IoU threshold, whether it
        # matched (T), did not (F) or matched a crowd region (I). Twelve images x ten thresholds x twenty-one
        # score thresholds x the categories are too many pictures to draw ahead.
        ap = self.ap_result
        matches, gt_matches = ap["matches"], ap["gt_matches"]
        gt_ids = np.asarray(matches["gt_id"])
        ignored = np.asarray(matches["ignored"])
        status = np.where(ignored, "I", np.where(gt_ids > 0, "T", "F"))  # (D, T)
        status = ["".join(row) for row in status]
        images = []
        for index, image in enumerate(self.images):
            layers = _image_layers(self._fn, ap, image, self.targets[index], self.detections, self.image_ids[index])
            images.append({
                "image_id": self.image_ids[index],
                "base": png_base64(_rgba8(layers["base"])[..., :3]),
                "detections": [
                    {"score": float(matches["score"][row]), "category": int(matches["category_id"][row]),
                     "position": int(matches["detection_index"][row]), "status": status[row],
                     "box": [float(v) for v in box], "mask": None if mask is None else mask_runs(mask)}
                    for row, mask, box in zip(layers["rows"], layers["masks"], layers["boxes"])
                ],
                "objects": [{"crowd": obj["crowd"], "matched_by": obj["matched_by"].tolist(),
                             "outline": mask_runs(obj["outline"])} for obj in layers["objects"]],
            })
        categories = []  # in ap_result's order, which the curves' colours follow
        for category_id in ap["category_ids"]:
            rows = np.nonzero(np.asarray(matches["category_id"]) == category_id)[0]
            scores = np.asarray(matches["score"], dtype=np.float64)[rows]
            order = np.argsort(-scores, kind="mergesort")  # as segnotes.viz.pr._curve: ties keep image order
            positives = int(((np.asarray(gt_matches["category_id"]) == category_id)
                             & ~np.asarray(gt_matches["ignored"])).sum())
            categories.append({"id": int(category_id), "scores": scores[order].tolist(),
                               "status": [status[row] for row in rows[order]], "num_positives": positives})
        names = {int(c): str(self.category_names.get(int(c), c)) if self.category_names else f"category {int(c)}"
                 for c in ap["category_ids"]}
        legend = {**_STATUS_COLORS, "object found": _FOUND_COLOR, "object missed": _MISSED_COLOR,
                  "crowd region": _CROWD_COLOR}
        return {
            "iou_thresholds": [round(float(t), 2) for t in ap["iou_thresholds"]],
            "recall_thresholds": np.asarray(ap["recall_thresholds"], dtype=np.float64).tolist(),
            "category_names": {str(c): name for c, name in names.items()},
            "categories": categories,
            "category_colors": _bytes(instance_colors(len(ap["category_ids"]))),
            "images": images,
            "status_colors": {name: _bytes([color])[0] for name, color in _STATUS_COLORS.items()},
            "found_color": _bytes([_FOUND_COLOR])[0],
            "missed_color": _bytes([_MISSED_COLOR])[0],
            "crowd_color": _bytes([_CROWD_COLOR])[0],
            "curve_color": _bytes([_CURVE_COLOR])[0],
            "legend": {name: _bytes([color])[0] for name, color in legend.items()},
            "max_labels": _MAX_LABELS,
            "box_scale": self._static_scale,
        }


def _bytes(colors) -> list[list[int]]:
    """RGB colours in [0, 1] -> [r, g, b] bytes, rounded as the figures round them."""
    return _rgba8(np.asarray(colors, dtype=np.float32).reshape(1, -1, 3))[0, :, :3].tolist()
