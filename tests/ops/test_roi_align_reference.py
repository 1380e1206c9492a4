"""segnotes.ops.roi_align_reference (the loops to read) against torchvision.ops.roi_align, and by hand."""
import pytest
import torch
import torchvision

from segnotes.ops import bilinear_interpolate, roi_align_reference


def make_case(dtype, spatial_scale, num_images=3, channels=4, height=9, width=11, num_boxes=12, seed=0):
    """Random maps and boxes (image coordinates) that stick out of the map, are degenerate (zero width, zero
    height, a point) or lie entirely outside, with batch indices in no particular order."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, channels, height, width, generator=g, dtype=dtype)
    span = torch.tensor([width + 4.0, height + 4.0], dtype=dtype)
    corner = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * span - 3
    size = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * 8
    size[0, 0], size[1, 1], size[2] = 0.0, 0.0, 0.0
    corner[3] = torch.tensor([width + 3.0, -5.0], dtype=dtype)
    boxes = torch.cat([corner, corner + size], dim=1) / spatial_scale
    index = torch.randint(0, num_images, (num_boxes, 1), generator=g).to(dtype)
    return x, torch.cat([index, boxes], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.25])
def test_matches_torchvision(dtype, aligned, sampling_ratio, spatial_scale):
    x, rois = make_case(dtype, spatial_scale)
    args = ((3, 4), spatial_scale, sampling_ratio, aligned)
    ours = roi_align_reference(x, rois, *args)
    # Same expressions in the same dtype as torchvision's kernel: equal to the last bits (float32 sums of
    # four taps may still round once differently).
    tolerance = dict(atol=0, rtol=0) if dtype == torch.float64 else dict(atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours, torchvision.ops.roi_align(x, rois, *args), **tolerance)


def test_gradient_matches_torchvision():
    x, rois = make_case(torch.float64, 0.5, num_boxes=6, num_images=2, channels=2, height=6, width=7)
    grads = []
    for op in (roi_align_reference, torchvision.ops.roi_align):
        leaf = x.clone().requires_grad_()
        out = op(leaf, rois, 2, 0.5, 2, True)
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1], atol=1e-12, rtol=0)


def test_hand_computed_5x5():
    # As in tests/ops/test_roi_align.py: x[i, j] = 5 i + j is linear, so bilinear reads are exact and a bin's
    # mean is the value at its centre. Box (1, 1)-(3, 3), aligned: bins centred on (1.5 - 0.5, ...) cells.
    x = torch.arange(25.0).view(1, 1, 5, 5)
    out = roi_align_reference(x, torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]]), 2, aligned=True)
    torch.testing.assert_close(out, torch.tensor([[[[6.0, 7.0], [11.0, 12.0]]]]))


def test_bilinear_interpolate_four_taps_and_borders():
    feature = torch.tensor([[[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]]])  # [C=1, H=2, W=3]
    assert bilinear_interpolate(feature, 0.0, 1.0).item() == 1.0  # on a cell: that cell alone
    assert bilinear_interpolate(feature, 0.5, 0.5).item() == pytest.approx((0 + 1 + 10 + 11) / 4)  # four taps
    assert bilinear_interpolate(feature, 0.25, 1.0).item() == pytest.approx(0.75 * 1 + 0.25 * 11)
    assert bilinear_interpolate(feature, -0.5, 2.5).item() == 2.0  # within a cell of the border: the border
    assert bilinear_interpolate(feature, 1.0, 3.0).item() == 12.0  # exactly one cell outside still reads it
    assert bilinear_interpolate(feature, -1.5, 1.0).item() == 0.0  # further out: nothing
    assert bilinear_interpolate(feature, 0.0, 3.01).item() == 0.0


def test_empty_boxes_and_bad_input():
    x = torch.rand(1, 2, 4, 4)
    assert roi_align_reference(x, torch.zeros(0, 5), 2).shape == (0, 2, 2, 2)
    with pytest.raises(ValueError, match=r"roi_align_reference: boxes must be Tensor\[K, 5\] or list of Tensor"):
        roi_align_reference(x, torch.zeros(3, 4), 2)
    with pytest.raises(ValueError, match=r"roi_align_reference: output_size must be a positive int"):
        roi_align_reference(x, torch.zeros(1, 5), 0)
    with pytest.raises(TypeError, match=r"roi_align_reference: input must"):
        roi_align_reference(x.long(), torch.zeros(1, 5), 2)
