"""Training and evaluation loops for segmentation models.

The pieces a chapter shows one at a time:

* :func:`semantic_loss`: FCN's per-pixel cross-entropy, averaged over labelled pixels.
* :func:`semantic_step` / :func:`detection_step`: one batch to ``(loss, logs)``; the second
  sums the loss dict a torchvision detection model (Mask R-CNN) returns in train mode.
* :func:`evaluate_semantic`: the FCN paper's four metrics from one confusion matrix.
* :class:`Trainer`: the loop around them, with SGD or AdamW, learning-rate schedules, mixed
  precision on CUDA, gradient clipping, a ``history`` the book plots, periodic checkpoints and
  exact resumption.

Exact resumption: an interrupted run, resumed from its checkpoint, ends with the same weights as
an uninterrupted one. That needs everything random to be restored: the data order comes from a
generator seeded by ``(seed, epoch)``, so a resumed epoch replays the same order and skips the
batches already seen; the global torch/CUDA/NumPy/Python generators (used by dropout and by
data transforms) are saved in the checkpoint. The run keeps its own copy of those global states
and swaps it in only while :meth:`Trainer.fit` runs, so the caller's generators are left as
they were. (Data transforms must then draw from the global generators, or from generators
seeded by the sample index, and run in the main process, ``num_workers=0``, for bit-identical
resumes; with workers the order of the samples is still exact.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .._checks import check_choice, check_int, check_positive, check_range, check_tensor, describe
from ..metrics.confusion import ConfusionMatrix
from ..utils import model_device
from . import distributed
from .checkpoint import get_rng_state, load_checkpoint, save_checkpoint, seeded_rng_state, set_rng_state
from .schedule import OPTIMIZERS, SCHEDULES, LRSchedule, check_schedule_factors, make_optimizer

__all__ = [
    "TrainConfig",
    "Trainer",
    "semantic_loss",
    "semantic_step",
    "detection_step",
    "evaluate_semantic",
    "move_to",
]

StepFn = Callable[[nn.Module, object], "tuple[Tensor, Mapping[str, Tensor | float]]"]


# ----------------------------------------------------------------------------------------------
# Losses and steps


def semantic_loss(logits: Tensor, target: Tensor, ignore_index: int = 255) -> Tensor:
    """Per-pixel softmax cross-entropy, averaged over the pixels whose label is not ``ignore_index``.

    The FCN paper sums the loss over pixels; averaging only rescales the learning rate and keeps
    it independent of the image size. A batch with no labelled pixel gives 0 (not NaN).

    Args:
        logits (Tensor[N, K, H, W], floating): class scores.
        target (Tensor[N, H, W], integer): labels in [0, K), or ``ignore_index``.
        ignore_index (int): label of pixels left out (VOC's object borders: 255).

    Returns:
        Tensor[] (float32 under autocast, else logits' dtype): the mean loss.
    """
    fn = "semantic_loss"
    check_tensor(fn, "logits", logits, ndim=4, floating=True)
    check_tensor(fn, "target", target, ndim=3, floating=False)
    if target.shape[0] != logits.shape[0] or target.shape[-2:] != logits.shape[-2:]:
        raise ValueError(
            f"{fn}: target must be Tensor[N, H, W] matching logits Tensor[N, K, H, W] = {tuple(logits.shape)}, "
            f"got {describe(target)}"
        )
    target = target.long()
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    # Sum / count rather than reduction="mean": no NaN when every pixel is ignored, no host sync.
    count = (target != ignore_index).sum().clamp(min=1)
    return total / count


def _logits(output) -> Tensor:
    """torchvision's segmentation models return ``{"out": logits, "aux": ...}``; ours return logits."""
    return output["out"] if isinstance(output, Mapping) else output


def semantic_step(model: nn.Module, batch, *, ignore_index: int = 255) -> tuple[Tensor, dict]:
    """Loss of one batch ``(images Tensor[N, 3, H, W], targets Tensor[N, H, W])`` for a semantic model.

    Returns:
        (loss Tensor[], logs dict): no extra logs for this loss.
    """
    images, targets = batch[0], batch[1]
    return semantic_loss(_logits(model(images)), targets, ignore_index), {}


def detection_step(model: nn.Module, batch) -> tuple[Tensor, dict]:
    """Loss of one batch ``(images, targets)`` for a torchvision detection model (e.g. Mask R-CNN).

    In train mode those models return a dict of losses (``loss_classifier``, ``loss_box_reg``,
    ``loss_mask``, ``loss_objectness``, ``loss_rpn_box_reg``); the total is their sum, and each
    is logged.

    Args:
        batch: ``(images, targets)``: a list (or tuple) of Tensor[3, H, W] and a list of dicts
            with ``boxes``, ``labels``, ``masks``.

    Returns:
        (loss Tensor[], logs dict of str to Tensor[]).
    """
    images, targets = batch[0], batch[1]
    losses = model(list(images), list(targets))
    return sum(losses.values()), {name: value.detach() for name, value in losses.items()}


def move_to(obj, device: torch.device, non_blocking: bool = False):
    """``obj`` with every tensor moved to ``device``, through lists, tuples and dicts."""
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=non_blocking)
    if isinstance(obj, Mapping):
        return {k: move_to(v, device, non_blocking) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device, non_blocking) for v in obj)
    return obj


def _batch_len(batch) -> int:
    first = batch[0] if isinstance(batch, (list, tuple)) else batch
    return first.shape[0] if isinstance(first, Tensor) else len(first)


def _autocast(device: torch.device, enabled: bool, dtype: torch.dtype):
    # Mixed precision only on CUDA: CPU autocast (bfloat16) is slow on most CPUs and not needed.
    return torch.autocast(device.type, dtype=dtype, enabled=enabled and device.type == "cuda")


_AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


# ----------------------------------------------------------------------------------------------
# Evaluation


def evaluate_semantic(
    model: nn.Module,
    data: Dataset | Iterable,
    num_classes: int,
    *,
    device: torch.device | str | None = None,
    ignore_index: int = 255,
    batch_size: int = 8,
    num_workers: int = 0,
    collate_fn: Callable | None = None,
    amp: bool = False,
    progress: bool = False,
) -> dict:
    """Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU over a data set.

    One confusion matrix is accumulated over all pixels of all images (as in the paper's code),
    summed over processes when torch.distributed is initialised, then turned into scores by
    :func:`segnotes.metrics.segmentation_scores`.

    Args:
        model (nn.Module): returns logits Tensor[N, K, H, W] (or torchvision's ``{"out": ...}``).
        data: a Dataset of ``(image Tensor[3, H, W], target Tensor[H, W])``, read in order (under
            torchrun each process reads its shard), or any iterable of batches (e.g. a
            DataLoader with a DistributedSampler).
        num_classes (int): K.
        device: where to run; default the model's device.
        ignore_index (int): target label that is not counted.
        batch_size, num_workers, collate_fn: DataLoader settings when ``data`` is a Dataset.
        amp (bool): autocast on CUDA.
        progress (bool): show a tqdm bar.

    Returns:
        dict: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu``, ``frequency_weighted_iu``
        (floats), ``iu`` and ``accuracy`` (Tensor[K] float64, NaN for absent classes).
    """
    fn = "evaluate_semantic"
    check_int(fn, "num_classes", num_classes, minimum=1)
    device = torch.device(device) if device is not None else model_device(model)
    if isinstance(data, Dataset) and not isinstance(data, torch.utils.data.IterableDataset):
        # A private generator: creating a DataLoader iterator draws a seed, which must not come
        # from the global generator (a training run resumed after evaluation would diverge).
        # Under torchrun each process reads its shard; the matrices are summed below.
        data = DataLoader(
            distributed.shard(data), batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_fn,
            generator=torch.Generator(),
        )
    metric = ConfusionMatrix(num_classes, ignore_index).to(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _autocast(device, amp, torch.float16):
            for images, targets in tqdm(data, desc="eval", disable=not progress, leave=False):
                logits = _logits(model(images.to(device)))
                metric.update(logits.argmax(1), targets.to(device))
    finally:
        model.train(was_training)
    return metric.all_reduce().compute()


# ----------------------------------------------------------------------------------------------
# The trainer


@dataclass
class TrainConfig:
    """Settings of a :class:`Trainer` run (saved in its checkpoints).

    Attributes:
        epochs: passes over the training set.
        batch_size: images per step (per process under DDP).
        optimizer: ``"sgd"`` (momentum, the paper's) or ``"adamw"``.
        lr, momentum, weight_decay, bias_lr_factor: see :func:`make_optimizer`.
        schedule, warmup_steps, warmup_factor, power, milestones, gamma, min_factor: see
            :func:`lr_factor`; milestones are in optimizer steps.
        grad_clip: clip the gradient norm to this (None: no clipping).
        amp: mixed precision (autocast + GradScaler) on CUDA; ignored on the CPU.
        amp_dtype: ``"float16"`` (with GradScaler) or ``"bfloat16"`` (no scaling needed).
        ignore_index: target label left out of the loss and metrics.
        seed: seeds the data order (per epoch) and the run's generators (dropout, transforms).
        num_workers: DataLoader workers.
        drop_last: drop the last incomplete batch of each epoch.
        log_every: also log the training loss every this many steps (0: once per epoch).
        eval_every: evaluate every this many epochs, and after the last (0: only after the last).
        checkpoint_every: save a checkpoint every this many steps (0: only when fit returns).
    """

    epochs: int = 10
    batch_size: int = 8
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    bias_lr_factor: float = 1.0
    schedule: str = "poly"
    warmup_steps: int = 0
    warmup_factor: float = 0.001
    power: float = 0.9
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    min_factor: float = 0.0
    grad_clip: float | None = None
    amp: bool = True
    amp_dtype: str = "float16"
    ignore_index: int = 255
    seed: int = 0
    num_workers: int = 0
    drop_last: bool = False
    log_every: int = 0
    eval_every: int = 1
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        fn = "TrainConfig"
        for name in ("epochs", "batch_size"):
            check_int(fn, name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed", "num_workers", "log_every", "eval_every", "checkpoint_every"):
            check_int(fn, name, getattr(self, name), minimum=0)
        check_choice(fn, "optimizer", self.optimizer, OPTIMIZERS)
        check_choice(fn, "schedule", self.schedule, SCHEDULES)
        check_choice(fn, "amp_dtype", self.amp_dtype, list(_AMP_DTYPES))
        check_positive(fn, "lr", self.lr)
        check_range(fn, "momentum", self.momentum, 0, 1, open_high=True)
        check_positive(fn, "weight_decay", self.weight_decay, allow_zero=True)
        check_positive(fn, "bias_lr_factor", self.bias_lr_factor)
        check_schedule_factors(fn, self.warmup_factor, self.power, self.gamma, self.min_factor)
        if self.grad_clip is not None:
            check_positive(fn, "grad_clip", self.grad_clip)
        self.milestones = tuple(self.milestones)


# TrainConfig fields a resumed run may change: they decide how often to log, evaluate and save,
# and how many processes load the data, not what the run computes. Every other field must match
# the checkpoint's: another batch_size changes the steps per epoch (the epoch being resumed might
# never end), another optimizer cannot read the saved optimizer state, another lr, schedule or
# seed makes the run neither the interrupted one nor a fresh one.
_RESUMABLE_CHANGES = frozenset({"num_workers", "log_every", "eval_every", "checkpoint_every"})


def _config_differences(stored: Mapping, config: TrainConfig) -> list[str]:
    """``"field=stored there, current now"`` for each field that a resumed run must not change."""
    current = dataclasses.asdict(config)
    differ = []
    for name in sorted(set(stored) | set(current)):
        if name in _RESUMABLE_CHANGES:
            continue
        have, want = stored.get(name), current.get(name)
        if isinstance(have, (list, tuple)) and isinstance(want, (list, tuple)):
            have, want = list(have), list(want)  # milestones: a tuple saved, either read back
        if have != want:
            differ.append(f"{name}={stored.get(name)!r} there, {current.get(name)!r} now")
    return differ


def _default_meta(model: nn.Module) -> dict:
    """What identifies a model's architecture, for checking a checkpoint before loading it."""
    meta = {"model": type(model).__name__}
    for key in ("variant", "num_classes", "backbone_name"):
        if hasattr(model, key):
            meta[key] = getattr(model, key)
    return meta


_RANK_SEED_STRIDE = 1_000_000  # rank r's generators start from config.seed + r * this


def _wrap_for_processes(model: nn.Module, device: torch.device, find_unused_parameters: bool) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes train (as it is otherwise)."""
    if not distributed.is_distributed() or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper (its state dict has no prefix)."""
    return model.module if isinstance(getattr(model, "module", None), nn.Module) else model


def _plain(value):
    """Metrics as plain Python numbers and lists, for the history."""
    if isinstance(value, Tensor):
        return value.item() if value.ndim == 0 else value.tolist()
    return value


class Trainer:
    """Train a segmentation model, with checkpoints that resume exactly.

    Args:
        model (nn.Module): moved to ``device``. Under torchrun (a process group of more than one
            process) it is wrapped in DistributedDataParallel, unless it already is.
        train_set (Dataset): yields what ``step_fn`` expects (default: ``(image, target)`` pairs).
        config (TrainConfig): settings; default ``TrainConfig()``.
        val_set (Dataset): evaluated with :func:`evaluate_semantic` when ``num_classes`` is given.
        num_classes (int): for the default evaluation; default ``model.num_classes`` if present.
        device: ``"cpu"``, ``"cuda"``, ... (only the CLI resolves ``"auto"``).
        checkpoint_path: where :meth:`save` writes and ``fit(resume=True)`` reads.
        meta (dict): recorded in checkpoints and checked when loading one (default: the model's
            class, variant, num_classes and backbone when it has them).
        step_fn: ``step_fn(model, batch) -> (loss, logs)``; default :func:`semantic_step`; use
            :func:`detection_step` for torchvision detection models.
        eval_fn: ``eval_fn(model) -> dict`` of metrics, replacing the default evaluation.
        collate_fn: DataLoader collate function (detection data needs one that keeps lists).
        sampler_fn: ``sampler_fn(epoch) -> sequence of dataset indices`` giving each epoch's
            order (e.g. this process's shard under DDP: :func:`~segnotes.engine.distributed.epoch_order`);
            default a permutation drawn from a generator seeded with ``(config.seed, epoch)``.
        optimizer: a ready optimizer instead of :func:`make_optimizer`'s.
        progress (bool): tqdm bars with loss and images/s (False in notebooks run by nbval;
            shown by rank 0 only).
        find_unused_parameters (bool): DDP's option, for models whose steps leave some
            parameters without a gradient.
        on_history: called with each new :attr:`history` entry, by rank 0 only (e.g. to write
            the scores of each epoch to a file).

    Several processes: the data order must give each process its shard (``sampler_fn``); the
    logged loss is the mean over processes; rank r draws dropout and augmentations from
    ``config.seed + 1_000_000 * r``; checkpoints are written by rank 0 and hold every rank's
    generator states, so a run resumes exactly, with the same number of processes.

    Attributes:
        history (list of dict): one entry per log and per evaluation, with ``kind``
            (``"train"``/``"eval"``), ``epoch``, ``step``, ``seconds`` (since the start of
            training) and, for ``train``, ``loss``, ``lr``, ``images_per_s`` and the step logs;
            for ``eval`` the metrics.
        step, epoch (int): optimizer steps taken and the current epoch (0-based).
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        config: TrainConfig | None = None,
        *,
        val_set: Dataset | None = None,
        num_classes: int | None = None,
        device: torch.device | str = "cpu",
        checkpoint_path: str | os.PathLike | None = None,
        meta: Mapping | None = None,
        step_fn: StepFn | None = None,
        eval_fn: Callable[[nn.Module], Mapping] | None = None,
        collate_fn: Callable | None = None,
        sampler_fn: Callable[[int], Sequence[int]] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        progress: bool = True,
        find_unused_parameters: bool = False,
        on_history: Callable[[dict], None] | None = None,
    ) -> None:
        fn = "Trainer"
        if not isinstance(model, nn.Module):
            raise TypeError(f"{fn}: model must be an nn.Module, got {describe(model)}")
        config = TrainConfig() if config is None else config
        if not isinstance(config, TrainConfig):
            raise TypeError(f"{fn}: config must be a TrainConfig, got {describe(config)}")
        self.config = config
        self.device = torch.device(device)
        self.model = _wrap_for_processes(model.to(self.device), self.device, find_unused_parameters)
        self.train_set = train_set
        self.val_set = val_set
        self.num_classes = num_classes if num_classes is not None else getattr(_unwrap(model), "num_classes", None)
        self.checkpoint_path = Path(checkpoint_path) if checkpoint_path is not None else None
        self.meta = {**_default_meta(_unwrap(model)), **(meta or {})}
        self.step_fn = step_fn or functools.partial(semantic_step, ignore_index=config.ignore_index)
        self.eval_fn = eval_fn
        self.collate_fn = collate_fn
        self.sampler_fn = sampler_fn or self._default_order
        self.progress = progress and distributed.is_main_process()
        self.on_history = on_history

        self.optimizer = optimizer or make_optimizer(
            self.model, config.optimizer, config.lr, momentum=config.momentum,
            weight_decay=config.weight_decay, bias_lr_factor=config.bias_lr_factor,
        )
        for group in self.optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])  # the schedule scales this base rate
        self.steps_per_epoch = self._steps_in(len(self.sampler_fn(0)))
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{fn}: an epoch has no batch: {len(self.sampler_fn(0))} samples, batch_size={config.batch_size}, "
                f"drop_last={config.drop_last}"
            )
        self.schedule = LRSchedule(
            total_steps=config.epochs * self.steps_per_epoch, schedule=config.schedule,
            warmup_steps=config.warmup_steps, warmup_factor=config.warmup_factor, power=config.power,
            milestones=config.milestones, gamma=config.gamma, min_factor=config.min_factor,
        )
        amp_dtype = _AMP_DTYPES[config.amp_dtype]
        self._amp = config.amp and self.device.type == "cuda"
        self._amp_dtype = amp_dtype
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self._amp and amp_dtype == torch.float16)

        self.history: list[dict] = []
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.seconds = 0.0
        self._running = self._empty_running()
        # The run's generators, swapped in by fit; each process draws its own augmentations.
        self._rng = seeded_rng_state(config.seed + _RANK_SEED_STRIDE * distributed.rank(), self.device)
        self._in_run = False

    # -- data order ------------------------------------------------------------------------------

    def _default_order(self, epoch: int) -> list[int]:
        generator = self._epoch_generator(epoch)
        return torch.randperm(len(self.train_set), generator=generator).tolist()

    def _epoch_generator(self, epoch: int) -> torch.Generator:
        # One generator per (seed, epoch), so any epoch's order can be replayed on resume.
        # seed * 2**20 + epoch keeps seeds apart: seed + epoch would give seed 1's epoch 0 the
        # order of seed 0's epoch 1.
        return torch.Generator().manual_seed(self.config.seed * 2**20 + epoch)

    def _steps_in(self, num_samples: int) -> int:
        bs = self.config.batch_size
        return num_samples // bs if self.config.drop_last else math.ceil(num_samples / bs)

    # -- the loop --------------------------------------------------------------------------------

    def fit(self, *, resume: bool = False, stop_at_step: int | None = None) -> list[dict]:
        """Train until ``config.epochs`` are done (or ``stop_at_step``), then save a checkpoint.

        Args:
            resume (bool): first load ``checkpoint_path`` if it exists (if it does not, start
                from scratch: the same call serves a first run and its restarts).
            stop_at_step (int): stop after this many optimizer steps in total (an "interruption":
                a later ``fit`` continues from there).

        Returns:
            list of dict: :attr:`history`.
        """
        if stop_at_step is not None:
            check_int("Trainer.fit", "stop_at_step", stop_at_step, minimum=0)
        if resume:
            if self.checkpoint_path is None:
                raise ValueError("Trainer.fit: resume=True needs the Trainer's checkpoint_path, got None")
            if self.checkpoint_path.exists():
                self.load()
        with self._run_rng():
            while self.epoch < self.config.epochs:
                if stop_at_step is not None and self.step >= stop_at_step:
                    break
                position = (self.epoch, self.step)
                self._train_epoch(stop_at_step)
                if (self.epoch, self.step) == position:
                    # An epoch that trains nothing would repeat forever (e.g. a sampler_fn that
                    # gives fewer samples than the steps already taken in this epoch).
                    raise RuntimeError(
                        f"Trainer.fit: epoch {self.epoch} has no batch left after step {self.step_in_epoch} of it: "
                        f"its order holds {len(self.sampler_fn(self.epoch))} samples at batch_size="
                        f"{self.config.batch_size}"
                    )
        if self.checkpoint_path is not None:
            self.save()
        return self.history

    @contextlib.contextmanager
    def _run_rng(self):
        """Swap the run's generator states in for the duration of training, and the caller's back after."""
        caller = get_rng_state(self.device)
        set_rng_state(self._rng, self.device)
        self._in_run = True
        try:
            yield
        finally:
            self._in_run = False
            self._rng = get_rng_state(self.device)
            set_rng_state(caller, self.device)

    def _train_epoch(self, stop_at_step: int | None) -> None:
        cfg = self.config
        order = list(self.sampler_fn(self.epoch))
        # Resuming mid-epoch: the same order, minus the batches already trained on.
        remaining = order[self.step_in_epoch * cfg.batch_size :]
        loader = DataLoader(
            self.train_set, batch_size=cfg.batch_size, sampler=remaining, num_workers=cfg.num_workers,
            collate_fn=self.collate_fn, drop_last=cfg.drop_last, pin_memory=self.device.type == "cuda",
            generator=self._epoch_generator(self.epoch),  # worker seeds: not from the global generator
        )
        steps = self._steps_in(len(order))
        bar = tqdm(
            total=steps, initial=self.step_in_epoch, desc=f"epoch {self.epoch + 1}/{cfg.epochs}",
            disable=not self.progress, leave=False,
        )
        self.model.train()
        start = time.perf_counter()
        try:
            for batch in loader:
                num_images = _batch_len(batch)
                loss, logs = self._train_step(move_to(batch, self.device, non_blocking=True))
                now = time.perf_counter()
                self._accumulate(loss, logs, num_images, now - start)
                self.seconds += now - start
                self.step += 1
                self.step_in_epoch += 1
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{num_images / max(now - start, 1e-9):.1f}")
                if cfg.log_every and self.step % cfg.log_every == 0:
                    self._log_train()
                if self.step_in_epoch == steps:
                    self._end_epoch()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.checkpoint_path:
                    self.save()
                if stop_at_step is not None and self.step >= stop_at_step:
                    return
                start = time.perf_counter()
        finally:
            bar.close()

    def _train_step(self, batch) -> tuple[float, dict]:
        """Forward, backward and update on one batch; returns the loss and logs as floats."""
        cfg = self.config
        factor = self.schedule(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device, self._amp, self._amp_dtype):
            loss, logs = self.step_fn(self.model, batch)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(
                f"Trainer: the loss is {loss_value} at step {self.step} (epoch {self.epoch}); "
                "lower the learning rate or set config.grad_clip"
            )
        self.scaler.scale(loss).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss_value, {k: float(v) for k, v in logs.items()}

    # -- logging ---------------------------------------------------------------------------------

    @staticmethod
    def _empty_running() -> dict:
        return {"loss": 0.0, "steps": 0, "images": 0, "seconds": 0.0, "logs": {}}

    def _accumulate(self, loss: float, logs: Mapping[str, float], num_images: int, seconds: float) -> None:
        run = self._running
        run["loss"] += loss
        run["steps"] += 1
        run["images"] += num_images
        run["seconds"] += seconds
        for key, value in logs.items():
            run["logs"][key] = run["logs"].get(key, 0.0) + value

    def _log_train(self) -> None:
        run = self._running
        if run["steps"] == 0:
            return
        if distributed.is_distributed():  # every process gets here at the same step
            keys = list(run["logs"])
            loss, *logs = distributed.mean_over_processes([run["loss"], *(run["logs"][k] for k in keys)])
            images = run["images"] * distributed.world_size()  # as many per process: padded shards
            run = {**run, "loss": loss, "images": images, "logs": dict(zip(keys, logs))}
        entry = {
            "kind": "train",
            "epoch": self.epoch,
            "step": self.step,
            "loss": run["loss"] / run["steps"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "images_per_s": run["images"] / max(run["seconds"], 1e-9),
            "seconds": self.seconds,
        }
        entry.update({key: total / run["steps"] for key, total in run["logs"].items()})
        self._record(entry)
        self._running = self._empty_running()

    def _record(self, entry: dict) -> None:
        self.history.append(entry)
        if self.on_history is not None and distributed.is_main_process():
            self.on_history(entry)

    def _end_epoch(self) -> None:
        self._log_train()
        cfg = self.config
        last = self.epoch + 1 == cfg.epochs
        if last or (cfg.eval_every and (self.epoch + 1) % cfg.eval_every == 0):
            self._evaluate()
        self.epoch += 1
        self.step_in_epoch = 0

    def _evaluate(self) -> None:
        start = time.perf_counter()
        metrics = self.evaluate()
        if metrics is None:
            return
        seconds = time.perf_counter() - start
        self.seconds += seconds
        entry = {"kind": "eval", "epoch": self.epoch, "step": self.step, "seconds": self.seconds, "eval_seconds": seconds}
        entry.update({key: _plain(value) for key, value in metrics.items()})
        self._record(entry)

    def evaluate(self) -> dict | None:
        """Metrics of the current model: ``eval_fn(model)``, or :func:`evaluate_semantic` on
        ``val_set``; None when there is neither (or when ``eval_fn`` returns None, as a process
        other than rank 0 does when the results are gathered there)."""
        if self.eval_fn is not None:
            metrics = self.eval_fn(self.model)
            return None if metrics is None else dict(metrics)
        if self.val_set is None or self.num_classes is None:
            return None
        return evaluate_semantic(
            self.model, self.val_set, self.num_classes, device=self.device, ignore_index=self.config.ignore_index,
            batch_size=self.config.batch_size, num_workers=self.config.num_workers, collate_fn=self.collate_fn,
            amp=self._amp,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    @property
    def unwrapped_model(self) -> nn.Module:
        """The model without its DistributedDataParallel wrapper (the one to save and evaluate)."""
        return _unwrap(self.model)

    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and plain containers.

        Under torchrun every process must call it (it gathers their generator states).
        """
        rng = get_rng_state(self.device) if self._in_run else self._rng
        extra = {}
        if distributed.is_distributed():
            extra = {"world_size": distributed.world_size(), "rng_ranks": distributed.all_gather(rng)}
        return {
            "model": _unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "optimizer_class": type(self.optimizer).__name__,
            "scaler": self.scaler.state_dict(),
            "schedule": dataclasses.asdict(self.schedule),
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "seconds": self.seconds,
            "running": self._running,
            "rng": rng,
            "config": dataclasses.asdict(self.config),
            "meta": self.meta,
            "history": self.history,
            **extra,
        }

    def load_state_dict(self, state: Mapping) -> None:
        """Restore what :meth:`state_dict` returned.

        Raises:
            ValueError: the state was saved with a :class:`TrainConfig` that differs in a field
                that decides what the run computes (all but ``num_workers``, ``log_every``,
                ``eval_every`` and ``checkpoint_every``), or with another optimizer class, or by
                another number of processes (torchrun); the message names what differs.
        """
        self._check_resumable("Trainer.load_state_dict", "the state", state)
        self._restore(state)

    def _check_resumable(self, fn: str, where: str, state: Mapping) -> None:
        """Refuse a state saved with settings this run does not share (see :meth:`load_state_dict`)."""
        written_by = state.get("world_size", 1)
        if written_by != distributed.world_size():
            raise ValueError(
                f"{fn}: {where} was written by {written_by} process(es) and this run has {distributed.world_size()}; "
                f"resume it with torchrun --nproc_per_node={written_by} (the data shards and generator states depend "
                "on the number)"
            )
        differ = _config_differences(state["config"], self.config) if "config" in state else []
        saved_optimizer = state.get("optimizer_class")
        if saved_optimizer is not None and saved_optimizer != type(self.optimizer).__name__:
            differ.append(f"optimizer class {saved_optimizer} there, {type(self.optimizer).__name__} now")
        if differ:
            raise ValueError(
                f"{fn}: {where} was saved by a run with other settings ({'; '.join(differ)}); a run resumes only "
                "with the settings it started with: restore them, or start afresh with another checkpoint_path"
            )

    def _restore(self, state: Mapping) -> None:
        _unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = state["step"]
        self.epoch = state["epoch"]
        self.step_in_epoch = state["step_in_epoch"]
        self.seconds = state["seconds"]
        self._running = state["running"]
        self.history = list(state["history"])
        rng = state["rng_ranks"][distributed.rank()] if "rng_ranks" in state else state["rng"]
        if self._in_run:
            set_rng_state(rng, self.device)
        else:
            self._rng = rng

    def save(self, path: str | os.PathLike | None = None, *, half: bool = False) -> Path:
        """Write :meth:`state_dict` to ``path`` (default ``checkpoint_path``) atomically (rank 0 only)."""
        path = self._path("Trainer.save", path)
        state = self.state_dict()  # every process: it gathers their generators
        if distributed.is_main_process():
            save_checkpoint(path, half=half, **state)
        return path

    def load(self, path: str | os.PathLike | None = None) -> None:
        """Load a checkpoint written by :meth:`save`; its meta must match :attr:`meta`."""
        path = self._path("Trainer.load", path)
        state = load_checkpoint(path, map_location=self.device, expect=self.meta)
        self._check_resumable("Trainer.load", f"checkpoint {path}", state)
        self._restore(state)

    def _path(self, fn: str, path) -> Path:
        if path is None:
            if self.checkpoint_path is None:
                raise ValueError(f"{fn}: no path given and the Trainer has no checkpoint_path")
            return self.checkpoint_path
        return Path(path)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(model={type(_unwrap(self.model)).__name__}, device={self.device}, "
            f"epoch={self.epoch}/{self.config.epochs}, step={self.step})"
        )
