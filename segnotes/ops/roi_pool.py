"""RoIPool (Girshick. Fast R-CNN, ICCV 2015) in plain, vectorised PyTorch.

RoIPool is what RoIAlign replaced: it rounds the RoI to the feature-map grid, splits it into
``oh x ow`` bins whose edges are rounded again (start down, end up, so neighbouring bins may
share a row), and max-pools each bin. Both roundings misplace features by up to a cell, which
is why Mask R-CNN's masks improve most at strict IoU thresholds with RoIAlign. The semantics
are torchvision's ``torchvision.ops.roi_pool``, including the gradient: it flows only to the
first maximum of each bin (in row-major order), and empty bins give 0.

How it is computed here, as in torchvision's kernel: first find each output's argmax (every
bin's cells are gathered from the map, padded to the largest bin by repeating cells, in chunks
of RoIs of similar size), then read the input there with ``torch.take``, whose gradient sends
each output's gradient to its argmax.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .._checks import check_positive, check_tensor
from .roi_align import (
    _boxes_to_rois,
    _chunks_of_similar_windows,
    _output_size_pair,
    autocast_enabled,
    exact_divide,
    float32_outside_autocast,
)

__all__ = ["roi_pool", "RoIPool"]


def roi_pool(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
) -> Tensor:
    """RoIPool (max pooling over quantised bins), as in Fast R-CNN; same semantics as torchvision's.

    Args:
        input (Tensor[N, C, H, W], floating): a batch of ``N`` feature maps.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]], same dtype and device as ``input``): boxes
            ``(x1, y1, x2, y2)`` in image coordinates. A ``Tensor[K, 5]`` carries the batch
            index (an integer in ``[0, N - 1]``) in its first column; a list holds one
            ``Tensor[L, 4]`` per image, in batch order.
        output_size (int or Tuple[int, int]): the output grid ``(oh, ow)`` in bins.
        spatial_scale (float): multiplies box coordinates to get feature-map coordinates. For
            example, boxes on a 224x224 image and a 112x112 feature map need 0.5. Default 1.0.

    The RoI's corners are rounded to the nearest cell (halves away from zero) and the RoI
    covers cells ``x1..x2`` inclusive (at least one cell). Bin ``i`` of ``oh`` covers rows
    ``floor(i * h / oh)`` to ``ceil((i + 1) * h / oh)`` (exclusive) of the RoI's ``h`` rows,
    clipped to the map; a bin left with no cells gives 0.

    Returns:
        Tensor[K, C, oh, ow] (dtype of ``input``): the pooled RoIs, in the order of ``boxes``;
        computed in float32 under autocast, as torchvision's.

    Example:
        >>> x = torch.arange(25.0).view(1, 1, 5, 5)
        >>> roi_pool(x, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]]), 2)
        tensor([[[[12., 13.],
                  [17., 18.]]]])
    """
    fn = "roi_pool"
    check_tensor(fn, "input", input, ndim=4, floating=True)
    if autocast_enabled(input.device.type):  # float32, as torchvision's (see roi_align)
        with float32_outside_autocast(input) as to_float32:
            return roi_pool(to_float32(input), to_float32(boxes), output_size, spatial_scale).to(input.dtype)
    out_h, out_w = _output_size_pair(fn, output_size)
    check_positive(fn, "spatial_scale", spatial_scale)
    rois = _boxes_to_rois(fn, boxes, input).detach()  # [K, 5]; rounding has no gradient

    num_images, channels, height, width = input.shape
    num_rois = rois.shape[0]
    if num_rois == 0:
        return input.new_zeros(0, channels, out_h, out_w) + 0 * input.sum()  # keeps the graph

    x1, y1, x2, y2 = (_round_half_away(rois[:, i] * spatial_scale) for i in range(1, 5))  # each [K]
    row_start, row_end = _bin_edges(y1, y2, out_h, height)  # [K, oh] each
    col_start, col_end = _bin_edges(x1, x2, out_w, width)  # [K, ow] each
    bin_rows = (row_end - row_start).clamp(min=0)  # [K, oh], cells per bin
    bin_cols = (col_end - col_start).clamp(min=0)  # [K, ow]

    # As torchvision does: find each output's argmax (no gradient needed), then read it.
    argmax = _argmax_per_bin(input.detach(), rois[:, 0].long(), row_start, row_end, col_start, col_end)
    out = torch.take(input, argmax)  # [K, C, oh, ow]; the gradient flows back to each argmax
    empty = (bin_rows[:, :, None] == 0) | (bin_cols[:, None, :] == 0)  # [K, oh, ow]
    return out.masked_fill(empty[:, None], 0.0)


def _argmax_per_bin(
    input: Tensor, batch_index: Tensor, row_start: Tensor, row_end: Tensor, col_start: Tensor, col_end: Tensor
) -> Tensor:
    """Where each bin's maximum is, per channel: the first one in row-major order.

    Args:
        input (Tensor[N, C, H, W]): feature maps.
        batch_index (Tensor[K], int64): image of each RoI.
        row_start, row_end (Tensor[K, oh], int64): rows ``row_start <= r < row_end`` of each bin.
        col_start, col_end (Tensor[K, ow], int64): columns of each bin, likewise.

    Returns:
        Tensor[K, C, oh, ow] (int64): index into ``input.flatten()`` of each bin's maximum
        (arbitrary for empty bins).
    """
    num_images, channels, height, width = input.shape
    num_rois, out_h, out_w = row_start.shape[0], row_start.shape[1], col_start.shape[1]
    # Channels-last rows, so that one gathered index brings a whole C-vector.
    cells = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)  # [N*H*W, C]
    channel_offset = torch.arange(channels, device=input.device) * (height * width)  # [C]
    tallest = (row_end - row_start).amax(dim=1).clamp(min=1)  # [K], rows of the largest bin
    widest = (col_end - col_start).amax(dim=1).clamp(min=1)  # [K]
    argmax = torch.empty(num_rois, channels, out_h, out_w, dtype=torch.int64, device=input.device)
    for chunk, bh, bw in _chunks_of_similar_windows(tallest, widest, out_h * out_w * channels, input.device):
        g = chunk.shape[0]
        r = _cells_of_bins(row_start[chunk], row_end[chunk], bh, height)  # [G, oh, bh]
        c = _cells_of_bins(col_start[chunk], col_end[chunk], bw, width)  # [G, ow, bw]
        pixel = (r[:, :, None, :, None] * width + c[:, None, :, None, :]).view(g, out_h, out_w, bh * bw)
        image = batch_index[chunk, None, None, None]  # [G, 1, 1, 1]
        # Each bin's cells in row-major order; max returns the first maximum.
        values = cells.index_select(0, (image * (height * width) + pixel).view(-1))
        first = values.view(g, out_h, out_w, bh * bw, channels).max(dim=3).indices  # [G, oh, ow, C]
        # Index into input.flatten(): the chosen pixel of channel 0, plus each channel's offset.
        best = (image * (channels * height * width) + pixel).gather(3, first) + channel_offset  # [G, oh, ow, C]
        argmax.index_copy_(0, chunk, best.permute(0, 3, 1, 2))
    return argmax


def _cells_of_bins(first: Tensor, stop: Tensor, count: int, size: int) -> Tensor:
    """The cells of each bin along one axis, padded to ``count`` by repeating the bin's last cell.

    A repeat comes after the cell it copies (in row-major order), so padding changes neither a
    bin's max nor which cell is its first maximum, and no mask is needed. Empty bins read an
    arbitrary valid cell; the caller sets them to 0.

    Args:
        first, stop (Tensor[G, B], int64): bin ``i`` covers cells ``first <= cell < stop``.
        count (int): cells to list per bin, at least the largest bin.
        size (int): cells along this axis.

    Returns:
        Tensor[G, B, count] (int64): cell indices in ``[0, size - 1]``.
    """
    cell = first[:, :, None] + torch.arange(count, device=first.device)  # [G, B, count]
    return torch.minimum(cell, stop[:, :, None] - 1).clamp(0, size - 1)


def _round_half_away(x: Tensor) -> Tensor:
    """Round to the nearest integer, halves away from zero (C's ``round``; ``torch.round`` rounds
    halves to even)."""
    whole = x.trunc()
    return torch.where((x - whole).abs() == 0.5, whole + x.sign(), x.round())


def _bin_edges(start: Tensor, end: Tensor, bins: int, size: int) -> tuple[Tensor, Tensor]:
    """First and one-past-last cell of each bin along one axis, clipped to the map.

    Args:
        start, end (Tensor[K]): rounded RoI corners (inclusive), in cells.
        bins (int): output bins along this axis.
        size (int): feature-map size along this axis.

    Returns:
        first, stop (Tensor[K, bins], int64): bin ``i`` covers cells ``first <= cell < stop``;
        ``stop <= first`` for a bin that is empty after clipping.
    """
    cells = (end - start + 1).clamp(min=1)  # malformed RoIs become one cell, as in torchvision
    bin_size = exact_divide(cells, bins)  # [K], exact as in torchvision's kernel (see exact_divide)
    index = torch.arange(bins, device=start.device, dtype=start.dtype)  # [B]
    first = torch.floor(index[None, :] * bin_size[:, None]) + start[:, None]  # [K, B]
    stop = torch.ceil((index[None, :] + 1) * bin_size[:, None]) + start[:, None]  # [K, B]
    return first.clamp(0, size).long(), stop.clamp(0, size).long()


class RoIPool(nn.Module):
    """See :func:`roi_pool`."""

    def __init__(self, output_size: int | tuple[int, int], spatial_scale: float):
        super().__init__()
        fn = "RoIPool"
        self.output_size = _output_size_pair(fn, output_size)
        self.spatial_scale = check_positive(fn, "spatial_scale", spatial_scale)

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return roi_pool(input, boxes, self.output_size, self.spatial_scale)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}, spatial_scale={self.spatial_scale}"
