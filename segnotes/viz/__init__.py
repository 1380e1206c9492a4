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
from .roi import (
    mask_rcnn_pipeline_figure,
    mask_rcnn_stages,
    misalignment_table,
    roi_align_sample_points,
    roi_misalignment,
    roi_pool_bins,
    roi_sampling_figure,
)
from .transfer import (
    cosine_similarity_matrix,
    given_box_figure,
    handles_figure,
    weight_similarity_figure,
    weight_transfer_diagram,
)

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
    "roi_pool_bins",
    "roi_align_sample_points",
    "roi_sampling_figure",
    "roi_misalignment",
    "misalignment_table",
    "mask_rcnn_stages",
    "mask_rcnn_pipeline_figure",
    "handles_figure",
    "weight_transfer_diagram",
    "cosine_similarity_matrix",
    "weight_similarity_figure",
    "given_box_figure",
]
