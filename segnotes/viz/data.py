"""Figures about a data set: how one shapes image is made, object sizes, instances per image."""
from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .masks import colorize_labels, instance_colors

__all__ = ["anatomy_figure", "size_figure"]


def anatomy_figure(rendered, box: tuple[int, int, int, int] | None = None, size: float = 2.4) -> Figure:
    """The layers of one rendered shapes image, side by side: image, owners, semantic label, and a zoom.

    Args:
        rendered: a :class:`segnotes.data.shapes.Rendered` (``image`` uint8 [S, S, 3], ``owners`` int32 [S, S],
            ``label`` uint8 [S, S]).
        box: ``(x1, y1, x2, y2)`` pixels of the zoomed panel (default: the middle quarter).
        size: inches per panel.

    Returns:
        Figure with four panels.
    """
    image, owners, label = rendered.image, rendered.owners, rendered.label
    side = image.shape[0]
    x1, y1, x2, y2 = box if box is not None else (side // 4, side // 4, 3 * side // 4, 3 * side // 4)
    colors = np.concatenate([np.zeros((1, 3), np.float32), instance_colors(int(owners.max()))])
    figure = Figure(figsize=(4 * size, size), layout="constrained")
    axes = figure.subplots(1, 4)
    panels = [
        (image, "image (anti-aliased)"),
        (colors[owners], "owners: one colour per instance"),
        (colorize_labels(label), "semantic label, void band in cream"),
        (colorize_labels(label)[y1:y2, x1:x2], "zoom on the label"),
    ]
    for ax, (picture, title) in zip(axes, panels):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_axis_off()
    from matplotlib.patches import Rectangle

    axes[2].add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, edgecolor="white", linewidth=1))
    return figure


def size_figure(coco: dict, area_ranges: dict, size: float = 3.0) -> Figure:
    """Object areas by category (log scale, COCO size ranges marked) and instances per image.

    Args:
        coco: a COCO instances dict (``images``, ``annotations``, ``categories``); crowd regions are left out.
        area_ranges: ``{"small": (lo, hi), "medium": ..., "large": ...}`` in pixels, e.g.
            :func:`segnotes.data.area_ranges`.
        size: inches per panel height.

    Returns:
        Figure with two panels.
    """
    annotations = [a for a in coco["annotations"] if not a.get("iscrowd", 0)]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    figure = Figure(figsize=(3.4 * size, size), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(2, 1))
    areas = [[a["area"] for a in annotations if a["category_id"] == cid] for cid in names]
    left.boxplot(areas, orientation="horizontal", whis=(1, 99), showfliers=False)
    left.set_yticks(range(1, len(names) + 1), list(names.values()), fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("visible area (pixels)")
    for name in ("small", "medium"):
        left.axvline(area_ranges[name][1], color="0.5", linestyle="--", linewidth=0.8)
        left.text(area_ranges[name][1], 0.55, f"{name} | ", fontsize=7, ha="right", va="top", color="0.3")
    left.set_title("object sizes (1st-99th percentile; dashed: COCO size ranges, scaled)", fontsize=8)
    per_image = np.bincount([a["image_id"] for a in annotations], minlength=max(i["id"] for i in coco["images"]) + 1)
    counts = per_image[[i["id"] for i in coco["images"]]]
    right.hist(counts, bins=np.arange(counts.max() + 2) - 0.5, color="0.4")
    right.set_xlabel("instances per image")
    right.set_ylabel("images")
    right.set_title("instances per image", fontsize=8)
    return figure
