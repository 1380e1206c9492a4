"""segnotes.ops.roi_pool against torchvision.ops.roi_pool, a hand-computed case and gradcheck."""
import importlib

import pytest
import torch
import torchvision

from segnotes.ops.roi_pool import RoIPool, roi_pool

# The module, not the function that segnotes.ops re-exports under the same name.
roi_align_module = importlib.import_module("segnotes.ops.roi_align")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
@pytest.mark.parametrize("output_size", [(3, 4), 1, 5])
def test_matches_torchvision(device, dtype, spatial_scale, output_size, roi_pool_case, forward_backward):
    x, rois = roi_pool_case(dtype, device, spatial_scale)
    ours, ours_grad = forward_backward(roi_pool, x, rois, output_size, spatial_scale)
    ref, ref_grad = forward_backward(torchvision.ops.roi_pool, x, rois, output_size, spatial_scale)
    # A max picks an input value, so the outputs agree exactly; gradients only up to the order
    # in which a cell's contributions from overlapping bins are summed.
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    torch.testing.assert_close(ours_grad, ref_grad)


def test_autocast_computes_in_float32(device, roi_pool_case):
    # Half-precision maps and float32 boxes, as in a detector under mixed precision (torchvision's
    # roi_pool accepts that mix under CUDA autocast only; ours on every device).
    x, rois = roi_pool_case(torch.float32, device, 0.5)
    half = {"cpu": torch.bfloat16, "cuda": torch.float16}[device]
    with torch.autocast(device, dtype=half):
        ours = roi_pool(x.to(half), rois, (3, 4), 0.5)
    assert ours.dtype == half
    torch.testing.assert_close(ours, roi_pool(x.to(half).float(), rois, (3, 4), 0.5).to(half), atol=0, rtol=0)
    if device == "cuda":
        with torch.autocast(device, dtype=half):
            ref = torchvision.ops.roi_pool(x.to(half), rois, (3, 4), 0.5)
        torch.testing.assert_close(ours, ref, atol=0, rtol=0)


def test_ties_send_the_gradient_to_the_first_maximum(device, roi_pool_case, forward_backward):
    # Small integers make ties within bins; torchvision's kernel keeps the first maximum in
    # row-major order, and so must we.
    x, rois = roi_pool_case(torch.float64, device, 0.5, seed=3)
    x = x.mul(1.5).round()
    ours, ours_grad = forward_backward(roi_pool, x, rois, (2, 3), 0.5)
    ref, ref_grad = forward_backward(torchvision.ops.roi_pool, x, rois, (2, 3), 0.5)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    torch.testing.assert_close(ours_grad, ref_grad)


def test_many_chunks(device, monkeypatch, roi_pool_case, forward_backward):
    x, rois = roi_pool_case(torch.float32, device, 0.25, seed=1, height=30, width=25, num_boxes=40)
    rois[:, 3:] += rois[:, 1:3].abs() * torch.linspace(0, 1, rois.shape[0], device=device)[:, None]
    monkeypatch.setattr(roi_align_module, "_CHUNK_ELEMENTS_CPU", 2000)
    monkeypatch.setattr(roi_align_module, "_CHUNK_ELEMENTS_GPU", 2000)
    ours, ours_grad = forward_backward(roi_pool, x, rois, 7, 0.25)
    ref, ref_grad = forward_backward(torchvision.ops.roi_pool, x, rois, 7, 0.25)
    torch.testing.assert_close(ours, ref, atol=0, rtol=0)
    torch.testing.assert_close(ours_grad, ref_grad)


def test_list_of_boxes_and_non_contiguous_input(device, roi_pool_case):
    x, rois = roi_pool_case(torch.float32, device)
    expected = torchvision.ops.roi_pool(x, rois, 3, 0.5)
    order = torch.argsort(rois[:, 0], stable=True)
    per_image = [rois[order][rois[order][:, 0] == i, 1:] for i in range(x.shape[0])]
    torch.testing.assert_close(roi_pool(x, per_image, 3, 0.5), expected[order], atol=0, rtol=0)
    channels_last = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(roi_pool(channels_last, rois, 3, 0.5), expected, atol=0, rtol=0)


@pytest.mark.parametrize("boxes", ["tensor", "list"])
def test_empty_boxes(device, boxes):
    x = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device) if boxes == "tensor" else [torch.zeros(0, 4, device=device)] * 2
    out = roi_pool(x, empty, (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_hand_computed_5x5():
    # x[r, c] = 5 r + c. Box (1, 1, 3, 3) covers cells 1..3 (3 cells) per axis. With 2 bins,
    # bin size 1.5: bin 0 spans floor(0) .. ceil(1.5) = cells 1, 2 and bin 1 spans
    # floor(1.5) .. ceil(3) = cells 2, 3; the max is at the bottom-right cell of each bin.
    x = torch.arange(25.0).view(1, 1, 5, 5)
    box = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
    torch.testing.assert_close(roi_pool(x, box, 2)[0, 0], torch.tensor([[12.0, 13.0], [17.0, 18.0]]))
    # Corners at 0.5 and 2.5 round away from zero to cells 1 and 3 (torch.round would give 0 and 2).
    torch.testing.assert_close(roi_pool(x, torch.tensor([[0.0, 0.5, 0.5, 2.5, 2.5]]), 2), roi_pool(x, box, 2))
    # A box half outside: bins with no cell inside the map give 0.
    outside = roi_pool(x, torch.tensor([[0.0, 3.0, 0.0, 8.0, 0.0]]), (1, 3))[0, 0, 0]
    torch.testing.assert_close(outside, torch.tensor([4.0, 0.0, 0.0]))


def test_gradcheck():
    # Distinct values at least 0.1 apart keep the argmax stable under gradcheck's perturbations.
    g = torch.Generator().manual_seed(0)
    x = (torch.randperm(50, generator=g).to(torch.float64) / 10).view(1, 2, 5, 5).requires_grad_()
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 3.2], [0, -1.2, 1.1, 2.4, 5.5], [0, 1.0, 1.0, 1.0, 3.0]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda t: roi_pool(t, rois, (3, 2), 1.0), (x,))


def test_module(roi_pool_case):
    x, rois = roi_pool_case(torch.float32, "cpu")
    layer = RoIPool((3, 4), spatial_scale=0.5)
    torch.testing.assert_close(layer(x, rois), roi_pool(x, rois, (3, 4), 0.5), atol=0, rtol=0)
    assert repr(layer) == "RoIPool(output_size=(3, 4), spatial_scale=0.5)"
    with pytest.raises(ValueError, match=r"RoIPool: spatial_scale must be > 0, got -1"):
        RoIPool(2, -1)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            dict(boxes=torch.zeros(3, 4)),
            ValueError,
            r"roi_pool: boxes must be Tensor\[K, 5\] or list of Tensor\[L, 4\], got Tensor of shape \(3, 4\)",
        ),
        (
            dict(boxes=[torch.zeros(2, 5)]),
            ValueError,
            r"roi_pool: boxes must be .*got boxes\[0\] = Tensor of shape \(2, 5\)",
        ),
        (
            dict(boxes=torch.tensor([[2.0, 0, 0, 1, 1]])),
            ValueError,
            r"roi_pool: boxes\[:, 0\] \(batch indices\) must be integers in \[0, 1\], got 2.0",
        ),
        (
            dict(boxes=torch.tensor([[0.5, 0, 0, 1, 1]])),
            ValueError,
            r"roi_pool: boxes\[:, 0\] \(batch indices\) must be integers .*got 0.5",
        ),
        (
            dict(boxes=torch.zeros(1, 5, dtype=torch.float64)),
            TypeError,
            r"roi_pool: boxes must have the dtype of input \(torch.float32\)",
        ),
        (
            dict(boxes=torch.zeros(1, 5, device="meta")),
            ValueError,
            r"roi_pool: boxes must be on the device of input \(cpu\), got meta",
        ),
        (
            dict(output_size=(0, 2)),
            ValueError,
            r"roi_pool: output_size must be a positive int or a pair of positive ints \(height, width\), got \(0, 2\)",
        ),
        (dict(spatial_scale=-1.0), ValueError, r"roi_pool: spatial_scale must be > 0, got -1.0"),
        (dict(input=torch.zeros(8, 8)), ValueError, r"roi_pool: input must be 4-D, got Tensor of shape \(8, 8\)"),
        (
            dict(input=torch.zeros(2, 3, 8, 8, dtype=torch.uint8)),
            TypeError,
            r"roi_pool: input must be a floating-point tensor",
        ),
    ],
)
def test_bad_arguments(change, error, message):
    args = dict(input=torch.zeros(2, 3, 8, 8), boxes=torch.tensor([[0.0, 1, 1, 4, 4]]), output_size=2)
    args["spatial_scale"] = 1.0
    args.update(change)
    with pytest.raises(error, match=message):
        roi_pool(**args)


@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_non_finite_spatial_scale_is_refused_by_name(scale):
    # Issue 22, finding 5 (the same check as roi_align's).
    x, boxes = torch.rand(1, 2, 8, 8), torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match=rf"roi_pool: spatial_scale must be a finite number, got {scale}"):
        roi_pool(x, boxes, 2, spatial_scale=scale)
