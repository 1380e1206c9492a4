"""Figures: label maps, instance masks, galleries (matplotlib; each function returns or fills a Figure)."""
from .compare import (
    OUTCOME_COLORS,
    coarsen_labels,
    mask_comparison_figure,
    model_comparison_figure,
    outcome_map,
    perturb_mask,
)
from .data import anatomy_figure, size_figure
from .masks import (
    colorize_labels,
    draw_instances,
    draw_semantic,
    gallery,
    instance_colors,
    overlay_instances,
    voc_palette,
)
from .pr import detections_figure, pr_curve_figure, precision_recall_curve

__all__ = [
    "voc_palette",
    "colorize_labels",
    "instance_colors",
    "overlay_instances",
    "draw_instances",
    "draw_semantic",
    "gallery",
    "OUTCOME_COLORS",
    "perturb_mask",
    "coarsen_labels",
    "outcome_map",
    "mask_comparison_figure",
    "model_comparison_figure",
    "precision_recall_curve",
    "pr_curve_figure",
    "detections_figure",
    "anatomy_figure",
    "size_figure",
]
