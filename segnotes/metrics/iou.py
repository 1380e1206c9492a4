"""Intersection over union (Jaccard index) between sets of masks or boxes.

IoU(A, B) = |A ∩ B| / |A ∪ B|: 1 for identical regions, 0 for disjoint ones. COCO AP thresholds it
at 0.50:0.05:0.95 to decide which detections are correct.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_tensor, describe

__all__ = ["mask_iou", "box_iou"]


def mask_iou(masks1: Tensor, masks2: Tensor) -> Tensor:
    """Pairwise IoU between two sets of binary masks.

    The intersections of all pairs are one matrix product: flatten each mask to a row of 0s and
    1s, then ``inter[n, m] = masks1[n] · masks2[m]``; the unions follow from the areas,
    ``|A ∪ B| = |A| + |B| - |A ∩ B|``.

    Args:
        masks1 (BoolTensor[N, H, W]): first set.
        masks2 (BoolTensor[M, H, W]): second set, same H, W and device.

    Returns:
        Tensor[N, M] (float32): IoU in [0, 1]; 0 where the union is empty (two empty masks).
    """
    fn = "mask_iou"
    check_tensor(fn, "masks1", masks1, ndim=3, dtype=torch.bool)
    check_tensor(fn, "masks2", masks2, ndim=3, dtype=torch.bool)
    if masks1.shape[1:] != masks2.shape[1:]:
        raise ValueError(
            f"{fn}: masks1 and masks2 must have the same height and width, "
            f"got {describe(masks1)} and {describe(masks2)}"
        )
    if masks1.device != masks2.device:
        raise ValueError(f"{fn}: masks1 and masks2 must be on the same device, got {masks1.device} and {masks2.device}")
    # float32 counts are exact up to 2**24 pixels per mask (a 4096 x 4096 image).
    flat1 = masks1.flatten(1).to(torch.float32)  # (N, H*W)
    flat2 = masks2.flatten(1).to(torch.float32)  # (M, H*W)
    intersection = flat1 @ flat2.T  # (N, M)
    union = flat1.sum(1)[:, None] + flat2.sum(1)[None, :] - intersection  # (N, M)
    return torch.where(union > 0, intersection / union.clamp(min=1), torch.zeros_like(union))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU between two sets of boxes in (x1, y1, x2, y2) corners, like :func:`torchvision.ops.box_iou`.

    Args:
        boxes1 (Tensor[N, 4], floating): first set, x1 <= x2 and y1 <= y2.
        boxes2 (Tensor[M, 4], floating): second set, same dtype and device.

    Returns:
        Tensor[N, M] (boxes' dtype): IoU in [0, 1]; 0 where the union is empty (two empty
        boxes; torchvision gives NaN there).

    Areas are computed in float32 for float16 and bfloat16 boxes (as torchvision does: a
    200 x 200 box has an area of 40000, past float16's 65504 once two are added), and in
    float64 where float32 areas would overflow.

    Raises:
        ValueError: a coordinate is NaN or infinite, or a box has x2 < x1 or y2 < y1.
    """
    fn = "box_iou"
    check_tensor(fn, "boxes1", boxes1, ndim=2, floating=True, last_dim=4)
    check_tensor(fn, "boxes2", boxes2, ndim=2, floating=True, last_dim=4)
    if boxes1.dtype != boxes2.dtype or boxes1.device != boxes2.device:
        raise ValueError(
            f"{fn}: boxes1 and boxes2 must have the same dtype and device, got {describe(boxes1)} on "
            f"{boxes1.device} and {describe(boxes2)} on {boxes2.device}"
        )
    for name, boxes in (("boxes1", boxes1), ("boxes2", boxes2)):
        _check_box_values(fn, name, boxes)
    dtype = boxes1.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32  # torchvision's _upcast
    iou, union = _box_iou(boxes1.to(work), boxes2.to(work))
    if work == torch.float32 and not bool(torch.isfinite(union).all()):
        iou, _ = _box_iou(boxes1.double(), boxes2.double())  # float32 areas overflowed (sides past ~1e19)
    return iou.to(dtype)


def _check_box_values(fn: str, name: str, boxes: Tensor) -> None:
    """Finite coordinates with x1 <= x2 and y1 <= y2 (one device sync)."""
    if boxes.numel() == 0:
        return
    finite = torch.isfinite(boxes).all(dim=1)  # [N]
    ordered = (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # [N]; False for NaN too
    bad = ~(finite & ordered)
    if not bool(bad.any()):
        return
    i = int(torch.nonzero(bad)[0])
    what = "finite coordinates" if not bool(finite[i]) else "x1 <= x2 and y1 <= y2"
    raise ValueError(f"{fn}: {name} must be (x1, y1, x2, y2) boxes with {what}, got box {i} = {boxes[i].tolist()}")


def _box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`box_iou` on checked boxes, in their dtype; also returns the unions (N, M)."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])  # (N,)
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])  # (M,)
    top_left = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])  # (N, M, 2)
    width_height = (bottom_right - top_left).clamp(min=0)  # (N, M, 2); disjoint boxes overlap by 0
    intersection = width_height[..., 0] * width_height[..., 1]  # (N, M)
    union = area1[:, None] + area2[None, :] - intersection  # (N, M)
    return torch.where(union > 0, intersection / union, torch.zeros_like(union)), union
