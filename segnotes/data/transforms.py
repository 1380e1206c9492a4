"""Transforms for real images, applied to an image and its target together.

Real photographs differ in size, so training resizes them (shorter side, with a cap on the
longer one, or a fixed size), flips them, and for FCN jitters their scale and crops fixed-size
windows; every backbone sees inputs normalised as its weights expect. Each geometric step must
move the masks and boxes with the pixels. The work is done by ``torchvision.transforms.v2``,
which knows how to treat each kind of tensor: the image is resized bilinearly
(``tv_tensors.Image``), masks and label maps by nearest neighbour (``tv_tensors.Mask``), boxes
by scaling their coordinates (``tv_tensors.BoundingBoxes``); a crop pads label maps with 255
("ignore") and images with 0. :class:`PairTransform` wraps our ``(image, target)`` pairs into
those types and back.

Random draws come from the global torch generator, which :class:`~segnotes.engine.Trainer`
seeds per run and restores, so a run's augmentations are reproducible and resume exactly.

    PairTransform                     (image, target) -> (image, target), through v2 transforms
    train_transforms, eval_transforms the pipelines ``segnotes train`` builds from its options
    pad_collate                       batches of semantic pairs of different sizes
    IMAGENET_MEAN, IMAGENET_STD       the normalisation of torchvision's ImageNet weights
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2

from .._checks import check_choice, check_int, describe

__all__ = ["PairTransform", "train_transforms", "eval_transforms", "pad_collate", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
KINDS = ("semantic", "instances")


class PairTransform:
    """Apply ``torchvision.transforms.v2`` transforms to an ``(image, target)`` pair consistently.

    Args:
        transforms (sequence of v2 transforms): applied in order.

    Call with:
        image (FloatTensor[3, H, W]): RGB in [0, 1].
        target: a label map LongTensor[H, W] (semantic), or a detection dict with ``boxes``
            (Tensor[N, 4], x1 y1 x2 y2), ``masks`` (Tensor[N, H, W]) and any other entries (kept
            as they are; ``area`` is recomputed from the masks).

    Returns:
        ``(image FloatTensor[3, H', W'], target)`` as plain tensors, in the input's layout.
    """

    def __init__(self, transforms: Sequence):
        for i, transform in enumerate(transforms):
            if not callable(transform):
                raise TypeError(f"PairTransform: transforms[{i}] must be callable, got {describe(transform)}")
        self.transforms = list(transforms)
        self.pipeline = v2.Compose(self.transforms) if self.transforms else v2.Identity()

    def __call__(self, image: Tensor, target):
        height, width = image.shape[-2:]
        if isinstance(target, Tensor):
            out_image, out_label = self.pipeline(tv_tensors.Image(image), tv_tensors.Mask(target))
            return out_image.as_subclass(Tensor), out_label.as_subclass(Tensor)
        if not isinstance(target, dict):
            raise TypeError(f"PairTransform: target must be a label Tensor[H, W] or a detection dict, got {describe(target)}")
        wrapped = dict(target)
        wrapped["boxes"] = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
        wrapped["masks"] = tv_tensors.Mask(target["masks"])
        out_image, out = self.pipeline(tv_tensors.Image(image), wrapped)
        out = {k: v.as_subclass(Tensor) if isinstance(v, Tensor) else v for k, v in out.items()}
        if "area" in out:
            out["area"] = out["masks"].flatten(1).sum(1).to(target["area"].dtype)
        return out_image.as_subclass(Tensor), out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.transforms})"


def _resize(fn: str, size, max_size: int | None) -> list:
    """``v2.Resize`` for an int (shorter side, longer side at most ``max_size``) or an (H, W) pair."""
    if size is None:
        if max_size is not None:
            raise ValueError(f"{fn}: max_size needs size (the shorter side), got size=None and max_size={max_size}")
        return []
    if isinstance(size, int) and not isinstance(size, bool):
        check_int(fn, "size", size, minimum=1)
        if max_size is not None and max_size < size:
            raise ValueError(f"{fn}: max_size must be at least size={size}, got {max_size}")
        return [v2.Resize(size, max_size=max_size)]
    if isinstance(size, (tuple, list)) and len(size) == 2:
        for value in size:
            check_int(fn, "size[i]", value, minimum=1)
        if max_size is not None:
            raise ValueError(f"{fn}: max_size applies to a shorter-side size, not to the fixed size {tuple(size)}")
        return [v2.Resize(tuple(size))]
    raise TypeError(f"{fn}: size must be None, an int (shorter side) or (height, width), got {describe(size)}")


def _normalize(fn: str, mean, std) -> list:
    if mean is None and std is None:
        return []
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        raise ValueError(f"{fn}: mean and std must both be 3 numbers (RGB) or both None, got {mean!r} and {std!r}")
    return [v2.Normalize(list(mean), list(std))]


def train_transforms(
    kind: str,
    *,
    size: int | tuple[int, int] | None = None,
    max_size: int | None = None,
    scale_range: tuple[float, float] | None = None,
    crop: int | None = None,
    flip: bool = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> PairTransform:
    """The training pipeline: resize, scale jitter and crop (semantic only), flip, normalise.

    Args:
        kind (str): ``"semantic"`` (label maps, FCN) or ``"instances"`` (masks and boxes).
        size: None (keep), an int (the shorter side, aspect kept) or ``(height, width)``.
        max_size (int): cap on the longer side, with an int ``size``.
        scale_range ((float, float)): scale jitter: the shorter side drawn uniformly in
            ``[lo * size, hi * size]`` (needs an int ``size``; semantic only), as torchvision's
            segmentation reference does with (0.5, 2.0).
        crop (int): random ``crop`` x ``crop`` windows, padding smaller images (label 255, image 0);
            semantic only.
        flip (bool): random horizontal flips.
        mean, std: per-channel normalisation (e.g. :data:`IMAGENET_MEAN`, :data:`IMAGENET_STD`
            for ImageNet weights); None leaves the values in [0, 1].
    """
    fn = "train_transforms"
    check_choice(fn, "kind", kind, KINDS)
    steps = _resize(fn, size, max_size)
    if scale_range is not None:
        if kind != "semantic":
            raise ValueError(f"{fn}: scale_range is for semantic segmentation; instance models resize in the model")
        if not (isinstance(size, int) and len(scale_range) == 2 and 0 < scale_range[0] <= scale_range[1]):
            raise ValueError(f"{fn}: scale_range needs an int size and 0 < lo <= hi, got size={size!r}, "
                             f"scale_range={scale_range!r}")
        steps.append(v2.RandomResize(max(1, round(scale_range[0] * size)), round(scale_range[1] * size) + 1))
    if crop is not None:
        check_int(fn, "crop", crop, minimum=1)
        if kind != "semantic":
            raise ValueError(f"{fn}: crop is for semantic segmentation (boxes would need cutting), got kind={kind!r}")
        steps.append(v2.RandomCrop(crop, pad_if_needed=True, fill={tv_tensors.Image: 0.0, tv_tensors.Mask: 255}))
    if flip:
        steps.append(v2.RandomHorizontalFlip())
    return PairTransform(steps + _normalize(fn, mean, std))


def eval_transforms(
    kind: str, *, size: int | tuple[int, int] | None = None, max_size: int | None = None,
    mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
) -> PairTransform:
    """The evaluation pipeline: the training resize and normalisation, nothing random."""
    fn = "eval_transforms"
    check_choice(fn, "kind", kind, KINDS)
    return PairTransform(_resize(fn, size, max_size) + _normalize(fn, mean, std))


def pad_collate(batch: Sequence, ignore_index: int = 255) -> tuple[Tensor, Tensor]:
    """Stack ``(image Tensor[3, H_i, W_i], label Tensor[H_i, W_i])`` pairs of different sizes.

    Each pair is padded at the bottom and right to the largest height and width of the batch:
    images with 0, labels with ``ignore_index``, so the padding never enters the loss.

    Returns:
        (images Tensor[N, 3, H, W], labels Tensor[N, H, W] int64).
    """
    height = max(image.shape[-2] for image, _ in batch)
    width = max(image.shape[-1] for image, _ in batch)
    images = torch.zeros(len(batch), 3, height, width, dtype=batch[0][0].dtype)
    labels = torch.full((len(batch), height, width), ignore_index, dtype=torch.int64)
    for k, (image, label) in enumerate(batch):
        h, w = image.shape[-2:]
        images[k, :, :h, :w] = image
        labels[k, :h, :w] = label
    return images, labels
