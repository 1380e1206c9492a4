"""Experiments that train the checkpoints the chapters load (``python -m segnotes.experiments``).

    fcn     FCN-32s -> 16s -> 8s staged training, equal-compute 32s controls, loss sampling
            and fixed-vs-learned upsampling (the FCN chapter)
    mask_rcnn   RoIAlign vs RoIPool, sigmoid vs softmax, class-specific vs agnostic masks at
            equal compute (the Mask R-CNN chapter)
    lse     partially supervised instance segmentation: class-agnostic baseline vs weight transfer
            vs oracle in both directions, and the transfer ablations (the LSE chapter)

Each chapter's module has a recipe (shared settings), its runs, ``train_run``, ``load_run`` and
``load_run_model``; :func:`run_all` trains any chapter's runs in parallel processes.
"""
from . import fcn, lse, mask_rcnn
from .fcn import (
    FCNRecipe,
    InMemorySegmentation,
    RunSpec,
    boundary_band,
    checkpoint_root,
    evaluate_fcn,
    fcn_runs,
    is_done,
    load_run,
    load_run_model,
    run_all,
    run_path,
    sampled_semantic_step,
    stride_ceiling,
    train_run,
    training_memory_format,
)
from .lse import LSERecipe, LSERunSpec, evaluate_lse, lse_runs
from .mask_rcnn import MaskRCNNRecipe, MaskRCNNRunSpec, evaluate_mask_rcnn, mask_rcnn_runs

__all__ = [
    "fcn",
    "mask_rcnn",
    "lse",
    "LSERecipe",
    "LSERunSpec",
    "lse_runs",
    "evaluate_lse",
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
