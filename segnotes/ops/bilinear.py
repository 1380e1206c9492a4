"""FCN's bilinear upsampling as a transposed convolution.

Long, Shelhamer and Darrell, "Fully Convolutional Networks for Semantic Segmentation" (CVPR 2015),
section 3.3: upsampling by a factor f is a convolution with input stride 1/f, i.e. a transposed
("backwards strided") convolution with output stride f. Initialised with the bilinear kernel below
it is bilinear interpolation; left learnable, training can refine it.

The kernel is the one of the reference Caffe code (``surgery.upsample_filt``): for a kernel of size
k, with ``f = (k + 1) // 2`` and centre ``c = f - 1`` (k odd) or ``f - 0.5`` (k even),

    w[i, j] = (1 - |i - c| / f) * (1 - |j - c| / f).

For k = 4 (factor 2) the 1-D profile is [0.25, 0.75, 0.75, 0.25]: each output pixel mixes its two
nearest input pixels with weights 3/4 and 1/4, as bilinear interpolation does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_tensor, describe

__all__ = ["bilinear_kernel", "bilinear_upsample", "BilinearUpsample"]


def _bilinear_profile(kernel_size: int, dtype: torch.dtype, device=None) -> Tensor:
    """The 1-D bilinear profile of length ``kernel_size`` (the 2-D kernel is its outer product)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    # float64 then cast, so every dtype gets the correctly rounded weights.
    taps = torch.arange(kernel_size, dtype=torch.float64, device=device)
    return (1 - (taps - center).abs() / factor).to(dtype)


def bilinear_kernel(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    dtype: torch.dtype = torch.float32,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """FCN's bilinear upsampling filter, as a ``ConvTranspose2d`` weight.

    Channel ``c`` of the input is upsampled into channel ``c`` of the output (the "channel
    diagonal"); every other input/output pair gets zeros, so classes never mix. When
    ``in_channels != out_channels`` the diagonal runs over the first ``min(in_channels,
    out_channels)`` channels and the remaining ones are all zero (no error: the caller may want a
    partly bilinear initialisation, but usually the two are equal).

    Args:
        in_channels (int): input channels of the transposed convolution.
        out_channels (int): output channels.
        kernel_size (int): k; ``2 * factor`` for upsampling by an even ``factor``.
        dtype (torch.dtype): floating dtype of the result.
        device: device of the result (default: the CPU).

    Returns:
        Tensor[in_channels, out_channels, k, k] (dtype): the weight, laid out as
        ``nn.ConvTranspose2d.weight`` is (input channels first).

    Example:
        >>> bilinear_kernel(1, 1, 4)[0, 0, 0]
        tensor([0.0625, 0.1875, 0.1875, 0.0625])
    """
    fn = "bilinear_kernel"
    check_int(fn, "in_channels", in_channels, minimum=1)
    check_int(fn, "out_channels", out_channels, minimum=1)
    check_int(fn, "kernel_size", kernel_size, minimum=1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"{fn}: dtype must be a floating torch.dtype, got {describe(dtype)}")
    profile = _bilinear_profile(kernel_size, dtype, device)
    filt = profile[:, None] * profile[None, :]  # (k, k)
    weight = torch.zeros(in_channels, out_channels, kernel_size, kernel_size, dtype=dtype, device=device)
    diag = torch.arange(min(in_channels, out_channels), device=device)
    weight[diag, diag] = filt
    return weight


def _kernel_size(factor: int) -> int:
    """Kernel size for upsampling by ``factor``: 2f for even f (FCN's choice), 2f - 1 for odd f.

    With stride f and padding f // 2 this makes the output exactly f times larger and places
    input cell i at output coordinate f * i + (f - 1) / 2, the convention of
    ``F.interpolate(..., align_corners=False)``. For odd f an even kernel would need a half-pixel
    padding, so the odd kernel (integer centre) is used instead.
    """
    return 2 * factor - factor % 2


def bilinear_upsample(input: Tensor, factor: int) -> Tensor:
    """Upsample each channel by ``factor`` with a fixed bilinear transposed convolution.

    Equals ``F.interpolate(input, scale_factor=factor, mode="bilinear", align_corners=False)``
    except within ``factor // 2`` pixels of the border, where the transposed convolution sees
    zeros beyond the edge (so values fade) while ``interpolate`` repeats the edge pixel.

    Args:
        input (Tensor[N, C, H, W], floating): maps to upsample.
        factor (int): upsampling factor, >= 1.

    Returns:
        Tensor[N, C, H * factor, W * factor] (input's dtype and device).
    """
    fn = "bilinear_upsample"
    check_tensor(fn, "input", input, ndim=4, floating=True)
    check_int(fn, "factor", factor, minimum=1)
    channels = input.shape[1]
    k = _kernel_size(factor)
    # Depthwise (groups = C): weight [C, 1, k, k], one k x k filter per channel.
    weight = bilinear_kernel(1, 1, k, input.dtype, device=input.device).expand(channels, 1, k, k)
    return F.conv_transpose2d(input, weight, stride=factor, padding=factor // 2, groups=channels)


class BilinearUpsample(nn.ConvTranspose2d):
    """Depthwise transposed convolution initialised to bilinear upsampling (FCN's "deconvolution").

    ``ConvTranspose2d(channels, channels, k, stride=factor, padding=factor // 2, groups=channels,
    bias=False)`` with ``k = 2 * factor`` (even factors; ``2 * factor - 1`` for odd ones). Grouped,
    one filter per channel: the paper's per-class diagonal kernel without the C x C zeros, so it is
    C times cheaper and has ``channels * k * k`` weights instead of ``channels**2 * k * k``.
    Output size is exactly ``factor`` times the input size. See :func:`bilinear_upsample`.

    Args:
        channels (int): number of channels (e.g. classes), kept unchanged.
        factor (int): upsampling factor, >= 1.
        learnable (bool): if False (default) the weight is frozen (``requires_grad=False``), as
            for FCN's final upsampling; if True training may change it (FCN's 2x layers).

    Shape:
        input (Tensor[N, C, H, W]) -> output (Tensor[N, C, H * factor, W * factor]).
    """

    def __init__(self, channels: int, factor: int, learnable: bool = False) -> None:
        fn = "BilinearUpsample"
        check_int(fn, "channels", channels, minimum=1)
        check_int(fn, "factor", factor, minimum=1)
        k = _kernel_size(factor)
        super().__init__(
            channels, channels, k, stride=factor, padding=factor // 2, groups=channels, bias=False
        )
        self.factor = factor
        self.learnable = bool(learnable)
        self.weight.requires_grad_(self.learnable)

    def reset_parameters(self) -> None:
        """(Re)initialise to bilinear interpolation (called by ``nn.ConvTranspose2d.__init__``)."""
        k = self.kernel_size[0]
        with torch.no_grad():
            filt = bilinear_kernel(1, 1, k, self.weight.dtype, device=self.weight.device)
            self.weight.copy_(filt.expand_as(self.weight))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, factor={self.factor}, learnable={self.learnable}, kernel_size={self.kernel_size[0]}"
