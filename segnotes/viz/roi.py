"""Figures for the Mask R-CNN chapter: where RoIPool and RoIAlign read, and one image through the model.

Coordinates. Every helper here works in *feature-map cells* with the pixel model of RoIAlign's
``aligned=True``: cell ``(i, j)`` (row ``i``, column ``j``) covers ``[j, j + 1) x [i, i + 1)``, so
its value sits at its centre ``(j + 0.5, i + 0.5)``. A box ``(x1, y1, x2, y2)`` in image pixels
covers ``[x1 * s, x2 * s) x [y1 * s, y2 * s)`` in cells (``s = spatial_scale``), and feature
coordinate ``c`` is image coordinate ``c / s``. (The ops themselves index values by integer
position: :func:`segnotes.ops.roi_align` reads the value of cell ``j`` at coordinate ``j``, which is
why ``aligned=True`` shifts boxes by -0.5; here that shift is undone, so a point's coordinates
say where it lies on the drawn grid.)

The geometry helpers (:func:`roi_pool_bins`, :func:`roi_align_sample_points`) repeat the ops'
arithmetic, rounding for rounding; ``tests/viz/test_roi.py`` checks them against the ops, so the
figures show what the ops compute. :func:`roi_misalignment` turns the same geometry into numbers,
and :func:`mask_rcnn_pipeline_figure` shows the stages of a torchvision-style Mask R-CNN on one
image (:func:`mask_rcnn_stages` returns them as tensors).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from .._checks import check_int, check_positive, check_tensor, describe
from .compare import _new_figure
from .masks import _to_numpy_image, instance_colors, overlay_instances

__all__ = [
    "roi_pool_bins",
    "roi_align_sample_points",
    "roi_sampling_figure",
    "roi_misalignment",
    "misalignment_table",
    "mask_rcnn_stages",
    "mask_rcnn_pipeline_figure",
]


# ---------------------------------------------------------------------------------------------
# Argument checks.


def _check_box(fn: str, box) -> tuple[float, float, float, float]:
    """``box`` as four finite floats ``(x1, y1, x2, y2)`` with ``x2 >= x1`` and ``y2 >= y1``."""
    if isinstance(box, Tensor):
        values = box.detach().cpu().flatten().tolist() if box.ndim == 1 else None
    elif isinstance(box, (list, tuple)):
        values = list(box)
    else:
        values = None
    if (
        values is None
        or len(values) != 4
        or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
    ):
        raise ValueError(f"{fn}: box must be 4 finite numbers (x1, y1, x2, y2), got {describe(box)}")
    x1, y1, x2, y2 = (float(v) for v in values)
    if x2 < x1 or y2 < y1:
        raise ValueError(f"{fn}: box must have x2 >= x1 and y2 >= y1, got {(x1, y1, x2, y2)}")
    return x1, y1, x2, y2


def _check_boxes(fn: str, boxes) -> Tensor:
    """``boxes`` as a non-empty float64 Tensor[K, 4] of finite, well-ordered xyxy boxes."""
    check_tensor(fn, "boxes", boxes, ndim=2, floating=True, last_dim=4)
    if boxes.shape[0] == 0:
        raise ValueError(f"{fn}: boxes must hold at least one box, got {describe(boxes)}")
    boxes = boxes.detach().cpu().double()
    if not bool(torch.isfinite(boxes).all()):
        raise ValueError(f"{fn}: boxes must be finite")
    bad = (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bool(bad.any()):
        raise ValueError(f"{fn}: boxes must have x2 >= x1 and y2 >= y1, got {boxes[bad][0].tolist()}")
    return boxes


def _check_output_size(fn: str, output_size) -> tuple[int, int]:
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in pair)
    ):
        raise ValueError(f"{fn}: output_size must be an int >= 1 or a pair of them (oh, ow), got {output_size!r}")
    return int(pair[0]), int(pair[1])


def _check_feature_size(fn: str, feature_size) -> tuple[int, int] | None:
    if feature_size is None:
        return None
    if (
        not isinstance(feature_size, Sequence)
        or len(feature_size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in feature_size)
    ):
        raise ValueError(f"{fn}: feature_size must be a pair of ints >= 1 (height, width), got {feature_size!r}")
    return int(feature_size[0]), int(feature_size[1])


# ---------------------------------------------------------------------------------------------
# Geometry, as the ops compute it (vectorised over K boxes).


def _round_half_away(x: Tensor) -> Tensor:
    """C's ``round`` (halves away from zero), which torchvision's RoIPool kernel uses."""
    whole = x.trunc()
    return torch.where((x - whole).abs() == 0.5, whole + x.sign(), x.round())


def _pool_axis(start: Tensor, end: Tensor, scale: float, bins: int, size: int | None) -> tuple[Tensor, Tensor]:
    """RoIPool's bins along one axis: cells ``first <= cell < stop`` of each bin.

    Args:
        start, end (Tensor[K]): box coordinates in image pixels.
        scale (float): spatial_scale.
        bins (int): output bins along this axis.
        size (int or None): cells of the map along this axis; None for an unbounded map.

    Returns:
        first, stop (Tensor[K, bins], int64): ``stop >= first``; equal for a bin clipped away.
    """
    q_start = _round_half_away(start * scale)  # [K], first cell of the RoI
    q_end = _round_half_away(end * scale)  # [K], last cell of the RoI (inclusive)
    cells = (q_end - q_start + 1).clamp(min=1)  # [K]
    bin_size = cells / bins  # [K]
    index = torch.arange(bins, dtype=start.dtype)  # [B]
    first = torch.floor(index * bin_size[:, None]) + q_start[:, None]  # [K, B]
    stop = torch.ceil((index + 1) * bin_size[:, None]) + q_start[:, None]  # [K, B]
    if size is not None:
        first, stop = first.clamp(0, size), stop.clamp(0, size)
    return first.long(), torch.maximum(stop, first).long()


def _align_axis(start: Tensor, end: Tensor, scale: float, bins: int, sampling_ratio: int, aligned: bool):
    """RoIAlign's bin borders and sample positions along one axis, in cell coordinates (centres at j + 0.5).

    Args:
        start, end (Tensor[K]): box coordinates in image pixels.
        scale (float): spatial_scale.
        bins (int): output bins along this axis.
        sampling_ratio (int): samples per bin along this axis (>= 1).
        aligned (bool): as in :func:`segnotes.ops.roi_align`.

    Returns:
        borders (Tensor[K, bins + 1]): bin borders.
        samples (Tensor[K, bins, sampling_ratio]): sample positions.
    """
    offset = 0.5 if aligned else 0.0
    lo = start * scale - offset  # [K], in the op's coordinates (value of cell j at j)
    length = end * scale - offset - lo
    if not aligned:  # legacy: RoIs smaller than a cell are enlarged to one cell
        length = length.clamp(min=1.0)
    bin_size = length / bins  # [K]
    bin_index = torch.arange(bins, dtype=start.dtype)[None, :, None]  # [1, B, 1]
    sample_index = torch.arange(sampling_ratio, dtype=start.dtype)[None, None, :]  # [1, 1, S]
    lo_, size_ = lo[:, None, None], bin_size[:, None, None]
    # The op's expression, then + 0.5 into this module's coordinates.
    samples = lo_ + bin_index * size_ + (sample_index + 0.5) * size_ / sampling_ratio + 0.5  # [K, B, S]
    borders = lo[:, None] + torch.arange(bins + 1, dtype=start.dtype) * bin_size[:, None] + 0.5  # [K, B + 1]
    return borders, samples


def _interpolation_taps(coord: float, size: int) -> list[tuple[int, float]]:
    """The cells one sample reads along one axis and their linear weights, with RoIAlign's border rules.

    ``coord`` is in this module's coordinates (centres at j + 0.5). A sample more than one cell
    outside the map reads nothing; one within a cell of the border reads the border cell.
    """
    pos = coord - 0.5  # the op's coordinate: the value of cell j sits at j
    if pos < -1.0 or pos > size:
        return []
    pos = min(max(pos, 0.0), size - 1.0)
    low = math.floor(pos)
    frac = pos - low
    high = min(low + 1, size - 1)
    taps = [(low, 1.0 - frac)] if high == low else [(low, 1.0 - frac), (high, frac)]
    return [(cell, weight) for cell, weight in taps if weight > 0]  # a weight of 0 reads nothing


def _bilinear_taps(x: float, y: float, height: int, width: int) -> list[tuple[int, int, float]]:
    """``(row, col, weight)`` of the (up to) four cells a sample at ``(x, y)`` interpolates between.

    Cells with weight 0 (a sample exactly on a centre's row or column) are left out.
    """
    return [(r, c, wy * wx) for r, wy in _interpolation_taps(y, height) for c, wx in _interpolation_taps(x, width)]


def roi_pool_bins(
    box,
    spatial_scale: float,
    output_size: int | tuple[int, int],
    feature_size: tuple[int, int] | None = None,
    dtype: torch.dtype = torch.float32,
) -> list[dict]:
    """The cells each RoIPool bin max-pools over, as :func:`segnotes.ops.roi_pool` (and torchvision) compute them.

    The box corners are scaled and rounded to cells (halves away from zero): ``x1q = round(x1 * s)``,
    ``x2q = round(x2 * s)``, and the RoI covers cells ``x1q .. x2q`` inclusive, ``w = max(x2q - x1q + 1, 1)``
    cells. Bin ``j`` of ``ow`` covers cells ``x1q + floor(j * w / ow)`` to ``x1q + ceil((j + 1) * w / ow)``
    (exclusive), so neighbouring bins can share a cell; likewise for rows. With ``feature_size`` the
    ranges are clipped to the map as the op clips them (a bin clipped away becomes empty, and pools 0).

    Args:
        box (Tensor[4] or 4 numbers): ``(x1, y1, x2, y2)`` in image pixels, ``x2 >= x1``, ``y2 >= y1``.
        spatial_scale (float): feature cells per image pixel (1/16 for a stride-16 map).
        output_size (int or Tuple[int, int]): bins ``(oh, ow)``.
        feature_size (Tuple[int, int], optional): map ``(height, width)`` to clip to; None: no clipping.
        dtype: the float type of the arithmetic (that of the feature map the op would see).

    Returns:
        list of ``oh * ow`` dicts in row-major bin order: ``bin=(i, j)``, ``rows=(r0, r1)`` and
        ``cols=(c0, c1)``, half-open cell ranges (ints; ``r1 == r0`` for an empty bin).
    """
    fn = "roi_pool_bins"
    x1, y1, x2, y2 = _check_box(fn, box)
    check_positive(fn, "spatial_scale", spatial_scale)
    out_h, out_w = _check_output_size(fn, output_size)
    size = _check_feature_size(fn, feature_size)
    coords = torch.tensor([[x1, y1, x2, y2]], dtype=dtype)  # [1, 4]
    height, width = size if size is not None else (None, None)
    row_first, row_stop = _pool_axis(coords[:, 1], coords[:, 3], spatial_scale, out_h, height)  # [1, oh] each
    col_first, col_stop = _pool_axis(coords[:, 0], coords[:, 2], spatial_scale, out_w, width)  # [1, ow] each
    return [
        {
            "bin": (i, j),
            "rows": (int(row_first[0, i]), int(row_stop[0, i])),
            "cols": (int(col_first[0, j]), int(col_stop[0, j])),
        }
        for i in range(out_h)
        for j in range(out_w)
    ]


def roi_align_sample_points(
    box,
    spatial_scale: float,
    output_size: int | tuple[int, int],
    sampling_ratio: int,
    aligned: bool = True,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Where RoIAlign samples, as :func:`segnotes.ops.roi_align` (and torchvision) compute it.

    Coordinates are feature cells with cell ``(i, j)`` covering ``[j, j + 1) x [i, i + 1)``, so the
    value of cell ``j`` sits at ``x = j + 0.5`` (the op's own coordinate is ``x - 0.5``: it puts that
    value at ``j``). With ``aligned=True`` the points lie exactly where the continuous box
    ``box * spatial_scale`` says: bin ``(i, j)`` spans ``x1 * s + j * bw`` to ``x1 * s + (j + 1) * bw``
    with ``bw = (x2 - x1) * s / ow``, and its samples sit at the centres of a ``sampling_ratio`` x
    ``sampling_ratio`` grid of sub-cells. With ``aligned=False`` (legacy) every point lies half a cell
    further right and down, and boxes under one cell are enlarged to one cell. Each sample is then
    bilinearly interpolated from the (up to) four cells whose centres surround it, and a bin is the
    mean of its samples.

    Args:
        box (Tensor[4] or 4 numbers): ``(x1, y1, x2, y2)`` in image pixels, ``x2 >= x1``, ``y2 >= y1``.
        spatial_scale (float): feature cells per image pixel.
        output_size (int or Tuple[int, int]): bins ``(oh, ow)``.
        sampling_ratio (int): samples per bin along each axis, >= 1 (the adaptive ``<= 0`` of the op
            is not drawn).
        aligned (bool): the op's ``aligned``.
        dtype: the float type of the arithmetic and of the result.

    Returns:
        Tensor[oh, ow, sampling_ratio**2, 2] (``dtype``): ``(x, y)`` of each bin's samples, in
        row-major order within the bin.
    """
    fn = "roi_align_sample_points"
    x1, y1, x2, y2 = _check_box(fn, box)
    check_positive(fn, "spatial_scale", spatial_scale)
    out_h, out_w = _check_output_size(fn, output_size)
    sr = check_int(fn, "sampling_ratio", sampling_ratio, minimum=1)
    coords = torch.tensor([[x1, y1, x2, y2]], dtype=dtype)  # [1, 4]
    _, ys = _align_axis(coords[:, 1], coords[:, 3], spatial_scale, out_h, sr, bool(aligned))  # [1, oh, sr]
    _, xs = _align_axis(coords[:, 0], coords[:, 2], spatial_scale, out_w, sr, bool(aligned))  # [1, ow, sr]
    x = xs[0][None, :, None, :].expand(out_h, out_w, sr, sr)  # [oh, ow, sy, sx]
    y = ys[0][:, None, :, None].expand(out_h, out_w, sr, sr)  # [oh, ow, sy, sx]
    return torch.stack([x, y], dim=-1).reshape(out_h, out_w, sr * sr, 2)  # [oh, ow, sr*sr, 2]


# ---------------------------------------------------------------------------------------------
# Figure 1: RoIPool and RoIAlign on one grid.


def roi_sampling_figure(
    box,
    spatial_scale: float = 1 / 16,
    output_size: int | tuple[int, int] = 2,
    sampling_ratio: int = 2,
    feature_size: tuple[int, int] | None = None,
    aligned: bool = True,
    highlight: tuple[int, int, int] = (0, 0, 0),
    size: float = 4.0,
) -> Figure:
    """RoIPool (left) and RoIAlign (right) reading the same box from the same feature map.

    Left: the continuous box ``box * spatial_scale`` (dashed), the box RoIPool rounds it to (solid),
    and the cells each output bin max-pools over, shaded in the bin's colour (overlaps mix colours;
    cells between bins are read by none). Right: the same continuous box, RoIAlign's exact bin borders,
    its sample points coloured by bin, and for one highlighted sample the four cell centres it
    interpolates between, with the bilinear weights. The geometry comes from :func:`roi_pool_bins`
    and :func:`roi_align_sample_points`. Axes count feature cells (bottom, left) and image pixels
    (top, right).

    Args:
        box (Tensor[4] or 4 numbers): ``(x1, y1, x2, y2)`` in image pixels.
        spatial_scale (float): feature cells per image pixel (1/16: stride 16).
        output_size (int or Tuple[int, int]): bins ``(oh, ow)``.
        sampling_ratio (int): RoIAlign samples per bin along each axis (>= 1).
        feature_size (Tuple[int, int], optional): map ``(height, width)`` in cells; default: the
            smallest map holding both boxes plus one cell.
        aligned (bool): RoIAlign's ``aligned`` (True, the default, is the Mask R-CNN pixel model).
        highlight (Tuple[int, int, int]): ``(i, j, k)``: sample ``k`` of bin ``(i, j)`` gets its weights drawn.
        size (float): height of the figure in inches.

    Returns:
        Figure with two axes.
    """
    fn = "roi_sampling_figure"
    x1, y1, x2, y2 = _check_box(fn, box)
    check_positive(fn, "spatial_scale", spatial_scale)
    out_h, out_w = _check_output_size(fn, output_size)
    sr = check_int(fn, "sampling_ratio", sampling_ratio, minimum=1)
    size_hw = _check_feature_size(fn, feature_size)
    if (
        not isinstance(highlight, Sequence)
        or len(highlight) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in highlight)
        or not (0 <= highlight[0] < out_h and 0 <= highlight[1] < out_w and 0 <= highlight[2] < sr * sr)
    ):
        raise ValueError(
            f"{fn}: highlight must be (i, j, k) with 0 <= i < {out_h}, 0 <= j < {out_w}, 0 <= k < {sr * sr}, "
            f"got {highlight!r}"
        )
    s = spatial_scale
    qx1, qy1 = (float(_round_half_away(torch.tensor(v * s))) for v in (x1, y1))
    qx2, qy2 = (float(_round_half_away(torch.tensor(v * s))) for v in (x2, y2))
    if size_hw is None:  # room for both the continuous and the rounded box, and a margin
        height = int(max(math.ceil(y2 * s), qy1 + max(qy2 - qy1 + 1, 1))) + 1
        width = int(max(math.ceil(x2 * s), qx1 + max(qx2 - qx1 + 1, 1))) + 1
    else:
        height, width = size_hw
    bins = roi_pool_bins(box, s, (out_h, out_w), feature_size=(height, width))
    points = roi_align_sample_points(box, s, (out_h, out_w), sr, aligned=aligned, dtype=torch.float64)
    colors = instance_colors(out_h * out_w)

    figure = _new_figure(size * 2.1 * max(width / height, 0.6), size)
    ax_pool, ax_align = figure.subplots(1, 2)
    for ax in (ax_pool, ax_align):
        _draw_grid(ax, height, width, s)
        # the continuous box, as both ops receive it
        ax.add_patch(Rectangle((x1 * s, y1 * s), (x2 - x1) * s, (y2 - y1) * s, fill=False,
                               edgecolor="black", linestyle="--", linewidth=1.4, zorder=4))

    # RoIPool: the rounded box, and each bin's cells.
    for index, item in enumerate(bins):
        (r0, r1), (c0, c1) = item["rows"], item["cols"]
        if r1 > r0 and c1 > c0:
            ax_pool.add_patch(Rectangle((c0, r0), c1 - c0, r1 - r0, facecolor=colors[index], alpha=0.35,
                                        edgecolor="none", zorder=1))
            ax_pool.add_patch(Rectangle((c0 + 0.06, r0 + 0.06), c1 - c0 - 0.12, r1 - r0 - 0.12, fill=False,
                                        edgecolor=colors[index], linewidth=1.6, zorder=3))
    ax_pool.add_patch(Rectangle((qx1, qy1), max(qx2 - qx1 + 1, 1), max(qy2 - qy1 + 1, 1), fill=False,
                                edgecolor="black", linewidth=2.0, zorder=4))
    ax_pool.set_title(f"RoIPool: rounded box, {out_h}x{out_w} bins (max over shaded cells)", fontsize=9)
    figure.legend(
        handles=[Line2D([], [], color="black", linestyle="--", label="box × spatial_scale (both ops)"),
                 Line2D([], [], color="black", linewidth=2.0, label="RoIPool's rounded box"),
                 Line2D([], [], color="0.25", linewidth=0.9, label="RoIAlign's bins"),
                 Line2D([], [], color="black", marker="+", linestyle="none", label="cell centres read")],
        loc="outside lower center", ncols=4, fontsize=7, frameon=False,
    )

    # RoIAlign: exact bin borders, sample points, one sample's bilinear weights.
    borders_y, _ = _align_axis(torch.tensor([y1], dtype=torch.float64), torch.tensor([y2], dtype=torch.float64),
                               s, out_h, sr, aligned)
    borders_x, _ = _align_axis(torch.tensor([x1], dtype=torch.float64), torch.tensor([x2], dtype=torch.float64),
                               s, out_w, sr, aligned)
    by, bx = borders_y[0].tolist(), borders_x[0].tolist()
    for x in bx:
        ax_align.plot([x, x], [by[0], by[-1]], color="0.25", linewidth=0.9, zorder=3)
    for y in by:
        ax_align.plot([bx[0], bx[-1]], [y, y], color="0.25", linewidth=0.9, zorder=3)
    pts = points.reshape(out_h * out_w, sr * sr, 2).numpy()  # [bins, samples, 2]
    for index in range(out_h * out_w):
        ax_align.scatter(pts[index, :, 0], pts[index, :, 1], s=14, color=colors[index], edgecolor="black",
                         linewidth=0.4, zorder=6)
    hx, hy = points[highlight[0], highlight[1], highlight[2]].tolist()
    ax_align.scatter([hx], [hy], s=60, facecolor="none", edgecolor="black", linewidth=1.2, zorder=7)
    for row, col, weight in _bilinear_taps(hx, hy, height, width):
        cx, cy = col + 0.5, row + 0.5
        ax_align.plot([hx, cx], [hy, cy], color="black", linewidth=0.7, zorder=5)
        ax_align.plot([cx], [cy], marker="+", color="black", markersize=6, zorder=5)
        ax_align.text(cx + 0.05, cy - 0.08, f"{weight:.2f}", fontsize=6, zorder=8,
                      bbox=dict(facecolor="white", alpha=0.7, pad=0.3, linewidth=0))
    mode = "aligned=True" if aligned else "aligned=False: shifted by half a cell"
    ax_align.set_title(f"RoIAlign ({mode}): exact bins, {sr}x{sr} samples per bin", fontsize=9)
    figure.suptitle(
        f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) px × spatial_scale {s:g} = "
        f"({x1 * s:.2f}, {y1 * s:.2f}, {x2 * s:.2f}, {y2 * s:.2f}) cells",
        fontsize=9,
    )
    return figure


def _draw_grid(ax, height: int, width: int, scale: float) -> None:
    """Feature cells as squares, row 0 at the top; a second pair of axes in image pixels."""
    for x in range(width + 1):
        ax.plot([x, x], [0, height], color="0.8", linewidth=0.6, zorder=0)
    for y in range(height + 1):
        ax.plot([0, width], [y, y], color="0.8", linewidth=0.6, zorder=0)
    ax.set_xlim(-0.1, width + 0.1)
    ax.set_ylim(height + 0.1, -0.1)
    ax.set_aspect("equal")
    ax.set_xticks(range(width + 1))
    ax.set_yticks(range(height + 1))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("x (feature cells)", fontsize=8)
    ax.set_ylabel("y (feature cells)", fontsize=8)
    to_pixels, to_cells = (lambda c: c / scale), (lambda p: p * scale)
    top = ax.secondary_xaxis("top", functions=(to_pixels, to_cells))
    right = ax.secondary_yaxis("right", functions=(to_pixels, to_cells))
    for secondary in (top, right):
        secondary.tick_params(labelsize=6)
    top.set_xlabel("image pixels", fontsize=7)


# ---------------------------------------------------------------------------------------------
# Misalignment in numbers.


def roi_misalignment(boxes: Tensor, spatial_scale: float, output_size: int = 7, sampling_ratio: int = 2) -> dict:
    """How far, in image pixels, RoIPool and RoIAlign read from where each bin of the box lies.

    The *exact* bin ``(i, j)`` of a box is its share of the continuous box ``box * spatial_scale``:
    ``[x1 s + j bw, x1 s + (j + 1) bw)`` with ``bw = (x2 - x1) s / ow``, likewise in y (cells as in the
    module docstring: cell ``j`` covers ``[j, j + 1)``). Errors are measured on an unbounded map (no
    clipping at the border), so they come from quantisation alone, and are divided by
    ``spatial_scale`` to give image pixels.

    * RoIPool (:func:`roi_pool_bins`): *edge* error, ``|quantised edge - exact edge|`` for the four
      edges of every bin; *centre* error, the distance between the centres of the quantised and exact
      bins. Three things contribute: rounding the corners (up to half a cell), counting the last
      cell inclusively (``x2q - x1q + 1`` cells: a box that ends on a cell border gains a cell, the
      Caffe-era convention torchvision keeps), and rounding bin edges outwards (up to a cell).
    * RoIAlign (:func:`roi_align_sample_points`): its bin borders are the exact ones shifted by the
      pixel-model offset (0 with ``aligned=True``, half a cell with ``aligned=False``, plus the legacy
      one-cell minimum size), measured as the edge error. Its *effective position* is the centroid
      of the bilinear weights its samples put on cell centres, averaged over the bin's samples; the
      centre error is the distance from that centroid to the exact bin centre. For ``aligned=True``
      both are 0 up to float rounding (samples are symmetric in the bin, and linear interpolation's
      weights have their centroid at the sample); for ``aligned=False`` they are half a cell per axis
      (``0.5 / s`` pixels; ``sqrt(2) * 0.5 / s`` for the centre), more for boxes under a cell.

    Args:
        boxes (Tensor[K, 4], floating): ``(x1, y1, x2, y2)`` in image pixels, ``K >= 1``.
        spatial_scale (float): feature cells per image pixel.
        output_size (int): bins per side (7 in Mask R-CNN's box head, 14 in its mask head).
        sampling_ratio (int): RoIAlign samples per bin along each axis (>= 1).

    Returns:
        dict of floats (pixels unless said): ``spatial_scale``, ``stride`` (``1 / spatial_scale``),
        ``output_size``, ``num_boxes``, ``roi_pool_edge_mean``, ``roi_pool_edge_max``,
        ``roi_pool_centre_mean``, ``roi_pool_centre_max``, ``roi_align_edge_mean``, ``roi_align_edge_max``,
        ``roi_align_centre_mean``, ``roi_align_centre_max`` (``aligned=True``), and the same four with
        ``roi_align_legacy_`` (``aligned=False``).
    """
    fn = "roi_misalignment"
    boxes = _check_boxes(fn, boxes)  # [K, 4] float64
    check_positive(fn, "spatial_scale", spatial_scale)
    out = check_int(fn, "output_size", output_size, minimum=1)
    sr = check_int(fn, "sampling_ratio", sampling_ratio, minimum=1)
    s = float(spatial_scale)
    x1, y1, x2, y2 = boxes.unbind(1)  # each [K]

    exact_x = x1[:, None] * s + torch.arange(out + 1, dtype=torch.float64) * ((x2 - x1) * s / out)[:, None]  # [K, B+1]
    exact_y = y1[:, None] * s + torch.arange(out + 1, dtype=torch.float64) * ((y2 - y1) * s / out)[:, None]  # [K, B+1]

    def grid_errors(edges_x, edges_y, centre_x, centre_y):
        """Per-bin edge errors [K, B, B, 4] and centre errors [K, B, B], both in pixels."""
        ex = (edges_x - torch.stack([exact_x[:, :-1], exact_x[:, 1:]], dim=-1)).abs()  # [K, B, 2]
        ey = (edges_y - torch.stack([exact_y[:, :-1], exact_y[:, 1:]], dim=-1)).abs()  # [K, B, 2]
        edges = torch.cat([ey[:, :, None, :].expand(-1, -1, out, -1),
                           ex[:, None, :, :].expand(-1, out, -1, -1)], dim=-1)  # [K, B(y), B(x), 4]
        dx = centre_x - (exact_x[:, :-1] + exact_x[:, 1:]) / 2  # [K, B]
        dy = centre_y - (exact_y[:, :-1] + exact_y[:, 1:]) / 2  # [K, B]
        centre = torch.hypot(dy[:, :, None], dx[:, None, :])  # [K, B(y), B(x)]
        return edges / s, centre / s

    row_first, row_stop = _pool_axis(y1, y2, s, out, None)  # [K, B]
    col_first, col_stop = _pool_axis(x1, x2, s, out, None)  # [K, B]
    pool_x = torch.stack([col_first, col_stop], dim=-1).double()  # [K, B, 2]
    pool_y = torch.stack([row_first, row_stop], dim=-1).double()  # [K, B, 2]
    pool_edges, pool_centre = grid_errors(pool_x, pool_y, pool_x.mean(-1), pool_y.mean(-1))
    result = {
        "spatial_scale": s,
        "stride": 1.0 / s,
        "output_size": out,
        "num_boxes": int(boxes.shape[0]),
        "roi_pool_edge_mean": float(pool_edges.mean()),
        "roi_pool_edge_max": float(pool_edges.max()),
        "roi_pool_centre_mean": float(pool_centre.mean()),
        "roi_pool_centre_max": float(pool_centre.max()),
    }
    for prefix, aligned in (("roi_align_", True), ("roi_align_legacy_", False)):
        borders_x, samples_x = _align_axis(x1, x2, s, out, sr, aligned)  # [K, B+1], [K, B, S]
        borders_y, samples_y = _align_axis(y1, y2, s, out, sr, aligned)
        edges_x = torch.stack([borders_x[:, :-1], borders_x[:, 1:]], dim=-1)  # [K, B, 2]
        edges_y = torch.stack([borders_y[:, :-1], borders_y[:, 1:]], dim=-1)  # [K, B, 2]
        # Bilinear weights factor per axis, so the centroid does too: the mean over the bin's
        # samples of each sample's weighted cell centres.
        align_edges, align_centre = grid_errors(
            edges_x, edges_y, _weight_centroid(samples_x).mean(-1), _weight_centroid(samples_y).mean(-1)
        )
        result[prefix + "edge_mean"] = float(align_edges.mean())
        result[prefix + "edge_max"] = float(align_edges.max())
        result[prefix + "centre_mean"] = float(align_centre.mean())
        result[prefix + "centre_max"] = float(align_centre.max())
    return result


def _weight_centroid(coords: Tensor) -> Tensor:
    """Centroid of the linear-interpolation weights of samples on an unbounded map, per sample.

    A sample at ``c`` (centres at j + 0.5) reads cells ``low = floor(c - 0.5)`` and ``low + 1`` with
    weights ``1 - f`` and ``f``; the centroid of their centres is ``(1 - f)(low + 0.5) + f(low + 1.5)``.
    """
    pos = coords - 0.5
    low = pos.floor()
    frac = pos - low
    return (1 - frac) * (low + 0.5) + frac * (low + 1.5)


def misalignment_table(
    boxes: Tensor, scales: Sequence[float] = (1 / 4, 1 / 8, 1 / 16, 1 / 32), output_size: int = 7
) -> list[dict]:
    """:func:`roi_misalignment` at several feature strides: one row (dict) per scale, in order.

    Args:
        boxes (Tensor[K, 4], floating): ``(x1, y1, x2, y2)`` in image pixels.
        scales: spatial scales (1/4 to 1/32: FPN levels P2 to P5).
        output_size (int): bins per side.

    Returns:
        list of the dicts :func:`roi_misalignment` returns.
    """
    fn = "misalignment_table"
    if not isinstance(scales, Sequence) or len(scales) == 0:
        raise ValueError(f"{fn}: scales must be a non-empty sequence of positive numbers, got {describe(scales)}")
    for scale in scales:
        check_positive(fn, "scales", scale)
    return [roi_misalignment(boxes, scale, output_size) for scale in scales]


# ---------------------------------------------------------------------------------------------
# Figure 2: one image through Mask R-CNN.

_MODEL_PARTS = (
    "transform",
    "backbone",
    "rpn",
    "roi_heads",
    "roi_heads.box_roi_pool",
    "roi_heads.box_head",
    "roi_heads.box_predictor",
    "roi_heads.mask_roi_pool",
    "roi_heads.mask_head",
    "roi_heads.mask_predictor",
)


def _check_model(fn: str, model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn}: model must be a torchvision-style MaskRCNN (nn.Module), got {describe(model)}")
    for path in _MODEL_PARTS:
        owner = model
        for name in path.split("."):
            owner = getattr(owner, name, None)
        if owner is None:
            raise ValueError(
                f"{fn}: model must be a torchvision-style MaskRCNN with {', '.join(_MODEL_PARTS)}; "
                f"{type(model).__name__} has no model.{path}"
            )


def _check_image(fn: str, image) -> Tensor:
    check_tensor(fn, "image", image, ndim=3, floating=True)
    if image.shape[0] != 3:
        raise ValueError(f"{fn}: image must be Tensor[3, H, W] in [0, 1], got {describe(image)}")
    return image


def mask_rcnn_stages(model: nn.Module, image: Tensor, num_proposals: int = 30) -> dict:
    """One image through a torchvision-style Mask R-CNN, stage by stage, in image coordinates.

    The walk is ``GeneralizedRCNN.forward`` in eval mode: ``model.transform`` (normalise, resize),
    ``model.backbone``, ``model.rpn`` (proposals, best first: the RPN's NMS returns them by decreasing
    objectness), ``model.roi_heads`` (box head on the proposals, ``postprocess_detections``, then
    the mask branch on the detections, whose ``M x M`` probabilities are the model's own mask
    post-processing, e.g. torchvision's ``maskrcnn_inference``), and ``model.transform.postprocess``
    (boxes scaled back to the image, masks pasted). ``detections`` is the model's own output,
    ``model([image])[0]``; the walk is checked against it, so the RoI masks belong to exactly
    those detections. Runs under ``torch.no_grad`` in eval mode; ``model.training`` is restored.

    Args:
        model (nn.Module): ``torchvision.models.detection.MaskRCNN`` or a subclass (e.g.
            :class:`segnotes.models.MaskRCNN`) whose forward is ``GeneralizedRCNN``'s.
        image (Tensor[3, H, W], floating): an RGB image in [0, 1]; moved to the model's device.
        num_proposals (int): proposals to keep (the top ones), >= 0.

    Returns:
        dict with ``proposals`` (Tensor[P, 4], float, xyxy image pixels, ``P <= num_proposals``),
        ``detections`` (the model's dict: ``boxes`` Tensor[D, 4], ``labels`` Tensor[D] int64, ``scores``
        Tensor[D], ``masks`` Tensor[D, 1, H, W] probabilities) and ``roi_masks`` (Tensor[D, M, M]:
        the mask probabilities in each detection's box frame, M = 28 for torchvision's head),
        all on the model's device.

    Raises:
        RuntimeError: the walk does not reproduce ``model([image])`` (a forward that is not
            ``GeneralizedRCNN``'s).
    """
    fn = "mask_rcnn_stages"
    _check_model(fn, model)
    _check_image(fn, image)
    num_proposals = check_int(fn, "num_proposals", num_proposals, minimum=0)
    parameter = next(model.parameters(), None)
    if parameter is not None:
        image = image.to(parameter.device)
    original_size = [(int(image.shape[-2]), int(image.shape[-1]))]

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            detections = model([image])[0]
            images, _ = model.transform([image])
            features = model.backbone(images.tensors)
            if isinstance(features, Tensor):
                features = OrderedDict([("0", features)])
            proposals, _ = model.rpn(images, features)  # List[Tensor[P_i, 4]], best first
            heads, _ = model.roi_heads(features, proposals, images.image_sizes)
            if "masks" not in heads[0]:
                raise ValueError(f"{fn}: model.roi_heads returned no 'masks'; is the mask branch missing?")
            roi_masks = heads[0]["masks"][:, 0]  # [D, M, M]
            # postprocess writes into the dicts it gets, so hand it fresh ones.
            boxes = model.transform.postprocess([{"boxes": heads[0]["boxes"]}], images.image_sizes, original_size)
            top = model.transform.postprocess(
                [{"boxes": proposals[0][:num_proposals]}], images.image_sizes, original_size
            )[0]["boxes"]
    finally:
        model.train(was_training)

    walked = boxes[0]["boxes"]
    if walked.shape != detections["boxes"].shape or not torch.allclose(walked, detections["boxes"], atol=1e-3):
        raise RuntimeError(
            f"{fn}: the staged walk (transform, backbone, rpn, roi_heads, postprocess) gave "
            f"{walked.shape[0]} boxes that differ from model([image]) ({detections['boxes'].shape[0]} boxes); "
            f"{type(model).__name__}.forward must be GeneralizedRCNN's"
        )
    return {"proposals": top, "detections": detections, "roi_masks": roi_masks}


def mask_rcnn_pipeline_figure(
    model: nn.Module,
    image: Tensor,
    num_proposals: int = 30,
    score_threshold: float = 0.5,
    category_names=None,
    max_thumbnails: int = 16,
    size: float = 3.2,
) -> Figure:
    """Mask R-CNN on one image in four panels, from :func:`mask_rcnn_stages`.

    (a) the top ``num_proposals`` RPN proposals; (b) the detections scored ``>= score_threshold``,
    with class names and scores; (c) their ``M x M`` mask probabilities as the mask head outputs them
    (the predicted class's channel, in the box's frame; white = 1), framed in each detection's
    colour; (d) the pasted masks, thresholded at 0.5 as torchvision's evaluation does, over the image.

    Args:
        model (nn.Module): a torchvision-style Mask R-CNN (see :func:`mask_rcnn_stages`).
        image (Tensor[3, H, W], floating): an RGB image in [0, 1].
        num_proposals (int): proposals drawn in (a).
        score_threshold (float): lowest score shown in (b)-(d), in [0, 1].
        category_names (dict or sequence, optional): label -> name; torchvision's
            ``weights.meta["categories"]`` (a list) works.
        max_thumbnails (int): most masks shown in (c) (the best scored).
        size (float): inches per panel.

    Returns:
        Figure with four axes.
    """
    fn = "mask_rcnn_pipeline_figure"
    _check_model(fn, model)
    _check_image(fn, image)
    check_positive(fn, "score_threshold", score_threshold, allow_zero=True)
    if score_threshold > 1:
        raise ValueError(f"{fn}: score_threshold must be in [0, 1], got {score_threshold}")
    max_thumbnails = check_int(fn, "max_thumbnails", max_thumbnails, minimum=1)
    stages = mask_rcnn_stages(model, image, num_proposals)

    detections = {k: v.detach().cpu() for k, v in stages["detections"].items()}
    keep = detections["scores"] >= score_threshold  # [D]
    boxes, labels, scores = detections["boxes"][keep], detections["labels"][keep], detections["scores"][keep]
    pasted = detections["masks"][keep][:, 0] > 0.5  # [D', H, W]
    roi_masks = stages["roi_masks"].detach().cpu()[keep]  # [D', M, M]
    colors = instance_colors(len(boxes))
    rgb = _to_numpy_image(image)

    figure = _new_figure(size * 4, size * 1.1)
    ax_prop, ax_det, ax_roi, ax_mask = figure.subplots(1, 4)

    ax_prop.imshow(rgb)
    for x1, y1, x2, y2 in stages["proposals"].detach().cpu().tolist():
        ax_prop.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=(1.0, 0.85, 0.0),
                                    linewidth=0.6))
    ax_prop.set_title(f"(a) top {len(stages['proposals'])} RPN proposals", fontsize=9)

    ax_det.imshow(rgb)
    for index, ((x1, y1, x2, y2), label, score) in enumerate(zip(boxes.tolist(), labels.tolist(), scores.tolist())):
        ax_det.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colors[index], linewidth=1.2))
        ax_det.text(x1, y1 - 1, f"{_category_name(category_names, label)} {score:.2f}", fontsize=6, color="white",
                    va="bottom", bbox=dict(facecolor=colors[index], alpha=0.8, pad=0.5, linewidth=0))
    ax_det.set_title(f"(b) {len(boxes)} detections, score >= {score_threshold:g}", fontsize=9)

    _draw_thumbnails(ax_roi, roi_masks[:max_thumbnails], colors)
    shown = min(len(roi_masks), max_thumbnails)
    m = roi_masks.shape[-1] if roi_masks.ndim == 3 else 0
    ax_roi.set_title(f"(c) {shown} RoI masks, {m}x{m} probabilities", fontsize=9)

    ax_mask.imshow(overlay_instances(image, pasted, colors=colors))
    ax_mask.set_title("(d) masks pasted into the image (> 0.5)", fontsize=9)
    for ax in (ax_prop, ax_det, ax_roi, ax_mask):
        ax.set_axis_off()
    return figure


def _category_name(category_names, label: int) -> str:
    if category_names is None:
        return str(label)
    if isinstance(category_names, dict):
        return str(category_names.get(label, label))
    return str(category_names[label]) if 0 <= label < len(category_names) else str(label)


def _draw_thumbnails(ax, masks: Tensor, colors: np.ndarray) -> None:
    """Tile ``masks`` (Tensor[D, M, M] in [0, 1]) into one image, each framed in its colour."""
    count = len(masks)
    if count == 0:
        ax.text(0.5, 0.5, "no detections", ha="center", va="center", fontsize=9, transform=ax.transAxes)
        return
    m = masks.shape[-1]
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    pad = max(m // 8, 2)  # coloured frame around each thumbnail
    cell = m + 2 * pad
    mosaic = np.ones((rows * cell, columns * cell, 3), dtype=np.float32)
    for index in range(count):
        row, column = divmod(index, columns)
        top, left = row * cell, column * cell
        mosaic[top : top + cell, left : left + cell] = colors[index]
        probs = masks[index].float().clamp(0, 1).numpy()
        mosaic[top + pad : top + pad + m, left + pad : left + pad + m] = probs[:, :, None]
    ax.imshow(mosaic, interpolation="nearest")
