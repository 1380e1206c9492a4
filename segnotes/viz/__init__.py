"""Figures: label maps, instance masks, galleries (matplotlib; each function returns or fills a Figure)."""
from .masks import (
    colorize_labels,
    draw_instances,
    draw_semantic,
    gallery,
    instance_colors,
    overlay_instances,
    voc_palette,
)

__all__ = [
    "voc_palette",
    "colorize_labels",
    "instance_colors",
    "overlay_instances",
    "draw_instances",
    "draw_semantic",
    "gallery",
]
