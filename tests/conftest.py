"""Fixtures shared by the whole test suite.

* ``device``: a test that takes it runs on the CPU, and on CUDA where there is one (the CUDA case is
  skipped elsewhere, so a CPU-only run still lists it).
* ``roi_case``, ``roi_pool_case``, ``forward_backward``: the RoI op tests' inputs and their
  forward-and-backward driver, shared by tests/ops/test_roi_align.py and test_roi_pool.py.
"""
import pytest
import torch

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    return request.param


def _roi_case(dtype, device, spatial_scale=1.0, seed=0, num_images=3, channels=4, height=9, width=11, num_boxes=24,
              *, pool_cases=False):
    """Random maps and boxes (in image coordinates) that stick out of the map, are degenerate or lie
    entirely outside, with batch indices in no particular order. Box 0 has zero width, box 1 zero
    height, box 3 lies outside; box 2 is a point, or with ``pool_cases`` inverted (RoIPool makes it
    one cell) while box 4's corner sits on pixel halves (C rounds them away from zero).

    Returns:
        (x Tensor[num_images, channels, height, width], rois Tensor[num_boxes, 5]) on ``device``.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, channels, height, width, generator=g, dtype=dtype)
    span = torch.tensor([width + 4.0, height + 4.0], dtype=dtype)
    corner = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * span - 3
    size = torch.rand(num_boxes, 2, generator=g, dtype=dtype) * 8
    size[0, 0] = 0.0  # zero width
    size[1, 1] = 0.0  # zero height
    size[2] = -2.0 if pool_cases else 0.0  # inverted, or a point
    corner[3] = torch.tensor([width + 3.0, -5.0], dtype=dtype)  # entirely outside
    if pool_cases:
        corner[4] = torch.tensor([2.5, 3.5], dtype=dtype)  # halves
    boxes = torch.cat([corner, corner + size], dim=1) / spatial_scale  # [K, 4] in image coordinates
    index = torch.randint(0, num_images, (num_boxes, 1), generator=g).to(dtype)
    return x.to(device), torch.cat([index, boxes], dim=1).to(device)


@pytest.fixture
def roi_case():
    """``roi_case(dtype, device, spatial_scale=1.0, seed=0, ...) -> (x, rois)``: see :func:`_roi_case`."""
    return _roi_case


@pytest.fixture
def roi_pool_case():
    """As ``roi_case``, with an inverted box and a box on pixel halves, where RoIPool's rounding matters."""
    return lambda *args, **kwargs: _roi_case(*args, **kwargs, pool_cases=True)


def _forward_backward(op, x, rois, *args):
    """``op(x, rois, *args)`` and the gradient of x for a fixed ramp of output gradients."""
    x = x.detach().clone().requires_grad_()
    out = op(x, rois, *args)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)
    out.backward(grad_out)
    return out.detach(), x.grad


@pytest.fixture
def forward_backward():
    """``forward_backward(op, x, rois, *args) -> (output, grad of x)``."""
    return _forward_backward
