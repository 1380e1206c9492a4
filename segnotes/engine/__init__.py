"""Training engine: loops, schedules and crash-safe checkpoints.

    Trainer, TrainConfig        the training loop (exact resume, history, AMP on CUDA)
    semantic_loss, semantic_step, detection_step, evaluate_semantic
    lr_factor, LRSchedule, make_scheduler, make_optimizer
    save_checkpoint, load_checkpoint, CheckpointError, get_rng_state, set_rng_state
    distributed                 torchrun + DDP: process group, shards, gathering, rank 0 writes
"""
from . import distributed
from .checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    seeded_rng_state,
    set_rng_state,
)
from .loops import (
    TrainConfig,
    Trainer,
    detection_step,
    evaluate_semantic,
    move_to,
    semantic_loss,
    semantic_step,
)
from .schedule import OPTIMIZERS, SCHEDULES, LRSchedule, lr_factor, make_optimizer, make_scheduler

__all__ = [
    "distributed",
    "Trainer",
    "TrainConfig",
    "semantic_loss",
    "semantic_step",
    "detection_step",
    "evaluate_semantic",
    "move_to",
    "lr_factor",
    "LRSchedule",
    "make_scheduler",
    "make_optimizer",
    "SCHEDULES",
    "OPTIMIZERS",
    "save_checkpoint",
    "load_checkpoint",
    "CheckpointError",
    "get_rng_state",
    "set_rng_state",
    "seeded_rng_state",
]
