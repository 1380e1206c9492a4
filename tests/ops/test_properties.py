"""Property-based tests of segnotes.ops (hypothesis; profile "segnotes" in tests/conftest.py).

Each property draws feature maps and boxes (sizes, dtypes float16 / bfloat16 / float32 / float64,
channels-last and non-contiguous maps, empty box sets, NaN and inf) and requires torchvision's
result within the dtype's tolerance, or a ValueError / TypeError naming the argument.
"""
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops.poolers import LevelMapper

from segnotes.ops import MultiScaleRoIPool, bilinear_upsample, fpn_levels, roi_align, roi_pool

FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
# Against torchvision in float64 on the same (rounded) inputs, features in [0, 1]. Half types
# compute their sample positions, bilinear weights and sums in their own precision: 4 units of
# float16's 2**-10 and 8 of bfloat16's 2**-7 (400 drawn cases reached 1.8e-3 and 2.7e-2).
ROI_ALIGN_ATOL = {torch.float16: 4 * 2**-10, torch.bfloat16: 8 * 2**-7, torch.float32: 1e-5, torch.float64: 1e-12}


def layout(x: torch.Tensor, how: str) -> torch.Tensor:
    """The same values as ``x`` [N, C, H, W], stored contiguously, channels-last, or as a strided view."""
    if how == "channels_last":
        return x.contiguous(memory_format=torch.channels_last)
    if how == "strided":  # every other channel of a map with twice as many
        wider = torch.zeros(x.shape[0], 2 * x.shape[1], *x.shape[2:], dtype=x.dtype)
        wider[:, ::2] = x
        return wider[:, ::2]
    return x


@st.composite
def roi_cases(draw, dtypes=FLOAT_DTYPES):
    dtype = draw(st.sampled_from(dtypes))
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    # Powers of two and eighths of a pixel: exact in every dtype, so all see the same boxes.
    scale = draw(st.sampled_from([1.0, 0.5, 0.25, 2.0]))
    eighth = st.integers(-32, 8 * 16).map(lambda v: v / 8)
    k = draw(st.integers(0, 6))
    rows = []
    for _ in range(k):
        x1, y1, dx, dy = draw(eighth), draw(eighth), draw(st.integers(0, 80)) / 8, draw(st.integers(0, 80)) / 8
        rows.append([float(draw(st.integers(0, n - 1))), x1, y1, x1 + dx, y1 + dy])
    rois = torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    x = torch.rand(n, c, h, w, generator=g, dtype=torch.float64)
    output_size = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    how = draw(st.sampled_from(["contiguous", "channels_last", "strided"]))
    as_list = draw(st.booleans())
    return x.to(dtype), rois.to(dtype), scale, output_size, how, as_list


def as_box_list(rois: torch.Tensor, num_images: int) -> list:
    """Tensor[K, 5] as one Tensor[L, 4] per image, and the order of torch.cat of that list."""
    parts = [rois[rois[:, 0] == i, 1:] for i in range(num_images)]
    order = torch.cat([torch.nonzero(rois[:, 0] == i).flatten() for i in range(num_images)])
    return parts, order


@given(roi_cases(), st.sampled_from([-1, 0, 1, 2, 3]), st.booleans())
def test_roi_align_equals_torchvision(case, sampling_ratio, aligned):
    x, rois, scale, output_size, how, as_list = case
    boxes, order = (as_box_list(rois, x.shape[0]) if as_list else (rois, torch.arange(rois.shape[0])))
    out = roi_align(layout(x, how), boxes, output_size, scale, sampling_ratio, aligned)
    assert out.dtype == x.dtype and out.shape == (rois.shape[0], x.shape[1], *output_size)
    expected = torchvision.ops.roi_align(x.double(), rois.double(), output_size, scale, sampling_ratio, aligned)
    torch.testing.assert_close(out.double(), expected[order], rtol=0, atol=ROI_ALIGN_ATOL[x.dtype])


@given(roi_cases())
def test_roi_pool_equals_torchvision(case):
    x, rois, scale, output_size, how, as_list = case
    boxes, order = (as_box_list(rois, x.shape[0]) if as_list else (rois, torch.arange(rois.shape[0])))
    out = roi_pool(layout(x, how), boxes, output_size, scale)
    assert out.dtype == x.dtype and out.shape == (rois.shape[0], x.shape[1], *output_size)
    # Max pooling picks input values: the same bins give exactly the same numbers.
    expected = torchvision.ops.roi_pool(x.double(), rois.double(), output_size, scale)
    torch.testing.assert_close(out.double(), expected[order].to(x.dtype).double(), rtol=0, atol=0)


@given(roi_cases(), st.sampled_from([math.nan, math.inf, -math.inf]), st.integers(1, 4),
       st.sampled_from(["roi_align", "roi_pool"]))
def test_roi_ops_refuse_non_finite_boxes_by_name(case, value, column, op):
    x, rois, scale, output_size, _, _ = case
    if rois.shape[0] == 0:
        return
    rois = rois.clone()
    rois[-1, column] = value
    function = roi_align if op == "roi_align" else roi_pool
    with pytest.raises(ValueError, match=rf"{op}: box coordinates must be finite"):
        function(x, rois, output_size, scale)


@given(roi_cases(dtypes=[torch.float32]), st.sampled_from([math.nan, math.inf, -1.0, 0.0]),
       st.sampled_from(["roi_align", "roi_pool"]))
def test_roi_ops_refuse_bad_spatial_scale_by_name(case, scale, op):
    x, rois, _, output_size, _, _ = case
    function = roi_align if op == "roi_align" else roi_pool
    with pytest.raises(ValueError, match=rf"{op}: spatial_scale must be "):
        function(x, rois, output_size, scale)


@given(st.sampled_from(FLOAT_DTYPES), st.sampled_from([torch.int64, torch.uint8, torch.bool]))
def test_roi_ops_refuse_integer_maps_and_mismatched_boxes_by_name(dtype, integer):
    x = torch.rand(1, 2, 6, 6).to(dtype)
    rois = torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    for op, function in (("roi_align", roi_align), ("roi_pool", roi_pool)):
        with pytest.raises(TypeError, match=rf"{op}: input must be a floating-point tensor"):
            function(x.to(integer), rois.to(dtype), 2)
        if dtype != torch.float32:
            with pytest.raises(TypeError, match=rf"{op}: boxes must have the dtype of input"):
                function(x, rois, 2)


# ---------------------------------------------------------------- FPN levels


@st.composite
def box_lists(draw):
    images = draw(st.integers(1, 3))
    side = st.floats(0, 2000, allow_nan=False, width=32)
    corner = st.floats(-100, 1000, allow_nan=False, width=32)
    parts = []
    for _ in range(images):
        rows = draw(st.lists(st.tuples(corner, corner, side, side), max_size=5))
        parts.append(torch.tensor([[x, y, x + w, y + h] for x, y, w, h in rows], dtype=torch.float32).reshape(-1, 4))
    return parts


@given(box_lists(), st.integers(2, 4), st.integers(0, 3), st.sampled_from([224.0, 56.0, 36.0]))
def test_fpn_levels_equal_torchvision_level_mapper(boxes, level_min, extra, canonical_scale):
    level_max = level_min + extra
    levels = fpn_levels(boxes, level_min, level_max, canonical_scale)
    mapper = LevelMapper(level_min, level_max, canonical_scale=int(canonical_scale))
    assert torch.equal(levels, mapper(boxes))
    assert levels.dtype == torch.int64 and ((levels >= 0) & (levels <= extra)).all()


@given(box_lists(), st.sampled_from([math.nan, math.inf, "inverted"]))
def test_fpn_levels_refuse_boxes_without_a_size(boxes, bad):
    boxes = [b.clone() for b in boxes]
    if bad == "inverted":
        boxes[0] = torch.cat([boxes[0], torch.tensor([[10.0, 10.0, 5.0, 20.0]])])
    else:
        boxes[0] = torch.cat([boxes[0], torch.tensor([[0.0, bad, 5.0, 20.0]])])
    with pytest.raises(ValueError, match=r"fpn_levels: boxes must be \(x1, y1, x2, y2\) with finite coordinates"):
        fpn_levels(boxes, 2, 5)


@settings(max_examples=20)
@given(st.integers(0, 2**16), st.integers(1, 2), st.sampled_from([32, 64]), st.integers(0, 8))
def test_multiscale_roi_pool_equals_torchvision_multiscale_roi_align(seed, images, size, num_boxes):
    g = torch.Generator().manual_seed(seed)
    names = ["p2", "p3", "p4"]
    features = {name: torch.rand(images, 3, size // 2**k, size // 2**k, generator=g) for k, name in
                enumerate(names, start=2)}
    corners = torch.rand(images, num_boxes, 2, generator=g) * size
    sides = torch.rand(images, num_boxes, 2, generator=g) * size
    boxes = [torch.cat([c, c + s], dim=1) for c, s in zip(corners, sides)]
    shapes = [(size, size)] * images
    ours = MultiScaleRoIPool(names, 3, 2, canonical_scale=24)(features, boxes, shapes)
    ref = torchvision.ops.MultiScaleRoIAlign(names, 3, 2, canonical_scale=24)(features, boxes, shapes)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- bilinear upsampling


UPSAMPLE_ATOL = {torch.float16: 4e-3, torch.bfloat16: 3e-2, torch.float32: 1e-5, torch.float64: 1e-12}


@given(st.sampled_from(FLOAT_DTYPES), st.integers(1, 5), st.integers(1, 3), st.integers(1, 6), st.integers(1, 6),
       st.sampled_from(["contiguous", "channels_last", "strided"]), st.integers(0, 2**16))
def test_bilinear_upsample_equals_interpolate_in_the_interior(dtype, factor, channels, h, w, how, seed):
    x = torch.rand(2, channels, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    out = bilinear_upsample(layout(x.to(dtype), how), factor)
    assert out.dtype == dtype and out.shape == (2, channels, h * factor, w * factor)
    expected = F.interpolate(x.to(dtype).double(), scale_factor=factor, mode="bilinear", align_corners=False)
    b = factor // 2  # the border fades to zero (the transposed convolution sees zeros past the edge)
    inner = (..., slice(b, out.shape[-2] - b), slice(b, out.shape[-1] - b))
    torch.testing.assert_close(out[inner].double(), expected[inner], rtol=0, atol=UPSAMPLE_ATOL[dtype])


@given(st.integers(1, 4), st.integers(0, 3), st.integers(0, 3), st.sampled_from([math.nan, math.inf]))
def test_bilinear_upsample_never_hides_a_nan_or_inf(factor, i, j, value):
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    x[0, 0, i, j] = value
    out = bilinear_upsample(x, factor)
    assert not torch.isfinite(out).all()
    # In the interior it reaches the pixels whose bilinear weight on it is not 0: those interpolate
    # reaches for even factors; for odd ones interpolate also multiplies it by an exact 0 weight.
    expected = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    b = factor // 2
    inner = (..., slice(b, out.shape[-2] - b), slice(b, out.shape[-1] - b))
    ours, theirs = ~torch.isfinite(out[inner]), ~torch.isfinite(expected[inner])
    assert (ours <= theirs).all() and (factor % 2 == 1 or torch.equal(ours, theirs))


@given(st.sampled_from([torch.int64, torch.uint8]), st.sampled_from([0, -2]))
def test_bilinear_upsample_refuses_integer_maps_and_bad_factors_by_name(dtype, factor):
    with pytest.raises(TypeError, match=r"bilinear_upsample: input must be a floating-point tensor"):
        bilinear_upsample(torch.zeros(1, 1, 2, 2, dtype=dtype), 2)
    with pytest.raises(ValueError, match=rf"bilinear_upsample: factor must be >= 1, got {factor}"):
        bilinear_upsample(torch.zeros(1, 1, 2, 2), factor)
