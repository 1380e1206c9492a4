"""Operators the book teaches, written in plain PyTorch and tested against torchvision.

- :mod:`.roi_align`: :func:`roi_align`, :class:`RoIAlign` (Mask R-CNN's bilinear RoI features).
- :mod:`.roi_align_reference`: :func:`roi_align_reference`, :func:`bilinear_interpolate` (the same op one sample at
  a time, loops to read; the reference of the tests).
- :mod:`.roi_pool`: :func:`roi_pool`, :class:`RoIPool` (Fast R-CNN's quantised max pooling).
- :mod:`.poolers`: :class:`MultiScaleRoIPool` (FPN level assignment, either op), :func:`fpn_levels`.
- :mod:`.bilinear`: :func:`bilinear_kernel`, :func:`bilinear_upsample`, :class:`BilinearUpsample` (FCN's upsampling).
"""
from .bilinear import BilinearUpsample, bilinear_kernel, bilinear_upsample
from .poolers import MultiScaleRoIPool, fpn_levels, infer_scale
from .roi_align import RoIAlign, roi_align
from .roi_align_reference import bilinear_interpolate, roi_align_reference
from .roi_pool import RoIPool, roi_pool

__all__ = [
    "roi_align",
    "RoIAlign",
    "roi_align_reference",
    "bilinear_interpolate",
    "roi_pool",
    "RoIPool",
    "MultiScaleRoIPool",
    "fpn_levels",
    "infer_scale",
    "bilinear_kernel",
    "bilinear_upsample",
    "BilinearUpsample",
]
