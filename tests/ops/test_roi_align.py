"""segnotes.ops.roi_align against torchvision.ops.roi_align and against the loops of
segnotes.ops.roi_align_reference (the per-sample reference the book shows), a hand-computed case and gradcheck."""
import importlib

import pytest
import torch
import torchvision

from segnotes.ops import roi_align_reference
from segnotes.ops.roi_align import RoIAlign, roi_align

# The module, not the function that segnotes.ops re-exports under the same name.
roi_align_module = importlib.import_module("segnotes.ops.roi_align")
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-12)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
def test_matches_torchvision(device, dtype, aligned, sampling_ratio, spatial_scale, roi_case, forward_backward):
    x, rois = roi_case(dtype, device, spatial_scale)
    args = ((3, 4), spatial_scale, sampling_ratio, aligned)
    ours, ours_grad = forward_backward(roi_align, x, rois, *args)
    ref, ref_grad = forward_backward(torchvision.ops.roi_align, x, rois, *args)
    assert ours.shape == (rois.shape[0], x.shape[1], 3, 4)
    torch.testing.assert_close(ours, ref, **TOL[dtype])
    torch.testing.assert_close(ours_grad, ref_grad, **TOL[dtype])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [-1, 2])
@pytest.mark.parametrize("spatial_scale", [1.0, 1 / 16])
def test_matches_the_per_sample_reference(aligned, sampling_ratio, spatial_scale, roi_case):
    # The vectorised op (matrix products over windows) against the loops a reader can follow, in float64.
    x, rois = roi_case(torch.float64, "cpu", spatial_scale, seed=4, num_boxes=16)
    args = ((3, 4), spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(roi_align(x, rois, *args), roi_align_reference(x, rois, *args), **TOL[torch.float64])


AUTOCAST_DTYPE = {"cpu": torch.bfloat16, "cuda": torch.float16}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_divide_is_correctly_rounded(device, dtype):
    # On CUDA, tensor / python_number multiplies by the reciprocal; RoIPool then put some bin edges
    # (ceil((i + 1) * cells / bins)) one cell off torchvision's (found on an H100).
    numerators = torch.arange(1, 2001, dtype=dtype)
    assert (numerators * (1 / 7) != numerators / torch.tensor(7, dtype=dtype)).any()  # the hazard is real
    for bins in (3, 5, 7, 14):
        expected = numerators / torch.tensor(bins, dtype=dtype)  # IEEE division on the CPU
        result = roi_align_module.exact_divide(numerators.to(device), bins)
        assert result.dtype == dtype
        torch.testing.assert_close(result.cpu(), expected, atol=0, rtol=0)


@pytest.mark.parametrize("aligned", [False, True])
def test_autocast_computes_in_float32_like_torchvision(device, aligned, roi_case):
    # Mixed precision: the feature maps are half precision, the boxes float32 (a detector's
    # proposals). Both libraries resample in float32 and return the input's dtype.
    x, rois = roi_case(torch.float32, device, 0.5)
    half = AUTOCAST_DTYPE[device]
    with torch.autocast(device, dtype=half):
        ours = roi_align(x.to(half), rois, (3, 4), 0.5, -1, aligned)
        ref = torchvision.ops.roi_align(x.to(half), rois, (3, 4), 0.5, -1, aligned)
    assert ours.dtype == ref.dtype == half
    # Both round a float32 result to half precision: equal up to one unit in the last place
    # (the float32 sums run in another order on a GPU).
    torch.testing.assert_close(ours, ref)
    expected = roi_align(x.to(half).float(), rois, (3, 4), 0.5, -1, aligned).to(half)
    torch.testing.assert_close(ours, expected, atol=0, rtol=0)
    # float64 is left alone under autocast, as torchvision leaves it
    x64, rois64 = x.double(), rois.double()
    with torch.autocast(device, dtype=half):
        ours64 = roi_align(x64, rois64, (3, 4), 0.5, -1, aligned)
    assert ours64.dtype == torch.float64
    torch.testing.assert_close(ours64, roi_align(x64, rois64, (3, 4), 0.5, -1, aligned), atol=0, rtol=0)


@pytest.mark.parametrize("aligned", [False, True])
def test_large_rois_many_chunks(device, aligned, monkeypatch, roi_case, forward_backward):
    # Adaptive sampling with RoIs of very different sizes, split into many chunks.
    x, rois = roi_case(torch.float64, device, 0.25, seed=1, height=40, width=30, num_boxes=40)
    rois[:, 3:] += rois[:, 1:3].abs() * torch.linspace(0, 1, rois.shape[0], dtype=rois.dtype, device=device)[:, None]
    monkeypatch.setattr(roi_align_module, "_CHUNK_ELEMENTS_CPU", 300)
    monkeypatch.setattr(roi_align_module, "_CHUNK_ELEMENTS_GPU", 300)
    args = (7, 0.25, -1, aligned)
    ours, ours_grad = forward_backward(roi_align, x, rois, *args)
    ref, ref_grad = forward_backward(torchvision.ops.roi_align, x, rois, *args)
    torch.testing.assert_close(ours, ref, **TOL[torch.float64])
    torch.testing.assert_close(ours_grad, ref_grad, **TOL[torch.float64])


def test_list_of_boxes_equals_tensor_format(device, roi_case):
    x, rois = roi_case(torch.float32, device)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(x.shape[0])]
    with_index = torch.cat([torch.full((len(b), 1), float(i), device=device) for i, b in enumerate(per_image)])
    expected = roi_align(x, torch.cat([with_index, torch.cat(per_image)], dim=1), 5, 0.5, 2, True)
    torch.testing.assert_close(roi_align(x, per_image, 5, 0.5, 2, True), expected, atol=0, rtol=0)
    torch.testing.assert_close(roi_align(x, tuple(per_image), 5, 0.5, 2, True), expected, atol=0, rtol=0)


def test_non_contiguous_input(device, roi_case):
    x, rois = roi_case(torch.float32, device)
    transposed = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
    channels_last = x.contiguous(memory_format=torch.channels_last)
    assert not transposed.is_contiguous() and not channels_last.is_contiguous()
    expected = torchvision.ops.roi_align(x, rois, 3, 1.0, 2, True)
    torch.testing.assert_close(roi_align(transposed, rois, 3, 1.0, 2, True), expected)
    torch.testing.assert_close(roi_align(channels_last, rois, 3, 1.0, 2, True), expected)
    torch.testing.assert_close(roi_align(x, rois[::2], 3, 1.0, 2, True), expected[::2])  # strided boxes


@pytest.mark.parametrize("boxes", ["tensor", "list"])
def test_empty_boxes(device, boxes):
    x = torch.randn(2, 3, 6, 6, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device) if boxes == "tensor" else [torch.zeros(0, 4, device=device)] * 2
    out = roi_align(x, empty, (2, 3), 1.0, 2)
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_hand_computed_5x5():
    # As in detectron2's test: bilinear interpolation of x[r, c] = 5 r + c is exact, so the
    # value at a sample (y, x) is 5 y + x. Box (1, 1, 3, 3), 4x4 bins of 0.5 cells, one
    # sample per bin at its centre: y, x in (1.25, 1.75, 2.25, 2.75), shifted by -0.5 if aligned.
    x = torch.arange(25.0).view(1, 1, 5, 5)
    box = torch.tensor([[0.0, 1.0, 1.0, 3.0, 3.0]])
    legacy = torch.tensor(
        [[7.5, 8.0, 8.5, 9.0], [10.0, 10.5, 11.0, 11.5], [12.5, 13.0, 13.5, 14.0], [15.0, 15.5, 16.0, 16.5]]
    )
    aligned = legacy - 3.0  # each sample moves half a cell up and left: -(5 + 1) / 2
    torch.testing.assert_close(roi_align(x, box, 4, 1.0, 0, aligned=False)[0, 0], legacy)
    torch.testing.assert_close(roi_align(x, box, 4, 1.0, 0, aligned=True)[0, 0], aligned)
    # 2x2 bins of one cell, aligned: the samples hit the cell centres 6, 7, 11, 12 exactly.
    centres = torch.tensor([[6.0, 7.0], [11.0, 12.0]])
    torch.testing.assert_close(roi_align(x, box, 2, 1.0, 0, aligned=True)[0, 0], centres)


def test_samples_on_and_beyond_the_border():
    # x[r, c] = 5 r + c on a 5x5 map; one sample per bin of 2 cells, at the bin centres.
    x = torch.arange(25.0).view(1, 1, 5, 5)
    # Box x from -2 to 6: samples at x = -1, 1, 3, 5. Those at -1 and 5 (= W) still count and read
    # the border columns 0 and 4; y = 1.5 throughout, so 7.5 + (0, 1, 3, 4).
    on_border = roi_align(x, torch.tensor([[0.0, -2.0, 1.0, 6.0, 2.0]]), (1, 4), 1.0, 1)
    torch.testing.assert_close(on_border[0, 0, 0], torch.tensor([7.5, 8.5, 10.5, 11.5]))
    # Box x from -2.2 to 6.2: samples at -1.15, 0.95, 3.05, 5.15; the outer two are outside
    # [-1, W] and give 0.
    beyond = roi_align(x, torch.tensor([[0.0, -2.2, 1.0, 6.2, 2.0]]), (1, 4), 1.0, 1)
    torch.testing.assert_close(beyond[0, 0, 0], torch.tensor([0.0, 7.5 + 0.95, 7.5 + 3.05, 0.0]))
    # Same along y, against torchvision.
    boxes = torch.tensor([[0.0, 1.0, -2.0, 2.0, 6.0], [0.0, 1.0, -2.2, 2.0, 6.2]])
    torch.testing.assert_close(roi_align(x, boxes, (4, 1), 1.0, 1), torchvision.ops.roi_align(x, boxes, (4, 1), 1.0, 1))


@pytest.mark.parametrize("aligned", [False, True])
def test_gradcheck(aligned):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    rois = torch.tensor(
        [[0, 0.3, 0.7, 4.1, 3.2], [0, -1.2, 1.1, 2.4, 5.5], [0, 1.0, 1.0, 1.0, 3.0]], dtype=torch.float64
    )
    assert torch.autograd.gradcheck(lambda t: roi_align(t, rois, (3, 2), 1.0, -1, aligned), (x,))


def test_other_floating_dtypes(roi_case):
    x, rois = roi_case(torch.float32, "cpu")
    expected = roi_align(x, rois, 3, 1.0, 2, True)
    for dtype in (torch.bfloat16, torch.float16):
        got = roi_align(x.to(dtype), rois.to(dtype), 3, 1.0, 2, True)
        assert got.dtype == dtype
        torch.testing.assert_close(got.float(), expected, atol=0.05, rtol=0.05)


def test_module(roi_case):
    x, rois = roi_case(torch.float32, "cpu")
    layer = RoIAlign((3, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(layer(x, rois), roi_align(x, rois, (3, 4), 0.5, 2, True), atol=0, rtol=0)
    assert repr(layer) == "RoIAlign(output_size=(3, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)"
    assert list(layer.state_dict()) == []
    with pytest.raises(ValueError, match=r"RoIAlign: output_size must be a positive int or a pair"):
        RoIAlign(0, 1.0, 2)


@pytest.mark.parametrize(
    "change, error, message",
    [
        (
            dict(boxes=torch.zeros(3, 4)),
            ValueError,
            r"roi_align: boxes must be Tensor\[K, 5\] or list of Tensor\[L, 4\], got Tensor of shape \(3, 4\)",
        ),
        (
            dict(boxes=torch.zeros(5)),
            ValueError,
            r"roi_align: boxes must be Tensor\[K, 5\] .*got Tensor of shape \(5,\)",
        ),
        (
            dict(boxes=[torch.zeros(2, 5)]),
            ValueError,
            r"roi_align: boxes must be .*got boxes\[0\] = Tensor of shape \(2, 5\)",
        ),
        (dict(boxes=[[1.0, 2.0, 3.0, 4.0]]), TypeError, r"roi_align: boxes must be .*got boxes\[0\] = list"),
        (dict(boxes="boxes"), TypeError, r"roi_align: boxes must be Tensor\[K, 5\] or list of Tensor\[L, 4\], got str"),
        (
            dict(boxes=[torch.zeros(1, 4)] * 3),
            ValueError,
            r"roi_align: boxes has 3 tensors \(one per image\) but input has batch size 2",
        ),
        (
            dict(boxes=torch.tensor([[2.0, 0, 0, 1, 1]])),
            ValueError,
            r"roi_align: boxes\[:, 0\] \(batch indices\) must be integers in \[0, 1\], got 2.0",
        ),
        (dict(boxes=torch.tensor([[-1.0, 0, 0, 1, 1]])), ValueError, r"roi_align: boxes\[:, 0\] .*got -1.0"),
        (
            dict(boxes=torch.tensor([[0.5, 0, 0, 1, 1]])),
            ValueError,
            r"roi_align: boxes\[:, 0\] \(batch indices\) must be integers .*got 0.5",
        ),
        (
            dict(boxes=torch.tensor([[0.0, 0, 0, float("nan"), 1]])),
            ValueError,
            r"roi_align: box coordinates must be finite",
        ),
        (
            dict(boxes=torch.zeros(1, 5, dtype=torch.float64)),
            TypeError,
            r"roi_align: boxes must have the dtype of input \(torch.float32\), got .*float64",
        ),
        (
            dict(boxes=torch.zeros(1, 5, device="meta")),
            ValueError,
            r"roi_align: boxes must be on the device of input \(cpu\), got meta",
        ),
        (
            dict(output_size=0),
            ValueError,
            r"roi_align: output_size must be a positive int or a pair of positive ints \(height, width\), got 0",
        ),
        (dict(output_size=(2, -1)), ValueError, r"roi_align: output_size must be .*got \(2, -1\)"),
        (dict(output_size=(2, 2, 2)), ValueError, r"roi_align: output_size must be .*got \(2, 2, 2\)"),
        (dict(output_size=2.0), ValueError, r"roi_align: output_size must be .*got 2.0"),
        (dict(spatial_scale=-0.25), ValueError, r"roi_align: spatial_scale must be > 0, got -0.25"),
        (dict(spatial_scale=0), ValueError, r"roi_align: spatial_scale must be > 0, got 0"),
        (dict(sampling_ratio=2.0), TypeError, r"roi_align: sampling_ratio must be an int, got float 2.0"),
        (
            dict(input=torch.zeros(3, 8, 8)),
            ValueError,
            r"roi_align: input must be 4-D, got Tensor of shape \(3, 8, 8\)",
        ),
        (
            dict(input=torch.zeros(2, 3, 8, 8, dtype=torch.int64)),
            TypeError,
            r"roi_align: input must be a floating-point tensor",
        ),
        (dict(input=[[1.0]]), TypeError, r"roi_align: input must be a torch.Tensor, got list"),
    ],
)
def test_bad_arguments(change, error, message):
    args = dict(
        input=torch.zeros(2, 3, 8, 8),
        boxes=torch.tensor([[0.0, 1, 1, 4, 4]]),
        output_size=2,
        spatial_scale=1.0,
        sampling_ratio=2,
    )
    args.update(change)
    with pytest.raises(error, match=message):
        roi_align(**args)


# Issue 22, finding 5: NaN passed the "spatial_scale > 0" check and failed deep inside
# ("cannot convert float NaN to integer").
@pytest.mark.parametrize("scale", [float("nan"), float("inf")])
def test_non_finite_spatial_scale_is_refused_by_name(scale):
    x, boxes = torch.rand(1, 2, 8, 8), torch.tensor([[0.0, 1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match=rf"roi_align: spatial_scale must be a finite number, got {scale}"):
        roi_align(x, boxes, 2, spatial_scale=scale)
    with pytest.raises(ValueError, match=rf"RoIAlign: spatial_scale must be a finite number, got {scale}"):
        RoIAlign(2, spatial_scale=scale, sampling_ratio=2)
