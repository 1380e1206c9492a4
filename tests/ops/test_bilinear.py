import pytest
import torch
import torch.nn.functional as F
from torch import nn

from segnotes.ops.bilinear import BilinearUpsample, bilinear_kernel, bilinear_upsample



def test_kernel_hand_computed_profiles():
    # k = 4 (factor 2): f = 2, c = 1.5, profile 1 - |i - 1.5| / 2 = [0.25, 0.75, 0.75, 0.25].
    k4 = bilinear_kernel(1, 1, 4)[0, 0]
    profile4 = torch.tensor([0.25, 0.75, 0.75, 0.25])
    torch.testing.assert_close(k4, profile4[:, None] * profile4[None, :], rtol=0, atol=0)
    # k = 3 (odd): f = 2, c = 1, profile [0.5, 1, 0.5].
    k3 = bilinear_kernel(1, 1, 3)[0, 0]
    profile3 = torch.tensor([0.5, 1.0, 0.5])
    torch.testing.assert_close(k3, profile3[:, None] * profile3[None, :], rtol=0, atol=0)


def test_kernel_matches_caffe_upsample_filt_formula():
    # The reference Caffe code's surgery.upsample_filt, transcribed with numpy-free loops.
    for k in (1, 2, 5, 16, 64):
        f = (k + 1) // 2
        c = f - 1 if k % 2 == 1 else f - 0.5
        ref = torch.tensor(
            [[(1 - abs(i - c) / f) * (1 - abs(j - c) / f) for j in range(k)] for i in range(k)], dtype=torch.float64
        )
        torch.testing.assert_close(bilinear_kernel(1, 1, k, torch.float64)[0, 0], ref, rtol=0, atol=1e-15)


def test_kernel_is_on_the_channel_diagonal():
    w = bilinear_kernel(3, 5, 4, dtype=torch.float64)
    assert w.shape == (3, 5, 4, 4) and w.dtype == torch.float64
    filt = w[0, 0]
    for i in range(3):
        for j in range(5):
            expected = filt if i == j else torch.zeros_like(filt)
            torch.testing.assert_close(w[i, j], expected, rtol=0, atol=0)
    # More inputs than outputs: diagonal over min(in, out); extra input channels map to zero.
    w = bilinear_kernel(4, 2, 4)
    assert w[2:].abs().sum() == 0 and (w[0, 0] > 0).all() and (w[1, 1] > 0).all()


@pytest.mark.parametrize("factor", [2, 4, 8, 16, 32, 3, 5])
def test_module_equals_interpolate_in_the_interior(factor, device):
    g = torch.Generator().manual_seed(factor)
    x = torch.randn(2, 3, 6, 7, generator=g, dtype=torch.float64).to(device)
    up = BilinearUpsample(3, factor).to(device=device, dtype=torch.float64)
    up.reset_parameters()  # rebuild the kernel in float64 (odd factors have weights like 1/3)
    out = up(x)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    assert out.shape == (2, 3, 6 * factor, 7 * factor)
    b = factor // 2  # within factor // 2 pixels of the border the deconv sees zeros beyond the edge
    inner = (..., slice(b, out.shape[-2] - b), slice(b, out.shape[-1] - b))
    torch.testing.assert_close(out[inner], ref[inner], rtol=0, atol=1e-12)
    # ... and the border does differ (the deconv fades towards zero, interpolate repeats the edge).
    assert not torch.allclose(out, ref)
    torch.testing.assert_close(bilinear_upsample(x, factor), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_dense_transposed_conv_equals_grouped(factor):
    channels = 4
    x = torch.randn(1, channels, 5, 4, generator=torch.Generator().manual_seed(0))
    k = 2 * factor
    dense = nn.ConvTranspose2d(channels, channels, k, stride=factor, padding=factor // 2, bias=False)
    with torch.no_grad():
        dense.weight.copy_(bilinear_kernel(channels, channels, k))
    grouped = BilinearUpsample(channels, factor)
    assert grouped.weight.shape == (channels, 1, k, k)
    torch.testing.assert_close(grouped(x), dense(x), rtol=1e-6, atol=1e-6)


def test_factor_one_is_identity():
    x = torch.randn(1, 2, 3, 5)
    torch.testing.assert_close(BilinearUpsample(2, 1)(x), x, rtol=0, atol=0)


def test_learnable_flag_controls_requires_grad():
    fixed = BilinearUpsample(3, 2)
    learned = BilinearUpsample(3, 2, learnable=True)
    assert not fixed.weight.requires_grad and learned.weight.requires_grad
    x = torch.randn(1, 3, 4, 4, requires_grad=True)
    fixed(x).sum().backward()
    assert fixed.weight.grad is None and x.grad is not None
    learned(x).sum().backward()
    assert learned.weight.grad is not None
    assert "factor=2, learnable=True" in repr(learned)


def test_kernel_dtype_and_device_follow_arguments():
    w = bilinear_kernel(2, 2, 4, torch.float16, device="cpu")
    assert w.dtype == torch.float16 and w.device.type == "cpu"
    assert bilinear_upsample(torch.zeros(1, 1, 2, 2, dtype=torch.float64), 2).dtype == torch.float64


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: bilinear_kernel(0, 1, 4), ValueError, r"bilinear_kernel: in_channels must be >= 1, got 0"),
        (lambda: bilinear_kernel(1, 1, 2.0), TypeError, r"bilinear_kernel: kernel_size must be an int, got float"),
        (lambda: bilinear_kernel(1, 1, 4, torch.int64), TypeError, r"bilinear_kernel: dtype must be a floating"),
        (lambda: BilinearUpsample(3, 0), ValueError, r"BilinearUpsample: factor must be >= 1, got 0"),
        (lambda: bilinear_upsample(torch.zeros(2, 2), 2), ValueError, r"bilinear_upsample: input must be 4-D"),
        (lambda: bilinear_upsample(torch.zeros(1, 1, 2, 2, dtype=torch.int64), 2), TypeError, r"floating-point"),
    ],
)
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call()
