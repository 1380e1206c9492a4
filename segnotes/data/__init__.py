"""Data: the procedural shapes data set, and datasets for it and for real VOC / COCO layouts.

Modules:
    shapes    categories, rendering, ``generate``, checksums, statistics
    datasets  torch Datasets: COCO-style instances (and as label maps), the shapes data set
    voc       PASCAL VOC's layout: semantic labels and object instances
    transforms  resize, flip, scale jitter, crop and normalisation of images with their masks and boxes
    png       a deterministic PNG writer (byte-identical files on every machine), the VOC colour map
"""
from .datasets import CocoInstances, CocoSemantic, ShapesInstances, ShapesSemantic, load_rgb
from .voc import VOC_CLASSES, VOCInstances, VOCSemantic
from .png import encode_png, voc_palette, write_png
from .shapes import (
    ATTRIBUTE_CATEGORIES,
    ATTRIBUTE_GROUPS,
    ATTRIBUTE_HANDLE_IN_MASK,
    ATTRIBUTE_MASK_ORDER,
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
    variant_folder,
    verify,
    write_checksums,
)

__all__ = [
    "ATTRIBUTE_CATEGORIES",
    "ATTRIBUTE_GROUPS",
    "ATTRIBUTE_HANDLE_IN_MASK",
    "ATTRIBUTE_MASK_ORDER",
    "CATEGORIES",
    "GROUPS",
    "HANDLE_IN_MASK",
    "CocoInstances",
    "CocoSemantic",
    "VOCInstances",
    "VOC_CLASSES",
    "load_rgb",
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
    "variant_folder",
    "verify",
    "voc_palette",
    "write_checksums",
    "write_png",
]
