"""Shift-and-stitch: dense predictions from a strided net by running it on shifted inputs.

FCN paper, section 3.2. A net with output stride f predicts one value per f x f block. Shift the
input up by dy and left by dx pixels (0 <= dx, dy < f), run the net, and its output cell (i, j)
now describes the block starting at (f i + dy, f j + dx). Doing this for all f**2 shifts and
interlacing the outputs gives a prediction for every pixel. The result equals running the
"a trous" version of the net (every pooling stride set to 1, every later filter dilated to
match) at full resolution, but costs f**2 forward passes. FCN tried it and chose learned
upsampling with skips instead, which was cheaper for the same accuracy.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .._checks import check_int, check_tensor, describe

__all__ = ["shift_and_stitch"]


def shift_and_stitch(net: Callable[[Tensor], Tensor], image: Tensor, stride: int) -> Tensor:
    """Evaluate ``net`` on the ``stride**2`` shifted copies of ``image`` and interlace the outputs.

    The copy for shift (dy, dx) is ``image[..., dy:, dx:]`` zero-padded at the bottom and right
    back to the original size, so every pass sees the same input size and returns the same output
    size; padding affects only the output cells whose receptive field reaches past the image.

    Args:
        net (callable): maps Tensor[N, C, H, W] to Tensor[N, K, h, w] with output stride
            ``stride`` (e.g. an ``nn.Module`` in eval mode; it is called ``stride**2`` times).
        image (Tensor[N, C, H, W], floating): the input.
        stride (int): f, the net's output stride.

    Returns:
        Tensor[N, K, f * h, f * w]: ``out[..., f * i + dy, f * j + dx]`` is the net's output
        cell (i, j) for the input shifted by (dy, dx). Crop it to the rows and columns whose
        receptive field fits in the image, if the net has no padding of its own.
    """
    fn = "shift_and_stitch"
    if not callable(net):
        raise TypeError(f"{fn}: net must be callable (e.g. an nn.Module), got {describe(net)}")
    check_tensor(fn, "image", image, ndim=4, floating=True)
    f = check_int(fn, "stride", stride, minimum=1)
    outputs = []
    for dy in range(f):
        for dx in range(f):
            shifted = F.pad(image[..., dy:, dx:], (0, dx, 0, dy))  # (N, C, H, W), zeros at bottom/right
            outputs.append(net(shifted))  # (N, K, h, w)
    stacked = torch.stack(outputs, dim=-1)  # (N, K, h, w, f*f), last index dy * f + dx
    n, k, h, w, _ = stacked.shape
    stacked = stacked.reshape(n, k, h, w, f, f)  # (N, K, h, w, dy, dx)
    stacked = stacked.permute(0, 1, 2, 4, 3, 5)  # (N, K, h, dy, w, dx)
    return stacked.reshape(n, k, h * f, w * f)  # row f * i + dy, column f * j + dx
