"""Pooling RoIs from a feature pyramid (Lin et al. Feature Pyramid Networks, CVPR 2017, eq. 1).

An FPN has one feature map per level ``k`` (stride ``2**k``). A RoI of ``w x h`` image pixels
is pooled from level::

    k = floor(k0 + log2(sqrt(w * h) / s0))      clamped to the levels present

so a RoI of the canonical size ``s0`` (224, an ImageNet crop) lands on level ``k0`` (4), and
a RoI half as wide lands one level finer. Each RoI therefore covers roughly the same number
of cells on its level, whatever its size in the image.

``MultiScaleRoIPool`` is a drop-in for torchvision's ``MultiScaleRoIAlign`` (same ``forward``
arguments, same level choice) that can also use RoIPool, passes ``aligned`` through, and infers
the scales from the feature maps on every call instead of caching them on the first one.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._checks import check_choice, check_int, check_positive, describe
from .roi_align import _output_size_pair, _place_rows, roi_align
from .roi_pool import roi_pool

__all__ = ["MultiScaleRoIPool", "fpn_levels", "infer_scale"]


def fpn_levels(
    boxes: list[Tensor],
    level_min: int,
    level_max: int,
    canonical_scale: float = 224,
    canonical_level: int = 4,
    eps: float = 1e-6,
) -> Tensor:
    """The FPN level of each box (FPN paper, eq. 1), as an index into the available levels.

    Args:
        boxes (List[Tensor[L, 4]]): boxes ``(x1, y1, x2, y2)`` in image pixels, one tensor per
            image.
        level_min, level_max (int): the finest and coarsest levels present (``k`` of stride
            ``2**k``).
        canonical_scale (float): ``s0``, the RoI size (square root of its area) that maps to
            ``canonical_level``.
        canonical_level (int): ``k0``.
        eps (float): added before flooring, so that exact powers of two are not pushed down a
            level by rounding (as in torchvision).

    Returns:
        Tensor[K] (int64): ``level - level_min`` for each box, in ``[0, level_max - level_min]``.

    Raises:
        ValueError: a box with a NaN or infinite coordinate, or with x2 < x1 or y2 < y1 (its area
            would be NaN or negative, and its level a meaningless huge integer).
    """
    fn = "fpn_levels"
    _check_box_list(fn, boxes)
    check_int(fn, "level_min", level_min)
    check_int(fn, "level_max", level_max, minimum=level_min)
    check_positive(fn, "canonical_scale", canonical_scale)
    check_int(fn, "canonical_level", canonical_level)
    check_positive(fn, "eps", eps, allow_zero=True)
    boxes_all = torch.cat(boxes)  # [K, 4]
    if not boxes_all.is_floating_point():
        raise TypeError(f"{fn}: boxes must be floating-point tensors, got {describe(boxes_all)}")
    _check_box_values(fn, boxes_all.detach())
    size = torch.sqrt((boxes_all[:, 2] - boxes_all[:, 0]) * (boxes_all[:, 3] - boxes_all[:, 1]))  # [K]
    level = torch.floor(canonical_level + torch.log2(size / canonical_scale) + size.new_tensor(eps))
    return (level.clamp(min=level_min, max=level_max).to(torch.int64) - level_min).to(torch.int64)


def infer_scale(feature: Tensor, image_size: tuple[int, int]) -> float:
    """The scale of a feature map relative to the (padded) image, as a power of two.

    Args:
        feature (Tensor[N, C, h, w]): a feature map.
        image_size (Tuple[int, int]): ``(height, width)`` of the largest image in the batch.

    Returns:
        float: ``2 ** round(log2(h / height))``, e.g. 0.25 for a stride-4 map. Like
        torchvision, only the heights are compared (the widths may be padded differently).
    """
    return 2.0 ** round(math.log2(feature.shape[-2] / image_size[0]))


class MultiScaleRoIPool(nn.Module):
    """RoIAlign or RoIPool over a feature pyramid, each RoI on its FPN level.

    Args:
        featmap_names (List[str]): keys of the feature maps to pool from. They are used in the
            order of the ``x`` given to ``forward`` (as torchvision does), which must run from
            the finest level through consecutive levels, each half the size of the previous.
        output_size (int or Tuple[int, int]): ``(oh, ow)``.
        sampling_ratio (int): RoIAlign's samples per bin per axis (``<= 0``: adaptive);
            ignored by RoIPool.
        roi_op (str): ``"align"`` (RoIAlign, Mask R-CNN) or ``"pool"`` (RoIPool, Fast R-CNN).
        canonical_scale (float): ``s0`` of the level rule; see :func:`fpn_levels`.
        canonical_level (int): ``k0`` of the level rule.
        aligned (bool): RoIAlign's half-pixel shift; ignored by RoIPool. Default False, as in
            torchvision's ``MultiScaleRoIAlign``.

    Small images need a smaller ``canonical_scale``. The default 224 comes from ImageNet-sized
    crops on ~800 px COCO images: a RoI must be at least 112 px across (``sqrt(area)``) to leave
    level 2 and 224 px to reach level 4. On 128 px images almost every RoI is under 112 px, so
    all of them land on the finest level and the coarser maps are never used. Scaling ``s0``
    with the image, e.g. ``224 * 128 / 800 ≈ 36`` for 128 px images, spreads the RoIs over the
    pyramid as on COCO.

    Unlike torchvision's ``MultiScaleRoIAlign``, the scales are inferred on every call, so one
    module can serve batches of different image sizes. torchvision's ``FasterRCNN`` and
    ``MaskRCNN`` constructors accept only ``MultiScaleRoIAlign``; pass this module to
    ``RoIHeads`` directly or assign it afterwards (``model.roi_heads.mask_roi_pool = ...``).

    Example:
        >>> pooler = MultiScaleRoIPool(["p2", "p3"], 7, sampling_ratio=2, canonical_scale=56)
        >>> features = {"p2": torch.rand(1, 8, 32, 32), "p3": torch.rand(1, 8, 16, 16)}
        >>> boxes = [torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 10.0, 100.0, 90.0]])]
        >>> pooler(features, boxes, [(128, 128)]).shape
        torch.Size([2, 8, 7, 7])
    """

    def __init__(
        self,
        featmap_names: list[str],
        output_size: int | tuple[int, int],
        sampling_ratio: int,
        roi_op: str = "align",
        *,
        canonical_scale: float = 224,
        canonical_level: int = 4,
        aligned: bool = False,
    ):
        super().__init__()
        fn = "MultiScaleRoIPool"
        if isinstance(featmap_names, str) or not featmap_names or not all(isinstance(n, str) for n in featmap_names):
            raise ValueError(f"{fn}: featmap_names must be a non-empty list of str, got {featmap_names!r}")
        self.featmap_names = list(featmap_names)
        self.output_size = _output_size_pair(fn, output_size)
        self.sampling_ratio = check_int(fn, "sampling_ratio", sampling_ratio)
        self.roi_op = check_choice(fn, "roi_op", roi_op, ["align", "pool"])
        self.canonical_scale = check_positive(fn, "canonical_scale", canonical_scale)
        self.canonical_level = check_int(fn, "canonical_level", canonical_level)
        self.aligned = aligned

    def forward(
        self,
        x: dict[str, Tensor],
        boxes: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> Tensor:
        """Pool every box from its level.

        Args:
            x (Dict[str, Tensor[N, C, h_k, w_k]]): feature maps by name; maps not in
                ``featmap_names`` are ignored. All have the same ``C``.
            boxes (List[Tensor[L, 4]]): boxes ``(x1, y1, x2, y2)`` in image pixels, one tensor
                per image.
            image_shapes (List[Tuple[int, int]]): ``(height, width)`` of each image before the
                backbone; the scales are inferred from the largest.

        Returns:
            Tensor[K, C, oh, ow]: pooled boxes, in the order of ``torch.cat(boxes)``.
        """
        features, scales = self._levels(x, image_shapes)
        _check_box_list("MultiScaleRoIPool", boxes)
        if len(features) == 1:
            return self._pool(features[0], list(boxes), scales[0])

        level_min = -round(math.log2(scales[0]))
        level_max = level_min + len(features) - 1
        level_of_box = fpn_levels(boxes, level_min, level_max, self.canonical_scale, self.canonical_level)  # [K]
        all_boxes = torch.cat(boxes)  # [K, 4]
        image_index = torch.cat([all_boxes.new_full((b.shape[0], 1), i) for i, b in enumerate(boxes)])  # [K, 1]
        rois = torch.cat([image_index, all_boxes], dim=1)  # [K, 5]
        pieces, order = [], []
        for level, (feature, scale) in enumerate(zip(features, scales)):
            in_level = torch.nonzero(level_of_box == level).squeeze(1)  # [K_level]
            pieces.append(self._pool(feature, rois[in_level], scale).to(features[0].dtype))
            order.append(in_level)
        return _place_rows(pieces, order, rois.shape[0])  # [K, C, oh, ow], in the order of boxes

    def _levels(self, x: dict[str, Tensor], image_shapes: list[tuple[int, int]]) -> tuple[list[Tensor], list[float]]:
        """The selected feature maps (finest first) and their scales; checks the pyramid."""
        fn = "MultiScaleRoIPool"
        if not isinstance(x, dict):
            raise TypeError(f"{fn}: x must be a dict of feature maps, got {describe(x)}")
        missing = [name for name in self.featmap_names if name not in x]
        if missing:
            raise ValueError(f"{fn}: feature maps {missing} not found in x (keys {list(x)})")
        if not image_shapes:
            raise ValueError(f"{fn}: image_shapes must be a non-empty list of (height, width), got {image_shapes!r}")
        # Same order as torchvision: the dict's order, restricted to featmap_names.
        features = [value for name, value in x.items() if name in self.featmap_names]
        largest = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
        scales = [infer_scale(f, largest) for f in features]
        for finer, coarser in zip(scales, scales[1:]):
            if coarser * 2 != finer:
                raise ValueError(
                    f"{fn}: feature maps must be consecutive pyramid levels, finest first; "
                    f"got scales {scales} for {[n for n in x if n in self.featmap_names]}"
                )
        return features, scales

    def _pool(self, feature: Tensor, rois, scale: float) -> Tensor:
        if self.roi_op == "pool":
            return roi_pool(feature, rois, self.output_size, scale)
        return roi_align(feature, rois, self.output_size, scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"featmap_names={self.featmap_names}, output_size={self.output_size}, "
            f"sampling_ratio={self.sampling_ratio}, roi_op={self.roi_op!r}, "
            f"canonical_scale={self.canonical_scale}, canonical_level={self.canonical_level}, "
            f"aligned={self.aligned}"
        )


def _check_box_values(fn: str, boxes: Tensor) -> None:
    """Finite (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2, or an error naming the first bad box (one sync)."""
    if boxes.numel() == 0:
        return
    good = torch.isfinite(boxes).all(dim=1) & (boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1])  # [K]
    if bool(good.all()):
        return
    k = int(torch.nonzero(~good)[0])
    raise ValueError(
        f"{fn}: boxes must be (x1, y1, x2, y2) with finite coordinates, x1 <= x2 and y1 <= y2, got box {k} of "
        f"torch.cat(boxes) = {boxes[k].tolist()}"
    )


def _check_box_list(fn: str, boxes) -> None:
    """``boxes`` must be a non-empty list of Tensor[L, 4]."""
    if not isinstance(boxes, (list, tuple)) or len(boxes) == 0:
        raise TypeError(f"{fn}: boxes must be a non-empty list of Tensor[L, 4] (one per image), got {describe(boxes)}")
    for i, b in enumerate(boxes):
        if not isinstance(b, Tensor) or b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{fn}: boxes must be a list of Tensor[L, 4], got boxes[{i}] = {describe(b)}")
