"""Average precision, drawn: precision-recall curves and matched detections on an image.

Both figures read the dict returned by :func:`segnotes.metrics.average_precision`: its ``precision`` array
(the 101-point interpolated curves) and its ``matches`` / ``gt_matches`` tables (which detection matched which
ground-truth object at each IoU threshold). As in :mod:`segnotes.viz.compare`, a plot class builds the artists
once and ``draw`` only updates them, so the AP explorer widget can redraw in a few milliseconds.

Colours: matched detections (true positives) green, unmatched ones (false positives) red, ignored ones (matched
to a crowd region) grey; ground truth outlined in white when found, in blue when missed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Polygon
from pycocotools import mask as mask_utils
from torch import Tensor

from .._checks import check_positive, describe
from ..metrics.coco import decode_segmentation
from .compare import OUTCOME_COLORS, _new_figure, _rgba8
from .masks import _to_numpy_image, instance_colors

__all__ = ["precision_recall_curve", "pr_curve_figure", "detections_figure"]

_CURVE_COLOR = (0.13, 0.40, 0.67)
_STATUS_COLORS = {
    "true positive": OUTCOME_COLORS["true positive"],
    "false positive": OUTCOME_COLORS["false positive"],
    "ignored": (0.6, 0.6, 0.6),
}
_FOUND_COLOR = (1.0, 1.0, 1.0)
_MISSED_COLOR = OUTCOME_COLORS["false negative"]
_CROWD_COLOR = OUTCOME_COLORS["ignored"]
_MAX_LABELS = 8  # score labels drawn on an image (the highest-scored visible detections)
_REQUIRED_KEYS = ("precision", "iou_thresholds", "recall_thresholds", "category_ids", "matches", "gt_matches")


# ------------------------------------------------------------------------------------------------ inputs


def _check_ap_result(fn: str, ap_result) -> None:
    if not isinstance(ap_result, Mapping):
        raise TypeError(
            f"{fn}: ap_result must be the dict returned by segnotes.metrics.average_precision, "
            f"got {describe(ap_result)}"
        )
    for key in _REQUIRED_KEYS:
        if key not in ap_result:
            raise ValueError(
                f"{fn}: ap_result must be the dict returned by segnotes.metrics.average_precision, "
                f"it lacks the key {key!r}"
            )


def _threshold_index(fn: str, ap_result, iou_threshold) -> int:
    thresholds = np.asarray(ap_result["iou_thresholds"], dtype=np.float64)
    check_positive(fn, "iou_threshold", iou_threshold)
    index = int(np.argmin(np.abs(thresholds - iou_threshold)))
    if abs(thresholds[index] - iou_threshold) > 1e-6:
        raise ValueError(
            f"{fn}: iou_threshold must be one of {[round(float(t), 2) for t in thresholds]}, got {iou_threshold}"
        )
    return index


def _check_category(fn: str, ap_result, category_id) -> None:
    if category_id is None:
        return
    known = [int(c) for c in ap_result["category_ids"]]
    if isinstance(category_id, bool) or not isinstance(category_id, (int, np.integer)) or int(category_id) not in known:
        raise ValueError(f"{fn}: category_id must be None (all categories) or one of {known}, got {category_id!r}")


def _check_score_threshold(fn: str, score_threshold) -> float:
    check_positive(fn, "score_threshold", score_threshold, allow_zero=True)
    return float(score_threshold)


def _category_name(category_names, category_id) -> str:
    if category_names and category_id in category_names:
        return str(category_names[category_id])
    return f"category {category_id}"


# ----------------------------------------------------------------------------------------------- curves


def precision_recall_curve(ap_result: dict, category_id: int, iou_threshold: float = 0.5) -> dict:
    """One category's precision-recall curve at one IoU threshold, as COCO AP builds it.

    The category's detections of all images (each image's ``max_dets`` best) are sorted by decreasing score
    (a stable sort, as COCOeval); detections matched to an ignored object (a crowd region) are dropped; after
    each remaining detection, recall = TP / (non-ignored ground-truth objects) and precision = TP / (TP + FP).
    The *envelope* makes precision non-increasing from the right (the best precision at this recall or
    beyond); it is read at the 101 recall points 0, 0.01, ..., 1 (0 past the highest recall reached), and
    their mean is the category's AP at this threshold.

    Args:
        ap_result: the dict returned by :func:`segnotes.metrics.average_precision`.
        category_id: the category.
        iou_threshold: one of ``ap_result["iou_thresholds"]`` (0.5, 0.55, ..., 0.95).

    Returns:
        dict with ``scores``, ``recall``, ``precision``, ``envelope`` (ndarray[D], float64, one entry per
        non-ignored detection in score order), ``true_positive`` (ndarray[D], bool), ``num_positives`` (int),
        ``recall_thresholds`` (ndarray[101]), ``interpolated`` (ndarray[101]: envelope at those recalls) and
        ``ap`` (float; -1 when the category has no ground truth, as COCOeval).
    """
    fn = "precision_recall_curve"
    _check_ap_result(fn, ap_result)
    if category_id is None:
        raise ValueError(f"{fn}: category_id must be one of {[int(c) for c in ap_result['category_ids']]}, got None")
    _check_category(fn, ap_result, category_id)
    return _curve(ap_result, category_id, _threshold_index(fn, ap_result, iou_threshold))


def _curve(ap_result: dict, category_id: int, t: int) -> dict:
    matches, gt_matches = ap_result["matches"], ap_result["gt_matches"]
    chosen = np.asarray(matches["category_id"]) == category_id
    scores = np.asarray(matches["score"], dtype=np.float64)[chosen]
    matched = np.asarray(matches["gt_id"])[chosen][:, t] > 0
    ignored = np.asarray(matches["ignored"])[chosen][:, t]
    order = np.argsort(-scores, kind="mergesort")  # stable: ties keep image order, as COCOeval
    keep = ~ignored[order]
    scores, true_positive = scores[order][keep], matched[order][keep]
    num_positives = int(((np.asarray(gt_matches["category_id"]) == category_id)
                         & ~np.asarray(gt_matches["ignored"])).sum())
    tp_sum = np.cumsum(true_positive, dtype=np.float64)
    fp_sum = np.cumsum(~true_positive, dtype=np.float64)
    recall = tp_sum / num_positives if num_positives else np.full_like(tp_sum, np.nan)
    precision = tp_sum / np.maximum(tp_sum + fp_sum, 1.0)
    envelope = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    recall_thresholds = np.asarray(ap_result["recall_thresholds"], dtype=np.float64)
    interpolated = np.zeros_like(recall_thresholds)
    if num_positives and len(recall):
        # COCOeval: precision at recall r is the envelope at the first detection whose recall reaches r.
        first = np.searchsorted(recall, recall_thresholds, side="left")
        reached = first < len(recall)
        interpolated[reached] = envelope[first[reached]]
    return {
        "scores": scores,
        "recall": recall,
        "precision": precision,
        "envelope": envelope,
        "true_positive": true_positive,
        "num_positives": num_positives,
        "recall_thresholds": recall_thresholds,
        "interpolated": interpolated,
        "ap": float(interpolated.mean()) if num_positives else -1.0,
    }


def _operating_point(curve: dict, score_threshold: float) -> tuple[float, float, int] | None:
    """(recall, precision, detections kept) when keeping the detections scored >= score_threshold."""
    kept = int(np.searchsorted(-curve["scores"], -score_threshold, side="right"))  # scores are decreasing
    if kept == 0 or not curve["num_positives"]:
        return None
    return float(curve["recall"][kept - 1]), float(curve["precision"][kept - 1]), kept


def _columns(recall_thresholds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Polygon of R columns of width 1/R and heights ``values``: its area is the mean of ``values``."""
    count = len(values)
    edges = np.arange(count + 1) / count
    xs = np.repeat(edges, 2)[1:-1]  # x0 x1 x1 x2 x2 ...
    ys = np.repeat(values, 2)
    return np.column_stack([np.r_[0.0, xs, 1.0], np.r_[0.0, ys, 0.0]])


class _PRCurvePlot:
    """Precision-recall curves of one category (raw, envelope, 101 points) or of all (one per category, mean)."""

    def __init__(self, ax, ap_result: dict, category_names: dict | None = None):
        self.ap_result = ap_result
        self.category_names = category_names
        self.category_ids = [int(c) for c in ap_result["category_ids"]]
        self.precision = np.asarray(ap_result["precision"])  # [T, R, K, A, M]
        self.all_index = list(ap_result.get("area_ranges", {"all": None})).index("all")
        self._curves: dict = {}
        colors = instance_colors(len(self.category_ids))
        self._fill = ax.add_patch(Polygon(np.zeros((3, 2)), closed=True, facecolor=_CURVE_COLOR, alpha=0.18,
                                          edgecolor="none"))
        self._category_lines = [ax.plot([], [], color=color, linewidth=0.8, alpha=0.8, drawstyle="steps-pre")[0]
                                for color in colors]
        self._raw = ax.plot([], [], color="0.45", linewidth=0.8)[0]
        self._envelope = ax.plot([], [], color=_CURVE_COLOR, linewidth=1.8, drawstyle="steps-pre")[0]
        self._points = ax.plot([], [], ".", color=_CURVE_COLOR, markersize=2.5)[0]
        self._operating = ax.plot([], [], "o", markerfacecolor="white", markeredgecolor="black", markersize=5,
                                  linestyle="none")[0]
        self._note = ax.text(0.5, 0.5, "", transform=ax.transAxes, ha="center", fontsize=9)
        self._title = ax.set_title("", fontsize=9)
        ax.set_xlim(0, 1.005)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(
            handles=[
                Line2D([], [], color="0.45", linewidth=0.8, label="precision after each detection"),
                Line2D([], [], color=_CURVE_COLOR, linewidth=1.8, label="envelope (all: the categories' mean)"),
                Line2D([], [], color=_CURVE_COLOR, marker=".", linestyle="none", label="101 recall points"),
                Patch(facecolor=_CURVE_COLOR, alpha=0.18, label="area = AP"),
                Line2D([], [], marker="o", markerfacecolor="white", markeredgecolor="black", linestyle="none",
                       label="score threshold"),
            ],
            loc="lower left", fontsize=6.5, framealpha=0.85,
        )

    def animated(self) -> list:
        return [self._fill, *self._category_lines, self._raw, self._envelope, self._points, self._operating,
                self._note, self._title]

    def curve(self, category_id: int, t: int) -> dict:
        key = (category_id, t)
        if key not in self._curves:
            self._curves[key] = _curve(self.ap_result, category_id, t)
        return self._curves[key]

    def draw(self, t: int, category_id: int | None, score_threshold: float) -> dict:
        threshold = float(self.ap_result["iou_thresholds"][t])
        recall_thresholds = np.asarray(self.ap_result["recall_thresholds"], dtype=np.float64)
        self._note.set_text("")
        if category_id is None:
            result = self._draw_all(t, score_threshold, recall_thresholds)
            name = "all categories"
        else:
            result = self._draw_one(t, category_id, score_threshold)
            name = _category_name(self.category_names, category_id)
        ap = result["ap"]
        self._title.set_text(f"{name} at IoU {threshold:.2f}: AP {'n/a' if ap < 0 else f'{ap:.3f}'}\n"
                             f"{result['summary']}")
        return result

    def _draw_all(self, t: int, score_threshold: float, recall_thresholds: np.ndarray) -> dict:
        curves = self.precision[t, :, :, self.all_index, -1].T  # (K, R)
        defined = curves[:, 0] > -1  # categories with ground truth
        for line, values, ok in zip(self._category_lines, curves, defined):
            line.set_visible(bool(ok))
            line.set_data(recall_thresholds, values)
        mean = curves[defined].mean(axis=0) if defined.any() else np.zeros_like(recall_thresholds)
        self._envelope.set_data(recall_thresholds, mean)
        self._points.set_data(recall_thresholds, mean)
        self._fill.set_xy(_columns(recall_thresholds, mean))
        self._raw.set_data([], [])
        points = [_operating_point(self.curve(c, t), score_threshold) for c in self.category_ids]
        points = [p for p in points if p is not None]
        self._operating.set_data([p[0] for p in points], [p[1] for p in points])
        if points:
            operating_text = (
                f"score ≥ {score_threshold:.2f}: mean precision {np.mean([p[1] for p in points]):.2f}, "
                f"mean recall {np.mean([p[0] for p in points]):.2f}"
            )
        else:
            operating_text = f"score ≥ {score_threshold:.2f}: no detections"
        ap = float(mean.mean()) if defined.any() else -1.0
        return {"ap": ap, "category_id": None, "iou_threshold": float(self.ap_result["iou_thresholds"][t]),
                "operating_points": points, "summary": operating_text}

    def _draw_one(self, t: int, category_id: int, score_threshold: float) -> dict:
        for line in self._category_lines:
            line.set_visible(False)
        curve = self.curve(category_id, t)
        recall_thresholds = curve["recall_thresholds"]
        if curve["num_positives"] == 0:
            for artist in (self._raw, self._envelope, self._points, self._operating):
                artist.set_data([], [])
            self._fill.set_xy(np.zeros((3, 2)))
            self._note.set_text("no ground truth of this category: AP undefined")
            return {"ap": -1.0, "category_id": category_id, "curve": curve, "operating_point": None, "summary": ""}
        recall, precision, envelope = curve["recall"], curve["precision"], curve["envelope"]
        self._raw.set_data(np.r_[0.0, recall], np.r_[1.0, precision])
        top = envelope[0] if len(envelope) else 0.0
        # steps-pre: each envelope value holds from the previous recall up to its own; 0 past the last recall.
        self._envelope.set_data(np.r_[0.0, recall, 1.0], np.r_[top, envelope, 0.0])
        self._points.set_data(recall_thresholds, curve["interpolated"])
        self._fill.set_xy(_columns(recall_thresholds, curve["interpolated"]))
        point = _operating_point(curve, score_threshold)
        if point is None:
            self._operating.set_data([], [])
            operating_text = f"score ≥ {score_threshold:.2f}: no detections"
        else:
            kept_recall, kept_precision, kept = point
            self._operating.set_data([kept_recall], [kept_precision])
            operating_text = (
                f"score ≥ {score_threshold:.2f}: precision {kept_precision:.2f}, recall {kept_recall:.2f}"
            )
        return {"ap": curve["ap"], "category_id": category_id, "curve": curve, "operating_point": point,
                "summary": operating_text}


def pr_curve_figure(
    ap_result: dict,
    iou_threshold: float = 0.5,
    category_id: int | None = None,
    score_threshold: float = 0.0,
    category_names: dict | None = None,
    size: float = 3.6,
) -> Figure:
    """The precision-recall curve behind an AP number, with the area that is AP shaded.

    For one category: precision and recall after each detection (grey), the envelope (blue steps), its value
    at the 101 recall points (dots) and their mean, the AP, as the shaded area. For ``category_id=None``: each
    category's interpolated curve (thin) and their mean (blue), whose area is the AP over categories at this
    threshold (``AP50`` at 0.5, ``AP75`` at 0.75). The circle marks the precision and recall of the detections
    scored at least ``score_threshold``: a threshold picks one point of the curve, AP summarises them all.

    Args:
        ap_result: the dict returned by :func:`segnotes.metrics.average_precision`.
        iou_threshold: one of ``ap_result["iou_thresholds"]`` (0.5, 0.55, ..., 0.95).
        category_id: one category, or None for all.
        score_threshold: detections kept for the marked point.
        category_names: id -> name, for the title.
        size: height in inches.

    Returns:
        Figure.
    """
    fn = "pr_curve_figure"
    _check_ap_result(fn, ap_result)
    t = _threshold_index(fn, ap_result, iou_threshold)
    _check_category(fn, ap_result, category_id)
    score_threshold = _check_score_threshold(fn, score_threshold)
    figure = _new_figure(size * 1.25, size)
    plot = _PRCurvePlot(figure.subplots(), ap_result, category_names)
    plot.draw(t, None if category_id is None else int(category_id), score_threshold)
    return figure


# ------------------------------------------------------------------------------------------- detections


def _outline(mask: np.ndarray) -> np.ndarray:
    """bool [H, W]: the mask's pixels with a 4-neighbour outside it."""
    inside = torch.from_numpy(mask)[None, None].float()
    # A pixel is interior when its 3x3 neighbourhood is all mask (outside the image counts as background).
    interior = -F.max_pool2d(-inside, 3, stride=1, padding=1)[0, 0].numpy() > 0.5
    padded = np.pad(mask, 1)
    interior &= padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _ground_truth(fn: str, target, image_id: int, ap_result: dict, shape: tuple[int, int]) -> list[dict]:
    """This image's ground-truth objects: id, mask, crowd flag, and which detection matched each (per threshold)."""
    gt_matches = ap_result["gt_matches"]
    rows = np.nonzero(np.asarray(gt_matches["image_id"]) == image_id)[0]
    height, width = shape
    if isinstance(target, dict):
        if "masks" not in target:
            raise ValueError(f"{fn}: target must hold 'masks' (a torchvision target dict), got keys {sorted(target)}")
        masks = target["masks"].detach().cpu().numpy().astype(bool)
        if len(masks) != len(rows):
            # Datasets that drop crowd regions (include_crowd=False) hold the other objects, in the same order.
            rows = rows[~np.asarray(gt_matches["ignored"])[rows]]
        if len(masks) != len(rows):
            raise ValueError(
                f"{fn}: target holds {len(masks)} masks but the ground truth of image {image_id} in ap_result has "
                f"{len(rows)} objects (without crowd regions); pass the image's COCO annotations instead"
            )
        masks = list(masks)
    elif isinstance(target, Sequence):
        ids = [annotation["id"] if isinstance(annotation, Mapping) else None for annotation in target]
        position = {int(i): r for r, i in zip(rows, np.asarray(gt_matches["gt_id"])[rows])}
        if any(i not in position for i in ids):
            raise ValueError(f"{fn}: target must be COCO annotations of image {image_id} (dicts with an 'id' in "
                             f"ap_result's ground truth), got ids {ids}")
        rows = np.asarray([position[i] for i in ids], dtype=np.int64)
        masks = [decode_segmentation(annotation["segmentation"], height, width) for annotation in target]
    else:
        raise TypeError(f"{fn}: target must be a torchvision target dict or a list of COCO annotations, "
                        f"got {describe(target)}")
    objects = []
    for row, mask in zip(rows, masks):
        if mask.shape != (height, width):
            raise ValueError(f"{fn}: target masks must be {height}x{width} like the image, got {mask.shape}")
        objects.append({
            "id": int(gt_matches["gt_id"][row]),
            "crowd": bool(gt_matches["ignored"][row]),
            "matched_by": np.asarray(gt_matches["detection_index"][row]),  # (T,) detection position or -1
            "outline": _outline(mask),
        })
    return objects


class _DetectionsPlot:
    """An image with its detections coloured by match status and its ground truth outlined."""

    def __init__(self, ax, ap_result: dict, category_names: dict | None = None):
        self.ap_result = ap_result
        self.category_names = category_names
        self._ax = ax
        self._image = ax.imshow(np.zeros((2, 2, 4), dtype=np.uint8), interpolation="nearest")
        self._boxes = ax.add_collection(LineCollection([], linewidths=1.0))
        self._labels = [ax.text(0, 0, "", fontsize=6, color="white", va="bottom", visible=False,
                                bbox=dict(pad=0.4, linewidth=0, alpha=0.85)) for _ in range(_MAX_LABELS)]
        self._title = ax.set_title("", fontsize=9)
        ax.set_axis_off()

    def animated(self) -> list:
        return [self._image, self._boxes, *self._labels, self._title]

    def set_image(self, fn: str, image, target, detections: Sequence[dict], image_id: int) -> None:
        layers = _image_layers(fn, self.ap_result, image, target, detections, image_id)
        self._base, self.image_id = layers["base"], image_id
        self._rows, self._masks, self._boxes_xyxy = layers["rows"], layers["masks"], layers["boxes"]
        self._objects = layers["objects"]
        height, width = self._base.shape[:2]
        self._image.set_extent((-0.5, width - 0.5, height - 0.5, -0.5))
        self._ax.set_xlim(-0.5, width - 0.5)
        self._ax.set_ylim(height - 0.5, -0.5)

    def draw(self, t: int, score_threshold: float) -> dict:
        matches = self.ap_result["matches"]
        scores = np.asarray(matches["score"])[self._rows]
        gt_ids = np.asarray(matches["gt_id"])[self._rows, t]
        ignored = np.asarray(matches["ignored"])[self._rows, t]
        positions = np.asarray(matches["detection_index"])[self._rows]
        visible = scores >= score_threshold
        status = np.where(ignored, "ignored", np.where(gt_ids > 0, "true positive", "false positive"))
        rgb = self._base.copy()
        segments, colors, styles = [], [], []
        for mask, box, kind, show in zip(self._masks, self._boxes_xyxy, status, visible):
            if not show:
                continue
            color = _STATUS_COLORS[kind]
            if mask is not None and kind != "ignored":
                rgb[mask] = 0.5 * rgb[mask] + 0.5 * np.asarray(color, dtype=np.float32)
            x1, y1, x2, y2 = box
            segments.append([(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)])
            colors.append(color)
            styles.append("--" if kind == "ignored" else "-")
        shown = set(positions[visible].tolist())
        found = missed = 0
        for obj in self._objects:
            if obj["crowd"]:
                rgb[obj["outline"]] = _CROWD_COLOR
                continue
            hit = int(obj["matched_by"][t]) in shown
            found += hit
            missed += not hit
            rgb[obj["outline"]] = _FOUND_COLOR if hit else _MISSED_COLOR
        self._image.set_data(_rgba8(rgb))
        self._boxes.set_segments(segments)
        self._boxes.set_color(colors if colors else "none")
        self._boxes.set_linestyle(styles if styles else "-")
        categories = np.asarray(matches["category_id"])[self._rows]
        self._draw_labels(scores, categories, visible, status)
        counts = {kind: int((visible & (status == kind)).sum()) for kind in _STATUS_COLORS}
        counts.update(found=found, missed=missed)
        threshold = float(self.ap_result["iou_thresholds"][t])
        self._title.set_text(
            f"image {self.image_id} (IoU {threshold:.2f}, score ≥ {score_threshold:.2f}): "
            f"{counts['true positive']} TP, {counts['false positive']} FP, {missed} missed"
        )
        return counts

    def _draw_labels(self, scores: np.ndarray, categories: np.ndarray, visible: np.ndarray, status: np.ndarray) -> None:
        best = [i for i in np.argsort(-scores, kind="mergesort") if visible[i]][:_MAX_LABELS]
        for label, i in zip(self._labels, best):
            x1, y1, _, _ = self._boxes_xyxy[i]
            label.set_position((x1, y1))
            name = self.category_names.get(int(categories[i]), "") if self.category_names else ""
            label.set_text(f"{name} {scores[i]:.2f}".strip())
            label.get_bbox_patch().set_facecolor(_STATUS_COLORS[status[i]])
            label.set_visible(True)
        for label in self._labels[len(best):]:
            label.set_visible(False)


def _image_layers(fn: str, ap_result: dict, image, target, detections: Sequence[dict], image_id: int) -> dict:
    """What :class:`_DetectionsPlot` draws of one image, before thresholds choose: the dimmed image (``base``,
    float32 [H, W, 3]), this image's rows of the match table lowest score first (``rows``: the best are drawn
    last, on top), their masks (bool [H, W] or None) and xyxy ``boxes``, and the ground-truth ``objects``."""
    rgb = _to_numpy_image(image).astype(np.float32)
    height, width = rgb.shape[:2]
    matches = ap_result["matches"]
    rows = np.nonzero(np.asarray(matches["image_id"]) == image_id)[0]
    order = np.argsort(np.asarray(matches["score"])[rows], kind="mergesort")  # low scores first: top drawn last
    rows = rows[order]
    masks, boxes = [], []
    for row in rows:
        position = int(matches["detection_index"][row])
        if not 0 <= position < len(detections):
            raise ValueError(f"{fn}: detections must be the list given to average_precision; it has no "
                             f"detection {position} (len {len(detections)})")
        detection = detections[position]
        segmentation = detection.get("segmentation")
        mask = decode_segmentation(segmentation, height, width) if segmentation is not None else None
        masks.append(mask)
        if "bbox" in detection:
            x, y, w, h = detection["bbox"]
        else:
            x, y, w, h = mask_utils.toBbox(mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))).tolist()
        boxes.append((x, y, x + w, y + h))
    return {"base": rgb * 0.75, "rows": rows, "masks": masks, "boxes": boxes,
            "objects": _ground_truth(fn, target, image_id, ap_result, (height, width))}


def _status_legend(figure: Figure) -> None:
    handles = [Patch(color=color, label=name) for name, color in _STATUS_COLORS.items()]
    handles += [Patch(facecolor="white", edgecolor="0.5", label="object found"),
                Patch(color=_MISSED_COLOR, label="object missed"), Patch(color=_CROWD_COLOR, label="crowd region")]
    figure.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=7, frameon=False)


def detections_figure(
    image: Tensor,
    target,
    detections: Sequence[dict],
    ap_result: dict,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.0,
    image_id: int | None = None,
    category_names: dict | None = None,
    size: float = 4.0,
) -> Figure:
    """One image's detections as COCO AP judged them: matched, unmatched or ignored, and the objects missed.

    A detection is a true positive at IoU threshold t when COCO's greedy matching (highest score first) paired
    it with a ground-truth object of its category with IoU >= t; a false positive otherwise; ignored (grey,
    dashed) when it matched a crowd region. Only detections scored at least ``score_threshold`` are drawn;
    an object is *found* (white outline) when its matching detection is drawn, else *missed* (blue).
    The matching is read from ``ap_result`` (computed over the whole data set), not redone here.

    Args:
        image (FloatTensor[3, H, W] in [0, 1]): the image.
        target: its ground truth: a torchvision target dict (``masks`` [N, H, W] in the order of the image's
            annotations, with or without its crowd regions, optional ``image_id``) or the image's list of COCO
            annotations (dicts with ``id`` and ``segmentation``).
        detections: the COCO results list that was given to :func:`segnotes.metrics.average_precision`.
        ap_result: what it returned.
        iou_threshold: one of ``ap_result["iou_thresholds"]``.
        score_threshold: lowest score drawn.
        image_id: the image's COCO id (default: ``target["image_id"]``).
        category_names: id -> name, for the score labels.
        size: height in inches.

    Returns:
        Figure.
    """
    fn = "detections_figure"
    _check_ap_result(fn, ap_result)
    t = _threshold_index(fn, ap_result, iou_threshold)
    score_threshold = _check_score_threshold(fn, score_threshold)
    image_id = _resolve_image_id(fn, target, image_id)
    figure = _new_figure(size, size * 1.12)
    plot = _DetectionsPlot(figure.subplots(), ap_result, category_names)
    plot.set_image(fn, image, target, detections, image_id)
    plot.draw(t, score_threshold)
    _status_legend(figure)
    return figure


def _resolve_image_id(fn: str, target, image_id) -> int:
    if image_id is None:
        if isinstance(target, dict) and "image_id" in target:
            return int(target["image_id"])
        if isinstance(target, Sequence) and len(target) and isinstance(target[0], Mapping) and "image_id" in target[0]:
            return int(target[0]["image_id"])
        raise ValueError(f"{fn}: image_id is needed when target carries no image_id, got {describe(target)}")
    if isinstance(image_id, bool) or not isinstance(image_id, (int, np.integer, Tensor)):
        raise TypeError(f"{fn}: image_id must be an int, got {describe(image_id)}")
    return int(image_id)
