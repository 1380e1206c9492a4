"""Optimizers and learning-rate schedules.

FCN trained with SGD, momentum 0.9, a fixed learning rate, weight decay 5e-4, and twice the
learning rate for biases (CVPR section 4.3); a net trained from scratch, like the book's
``vgg_small``, does better with a decaying schedule ("poly", as DeepLab, or cosine) after a short
linear warmup. Every schedule here is a factor on the base learning rate, per optimizer step.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_int, check_positive, check_range

__all__ = ["SCHEDULES", "OPTIMIZERS", "lr_factor", "LRSchedule", "make_scheduler", "make_optimizer"]

SCHEDULES = ("constant", "poly", "cosine", "step")
OPTIMIZERS = ("sgd", "adamw")


def lr_factor(
    step: int,
    total_steps: int,
    schedule: str = "constant",
    *,
    warmup_steps: int = 0,
    warmup_factor: float = 0.001,
    power: float = 0.9,
    milestones: tuple[int, ...] = (),
    gamma: float = 0.1,
    min_factor: float = 0.0,
) -> float:
    """The learning rate at optimizer step ``step``, as a fraction of the base rate.

    ``factor = warmup(step) * main(step)`` with, for ``t = min(step, total_steps) / total_steps``:

    * ``constant``: 1 (the paper's fixed rate);
    * ``poly``: ``(1 - t) ** power``;
    * ``cosine``: ``min_factor + (1 - min_factor) * (1 + cos(pi t)) / 2``;
    * ``step``: ``gamma ** (number of milestones <= step)``;

    and ``warmup`` rising linearly from ``warmup_factor`` at step 0 to 1 at ``warmup_steps``.

    Args:
        step (int): optimizer steps taken so far (0 for the first step).
        total_steps (int): length of the run in steps.
        schedule (str): one of ``SCHEDULES``.
        warmup_steps (int): length of the linear warmup (0: none).
        warmup_factor (float): factor at step 0 of the warmup.
        power (float): exponent of ``poly``.
        milestones (tuple of int): steps where ``step`` multiplies by ``gamma``.
        gamma (float): decay of ``step``.
        min_factor (float): floor of ``cosine``.

    Returns:
        float: the factor.
    """
    fn = "lr_factor"
    check_choice(fn, "schedule", schedule, SCHEDULES)
    check_int(fn, "total_steps", total_steps, minimum=1)
    t = min(step, total_steps) / total_steps
    if schedule == "constant":
        main = 1.0
    elif schedule == "poly":
        main = (1.0 - t) ** power
    elif schedule == "cosine":
        main = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        main = gamma ** sum(step >= m for m in milestones)
    if step < warmup_steps:
        main *= warmup_factor + (1.0 - warmup_factor) * step / warmup_steps
    return main


def check_schedule_factors(fn: str, warmup_factor, power, gamma, min_factor) -> None:
    """The float settings of :func:`lr_factor`: finite, and factors in [0, 1] (NaN would give NaN rates)."""
    check_range(fn, "warmup_factor", warmup_factor, 0, 1)
    check_positive(fn, "power", power, allow_zero=True)
    check_positive(fn, "gamma", gamma)
    check_range(fn, "min_factor", min_factor, 0, 1)


@dataclass
class LRSchedule:
    """:func:`lr_factor` with fixed settings, as a callable for ``LambdaLR``.

    A dataclass rather than a lambda so that ``LambdaLR.state_dict()`` records its settings.
    """

    total_steps: int
    schedule: str = "constant"
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    power: float = 0.9
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_factor: float = 0.0

    def __post_init__(self) -> None:
        check_choice("LRSchedule", "schedule", self.schedule, SCHEDULES)
        check_int("LRSchedule", "total_steps", self.total_steps, minimum=1)
        check_int("LRSchedule", "warmup_steps", self.warmup_steps, minimum=0)
        check_schedule_factors("LRSchedule", self.warmup_factor, self.power, self.gamma, self.min_factor)

    def __call__(self, step: int) -> float:
        return lr_factor(
            step,
            self.total_steps,
            self.schedule,
            warmup_steps=self.warmup_steps,
            warmup_factor=self.warmup_factor,
            power=self.power,
            milestones=tuple(self.milestones),
            gamma=self.gamma,
            min_factor=self.min_factor,
        )


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: LRSchedule) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying ``schedule`` to every parameter group; call ``.step()`` per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def make_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.01,
    *,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    bias_lr_factor: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's) or AdamW over the trainable parameters of ``model``.

    Parameters are split in two groups: weights (tensors with 2 or more dimensions: conv and
    linear kernels) get ``lr`` and ``weight_decay``; biases and normalisation scales (1-D) get
    ``lr * bias_lr_factor`` and no weight decay (the Caffe nets FCN used set bias ``lr_mult: 2``
    and ``decay_mult: 0``). Frozen parameters (``requires_grad=False``, e.g. FCN's fixed final
    upsampling) are left out.

    Args:
        model (nn.Module): the model (or a DistributedDataParallel wrapper).
        name (str): ``"sgd"`` or ``"adamw"``.
        lr (float): base learning rate.
        momentum (float): SGD momentum (ignored by AdamW).
        weight_decay (float): L2 penalty (SGD) or decoupled decay (AdamW) on weights.
        bias_lr_factor (float): learning-rate multiplier for biases and norms (paper: 2).

    Returns:
        torch.optim.Optimizer with the parameter groups ``"weights"`` and ``"biases"`` (the
        name stored under ``"name"``; an empty group is dropped).
    """
    fn = "make_optimizer"
    check_choice(fn, "name", name, OPTIMIZERS)
    check_positive(fn, "lr", lr)
    check_positive(fn, "weight_decay", weight_decay, allow_zero=True)
    check_positive(fn, "bias_lr_factor", bias_lr_factor)
    check_range(fn, "momentum", momentum, 0, 1, open_high=True)
    weights, biases = [], []
    for param in model.parameters():
        if param.requires_grad:
            (weights if param.ndim >= 2 else biases).append(param)
    groups = [
        {"params": weights, "lr": lr, "weight_decay": weight_decay, "name": "weights"},
        {"params": biases, "lr": lr * bias_lr_factor, "weight_decay": 0.0, "name": "biases"},
    ]
    groups = [g for g in groups if g["params"]]  # e.g. a model without biases
    if not groups:
        raise ValueError(f"{fn}: model has no trainable parameters (all have requires_grad=False)")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    return torch.optim.AdamW(groups, lr=lr)
