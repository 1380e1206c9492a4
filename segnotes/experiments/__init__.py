"""Experiments that train the checkpoints the chapters load (``python -m segnotes.experiments``).

    fcn         FCN-32s -> 16s -> 8s staged training, equal-compute 32s controls, loss sampling
                and fixed-vs-learned upsampling (the FCN chapter)
    mask_rcnn   RoIAlign vs RoIPool, sigmoid vs softmax, class-specific vs agnostic masks at
                equal compute (the Mask R-CNN chapter)
    lse         partially supervised instance segmentation: class-agnostic baseline vs weight transfer
                vs oracle in both directions, and the transfer ablations (the LSE chapter)
    lse_curve   the LSE chapter's curve: agnostic, transfer and oracle against the number of mask
                classes, on the 50-category attributes variant of the shapes data
    own_data    ``segnotes train``: the same models on a COCO, VOC or shapes folder
    runner      the one training path: Chapter (what a chapter declares), RunFiles, train_run,
                run_all, checkpoint_root
    chapters    CHAPTERS, the list of the book's chapters
    detection   helpers the instance-segmentation experiments share (prediction, COCO AP)

Each chapter's module has a recipe (shared settings), its runs, and a ``CHAPTER`` description;
``load_run`` and ``load_run_model`` read its finished runs. :func:`train_run` trains one run of
any chapter and :func:`run_all` many, in parallel processes.
"""
from . import chapters, detection, fcn, lse, lse_curve, mask_rcnn, runner
from .chapters import CHAPTERS
from .fcn import (
    FCNRecipe,
    InMemorySegmentation,
    RunSpec,
    boundary_band,
    evaluate_fcn,
    fcn_runs,
    is_done,
    load_run,
    load_run_model,
    run_path,
    sampled_semantic_step,
    stride_ceiling,
    training_memory_format,
)
from .lse import LSERecipe, LSERunSpec, evaluate_lse, lse_runs
from .lse_curve import LSECurveRecipe, LSECurveRunSpec, curve_runs
from .mask_rcnn import MaskRCNNRecipe, MaskRCNNRunSpec, evaluate_mask_rcnn, mask_rcnn_runs
from .runner import Chapter, RunFiles, checkpoint_root, run_all, train_run

__all__ = [
    "fcn",
    "mask_rcnn",
    "lse",
    "lse_curve",
    "runner",
    "chapters",
    "detection",
    "CHAPTERS",
    "Chapter",
    "RunFiles",
    "LSERecipe",
    "LSERunSpec",
    "lse_runs",
    "evaluate_lse",
    "LSECurveRecipe",
    "LSECurveRunSpec",
    "curve_runs",
    "MaskRCNNRecipe",
    "MaskRCNNRunSpec",
    "mask_rcnn_runs",
    "evaluate_mask_rcnn",
    "FCNRecipe",
    "RunSpec",
    "InMemorySegmentation",
    "fcn_runs",
    "boundary_band",
    "evaluate_fcn",
    "sampled_semantic_step",
    "stride_ceiling",
    "checkpoint_root",
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "train_run",
    "training_memory_format",
    "run_all",
]
