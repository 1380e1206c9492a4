import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
import torchvision

from segnotes.metrics import box_iou, mask_iou



def random_masks(n, height, width, seed):
    """Random rectangles, some empty, as BoolTensor[n, H, W]."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, height, width), dtype=bool)
    for mask in masks[: n - 1]:  # the last one stays empty
        y0, x0 = rng.integers(0, [height, width])
        y1, x1 = rng.integers([y0 + 1, x0 + 1], [height + 1, width + 1])
        mask[y0:y1, x0:x1] = True
    return torch.from_numpy(masks)


def random_boxes(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    corner = torch.rand(n, 2, generator=g) * 50
    size = torch.rand(n, 2, generator=g) * 30 + 0.5
    return torch.cat([corner, corner + size], dim=1).to(dtype)


def test_mask_iou_matches_pycocotools(device):
    masks1, masks2 = random_masks(7, 20, 24, seed=0), random_masks(5, 20, 24, seed=1)
    encode = lambda m: mask_utils.encode(np.asfortranarray(m.permute(1, 2, 0).numpy().astype(np.uint8)))  # noqa: E731
    expected = mask_utils.iou(encode(masks1), encode(masks2), [0] * 5)  # (7, 5)
    result = mask_iou(masks1.to(device), masks2.to(device))
    assert result.shape == (7, 5) and result.dtype == torch.float32 and result.device.type == device
    np.testing.assert_allclose(result.cpu().numpy(), expected, atol=1e-6)
    assert result[-1, -1] == 0  # two empty masks: empty union, IoU 0


def test_mask_iou_hand_worked_and_empty_sets():
    a = torch.zeros(1, 4, 4, dtype=torch.bool)
    a[0, :2, :] = True  # 8 pixels
    b = torch.zeros(1, 4, 4, dtype=torch.bool)
    b[0, 1:3, :] = True  # 8 pixels, 4 shared: IoU = 4 / 12
    assert mask_iou(a, b).item() == pytest.approx(1 / 3)
    assert mask_iou(a[:0], b).shape == (0, 1)
    assert mask_iou(a, b[:0]).shape == (1, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_box_iou_matches_torchvision(device, dtype):
    boxes1, boxes2 = random_boxes(9, seed=0, dtype=dtype), random_boxes(6, seed=1, dtype=dtype)
    boxes2 = torch.cat([boxes2, boxes1[:2]])  # some identical pairs too
    expected = torchvision.ops.box_iou(boxes1, boxes2)
    result = box_iou(boxes1.to(device), boxes2.to(device))
    assert result.dtype == dtype and result.device.type == device
    torch.testing.assert_close(result.cpu(), expected)
    assert result[0, 6].item() == pytest.approx(1.0) and result[1, 7].item() == pytest.approx(1.0)


def test_box_iou_hand_worked_and_degenerate():
    # [0, 0, 2, 2] and [1, 0, 3, 2] share a 1 x 2 strip: IoU = 2 / (4 + 4 - 2) = 1/3.
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 0.0, 3.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    assert box_iou(a, b)[0].tolist() == pytest.approx([1 / 3, 0.0])
    point = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    assert box_iou(point, point).item() == 0.0  # empty union: 0 (torchvision gives NaN)
    assert box_iou(a[:0], b).shape == (0, 2)


def test_mask_iou_errors():
    masks = torch.zeros(2, 4, 4, dtype=torch.bool)
    with pytest.raises(TypeError, match="mask_iou: masks1 must have dtype torch.bool, got Tensor of shape .* torch.float32"):
        mask_iou(masks.float(), masks)
    with pytest.raises(ValueError, match=r"mask_iou: masks2 must be 3-D, got Tensor of shape \(4, 4\)"):
        mask_iou(masks, masks[0])
    with pytest.raises(ValueError, match="mask_iou: masks1 and masks2 must have the same height and width"):
        mask_iou(masks, masks[:, :3])
    with pytest.raises(ValueError, match="mask_iou: masks1 and masks2 must be on the same device, got cpu and meta"):
        mask_iou(masks, masks.to("meta"))


def test_box_iou_errors():
    boxes = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"box_iou: boxes1 must have last dimension 4, got Tensor of shape \(2, 5\)"):
        box_iou(torch.zeros(2, 5), boxes)
    with pytest.raises(TypeError, match="box_iou: boxes2 must be a floating-point tensor, got .* torch.int64"):
        box_iou(boxes, boxes.long())
    with pytest.raises(ValueError, match="box_iou: boxes1 and boxes2 must have the same dtype and device"):
        box_iou(boxes, boxes.double())
    with pytest.raises(TypeError, match="box_iou: boxes1 must be a torch.Tensor, got list"):
        box_iou([[0, 0, 1, 1]], boxes)


# ------------------------------------------------------------------ issue 22, finding 4


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_box_iou_of_large_boxes_does_not_overflow_in_half_precision(dtype):
    # 200 x 200: each area is 40000, their sum 80000 is past float16's largest number (65504).
    boxes = torch.tensor([[0.0, 0.0, 200.0, 200.0], [100.0, 0.0, 300.0, 200.0]], dtype=dtype)
    expected = torchvision.ops.box_iou(boxes, boxes)  # computes areas in float32 for half types
    iou = box_iou(boxes, boxes)
    assert iou.dtype == dtype
    torch.testing.assert_close(iou.float(), expected.float(), rtol=1e-2, atol=0)
    assert float(iou[0, 0]) == 1 and float(iou[0, 1]) == pytest.approx(1 / 3, rel=1e-2)


def test_box_iou_of_huge_float32_boxes_falls_back_to_float64():
    boxes = torch.tensor([[0.0, 0.0, 1e20, 1e20], [0.0, 0.0, 5e19, 1e20]])  # areas past float32's 3.4e38
    expected = torchvision.ops.box_iou(boxes.double(), boxes.double()).float()
    torch.testing.assert_close(box_iou(boxes, boxes), expected)


@pytest.mark.parametrize("bad, message", [
    ([float("nan"), 0.0, 1.0, 1.0], r"finite coordinates, got box 1 = \[nan, 0.0, 1.0, 1.0\]"),
    ([0.0, 0.0, float("inf"), 1.0], r"finite coordinates, got box 1 = \[0.0, 0.0, inf, 1.0\]"),
    ([2.0, 0.0, 1.0, 1.0], r"x1 <= x2 and y1 <= y2, got box 1 = \[2.0, 0.0, 1.0, 1.0\]"),
])
def test_box_iou_refuses_nan_inf_and_inverted_boxes(bad, message):
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], bad])
    with pytest.raises(ValueError, match=r"box_iou: boxes2 must be \(x1, y1, x2, y2\) boxes with " + message):
        box_iou(boxes[:1], boxes)
