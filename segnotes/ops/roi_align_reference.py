"""RoIAlign one sample at a time: the loops behind :func:`segnotes.ops.roi_align`, written to be read.

:func:`roi_align_reference` computes every output value the way the Mask R-CNN paper describes it: for each RoI
and each bin, place ``sy x sx`` regularly spaced sample points in the bin, read each point by bilinear
interpolation from the four feature cells around it (:func:`bilinear_interpolate`), and average. No rounding
anywhere. It is slow (Python loops over RoIs, bins and samples) and meant for reading and for testing: the fast
:func:`segnotes.ops.roi_align` must agree with it, and both agree with ``torchvision.ops.roi_align``
(``tests/ops``). The arithmetic follows torchvision's kernel expression by expression, in the input's dtype, so
the agreement is to the last bits, not just approximate.

Coordinates: the value of feature cell ``(i, j)`` sits at the point ``(y, x) = (i, j)`` (with ``aligned=True`` a
box coordinate ``c`` is first shifted to ``c - 0.5``, which puts the cell's value at the centre of the pixel
square ``[j, j + 1)``; see :func:`segnotes.ops.roi_align`).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .._checks import check_int, check_positive, check_tensor
from .roi_align import _boxes_to_rois, _output_size_pair

__all__ = ["bilinear_interpolate", "roi_align_reference"]


def bilinear_interpolate(feature: Tensor, y: Tensor | float, x: Tensor | float) -> Tensor:
    """The feature map's value at the point ``(y, x)``, between cell centres: the four bilinear taps.

    The point lies between the cells ``(y0, x0)``, ``(y0, x1)``, ``(y1, x0)`` and ``(y1, x1)`` with
    ``y0 = floor(y)``, ``y1 = y0 + 1`` (likewise for x); each tap's weight is how close the point is to it along
    each axis, ``(1 - ly) * (1 - lx)`` for ``(y0, x0)`` where ``ly = y - y0``, and the weights sum to 1.
    Border rules, as torchvision's: a point more than one cell outside the map, ``y < -1`` or ``y > H`` (or x),
    reads 0; a point within one cell of the border is moved onto the border and reads the border cells.

    Args:
        feature (Tensor[C, H, W]): one feature map.
        y, x (float or 0-dim Tensor): the point, in cells (the value of cell ``(i, j)`` sits at ``(i, j)``).

    Returns:
        Tensor[C] (dtype of ``feature``): the interpolated value of each channel.
    """
    _, height, width = feature.shape
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return feature.new_zeros(feature.shape[0])  # too far outside: this sample adds nothing
    y = min(max(y, 0), height - 1)  # within a cell of the border: read the border
    x = min(max(x, 0), width - 1)
    y0, x0 = math.floor(y), math.floor(x)
    y1, x1 = min(y0 + 1, height - 1), min(x0 + 1, width - 1)
    ly, lx = y - y0, x - x0  # distances to the upper-left tap, in [0, 1)
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * feature[:, y0, x0] + hy * lx * feature[:, y0, x1]
            + ly * hx * feature[:, y1, x0] + ly * lx * feature[:, y1, x1])


def roi_align_reference(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign (Mask R-CNN), one RoI, one bin, one sample point at a time. Same arguments and result as
    :func:`segnotes.ops.roi_align` and ``torchvision.ops.roi_align``, much slower: for reading and testing.

    For each RoI ``k`` and bin ``(i, j)`` of the ``oh x ow`` output grid:

    1. the box, scaled to the feature map, is cut into ``oh x ow`` equal bins of ``bin_h x bin_w`` cells
       (nothing rounded);
    2. the bin gets ``sy x sx`` sample points at the centres of a regular grid of sub-bins
       (``sampling_ratio`` each way, or ``ceil(bin_h)`` by ``ceil(bin_w)`` when it is ``<= 0``);
    3. each point is read by :func:`bilinear_interpolate` (four taps);
    4. the bin's value is the mean of its samples.

    Args:
        input (Tensor[N, C, H, W], floating): feature maps.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): ``(x1, y1, x2, y2)`` in image coordinates, with the batch
            index first in the ``Tensor[K, 5]`` form; same dtype and device as ``input``.
        output_size (int or Tuple[int, int]): ``(oh, ow)``.
        spatial_scale (float): feature cells per image pixel (0.5 for a 112x112 map of a 224x224 image).
        sampling_ratio (int): samples per bin along each axis; ``<= 0``: adaptive.
        aligned (bool): shift boxes by -0.5 cell (pixel model) and do not enlarge RoIs under one cell.

    Returns:
        Tensor[K, C, oh, ow] (dtype of ``input``).
    """
    fn = "roi_align_reference"
    check_tensor(fn, "input", input, ndim=4, floating=True)
    out_h, out_w = _output_size_pair(fn, output_size)
    check_positive(fn, "spatial_scale", spatial_scale)
    check_int(fn, "sampling_ratio", sampling_ratio)
    rois = _boxes_to_rois(fn, boxes, input)  # [K, 5]: batch index, x1, y1, x2, y2
    out = input.new_zeros(rois.shape[0], input.shape[1], out_h, out_w)
    offset = 0.5 if aligned else 0.0
    for k, roi in enumerate(rois):
        feature = input[int(roi[0])]  # [C, H, W]
        # 0-dim tensors in the input's dtype: the same roundings as the kernels'
        x1, y1, x2, y2 = (roi[i] * spatial_scale - offset for i in range(1, 5))
        roi_w, roi_h = x2 - x1, y2 - y1
        if not aligned:  # legacy: a RoI under one cell is enlarged to one cell
            roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
        bin_h, bin_w = roi_h / out_h, roi_w / out_w
        sy = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_h)  # samples per bin, each axis
        sx = sampling_ratio if sampling_ratio > 0 else math.ceil(bin_w)
        count = max(sy * sx, 1)  # an empty RoI (aligned, zero size) has no samples and gives 0
        for i in range(out_h):
            for j in range(out_w):
                total = feature.new_zeros(feature.shape[0])
                for iy in range(sy):
                    y = y1 + i * bin_h + (iy + 0.5) * bin_h / sy  # centre of sub-bin iy
                    for ix in range(sx):
                        x = x1 + j * bin_w + (ix + 0.5) * bin_w / sx
                        total = total + bilinear_interpolate(feature, y, x)
                out[k, :, i, j] = total / count
    return out
