"""Data: the procedural shapes data set, and datasets for it and for real VOC / COCO layouts.

Modules:
    shapes    categories, rendering, ``generate``, checksums, statistics
    datasets  torch Datasets (COCO-style instances, VOC-style semantic labels)
    png       a deterministic PNG writer (byte-identical files on every machine), the VOC colour map
"""
from .datasets import CocoInstances, ShapesInstances, ShapesSemantic, VOCSemantic
from .png import encode_png, voc_palette, write_png
from .shapes import (
    CATEGORIES,
    GROUPS,
    HANDLE_IN_MASK,
    Rendered,
    area_ranges,
    default_root,
    ensure_shapes,
    generate,
    render,
    statistics,
    verify,
    write_checksums,
)

__all__ = [
    "CATEGORIES",
    "GROUPS",
    "HANDLE_IN_MASK",
    "CocoInstances",
    "Rendered",
    "ShapesInstances",
    "ShapesSemantic",
    "VOCSemantic",
    "area_ranges",
    "default_root",
    "encode_png",
    "ensure_shapes",
    "generate",
    "render",
    "statistics",
    "verify",
    "voc_palette",
    "write_checksums",
    "write_png",
]
