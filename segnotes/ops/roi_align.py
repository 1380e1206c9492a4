"""RoIAlign (He, Gkioxari, Dollár, Girshick. Mask R-CNN, ICCV 2017) in plain, vectorised PyTorch.

RoIAlign cuts a box out of a feature map and resamples it to a fixed ``oh x ow`` grid without
rounding anything: each output bin averages ``sy x sx`` regularly spaced sample points, and
each sample is bilinearly interpolated from its four neighbouring cells. The semantics are
torchvision's ``torchvision.ops.roi_align``, sample for sample.

How it is computed here. Bilinear weights factor into a y-part and an x-part, and so does the
average over a bin's samples. For one RoI the output is therefore two small matrix products::

    out[c] = Wy @ feature[c] @ Wx.T        Wy: [oh, H], feature[c]: [H, W], Wx: [ow, W]

where row ``i`` of ``Wy`` holds the interpolation weights of bin ``i``'s ``sy`` sample rows,
already averaged (each sample touches at most two rows). Most of ``Wy`` is zero: a RoI only
touches the rows it covers, plus one. So each RoI keeps just its window of ``Ly`` rows and
``Lx`` columns (``_window_matrix``), the windows are gathered from the map and the products
are batched over RoIs (``_pool_windows``). The work grows with the RoIs' size, not the map's,
and no ``K x C x H x W`` tensor is built. Autograd differentiates the gather and the matrix
products, so the gradient needs no code of its own.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_int, check_positive, check_tensor, describe

__all__ = ["roi_align", "RoIAlign"]

# Elements gathered per chunk of RoIs ([G, Ly, Lx, C] windows). Chunking bounds memory and does
# not change the arithmetic. On CPU small chunks stay in cache (4 MiB of float32 measured
# fastest); on GPUs fewer, larger chunks mean fewer kernel launches.
_CHUNK_ELEMENTS_CPU = 1 << 20
_CHUNK_ELEMENTS_GPU = 1 << 24


def roi_align(
    input: Tensor,
    boxes: Tensor | list[Tensor],
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """RoIAlign with average pooling, as in Mask R-CNN; same semantics as torchvision's.

    Args:
        input (Tensor[N, C, H, W], floating): a batch of ``N`` feature maps.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]], same dtype and device as ``input``): boxes
            ``(x1, y1, x2, y2)`` in image coordinates. A ``Tensor[K, 5]`` carries the batch
            index (an integer in ``[0, N - 1]``) in its first column; a list holds one
            ``Tensor[L, 4]`` per image, in batch order.
        output_size (int or Tuple[int, int]): the output grid ``(oh, ow)`` in bins.
        spatial_scale (float): multiplies box coordinates to get feature-map coordinates. For
            example, boxes on a 224x224 image and a 112x112 feature map need 0.5. Default 1.0.
        sampling_ratio (int): samples per bin along each axis. If ``<= 0``, adaptive: each RoI
            uses ``ceil(roi_height / oh)`` by ``ceil(roi_width / ow)`` samples. Default -1.
        aligned (bool): if True, shift box coordinates by -0.5 so that a continuous coordinate
            ``c`` has the neighbouring cells ``floor(c - 0.5)`` and ``ceil(c - 0.5)`` (cell
            ``i`` covers ``[i, i + 1)`` with its centre at ``i + 0.5``), and do not enlarge
            RoIs smaller than one cell. If False (default, torchvision's legacy behaviour and
            the Mask R-CNN paper's), boxes are used as given and clamped to at least 1x1.

    Samples more than one cell outside the map (outside ``[-1, H] x [-1, W]``) count as 0;
    those within a cell of the border read the border cells. Each bin is the mean of its
    ``sy * sx`` samples; a RoI with no samples (aligned, zero size, adaptive) gives 0.

    Returns:
        Tensor[K, C, oh, ow] (dtype of ``input``): the pooled RoIs, in the order of ``boxes``.

    Under autocast (mixed precision) it computes in float32, as torchvision's does: the feature
    maps may be float16 while the boxes stay float32.

    Example:
        >>> x = torch.arange(25.0).view(1, 1, 5, 5)
        >>> roi_align(x, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]]), 2, aligned=True)
        tensor([[[[ 6.,  7.],
                  [11., 12.]]]])
    """
    fn = "roi_align"
    check_tensor(fn, "input", input, ndim=4, floating=True)
    if autocast_enabled(input.device.type):
        with float32_outside_autocast(input) as to_float32:
            return roi_align(to_float32(input), to_float32(boxes), output_size, spatial_scale, sampling_ratio,
                             aligned).to(input.dtype)
    out_h, out_w = _output_size_pair(fn, output_size)
    check_positive(fn, "spatial_scale", spatial_scale)
    check_int(fn, "sampling_ratio", sampling_ratio)
    rois = _boxes_to_rois(fn, boxes, input)  # [K, 5]

    _, _, height, width = input.shape
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, i] * spatial_scale - offset for i in range(1, 5))  # each [K]
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # legacy: RoIs smaller than a cell are enlarged to one cell
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)

    rows = _bilinear_taps(*_bin_samples(y1, roi_h, out_h, sampling_ratio), height)
    cols = _bilinear_taps(*_bin_samples(x1, roi_w, out_w, sampling_ratio), width)
    return _pool_windows(input, rois[:, 0].long(), rows, cols)


def exact_divide(numerator: Tensor, denominator: int) -> Tensor:
    """``numerator / denominator``, correctly rounded on every device.

    Divided by a Python number, a CUDA tensor is multiplied by the number's reciprocal, which can
    be one unit in the last place off: ``9 * (1 / 7)`` is not ``9 / 7``. The RoI ops floor and
    ceil such quotients, as torchvision's kernels do with exact ones, so one unit can move a bin
    edge by a whole cell. A tensor divisor takes the exact division.
    """
    return numerator / torch.full_like(numerator, denominator)


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` ('cpu', 'cuda', ...)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no argument there (CUDA) and has is_autocast_cpu_enabled
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


@contextlib.contextmanager
def float32_outside_autocast(input: Tensor):
    """torchvision's autocast rule for its RoI ops: run them in float32 with autocast off.

    Under autocast a detector's feature maps are float16 (or bfloat16) while its boxes stay
    float32; resampling in float32 also keeps the bilinear weights exact. Yields a function that
    casts a half-precision tensor (float16, bfloat16), or a list of them, to float32; anything
    else passes unchanged (float64 stays float64, as under torchvision's autocast, and bad input is
    left for the op's own checks to report). The caller casts the result back to ``input``'s dtype.
    """
    def half(t) -> bool:
        return isinstance(t, Tensor) and t.dtype in (torch.float16, torch.bfloat16)

    def to_float32(x):
        if half(x):
            return x.float()
        if isinstance(x, (list, tuple)) and x and all(isinstance(t, Tensor) for t in x):
            return [t.float() if half(t) else t for t in x]
        return x

    with torch.autocast(input.device.type, enabled=False):
        yield to_float32


def _bin_samples(start: Tensor, length: Tensor, bins: int, sampling_ratio: int) -> tuple[Tensor, Tensor]:
    """Sample positions along one axis, and their share of their bin's average.

    Args:
        start (Tensor[K]): RoI start on this axis, in feature-map coordinates.
        length (Tensor[K]): RoI length on this axis (after the legacy clamp, if any).
        bins (int): output bins along this axis (``oh`` or ``ow``).
        sampling_ratio (int): samples per bin; ``<= 0`` means ``ceil(length / bins)`` per RoI.

    Returns:
        pos (Tensor[K, bins, S]): sample coordinates; ``S`` is the largest sample count.
        share (Tensor[K, bins, S]): ``1 / samples`` for a RoI's own samples, 0 for the padding
        of RoIs that need fewer than ``S`` (adaptive sampling).
    """
    bin_size = exact_divide(length, bins)  # [K]
    if sampling_ratio > 0:
        grid = torch.full_like(length, sampling_ratio)  # [K], samples per bin
        max_grid = sampling_ratio
    else:
        grid = torch.ceil(bin_size)  # [K]; 0 (or less) for empty aligned RoIs
        max_grid = max(int(grid.max().item()), 1) if grid.numel() > 0 else 1
    grid_or_one = grid.clamp(min=1)  # avoids 0/0 at padded, never-used positions

    bin_index = torch.arange(bins, device=start.device, dtype=start.dtype)[None, :, None]  # [1, B, 1]
    sample_index = torch.arange(max_grid, device=start.device, dtype=start.dtype)[None, None, :]  # [1, 1, S]
    start, bin_size, grid, grid_or_one = (t[:, None, None] for t in (start, bin_size, grid, grid_or_one))
    # Same expression (and rounding order) as torchvision's kernel.
    pos = start + bin_index * bin_size + (sample_index + 0.5) * bin_size / grid_or_one  # [K, B, S]
    share = (sample_index < grid).to(start.dtype) / grid_or_one  # [K, 1, S]
    return pos, share.expand_as(pos)


def _bilinear_taps(pos: Tensor, share: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Linear interpolation along one axis: the two cells each sample reads, and their weights.

    Args:
        pos (Tensor[K, B, S]): sample coordinates.
        share (Tensor[K, B, S]): weight of each sample in its bin.
        size (int): number of cells along this axis (``H`` or ``W``).

    Returns:
        low, high (Tensor[K, B, S], int64): the lower and upper neighbouring cells.
        w_low, w_high (Tensor[K, B, S]): their weights, ``share`` times the interpolation
        weight, and 0 for samples more than one cell outside the map.
    """
    # As in torchvision's kernel: a sample outside [-1, size] counts as 0, one in [-1, 0)
    # reads cell 0 and one in (size - 1, size] reads cell size - 1.
    share = share * ((pos >= -1.0) & (pos <= size)).to(share.dtype)
    pos = pos.clamp(0, size - 1)
    low = pos.floor()
    frac = pos - low  # distance to the lower neighbour, in [0, 1)
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    return low, high, (1 - frac) * share, frac * share


def _window_matrix(low: Tensor, high: Tensor, w_low: Tensor, w_high: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each RoI's interpolation matrix along one axis, restricted to the cells it touches.

    Args:
        low, high (Tensor[K, B, S], int64): cells read by each sample.
        w_low, w_high (Tensor[K, B, S]): their weights.

    Returns:
        matrix (Tensor[K, B, L]): ``matrix[k, i, l]`` is the weight of cell ``first[k] + l`` in
        bin ``i``; ``L`` is the longest window. Summing over ``l`` and multiplying by the
        feature along this axis gives the bin's average over its samples.
        first (Tensor[K], int64): first cell of each RoI's window.
        extent (Tensor[K], int64): window length of each RoI, at least 1.
    """
    num_rois, bins = low.shape[:2]
    used = (w_low != 0) | (w_high != 0)  # [K, B, S]
    big = torch.iinfo(torch.int64).max
    first = torch.where(used, low, big).amin(dim=(1, 2))  # [K]
    last = torch.where(used, high, -1).amax(dim=(1, 2))  # [K]
    first = torch.where(last >= 0, first, 0)  # RoIs that read nothing get a dummy window
    extent = (last - first + 1).clamp(min=1)  # [K]
    length = int(extent.max())

    # Samples outside the window have weight 0; clamping only keeps their index valid.
    low = (low - first[:, None, None]).clamp(0, length - 1)
    high = (high - first[:, None, None]).clamp(0, length - 1)
    zeros = w_low.new_zeros(num_rois, bins, length)
    # Each sample spreads its weight onto its two neighbours.
    matrix = zeros.scatter_add(2, low, w_low).scatter_add(2, high, w_high)  # [K, B, L]
    return matrix, first, extent


def _pool_windows(input: Tensor, batch_index: Tensor, rows: tuple, cols: tuple) -> Tensor:
    """``out[k, c] = Wy[k] @ input[batch_index[k], c] @ Wx[k].T``, on each RoI's window only.

    Args:
        input (Tensor[N, C, H, W]): feature maps.
        batch_index (Tensor[K], int64): image of each RoI.
        rows, cols: ``_bilinear_taps`` of the y and x axes (``[K, oh, Sy]`` and ``[K, ow, Sx]``).

    Returns:
        Tensor[K, C, oh, ow] (dtype of ``input``): contiguous.
    """
    num_images, channels, height, width = input.shape
    num_rois, out_h, out_w = rows[0].shape[0], rows[0].shape[1], cols[0].shape[1]
    if num_rois == 0:
        return input.new_zeros(0, channels, out_h, out_w) + 0 * input.sum()  # keeps the graph

    wy, first_row, rows_used = _window_matrix(*rows)  # [K, oh, Ly], [K], [K]
    wx, first_col, cols_used = _window_matrix(*cols)  # [K, ow, Lx], [K], [K]

    # Channels-last rows, so that one gathered index brings a whole C-vector.
    cells = input.permute(0, 2, 3, 1).reshape(num_images * height * width, channels)  # [N*H*W, C]
    pieces, order = [], []  # results and RoI indices of each chunk
    for chunk, ly, lx in _chunks_of_similar_windows(rows_used, cols_used, channels, input.device):
        g = chunk.shape[0]
        r = (first_row[chunk, None] + torch.arange(ly, device=input.device)).clamp(max=height - 1)  # [G, Ly]
        c = (first_col[chunk, None] + torch.arange(lx, device=input.device)).clamp(max=width - 1)  # [G, Lx]
        index = (batch_index[chunk, None, None] * height + r[:, :, None]) * width + c[:, None, :]  # [G, Ly, Lx]
        window = cells.index_select(0, index.view(-1)).view(g, ly, lx * channels)  # [G, Ly, Lx*C]
        # Contract y: [G, oh, Ly] @ [G, Ly, Lx*C].
        mixed = torch.bmm(wy[chunk, :, :ly], window).view(g, out_h, lx, channels)  # [G, oh, Lx, C]
        # Contract x, for every output row: [G, 1, ow, Lx] @ [G, oh, Lx, C].
        pooled = torch.matmul(wx[chunk, None, :, :lx], mixed)  # [G, oh, ow, C]
        pieces.append(pooled.permute(0, 3, 1, 2))  # [G, C, oh, ow]
        order.append(chunk)
    return _place_rows(pieces, order, num_rois)  # [K, C, oh, ow], in the caller's order


def _chunks_of_similar_windows(
    heights: Tensor, widths: Tensor, elements_per_cell: int, device: torch.device
) -> list[tuple[Tensor, int, int]]:
    """Split RoIs into chunks of similar window sizes, each gathering a bounded number of elements.

    Sorting by window area keeps the padding to each chunk's largest window small.

    Args:
        heights, widths (Tensor[K], int64): window size of each RoI, in cells.
        elements_per_cell (int): elements gathered per window cell (e.g. the channels).
        device: where the data lives; sets the budget per chunk.

    Returns:
        list of (Tensor[G] (int64), Ly, Lx): RoI indices of each chunk and its window size.
    """
    budget = _CHUNK_ELEMENTS_CPU if device.type == "cpu" else _CHUNK_ELEMENTS_GPU
    order = torch.argsort(heights * widths)
    ly, lx = heights[order].tolist(), widths[order].tolist()
    chunks, lo, max_ly, max_lx = [], 0, 0, 0
    for hi in range(len(ly)):
        new_ly, new_lx = max(max_ly, ly[hi]), max(max_lx, lx[hi])
        if hi > lo and (hi - lo + 1) * new_ly * new_lx * elements_per_cell > budget:
            chunks.append((order[lo:hi], max_ly, max_lx))
            lo, new_ly, new_lx = hi, ly[hi], lx[hi]
        max_ly, max_lx = new_ly, new_lx
    chunks.append((order[lo:], max_ly, max_lx))
    return chunks


def _place_rows(pieces: list[Tensor], indices: list[Tensor], num_rows: int) -> Tensor:
    """``out[indices[i]] = pieces[i]`` for every chunk, differentiably, in one copy.

    ``torch.cat`` followed by a reordering ``index_select`` would copy the output twice, and
    in-place ``index_copy_`` makes autograd clone the whole gradient once per chunk.

    Args:
        pieces (List[Tensor[G_i, ...]]): per-chunk results, any strides.
        indices (List[Tensor[G_i], int64]): their rows in the output; together a permutation
            of ``range(num_rows)``.
        num_rows (int): rows of the output.

    Returns:
        Tensor[num_rows, ...]: contiguous.
    """
    return _PlaceRows.apply(indices, num_rows, *pieces)


class _PlaceRows(torch.autograd.Function):
    """See ``_place_rows``: forward scatters rows, backward gathers them back."""

    @staticmethod
    def forward(ctx, indices: list[Tensor], num_rows: int, *pieces: Tensor) -> Tensor:
        ctx.indices = indices
        out = pieces[0].new_empty((num_rows, *pieces[0].shape[1:]))
        for index, piece in zip(indices, pieces):
            out.index_copy_(0, index, piece)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        wanted = ctx.needs_input_grad[2:]
        return (None, None, *(grad.index_select(0, i) if w else None for i, w in zip(ctx.indices, wanted)))


class RoIAlign(nn.Module):
    """See :func:`roi_align`."""

    def __init__(
        self,
        output_size: int | tuple[int, int],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        fn = "RoIAlign"
        self.output_size = _output_size_pair(fn, output_size)
        self.spatial_scale = check_positive(fn, "spatial_scale", spatial_scale)
        self.sampling_ratio = check_int(fn, "sampling_ratio", sampling_ratio)
        self.aligned = aligned

    def forward(self, input: Tensor, boxes: Tensor | list[Tensor]) -> Tensor:
        return roi_align(input, boxes, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# ---------------------------------------------------------------------------------------------
# Argument checks shared with roi_pool.


def _output_size_pair(fn: str, output_size) -> tuple[int, int]:
    """``output_size`` as ``(oh, ow)``, both positive ints."""
    pair = (output_size, output_size) if isinstance(output_size, int) else output_size
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in pair)
    ):
        raise ValueError(
            f"{fn}: output_size must be a positive int or a pair of positive ints (height, width), "
            f"got {output_size!r}"
        )
    return int(pair[0]), int(pair[1])


def _boxes_to_rois(fn: str, boxes, input: Tensor) -> Tensor:
    """Check ``boxes`` against ``input`` and return them as ``Tensor[K, 5]`` with batch indices.

    Raises:
        TypeError: boxes is neither a tensor nor a list of tensors, or has the wrong dtype.
        ValueError: wrong shape, other device, non-finite values, or batch indices that are
            not integers in ``[0, N - 1]``.
    """
    expected = "Tensor[K, 5] or list of Tensor[L, 4]"
    if isinstance(boxes, Tensor):
        if boxes.ndim != 2 or boxes.shape[1] != 5:
            raise ValueError(f"{fn}: boxes must be {expected}, got {describe(boxes)}")
        parts = [boxes]
    elif isinstance(boxes, (list, tuple)):
        for i, b in enumerate(boxes):
            if not isinstance(b, Tensor):
                raise TypeError(f"{fn}: boxes must be {expected}, got boxes[{i}] = {describe(b)}")
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"{fn}: boxes must be {expected}, got boxes[{i}] = {describe(b)}")
        if len(boxes) > input.shape[0]:
            raise ValueError(
                f"{fn}: boxes has {len(boxes)} tensors (one per image) but input has batch size {input.shape[0]}"
            )
        parts = list(boxes)
    else:
        raise TypeError(f"{fn}: boxes must be {expected}, got {describe(boxes)}")

    for b in parts:
        if b.dtype != input.dtype:
            raise TypeError(f"{fn}: boxes must have the dtype of input ({input.dtype}), got {describe(b)}")
        if b.device != input.device:
            raise ValueError(f"{fn}: boxes must be on the device of input ({input.device}), got {b.device}")

    if isinstance(boxes, Tensor):
        rois = boxes
    elif len(parts) == 0:
        rois = input.new_zeros(0, 5)
    else:
        ids = torch.cat([b.new_full((b.shape[0], 1), i) for i, b in enumerate(parts)])  # [K, 1]
        rois = torch.cat([ids, torch.cat(parts)], dim=1)  # [K, 5]
    _check_rois_values(fn, rois.detach(), input.shape[0])
    return rois


def _check_rois_values(fn: str, rois: Tensor, num_images: int) -> None:
    """Batch indices must be integers in [0, N - 1] and coordinates finite (one device sync)."""
    if rois.shape[0] == 0:
        return
    index = rois[:, 0]
    bad_index = (index != index.round()) | (index < 0) | (index > num_images - 1)
    not_finite = ~torch.isfinite(rois[:, 1:]).all(dim=1)
    if not bool((bad_index | not_finite).any()):
        return
    if bool(bad_index.any()):
        first = index[bad_index][0].item()
        raise ValueError(
            f"{fn}: boxes[:, 0] (batch indices) must be integers in [0, {num_images - 1}], got {first}"
        )
    raise ValueError(f"{fn}: box coordinates must be finite, got {rois[not_finite][0, 1:].tolist()}")
