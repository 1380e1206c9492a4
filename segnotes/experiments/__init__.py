"""Experiments that train the checkpoints the chapters load (``python -m segnotes.experiments``).

    fcn     FCN-32s -> 16s -> 8s staged training, equal-compute 32s controls, loss sampling
            and fixed-vs-learned upsampling (the FCN chapter)
"""
from . import fcn
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
    train_run,
)

__all__ = [
    "fcn",
    "FCNRecipe",
    "RunSpec",
    "InMemorySegmentation",
    "fcn_runs",
    "boundary_band",
    "evaluate_fcn",
    "sampled_semantic_step",
    "checkpoint_root",
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "train_run",
    "run_all",
]
