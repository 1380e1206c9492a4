"""Comparing masks: a prediction against the ground truth, and two models against each other.

Figures for the metrics chapter and its widgets. Each figure is built once by a small plot class whose
``draw`` method only updates artists in place (image data, bar lengths, texts), so a widget can redraw it
in a few milliseconds; the public functions here build the plot, draw it once and return the Figure.

Outcome colours (ColorBrewer Set1): true positive green, false positive red, false negative blue, ignored
(void) pixels in VOC's cream; true negatives show the dimmed image.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from pycocotools import mask as mask_utils
from torch import Tensor

from .._checks import check_choice, check_int, check_tensor, describe
from ..metrics import (
    average_precision,
    confusion_matrix,
    detections_from_predictions,
    encode_masks,
    segmentation_scores,
)
from .masks import _to_numpy_image, instance_colors, overlay_instances, voc_palette

__all__ = [
    "OUTCOME_COLORS",
    "perturb_mask",
    "coarsen_labels",
    "outcome_map",
    "mask_comparison_figure",
    "model_comparison_figure",
]

#: Colour of each pixel outcome (RGB in [0, 1]).
OUTCOME_COLORS = {
    "true positive": (0.30, 0.69, 0.29),
    "false positive": (0.89, 0.10, 0.11),
    "false negative": (0.22, 0.49, 0.72),
    "ignored": (224 / 255, 224 / 255, 192 / 255),
}
_BACKGROUND = 0.15  # grey level of the panels when no image is given
_DIM = 0.45  # true negatives show the image at this brightness, so the coloured outcomes stand out
_MASK_COLOR = (1.0, 0.80, 0.0)
_MODEL_COLORS = ((0.90, 0.55, 0.0), (0.35, 0.35, 0.95))  # model A orange, model B blue (colour-blind safe)
_COARSEN_MODES = ("bilinear", "nearest")
# VOC colours as float [256, 3], computed once at import; read-only, so never shared state.
_PALETTE = voc_palette(256).astype(np.float32) / 255.0
_PALETTE.flags.writeable = False


# --------------------------------------------------------------------------------------------------- perturb


def perturb_mask(
    mask: Tensor,
    shift: tuple[int, int] = (0, 0),
    dilate: int = 0,
    coarsen: int = 1,
    upsample: str = "bilinear",
) -> Tensor:
    """Damage a binary mask the way predictions go wrong: misplaced, too fat or thin, too coarse.

    The three perturbations are applied in this order:

    1. ``shift = (dy, dx)`` moves the mask ``dy`` pixels down and ``dx`` right; pixels moved past the
       border are lost, those moved in are background.
    2. ``dilate = r > 0`` grows the mask by a disk of radius ``r`` (a pixel joins when a mask pixel lies within
       Euclidean distance ``r``); ``dilate = -r`` erodes it by the same disk (a pixel stays when the whole disk
       around it is mask; outside the image counts as background, so masks touching the border erode from it).
    3. ``coarsen = f > 1`` simulates a network with output stride ``f`` (FCN-32s has f = 32): the mask is
       averaged over f x f cells (``avg_pool2d``, ceil mode: a cell cut by the border averages the pixels
       inside), the coarse map of cell fractions is upsampled by f (``upsample="bilinear"``: the fixed bilinear
       deconvolution of FCN, ``align_corners=False``; or ``"nearest"``: blocks), cropped to H x W and
       thresholded at 0.5. With ``"nearest"`` each cell becomes its majority vote.

    Args:
        mask (BoolTensor[H, W]): the mask to perturb.
        shift (tuple[int, int]): (dy, dx) in pixels.
        dilate (int): disk radius in pixels; negative erodes.
        coarsen (int): output stride f >= 1; 1 keeps full resolution.
        upsample (str): ``"bilinear"`` or ``"nearest"``, how the coarse map returns to H x W.

    Returns:
        BoolTensor[H, W]: the perturbed mask, on ``mask``'s device.
    """
    fn = "perturb_mask"
    check_tensor(fn, "mask", mask, ndim=2, dtype=torch.bool)
    if not (isinstance(shift, (tuple, list)) and len(shift) == 2):
        raise TypeError(f"{fn}: shift must be a pair of ints (dy, dx), got {describe(shift)}")
    for value in shift:
        check_int(fn, "shift", value)
    check_int(fn, "dilate", dilate)
    check_int(fn, "coarsen", coarsen, minimum=1)
    check_choice(fn, "upsample", upsample, _COARSEN_MODES)
    out = _shift(mask, int(shift[0]), int(shift[1]))
    if dilate != 0:
        out = _dilate(out, dilate)
    if coarsen > 1:
        out = _coarsen(out, coarsen, upsample)
    return out


def _shift(mask: Tensor, dy: int, dx: int) -> Tensor:
    height, width = mask.shape
    out = torch.zeros_like(mask)
    if abs(dy) >= height or abs(dx) >= width:
        return out
    out[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)] = mask[
        max(-dy, 0) : height - max(dy, 0), max(-dx, 0) : width - max(dx, 0)
    ]
    return out


def _disk(radius: int, device: torch.device) -> Tensor:
    """FloatTensor[1, 1, 2r+1, 2r+1]: 1 where dy² + dx² <= r²."""
    offsets = torch.arange(-radius, radius + 1, device=device)
    return ((offsets[:, None] ** 2 + offsets[None, :] ** 2) <= radius**2).float()[None, None]


def _dilate(mask: Tensor, radius: int) -> Tensor:
    disk = _disk(abs(radius), mask.device)
    # Count the mask pixels under the disk centred on each pixel (zero padding: outside is background).
    counts = F.conv2d(mask.float()[None, None], disk, padding=abs(radius))[0, 0]  # (H, W)
    if radius > 0:
        return counts > 0
    return counts >= disk.sum() - 0.5  # counts are small integers, exact in float32


def _coarsen(mask: Tensor, factor: int, upsample: str) -> Tensor:
    height, width = mask.shape
    # Fraction of each f x f cell covered by the mask: the score map of a stride-f network.
    coarse = F.avg_pool2d(mask.float()[None, None], factor, stride=factor, ceil_mode=True)  # (1, 1, ⌈H/f⌉, ⌈W/f⌉)
    if upsample == "bilinear":
        fine = F.interpolate(coarse, scale_factor=factor, mode="bilinear", align_corners=False)
    else:
        fine = F.interpolate(coarse, scale_factor=factor, mode="nearest")
    return fine[0, 0, :height, :width] > 0.5  # crop, as FCN crops its upsampled scores


def coarsen_labels(
    labels: Tensor, factor: int, num_classes: int, ignore_index: int = 255, upsample: str = "bilinear"
) -> Tensor:
    """Label maps as a network with output stride ``factor`` would at best predict them.

    Each class's share of every ``factor`` x ``factor`` cell (the perfect coarse score map; void pixels vote
    for no class) is upsampled back by ``factor`` (bilinear as FCN's fixed deconvolution, or nearest) and
    cropped; each pixel takes the class with the highest upsampled score (ties to the lower class). This is
    :func:`perturb_mask`'s ``coarsen`` for many classes; FCN-32s vs FCN-8s is ``factor=32`` vs ``factor=8``.

    Args:
        labels (LongTensor[H, W] or [N, H, W]): class indices in [0, num_classes), or ``ignore_index``. A batch
            is much faster than a loop over images (one-hot scores take N x C x H x W floats: chunk big sets).
        factor (int): output stride >= 1.
        num_classes (int): C.
        ignore_index (int): the void label.
        upsample (str): ``"bilinear"`` or ``"nearest"``.

    Returns:
        LongTensor of ``labels``' shape: predicted classes in [0, C) (never void), on ``labels``' device.
    """
    fn = "coarsen_labels"
    check_tensor(fn, "labels", labels, ndim=(2, 3), floating=False)
    check_int(fn, "factor", factor, minimum=1)
    check_int(fn, "num_classes", num_classes, minimum=1)
    check_choice(fn, "upsample", upsample, _COARSEN_MODES)
    valid = labels != ignore_index
    if valid.any():
        low, high = (v.item() for v in labels[valid].aminmax())
        if low < 0 or high >= num_classes:
            raise ValueError(f"{fn}: labels must be in [0, {num_classes}) or {ignore_index}, "
                             f"got values from {low} to {high}")
    batch = labels.reshape(-1, *labels.shape[-2:])  # (N, H, W)
    height, width = batch.shape[-2:]
    one_hot = F.one_hot(batch.long().where(valid.reshape(batch.shape), 0), num_classes)  # (N, H, W, C)
    one_hot = one_hot.permute(0, 3, 1, 2).float() * valid.reshape(batch.shape)[:, None]  # void votes for nothing
    scores = F.avg_pool2d(one_hot, factor, stride=factor, ceil_mode=True)  # (N, C, ⌈H/f⌉, ⌈W/f⌉)
    if factor > 1:
        if upsample == "bilinear":
            scores = F.interpolate(scores, scale_factor=factor, mode="bilinear", align_corners=False)
        else:
            scores = F.interpolate(scores, scale_factor=factor, mode="nearest")
    return scores[:, :, :height, :width].argmax(1).reshape(labels.shape)


# --------------------------------------------------------------------------------------------- outcomes


def _check_pair(fn: str, prediction, target, ignore) -> None:
    check_tensor(fn, "target", target, ndim=2, dtype=torch.bool)
    check_tensor(fn, "prediction", prediction, ndim=2, dtype=torch.bool)
    if prediction.shape != target.shape:
        raise ValueError(
            f"{fn}: prediction and target must have the same shape, got prediction of shape "
            f"{tuple(prediction.shape)} and target of shape {tuple(target.shape)}"
        )
    if ignore is not None:
        check_tensor(fn, "ignore", ignore, ndim=2, dtype=torch.bool)
        if ignore.shape != target.shape:
            raise ValueError(
                f"{fn}: ignore must have the target's shape {tuple(target.shape)}, got {tuple(ignore.shape)}"
            )


def _base_rgb(image, shape: tuple[int, int]) -> np.ndarray:
    """The dimmed image as float32 [H, W, 3], or a dark grey canvas without one."""
    if image is None:
        return np.full((*shape, 3), _BACKGROUND, dtype=np.float32)
    rgb = _to_numpy_image(image).astype(np.float32)
    if rgb.shape[:2] != tuple(shape):
        raise ValueError(f"viz: image must be {tuple(shape)} in height and width, got shape {rgb.shape}")
    return rgb * _DIM


def outcome_map(prediction: Tensor, target: Tensor, ignore: Tensor | None = None, image=None) -> np.ndarray:
    """Colour each pixel by its outcome: true/false positive, false negative, ignored (see ``OUTCOME_COLORS``).

    Args:
        prediction (BoolTensor[H, W]): predicted mask.
        target (BoolTensor[H, W]): ground-truth mask.
        ignore (BoolTensor[H, W], optional): pixels left out of every metric (VOC's void band).
        image (FloatTensor[3, H, W] in [0, 1], optional): shown, dimmed, under the true negatives.

    Returns:
        ndarray[H, W, 3] (float32) in [0, 1].
    """
    _check_pair("outcome_map", prediction, target, ignore)
    return _outcome_rgb(prediction, target, ignore, _base_rgb(image, tuple(target.shape)))


def _outcome_rgb(prediction: Tensor, target: Tensor, ignore: Tensor | None, base: np.ndarray) -> np.ndarray:
    pred = prediction.detach().cpu().numpy()
    true = target.detach().cpu().numpy()
    rgb = base.copy()
    rgb[pred & true] = OUTCOME_COLORS["true positive"]
    rgb[pred & ~true] = OUTCOME_COLORS["false positive"]
    rgb[~pred & true] = OUTCOME_COLORS["false negative"]
    if ignore is not None:
        rgb[ignore.detach().cpu().numpy()] = OUTCOME_COLORS["ignored"]
    return rgb


def _binary_scores(prediction: Tensor, target: Tensor, ignore: Tensor | None) -> dict:
    """The FCN metrics of a two-class (background, object) problem, plus the object's IoU and pixel counts."""
    labels = target.long()
    if ignore is not None:
        labels = labels.masked_fill(ignore, 255)
    matrix = confusion_matrix(prediction.long(), labels, num_classes=2, ignore_index=255)
    scores = segmentation_scores(matrix)
    return {
        "iou": scores["iu"][1].item(),  # NaN when the object is in neither mask
        "pixel_accuracy": scores["pixel_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "mean_iu": scores["mean_iu"],
        "frequency_weighted_iu": scores["frequency_weighted_iu"],
        "true_positives": int(matrix[1, 1]),
        "false_positives": int(matrix[0, 1]),
        "false_negatives": int(matrix[1, 0]),
        "true_negatives": int(matrix[0, 0]),
    }


def _new_figure(width: float, height: float, layout: str | None = "constrained") -> Figure:
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)  # draw and print without pyplot
    return figure


def _rgba8(rgb: np.ndarray) -> np.ndarray:
    """float RGB [H, W, 3] in [0, 1] -> uint8 RGBA [H, W, 4]: matplotlib draws these ~4x faster (no conversion)."""
    out = np.empty((*rgb.shape[:2], 4), dtype=np.uint8)
    out[..., :3] = np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5  # rounds, as the assignment truncates
    out[..., 3] = 255
    return out


def _image_axes(ax, rgb: np.ndarray, title: str):
    artist = ax.imshow(_rgba8(rgb), interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return artist


def _fmt(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) or value < 0 else f"{value:.3f}"


# ------------------------------------------------------------------------------------- mask comparison

_SCORE_ROWS = (
    ("iou", "object IoU"),
    ("pixel_accuracy", "pixel accuracy"),
    ("mean_accuracy", "mean accuracy"),
    ("mean_iu", "mean IU"),
    ("frequency_weighted_iu", "f.w. IU"),
)


class _MaskComparisonPlot:
    """Ground truth, prediction, outcome map and a bar per metric; ``draw(prediction)`` updates in place."""

    def __init__(self, target: Tensor, image=None, ignore: Tensor | None = None, size: float = 2.3):
        self.target = target
        self.ignore = ignore
        self._base = _base_rgb(image, tuple(target.shape))
        self.figure = _new_figure(size * 4.6, size * 1.25)
        ax_true, ax_pred, ax_outcome, ax_bars = self.figure.subplots(1, 4, width_ratios=[1, 1, 1, 1.6])
        _image_axes(ax_true, self._mask_rgb(target), "ground truth")
        self._pred_image = _image_axes(ax_pred, self._base, "prediction")
        self._outcome_image = _image_axes(ax_outcome, self._base, "outcome")
        self._pred_title = ax_pred.title
        self._pred_title.set_fontsize(8)
        self.figure.legend(
            handles=[Patch(color=color, label=name) for name, color in OUTCOME_COLORS.items()],
            loc="outside lower center", ncols=4, fontsize=8, frameon=False,
        )
        rows = np.arange(len(_SCORE_ROWS))
        self._bars = ax_bars.barh(rows, np.zeros(len(rows)), color="0.55", height=0.7)
        self._bars[0].set_color(OUTCOME_COLORS["true positive"])
        self._values = [ax_bars.text(0.02, row, "", va="center", fontsize=8) for row in rows]
        ax_bars.set_yticks(rows, [label for _, label in _SCORE_ROWS], fontsize=8)
        ax_bars.set_xlim(0, 1.22)
        ax_bars.set_xticks([0, 0.5, 1], ["0", "0.5", "1"], fontsize=8)
        ax_bars.invert_yaxis()
        ax_bars.set_title("scores", fontsize=9)
        for side in ("top", "right"):
            ax_bars.spines[side].set_visible(False)

    def animated(self) -> list:
        """The artists :meth:`draw` changes (for blitting)."""
        return [self._pred_image, self._outcome_image, self._pred_title, *self._bars, *self._values]

    def _mask_rgb(self, mask: Tensor) -> np.ndarray:
        rgb = self._base.copy()
        rgb[mask.detach().cpu().numpy()] = _MASK_COLOR
        if self.ignore is not None:
            rgb[self.ignore.detach().cpu().numpy()] = OUTCOME_COLORS["ignored"]
        return rgb

    def draw(self, prediction: Tensor, title: str | None = None) -> dict:
        scores = _binary_scores(prediction, self.target, self.ignore)
        self._pred_image.set_data(_rgba8(self._mask_rgb(prediction)))
        self._outcome_image.set_data(_rgba8(_outcome_rgb(prediction, self.target, self.ignore, self._base)))
        self._pred_title.set_text(title or "prediction")
        for (key, _), bar, text in zip(_SCORE_ROWS, self._bars, self._values):
            value = scores[key]
            width = 0.0 if math.isnan(value) else value
            bar.set_width(width)
            text.set_x(width + 0.02)
            text.set_text(_fmt(value))
        return scores


def mask_comparison_figure(
    target: Tensor,
    prediction: Tensor,
    image=None,
    ignore: Tensor | None = None,
    title: str | None = None,
    size: float = 2.3,
) -> Figure:
    """Ground truth against prediction: both masks, their pixel outcomes, and the metrics they give.

    The outcome panel colours true positives, false positives and false negatives (``OUTCOME_COLORS``); the
    bars show the object's IoU and the FCN paper's four metrics on the two-class (background, object) problem,
    computed by :func:`segnotes.metrics.confusion_matrix` and :func:`segnotes.metrics.segmentation_scores`.
    Pixel accuracy counts the (usually plentiful) background, so it stays high when the object is missed.

    Args:
        target (BoolTensor[H, W]): ground-truth mask.
        prediction (BoolTensor[H, W]): predicted mask, e.g. ``perturb_mask(target, coarsen=32)``.
        image (FloatTensor[3, H, W] in [0, 1], optional): drawn dimmed under the masks.
        ignore (BoolTensor[H, W], optional): void pixels, left out of the metrics and drawn in cream.
        title: title of the prediction panel.
        size: inches per panel.

    Returns:
        Figure.
    """
    _check_pair("mask_comparison_figure", prediction, target, ignore)
    plot = _MaskComparisonPlot(target, image=image, ignore=ignore, size=size)
    plot.draw(prediction, title)
    return plot.figure


# ------------------------------------------------------------------------------------ model comparison


def _is_instance_list(items) -> bool:
    return len(items) > 0 and isinstance(items[0], dict)


def _check_model_inputs(fn: str, images, targets, predictions_a, predictions_b, scores) -> str:
    """Check lengths and formats; returns the mode, ``"semantic"`` or ``"instance"``."""
    for name, items in (("images", images), ("targets", targets), ("predictions_a", predictions_a),
                        ("predictions_b", predictions_b)):
        if not isinstance(items, Sequence) or isinstance(items, (str, Tensor)):
            raise TypeError(f"{fn}: {name} must be a list, got {describe(items)}")
    if len(images) == 0:
        raise ValueError(f"{fn}: images must not be empty, got {describe(images)}")
    for name, items in (("targets", targets), ("predictions_a", predictions_a), ("predictions_b", predictions_b)):
        if len(items) != len(images):
            raise ValueError(f"{fn}: {name} must have one entry per image ({len(images)}), got {describe(items)}")
    mode = "instance" if _is_instance_list(targets) else "semantic"
    for name, items in (("targets", targets), ("predictions_a", predictions_a), ("predictions_b", predictions_b)):
        for index, item in enumerate(items):
            if mode == "instance":
                if not isinstance(item, dict) or "masks" not in item:
                    raise TypeError(
                        f"{fn}: {name}[{index}] must be a dict with masks (instance mode, as targets[0]), "
                        f"got {describe(item)}"
                    )
            else:
                check_tensor(fn, f"{name}[{index}]", item, ndim=2, floating=False)
                if tuple(item.shape) != tuple(images[index].shape[-2:]):
                    raise ValueError(
                        f"{fn}: {name}[{index}] must match its image's height and width "
                        f"{tuple(images[index].shape[-2:])}, got {describe(item)}"
                    )
    if scores is not None:
        if not (isinstance(scores, (tuple, list)) and len(scores) == 2):
            raise TypeError(
                f"{fn}: scores must be a pair (scores_a, scores_b) of per-image lists, got {describe(scores)}"
            )
        for side in scores:
            if len(side) != len(images):
                raise ValueError(f"{fn}: scores must hold one score per image ({len(images)}), got {describe(side)}")
    return mode


def _semantic_scores(targets, predictions, num_classes: int, ignore_index: int) -> tuple[list[float], float]:
    """Per-image mean IU and the dataset's mean IU (one confusion matrix summed over all images)."""
    total = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    per_image = []
    for target, prediction in zip(targets, predictions):
        matrix = confusion_matrix(prediction.long(), target.long(), num_classes, ignore_index).cpu()
        per_image.append(segmentation_scores(matrix)["mean_iu"])
        total += matrix
    return per_image, segmentation_scores(total)["mean_iu"]


def _coco_ground_truth(targets, image_ids: list[int], shape_of) -> dict:
    """torchvision-format targets -> a COCO ground-truth dict (RLE masks)."""
    images, annotations, category_ids = [], [], set()
    for image_id, target in zip(image_ids, targets):
        height, width = shape_of(image_id)
        images.append({"id": image_id, "height": height, "width": width})
        masks = target["masks"].detach().cpu().bool()
        labels = target["labels"].tolist()
        crowd = target.get("iscrowd", torch.zeros(len(labels), dtype=torch.int64)).tolist()
        for mask, rle, label, is_crowd in zip(masks, encode_masks(masks), labels, crowd):
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(label),
                "segmentation": rle, "area": float(mask.sum()), "bbox": [x, y, w, h], "iscrowd": int(is_crowd),
            })
            category_ids.add(int(label))
    return {"images": images, "annotations": annotations, "categories": [{"id": c} for c in sorted(category_ids)]}


def _instance_scores(targets, predictions, shape_of) -> tuple[list[float], float]:
    """Per-image mask AP and the dataset's mask AP, by :func:`segnotes.metrics.average_precision`."""
    image_ids = list(range(1, len(targets) + 1))
    ground_truth = _coco_ground_truth(targets, image_ids, shape_of)
    known = {c["id"] for c in ground_truth["categories"]}
    # Detections of classes absent from every target cannot be scored against COCO's category list: drop them.
    detections = [d for d in detections_from_predictions(predictions, image_ids) if d["category_id"] in known]
    per_image = []
    for image_id, image_info in zip(image_ids, ground_truth["images"]):
        single = {
            "images": [image_info],
            "annotations": [a for a in ground_truth["annotations"] if a["image_id"] == image_id],
            "categories": ground_truth["categories"],
        }
        result = average_precision(single, [d for d in detections if d["image_id"] == image_id], iou_type="segm")
        per_image.append(result["AP"])
    return per_image, average_precision(ground_truth, detections, iou_type="segm")["AP"]


def _instance_rgb(image, instances: dict, score_threshold: float) -> tuple[np.ndarray, list, np.ndarray]:
    """Masks blended on the image, plus box segments and colours for a LineCollection."""
    masks = instances["masks"]
    if masks.ndim == 4:  # [N, 1, H, W] probabilities from a model: threshold at 0.5 as Mask R-CNN does
        masks = masks[:, 0] > 0.5
    masks = masks.bool()
    keep = torch.ones(len(masks), dtype=torch.bool)
    if "scores" in instances:
        keep = instances["scores"].detach().cpu() >= score_threshold
    masks = masks.detach().cpu()[keep]
    colors = instance_colors(len(masks))
    rgb = overlay_instances(image, masks, colors=colors) if len(masks) else _to_numpy_image(image)
    segments = []
    for x1, y1, x2, y2 in instances["boxes"].detach().cpu()[keep].tolist():
        segments.append([(x1, y1), (x2, y1), (x2, y2), (x1, y2), (x1, y1)])
    return rgb, segments, colors


def _labels_rgb(labels: Tensor, image) -> np.ndarray:
    """A label map in VOC colours over the image: background shows the dimmed image, void stays cream."""
    array = labels.detach().cpu().numpy()
    rgb = _to_numpy_image(image) * 0.6
    labelled = array > 0
    rgb[labelled] = 0.3 * rgb[labelled] + 0.7 * _PALETTE[array[labelled].clip(0, 255)]
    return rgb


def _difference_rgb(target: Tensor, pred_a: Tensor, pred_b: Tensor, image, ignore_index: int) -> np.ndarray:
    """Where the two models disagree: right only for A (A's colour), right only for B (B's colour)."""
    target, pred_a, pred_b = (x.detach().cpu() for x in (target, pred_a, pred_b))
    right_a = (pred_a == target).numpy()
    right_b = (pred_b == target).numpy()
    rgb = _base_rgb(image, tuple(target.shape))
    rgb[right_a & ~right_b] = _MODEL_COLORS[0]
    rgb[right_b & ~right_a] = _MODEL_COLORS[1]
    rgb[~right_a & ~right_b] = OUTCOME_COLORS["false positive"]
    rgb[(target == ignore_index).numpy()] = OUTCOME_COLORS["ignored"]
    return rgb


class _ModelComparisonPlot:
    """Two models on the same images; ``draw(index)`` shows one image and highlights it in the score bars."""

    def __init__(
        self,
        images: Sequence,
        targets: Sequence,
        predictions_a: Sequence,
        predictions_b: Sequence,
        names: tuple[str, str] = ("A", "B"),
        scores=None,
        score_name: str | None = None,
        num_classes: int | None = None,
        ignore_index: int = 255,
        score_threshold: float = 0.5,
        size: float = 2.3,
    ):
        fn = "model_comparison_figure"
        self.mode = _check_model_inputs(fn, images, targets, predictions_a, predictions_b, scores)
        if not (isinstance(names, (tuple, list)) and len(names) == 2):
            raise TypeError(f"{fn}: names must be a pair of strings, got {describe(names)}")
        self.images, self.targets = images, targets
        self.predictions = (predictions_a, predictions_b)
        self.names = tuple(str(name) for name in names)
        self.ignore_index = ignore_index
        self.score_threshold = score_threshold
        if self.mode == "semantic" and num_classes is None:
            labels = torch.cat([x.reshape(-1) for group in (targets, predictions_a, predictions_b) for x in group])
            num_classes = int(labels[labels != ignore_index].max()) + 1
        self.num_classes = num_classes
        self.score_name = score_name or ("mean IU" if self.mode == "semantic" else "mask AP")
        self.scores, self.totals = self._scores(scores)
        self._build(size)

    def _scores(self, given) -> tuple[list[list[float]], list[float | None]]:
        if given is not None:
            per_image = [[float(v) for v in side] for side in given]
            return per_image, [None, None]
        per_image, totals = [], []
        for predictions in self.predictions:
            if self.mode == "semantic":
                scores, total = _semantic_scores(self.targets, predictions, self.num_classes, self.ignore_index)
            else:
                shapes = {i + 1: tuple(image.shape[-2:]) for i, image in enumerate(self.images)}
                scores, total = _instance_scores(self.targets, predictions, shapes.__getitem__)
            per_image.append(scores)
            totals.append(total)
        return per_image, totals

    def _build(self, size: float) -> None:
        self.figure = _new_figure(size * 4.4, size * 2.1)
        top, bottom = self.figure.subfigures(2, 1, height_ratios=[1.25, 1])
        axes = top.subplots(1, 4)
        blank = np.zeros((*self.images[0].shape[-2:], 3), dtype=np.float32)
        if self.mode == "semantic":
            titles = ("ground truth", *self.names, f"right only for {self.names[0]} / {self.names[1]}")
        else:
            titles = ("image", "ground truth", *self.names)
        self._panels = [_image_axes(ax, blank, title) for ax, title in zip(axes, titles)]
        # The two models' panels: 2nd and 3rd (semantic) or 3rd and 4th (instance); their titles carry the scores.
        self._model_titles = [ax.title for ax in (axes[1:3] if self.mode == "semantic" else axes[2:4])]
        self._boxes = []
        if self.mode == "instance":
            for ax in axes[1:]:
                self._boxes.append(ax.add_collection(LineCollection([], linewidths=0.8)))
        else:
            top.legend(
                handles=[Patch(color=_MODEL_COLORS[0], label=f"only {self.names[0]} right"),
                         Patch(color=_MODEL_COLORS[1], label=f"only {self.names[1]} right"),
                         Patch(color=OUTCOME_COLORS["false positive"], label="both wrong")],
                loc="outside lower right", ncols=3, fontsize=7, frameon=False,
            )
        ax = bottom.subplots()
        difference = np.array(self.scores[1]) - np.array(self.scores[0])
        positions = np.arange(len(difference))
        colors = [_MODEL_COLORS[1] if d >= 0 else _MODEL_COLORS[0] for d in np.nan_to_num(difference)]
        self._bars = ax.bar(positions, np.nan_to_num(difference), color=colors, edgecolor="none", linewidth=1.5)
        ax.axhline(0, color="0.3", linewidth=0.8)
        ax.set_xlim(-0.6, len(positions) - 0.4)
        ax.set_xlabel("image", fontsize=8)
        ax.set_ylabel(f"{self.score_name}\n{self.names[1]} − {self.names[0]}", fontsize=8)
        ax.tick_params(labelsize=7)
        if len(positions) <= 30:
            ax.set_xticks(positions)
        self._summary = ax.set_title("", fontsize=9)
        self._selected = 0

    def animated(self) -> list:
        """The artists :meth:`draw` changes (for blitting)."""
        return [*self._panels, *self._boxes, *self._model_titles, *self._bars, self._summary]

    def draw(self, index: int, score_threshold: float | None = None) -> dict:
        if score_threshold is not None:
            self.score_threshold = score_threshold
        scores = [side[index] for side in self.scores]
        pictures = self.pictures(index, self.score_threshold)
        for panel, (rgb, _, _) in zip(self._panels, pictures):
            panel.set_data(_rgba8(rgb))
        for boxes, (_, segments, colors) in zip(self._boxes, pictures[1:]):  # instance mode: GT, A, B
            boxes.set_segments(segments)
            boxes.set_color(colors if len(colors) else "none")
        for title, name, score in zip(self._model_titles, self.names, scores):
            title.set_text(f"{name}: {self.score_name} {_fmt(score)}")
        self._bars[self._selected].set_edgecolor("none")
        self._bars[index].set_edgecolor("black")
        self._selected = index
        summary = f"image {index}: {self.names[1]} − {self.names[0]} = {_signed(scores[1] - scores[0])}"
        if self.totals[0] is not None:
            summary += (f"   ·   all images: {self.names[0]} {_fmt(self.totals[0])}, "
                        f"{self.names[1]} {_fmt(self.totals[1])}")
        self._summary.set_text(summary)
        result = {"index": index, "scores": scores, "totals": list(self.totals)}
        if self.mode == "instance":  # detections drawn by A and by B
            result["shown"] = [len(segments) for _, segments, _ in pictures[2:]]
        return result

    def pictures(self, index: int, score_threshold: float) -> list[tuple[np.ndarray, list, np.ndarray]]:
        """The four panels of image ``index``: (float RGB [H, W, 3], box segments, box colours) each.

        Semantic mode: ground truth, A, B, where only one is right (no boxes). Instance mode: image, ground truth,
        A and B, the models' detections scored at least ``score_threshold``.
        """
        image, target = self.images[index], self.targets[index]
        if self.mode == "semantic":
            pred_a, pred_b = (group[index] for group in self.predictions)
            no_boxes = ([], np.zeros((0, 3), dtype=np.float32))
            return [*((_labels_rgb(labels, image), *no_boxes) for labels in (target, pred_a, pred_b)),
                    (_difference_rgb(target, pred_a, pred_b, image, self.ignore_index), *no_boxes)]
        groups = (target, *(group[index] for group in self.predictions))
        return [(_to_numpy_image(image), [], np.zeros((0, 3), dtype=np.float32)),
                *(_instance_rgb(image, instances, score_threshold) for instances in groups)]


def _signed(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:+.3f}"


def model_comparison_figure(
    images: Sequence,
    targets: Sequence,
    predictions_a: Sequence,
    predictions_b: Sequence,
    names: tuple[str, str] = ("A", "B"),
    index: int = 0,
    scores=None,
    score_name: str | None = None,
    num_classes: int | None = None,
    ignore_index: int = 255,
    score_threshold: float = 0.5,
    size: float = 2.3,
) -> Figure:
    """Two models' masks side by side on the same images, with the per-image difference of their scores.

    Works for both kinds of segmentation, told apart by the targets:

    - semantic: ``targets`` and predictions are label maps (LongTensor[H, W], ``ignore_index`` = void). Panels:
      ground truth, model A, model B, and where only one of them is right. Per-image score: mean IU of the
      image; the title adds the data set's mean IU (one confusion matrix over all images).
    - instance: ``targets`` are torchvision target dicts (``boxes`` [N, 4] xyxy, ``labels`` [N], ``masks``
      [N, H, W] bool, optional ``iscrowd``) and predictions torchvision model outputs (``boxes``, ``labels``,
      ``scores``, ``masks`` [N, 1, H, W] probabilities or [N, H, W] bool). Panels: image, ground truth, A, B
      (detections with score >= ``score_threshold``). Per-image score: mask AP of the image by
      :func:`segnotes.metrics.average_precision`; the title adds the data set's mask AP.

    Below, one bar per image: score of B minus score of A (blue where B is better); ``index`` is outlined.

    Args:
        images (list of FloatTensor[3, H, W] in [0, 1]): the images.
        targets (list): ground truth, one per image (label maps or target dicts).
        predictions_a (list): model A's predictions, same format as ``targets`` (model outputs for instances).
        predictions_b (list): model B's predictions.
        names: the two models' names.
        index: the image to show.
        scores (pair of lists of floats, optional): per-image scores of A and B to use instead of computing
            them (e.g. boundary IoU); then name them with ``score_name``.
        score_name: what the scores are, for labels.
        num_classes: semantic mode: C (default: the largest label + 1).
        ignore_index: semantic mode: the void label.
        score_threshold: instance mode: the lowest score drawn.
        size: inches per panel.

    Returns:
        Figure.
    """
    plot = _ModelComparisonPlot(
        images, targets, predictions_a, predictions_b, names=names, scores=scores, score_name=score_name,
        num_classes=num_classes, ignore_index=ignore_index, score_threshold=score_threshold, size=size,
    )
    check_int("model_comparison_figure", "index", index, minimum=0)
    if index >= len(images):
        raise ValueError(f"model_comparison_figure: index must be < {len(images)} (the number of images), got {index}")
    plot.draw(index)
    return plot.figure
