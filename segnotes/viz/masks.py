"""Drawing label maps and instance masks with matplotlib.

Every function takes tensors or arrays in the package's own formats and either draws on an ``Axes`` it is given
or returns a new ``Figure``, so the book can place the figure with ``glue`` and tests can render it headless.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .._checks import check_tensor
from ..data.png import voc_palette  # one colour map for label files and figures

__all__ = [
    "voc_palette",
    "colorize_labels",
    "instance_colors",
    "overlay_instances",
    "draw_instances",
    "draw_semantic",
    "gallery",
]


def _to_numpy_image(image) -> np.ndarray:
    """FloatTensor[3, H, W] in [0, 1] (or uint8 array [H, W, 3]) -> float array [H, W, 3] in [0, 1]."""
    if isinstance(image, torch.Tensor):
        check_tensor("viz", "image", image, ndim=3)
        array = image.detach().cpu().float()
        if array.shape[0] == 3:
            array = array.permute(1, 2, 0)
        array = array.numpy()
    else:
        array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"viz: image must be [3, H, W] or [H, W, 3], got shape {tuple(array.shape)}")
    return np.clip(array, 0.0, 1.0)


def colorize_labels(labels, ignore_index: int = 255) -> np.ndarray:
    """Semantic label map -> RGB image with the VOC palette (void in VOC's cream colour).

    Args:
        labels (LongTensor[H, W] or ndarray[H, W]): class indices, ``ignore_index`` for void.

    Returns:
        ndarray[H, W, 3] (float32) in [0, 1].
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 2:
        raise ValueError(f"colorize_labels: labels must be 2-D [H, W], got shape {tuple(array.shape)}")
    palette = voc_palette(256).astype(np.float32) / 255.0
    return palette[np.clip(array, 0, 255).astype(np.int64)]


def instance_colors(count: int, seed: int = 0) -> np.ndarray:
    """``count`` distinct, saturated colours (golden-ratio hue steps), float [count, 3] in [0, 1]."""
    import colorsys

    hues = (seed * 0.13 + np.arange(count) * 0.618033988749895) % 1.0
    return np.array([colorsys.hsv_to_rgb(h, 0.85, 1.0) for h in hues], dtype=np.float32).reshape(count, 3)


def overlay_instances(image, masks, alpha: float = 0.55, colors: np.ndarray | None = None) -> np.ndarray:
    """Blend instance masks onto an image, one colour per instance.

    Args:
        image (FloatTensor[3, H, W] in [0, 1]): the image.
        masks (Tensor[N, H, W], bool or uint8): instance masks.
        alpha: opacity of the mask colours.
        colors (ndarray[N, 3] in [0, 1], optional): colours; distinct ones by default.

    Returns:
        ndarray[H, W, 3] (float32) in [0, 1].
    """
    rgb = _to_numpy_image(image).astype(np.float32).copy()
    masks_np = masks.detach().cpu().numpy().astype(bool) if isinstance(masks, torch.Tensor) else np.asarray(masks, bool)
    if masks_np.ndim != 3 or masks_np.shape[1:] != rgb.shape[:2]:
        raise ValueError(
            f"overlay_instances: masks must be [N, H, W] with H, W = {rgb.shape[:2]}, got shape {masks_np.shape}"
        )
    colors = instance_colors(len(masks_np)) if colors is None else np.asarray(colors, dtype=np.float32)
    for mask, color in zip(masks_np, colors):
        rgb[mask] = (1 - alpha) * rgb[mask] + alpha * color
    return rgb


def draw_instances(ax, image, target: dict, category_names: dict | None = None, show_boxes: bool = True) -> None:
    """Draw an image with its instances (masks, boxes, class names) on ``ax``.

    Args:
        ax: a matplotlib Axes.
        image (FloatTensor[3, H, W]): the image.
        target: torchvision detection format: ``boxes`` (Tensor[N, 4] xyxy), ``labels`` (Tensor[N]), ``masks``
            (Tensor[N, H, W]); optional ``iscrowd`` (crowd regions are hatched) and ``mask_valid`` (withheld masks
            are drawn as dashed boxes only).
        category_names: id -> name, for the labels.
    """
    masks = target["masks"]
    valid = target.get("mask_valid", torch.ones(len(masks), dtype=torch.bool))
    colors = instance_colors(len(masks))
    ax.imshow(overlay_instances(image, masks[valid], colors=colors[valid.numpy()]))
    crowd = target.get("iscrowd", torch.zeros(len(masks), dtype=torch.int64))
    for index, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
        x1, y1, x2, y2 = box
        style = "--" if not bool(valid[index]) else "-"
        if show_boxes:
            ax.add_patch(
                _rectangle((x1, y1), x2 - x1, y2 - y1, colors[index], style, hatch="///" if crowd[index] else None)
            )
        name = category_names.get(label, str(label)) if category_names else str(label)
        ax.text(x1, y1 - 1, name, fontsize=6, color="white", va="bottom",
                bbox=dict(facecolor=colors[index], alpha=0.8, pad=0.5, linewidth=0))
    ax.set_axis_off()


def _rectangle(xy, width, height, color, linestyle, hatch=None):
    from matplotlib.patches import Rectangle

    return Rectangle(xy, width, height, fill=False, edgecolor=color, linewidth=0.8, linestyle=linestyle, hatch=hatch)


def draw_semantic(ax, labels, image=None, alpha: float = 0.6) -> None:
    """Draw a semantic label map on ``ax`` (over ``image`` if given), VOC colours, void in cream."""
    colored = colorize_labels(labels)
    if image is not None:
        base = _to_numpy_image(image)
        colored = (1 - alpha) * base + alpha * colored
    ax.imshow(colored, interpolation="nearest")
    ax.set_axis_off()


def gallery(
    items: Sequence[tuple],
    category_names: dict | None = None,
    semantic: Sequence | None = None,
    columns: int | None = None,
    size: float = 2.0,
) -> Figure:
    """A grid of images with their instances, and optionally their semantic labels underneath.

    Args:
        items: ``(image, target)`` pairs from an instance dataset.
        category_names: id -> name.
        semantic: label maps (LongTensor[H, W]) for the same images, drawn in a second row.
        columns: images per row (default: all in one row).
        size: inches per panel.

    Returns:
        Figure.
    """
    count = len(items)
    columns = columns or count
    rows_per_item = 2 if semantic is not None else 1
    grid_rows = -(-count // columns) * rows_per_item
    figure = Figure(figsize=(size * columns, size * grid_rows), layout="constrained")
    axes = figure.subplots(grid_rows, columns, squeeze=False)
    for ax in axes.flat:  # panels left empty in the last row stay blank
        ax.set_axis_off()
    for index, (image, target) in enumerate(items):
        row, column = divmod(index, columns)
        draw_instances(axes[row * rows_per_item, column], image, target, category_names)
        if semantic is not None:
            draw_semantic(axes[row * rows_per_item + 1, column], semantic[index])
    return figure
