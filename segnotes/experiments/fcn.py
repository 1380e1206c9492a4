"""The FCN chapter's experiments: staged FCN-32s -> 16s -> 8s training, controls and ablations.

Long, Shelhamer and Darrell (CVPR 2015) train FCN-32s first, then FCN-16s initialised from it,
then FCN-8s from FCN-16s (section 4.2). A finer net gets more training in total than the 32s it
started from, so a gain could come from the extra steps rather than from the skip. Each stage
therefore has a *control*: the 32s net trained for the same extra steps with the same schedule.
Per seed (``FCNRecipe.seeds``) the runs are::

    fcn32s_s{seed}                      FCN-32s from scratch, base_epochs, warmup + poly decay
    ├── fcn16s_s{seed}                  FCN-16s from it, stage_epochs
    │   └── fcn8s_s{seed}               FCN-8s from that, last_stage_epochs
    └── fcn32s_ctl16_s{seed}            FCN-32s continued for stage_epochs      (control of 16s)
        └── fcn32s_ctl8_s{seed}         ... and last_stage_epochs more         (control of 8s)

(the controls for ``control_seeds`` only), plus three experiments on the first seed:
``fcn8s_scratch``, FCN-8s trained from scratch for as long as the whole staged chain;
``patch_p{fraction}``, FCN-8s trained like ``fcn8s_scratch`` but with the loss sampled on a
random ``fraction`` of the 32 x 32 blocks (the paper's
"patchwise training is loss sampling", section 3.4), and ``fcn16s_fixedup``, FCN-16s with its 2x
upsampling frozen at bilinear (the paper's repository: "no significant difference").

Each run is deterministic for a fixed thread count (the CLI uses one thread per process: the
order of float reductions depends on it) and resumable: it checkpoints every
``checkpoint_every`` steps to ``<name>.partial.pt``, and when it finishes writes ``<name>.pt``
(model weights in float16, the history and the final validation scores) and deletes the partial
file. A finished run is skipped. The final scores are computed with the float16 weights the file
holds, so a loaded checkpoint reproduces them; the float32 scores are stored beside them.
"""
from __future__ import annotations

import copy
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .._checks import check_choice, check_int, check_positive, check_range, check_tensor, describe
from ..engine import TrainConfig, Trainer, semantic_loss
from ..metrics import ConfusionMatrix
from ..models import FCN, fcn
from ..models.fcn import VARIANTS
from ..engine import distributed
from ..utils import model_device
from .runner import REPOSITORY_CHECKPOINTS, Chapter, checkpoint_root, run_all  # noqa: F401 (the old import path)

__all__ = [
    "FCNRecipe",
    "RunSpec",
    "InMemorySegmentation",
    "fcn_runs",
    "boundary_band",
    "evaluate_fcn",
    "stride_ceiling",
    "sampled_semantic_step",
    "checkpoint_root",
    "CHAPTER",
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "training_memory_format",
    "run_all",
]


@dataclass(frozen=True)
class FCNRecipe:
    """Settings shared by all FCN runs (the defaults are what ``make checkpoints`` trains).

    The pilot runs behind the defaults are recorded in ``data/checkpoints/README.md``, next to
    the setting each one chose.

    Attributes:
        backbone: ``"vgg_small"`` (default) or ``"vgg16"``.
        num_classes: K, background included (shapes: 10).
        seeds: one staged chain and its controls per seed.
        batch_size: images per SGD step.
        base_epochs: epochs of the FCN-32s base run (FCN-32s levels off early).
        stage_epochs: epochs of the FCN-16s stage and of its control.
        last_stage_epochs: epochs of the FCN-8s stage (None: ``stage_epochs``); its control trains
            as many pixels (see ``image_size``). Long, because FCN-8s keeps learning.
        control_seeds: seeds whose chain gets the equal-compute FCN-32s controls (None: all
            seeds); FCN-32s has levelled off by the end of its base run.
        optimizer: ``"adamw"`` (default: from scratch, ``vgg_small`` learns faster with it) or
            ``"sgd"`` (the paper's, with momentum ``momentum``).
        base_lr, stage_lr: learning rates of the base run and of the stages (and controls); the
            FCN-8s stage gains from a high rate.
        weight_decay: weight decay (decoupled for AdamW, L2 for SGD).
        warmup_steps: linear warmup of the base run.
        stage_warmup_steps: linear warmup of each stage (useful with AdamW, whose fresh state
            meets trained weights).
        power: exponent of the poly decay ``(1 - t) ** power`` used by every run.
        flip: random horizontal flips (the categories are mirror symmetric).
        rotate, permute_channels: random quarter turns and RGB channel orders of the training
            images (see :class:`InMemorySegmentation`), for the ``augmented_variants`` only: they
            help FCN-8s, which overfits, and cost the coarse nets, which do not.
        crop: train the ``augmented_variants`` on random ``crop`` x ``crop`` windows (None: whole
            images; see :class:`InMemorySegmentation`): cheaper steps that learn nearly as much,
            except for FCN-32s, for which a window holds few cells.
        augmented_variants: the variants whose runs train with ``rotate``, ``permute_channels``
            and ``crop`` (the FCN-8s stage, the from-scratch FCN-8s and the loss-sampling run);
            the others train on whole images with ``flip`` only.
        image_size: side of the training images (shapes: 128 px), which turns epochs of windows
            into epochs of whole images for the equal-compute control.
        train_images, val_images: use only the first so many images (None: all); tiny recipes for tests.
        monitor_images: validation images evaluated after each epoch, for the learning curves.
        boundary_widths: widths d of the boundary bands of :func:`evaluate_fcn`.
        patch_fraction: fraction of stride-32 cells kept by the loss-sampling experiment (None: no experiment).
        patch_epochs: epochs of that experiment (it follows the from-scratch FCN-8s's schedule, then stops).
        fixed_upsampling: run the fixed-vs-learned 2x upsampling experiment.
        scratch_fcn8s: train an FCN-8s from scratch for as many epochs as the staged chain (base + both stages).
        checkpoint_every: optimizer steps between resumable checkpoints.
    """

    backbone: str = "vgg_small"
    num_classes: int = 10
    seeds: tuple[int, ...] = (0, 1, 2)
    batch_size: int = 8
    base_epochs: int = 10
    stage_epochs: int = 8
    last_stage_epochs: int | None = 55
    control_seeds: tuple[int, ...] | None = (0,)
    optimizer: str = "adamw"
    base_lr: float = 3e-3
    stage_lr: float = 1e-2
    momentum: float = 0.9
    weight_decay: float = 1e-2
    warmup_steps: int = 100
    stage_warmup_steps: int = 50
    power: float = 0.9
    flip: bool = True
    rotate: bool = True
    permute_channels: bool = True
    crop: int | None = 96
    augmented_variants: tuple[str, ...] = ("fcn8s",)
    image_size: int = 128
    train_images: int | None = None
    val_images: int | None = None
    monitor_images: int = 100
    boundary_widths: tuple[int, ...] = (1, 2, 4, 8)
    patch_fraction: float | None = 0.25
    patch_epochs: int = 6
    fixed_upsampling: bool = True
    scratch_fcn8s: bool = True
    checkpoint_every: int = 250

    def __post_init__(self) -> None:
        fn = "FCNRecipe"
        for name in ("num_classes", "batch_size", "base_epochs", "stage_epochs", "monitor_images", "checkpoint_every",
                     "image_size"):
            check_int(fn, name, getattr(self, name), minimum=1)
        check_int(fn, "warmup_steps", self.warmup_steps, minimum=0)
        check_int(fn, "stage_warmup_steps", self.stage_warmup_steps, minimum=0)
        check_choice(fn, "optimizer", self.optimizer, ("adamw", "sgd"))
        check_positive(fn, "base_lr", self.base_lr)
        check_positive(fn, "stage_lr", self.stage_lr)
        check_range(fn, "momentum", self.momentum, 0, 1, open_high=True)
        check_positive(fn, "weight_decay", self.weight_decay, allow_zero=True)
        check_positive(fn, "power", self.power, allow_zero=True)
        if not self.seeds:
            raise ValueError(f"{fn}: seeds must hold at least one seed, got {self.seeds!r}")
        for seed in self.seeds:
            check_int(fn, "seeds[i]", seed, minimum=0)
        if self.last_stage_epochs is not None:
            check_int(fn, "last_stage_epochs", self.last_stage_epochs, minimum=1)
        if self.control_seeds is not None:
            object.__setattr__(self, "control_seeds", tuple(self.control_seeds))
            for seed in self.control_seeds:
                if seed not in self.seeds:
                    raise ValueError(f"{fn}: control_seeds must be among seeds {self.seeds}, got {self.control_seeds!r}")
        for name in ("train_images", "val_images", "crop"):
            if getattr(self, name) is not None:
                check_int(fn, name, getattr(self, name), minimum=1)
        for width in self.boundary_widths:
            check_int(fn, "boundary_widths[i]", width, minimum=1)
        if self.patch_fraction is not None and not (0 < self.patch_fraction < 1):  # False for NaN too
            raise ValueError(f"{fn}: patch_fraction must be in (0, 1) or None, got {self.patch_fraction!r}")
        if self.crop is not None and self.crop > self.image_size:
            raise ValueError(f"{fn}: crop must be at most image_size {self.image_size}, got {self.crop}")
        object.__setattr__(self, "augmented_variants", tuple(self.augmented_variants))
        for variant in self.augmented_variants:
            check_choice(fn, "augmented_variants[i]", variant, list(VARIANTS))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "boundary_widths", tuple(self.boundary_widths))

    def augments(self, variant: str) -> bool:
        """Whether ``variant``'s runs train with ``rotate``, ``permute_channels`` and ``crop``."""
        return variant in self.augmented_variants

    def pixels_per_image(self, variant: str) -> int:
        """Training pixels per image of ``variant``'s runs: a ``crop`` window, or the whole image."""
        check_choice("FCNRecipe.pixels_per_image", "variant", variant, list(VARIANTS))
        side = self.crop if self.crop is not None and self.augments(variant) else self.image_size
        return side * side

    def equal_pixel_epochs(self, epochs: int, variant: str, like: str) -> int:
        """Epochs of ``variant``'s inputs holding as many training pixels as ``epochs`` of ``like``'s."""
        check_int("FCNRecipe.equal_pixel_epochs", "epochs", epochs, minimum=1)
        return max(1, round(epochs * self.pixels_per_image(like) / self.pixels_per_image(variant)))

    @property
    def last_epochs(self) -> int:
        """Epochs of the FCN-8s stage and its control: ``last_stage_epochs``, or ``stage_epochs`` if None."""
        return self.stage_epochs if self.last_stage_epochs is None else self.last_stage_epochs

    @property
    def chain_epochs(self) -> int:
        """Epochs of a whole staged chain, base run and both stages (the from-scratch FCN-8s's length)."""
        return self.base_epochs + self.stage_epochs + self.last_epochs

    @property
    def seeds_with_controls(self) -> tuple[int, ...]:
        """The seeds whose chain gets the equal-compute controls: ``control_seeds``, or all seeds if None."""
        return self.seeds if self.control_seeds is None else self.control_seeds


@dataclass(frozen=True)
class RunSpec:
    """One training run.

    Attributes:
        name: file stem of its checkpoint, e.g. ``"fcn16s_s0"``.
        variant: ``"fcn32s"``, ``"fcn16s"`` or ``"fcn8s"``.
        seed: seeds the initialisation, the data order, dropout and flips.
        epochs: length of the schedule (warmup, then poly decay to 0 at the last step).
        lr: base learning rate.
        warmup_steps: linear warmup.
        parent: run whose weights initialise this one (None: from scratch).
        group: ``"staged"``, ``"control"``, ``"scratch"``, ``"patch"`` or ``"upsampling"``, for the chapter's tables.
        loss_fraction: fraction of stride-32 cells that enter the loss (1: whole-image training).
        stop_epoch: stop after this many epochs of the ``epochs``-long schedule (None: all).
        learn_upsampling: train the 2x upsampling layers (False: frozen at bilinear).
        keep_weights: store the weights in the finished checkpoint (False: scores and history only).
    """

    name: str
    variant: str
    seed: int
    epochs: int
    lr: float
    warmup_steps: int = 0
    parent: str | None = None
    group: str = "staged"
    loss_fraction: float = 1.0
    stop_epoch: int | None = None
    learn_upsampling: bool = True
    keep_weights: bool = True


def fcn_runs(recipe: FCNRecipe | None = None) -> list[RunSpec]:
    """The runs of the FCN chapter, parents before children, longest first.

    Args:
        recipe (FCNRecipe): settings; default ``FCNRecipe()``.

    Returns:
        list of RunSpec: per seed ``fcn32s_s{seed}``, ``fcn16s_s{seed}``, ``fcn8s_s{seed}``, and
        for the ``control_seeds`` ``fcn32s_ctl16_s{seed}``, ``fcn32s_ctl8_s{seed}``; then the
        experiments on the first seed.
    """
    recipe = FCNRecipe() if recipe is None else recipe
    if not isinstance(recipe, FCNRecipe):
        raise TypeError(f"fcn_runs: recipe must be an FCNRecipe, got {describe(recipe)}")
    r = recipe
    base = [
        RunSpec(f"fcn32s_s{s}", "fcn32s", s, r.base_epochs, r.base_lr, r.warmup_steps) for s in r.seeds
    ]
    stages = []
    for s in r.seeds:
        stage = functools.partial(RunSpec, seed=s, lr=r.stage_lr, warmup_steps=r.stage_warmup_steps)
        stages.append(stage(f"fcn16s_s{s}", "fcn16s", epochs=r.stage_epochs, parent=f"fcn32s_s{s}"))
        if s in r.seeds_with_controls:
            stages.append(stage(f"fcn32s_ctl16_s{s}", "fcn32s", epochs=r.stage_epochs, parent=f"fcn32s_s{s}", group="control"))
        stages.append(stage(f"fcn8s_s{s}", "fcn8s", epochs=r.last_epochs, parent=f"fcn16s_s{s}"))
        if s in r.seeds_with_controls:
            # The last control has no child: its scores and history are all the chapter needs.
            # As many training pixels as the FCN-8s stage (which may train on windows, FCN-32s on whole images).
            control_epochs = r.equal_pixel_epochs(r.last_epochs, "fcn32s", like="fcn8s")
            stages.append(stage(f"fcn32s_ctl8_s{s}", "fcn32s", epochs=control_epochs, parent=f"fcn32s_ctl16_s{s}",
                                group="control", keep_weights=False))
    first = r.seeds[0]
    extra = []
    if r.scratch_fcn8s:
        extra.append(
            RunSpec(
                f"fcn8s_scratch_s{first}", "fcn8s", first, r.chain_epochs, r.base_lr,
                r.warmup_steps, group="scratch", keep_weights=False,
            )
        )
    if r.patch_fraction is not None:
        # Same settings as the from-scratch FCN-8s (whose first epochs are the whole-image curve),
        # with the loss on a random patch_fraction of the 32 x 32 blocks.
        extra.append(
            RunSpec(
                f"patch_p{r.patch_fraction:g}_s{first}", "fcn8s", first, r.chain_epochs, r.base_lr, r.warmup_steps,
                group="patch", loss_fraction=r.patch_fraction, stop_epoch=min(r.patch_epochs, r.chain_epochs),
                keep_weights=False,
            )
        )
    if r.fixed_upsampling:
        extra.append(
            RunSpec(
                f"fcn16s_fixedup_s{first}", "fcn16s", first, r.stage_epochs, r.stage_lr, r.stage_warmup_steps,
                parent=f"fcn32s_s{first}",
                group="upsampling", learn_upsampling=False, keep_weights=False,
            )
        )
    # The from-scratch FCN-8s is as long as a base run plus two stages: start it early.
    scratch = [spec for spec in extra if spec.group == "scratch"]
    return base + scratch + stages + [spec for spec in extra if spec.group != "scratch"]


# ----------------------------------------------------------------------------------------------
# Data


class InMemorySegmentation(Dataset):
    """A semantic segmentation data set decoded once and held as uint8 tensors.

    Decoding 2000 PNGs each epoch would cost as much as a tenth of the training on one CPU thread;
    uint8 keeps the 2000 shapes images in 100 MB.

    Args:
        dataset: yields ``(image FloatTensor[3, H, W] in [0, 1], label LongTensor[H, W])`` of
            one size (e.g. :class:`segnotes.data.ShapesSemantic`).
        limit (int): keep the first ``limit`` items (None: all).
        flip (bool): mirror image and label left-right with probability 1/2.
        rotate (bool): then turn both by a random multiple of 90 degrees. With the flips this
            gives the 8 symmetries of the square; the shapes' rotations are uniform, so every one
            is an equally likely image of the data set.
        permute_channels (bool): then shuffle the image's RGB channels (6 orders). Colours are
            drawn independently of the category, so the label stays right.
        crop (int): then cut a random ``crop`` x ``crop`` window (None: the whole image). The net
            is fully convolutional, so it trains on windows and predicts on whole images; a
            96 px window of the 128 px shapes costs about 60% of the whole image per step.

    The random draws come from the global torch generator (which :class:`~segnotes.engine.Trainer`
    seeds and restores), in the order flip, rotation, channels, crop: a run with only ``flip``
    draws exactly what it drew before the other options existed.

    Item ``(image FloatTensor[3, H, W] in [0, 1], label LongTensor[H, W])``.
    """

    def __init__(
        self,
        dataset: Dataset,
        limit: int | None = None,
        flip: bool = False,
        rotate: bool = False,
        permute_channels: bool = False,
        crop: int | None = None,
    ) -> None:
        fn = "InMemorySegmentation"
        for name, value in (("flip", flip), ("rotate", rotate), ("permute_channels", permute_channels)):
            if not isinstance(value, bool):
                raise TypeError(f"{fn}: {name} must be a bool, got {describe(value)}")
        if crop is not None:
            check_int(fn, "crop", crop, minimum=1)
        n = len(dataset) if limit is None else min(limit, len(dataset))
        if n == 0:
            raise ValueError(f"{fn}: dataset must not be empty, got {describe(dataset)}")
        first = dataset[0]
        size = min(first[0].shape[-2:])  # checked before decoding the rest: a bad crop fails at once
        if crop is not None and crop > size:
            raise ValueError(f"{fn}: crop must be at most the images' size {size}, got {crop}")
        images, labels = zip(first, *(dataset[i] for i in range(1, n)))
        self.images = torch.stack([(img * 255).round().to(torch.uint8) for img in images])  # (N, 3, H, W)
        self.labels = torch.stack([lab.to(torch.uint8) for lab in labels])  # (N, H, W), 255 = void
        self.flip, self.rotate, self.permute_channels = flip, rotate, permute_channels
        self.crop = crop

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        image = self.images[index].float() / 255
        label = self.labels[index].long()
        if self.flip and torch.rand(()) < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        if self.rotate:
            turns = int(torch.randint(4, ()))
            image, label = image.rot90(turns, (-2, -1)), label.rot90(turns, (-2, -1))
        if self.permute_channels:
            image = image[torch.randperm(3)]
        if self.crop is not None:
            top = int(torch.randint(image.shape[-2] - self.crop + 1, ()))
            left = int(torch.randint(image.shape[-1] - self.crop + 1, ()))
            window = (..., slice(top, top + self.crop), slice(left, left + self.crop))
            image, label = image[window], label[window]
        return image.contiguous(), label.contiguous()


def _load_data(spec: RunSpec, recipe: FCNRecipe, data_root) -> tuple[Dataset, Dataset]:
    """``(train, val)`` of the shapes set, the training images augmented as ``recipe`` says for the run's variant."""
    from ..data import ShapesSemantic

    augment = recipe.augments(spec.variant)
    train = InMemorySegmentation(
        ShapesSemantic(data_root, "train"), recipe.train_images, flip=recipe.flip,
        rotate=augment and recipe.rotate, permute_channels=augment and recipe.permute_channels,
        crop=recipe.crop if augment else None,
    )
    val = InMemorySegmentation(ShapesSemantic(data_root, "val"), recipe.val_images)
    return train, val


# ----------------------------------------------------------------------------------------------
# Loss sampling and evaluation


def sampled_semantic_step(
    model: nn.Module, batch, *, fraction: float, cell: int = 32, ignore_index: int = 255
) -> tuple[Tensor, dict]:
    """Whole-image loss restricted to a random subset of the final layer's cells (paper, section 3.4).

    Patchwise training of a stride-32 net is whole-image training whose loss keeps each
    ``cell x cell`` block of pixels with probability ``fraction`` (independently per image and
    block); the dropped pixels get ``ignore_index``. Draws from the global torch generator.

    Args:
        model (nn.Module): returns logits Tensor[N, K, H, W].
        batch: ``(images Tensor[N, 3, H, W], targets Tensor[N, H, W])``.
        fraction (float): probability of keeping a cell, in (0, 1].
        cell (int): block size in pixels (the net's output stride, 32 for FCN-32s).
        ignore_index (int): label of pixels left out of the loss.

    Returns:
        (loss Tensor[], logs dict with ``kept``: the fraction of labelled pixels kept).
    """
    images, targets = batch[0], batch[1]
    n, h, w = targets.shape
    keep = torch.rand(n, math.ceil(h / cell), math.ceil(w / cell)) < fraction  # (N, H/cell, W/cell)
    keep = keep.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :h, :w].to(targets.device)  # (N, H, W)
    labelled = targets != ignore_index
    sampled = torch.where(keep, targets, torch.full_like(targets, ignore_index))
    kept = (keep & labelled).sum() / labelled.sum().clamp(min=1)
    return semantic_loss(model(images), sampled, ignore_index), {"kept": kept}


def boundary_band(target: Tensor, width: int) -> Tensor:
    """Pixels within ``width`` pixels (chessboard distance) of a label boundary.

    A pixel is on a boundary when one of its 4 neighbours has another label; the void label (255)
    counts as a label, so the band covers both sides of the void ring around each object.

    Args:
        target (Tensor[N, H, W], integer): labels.
        width (int): d >= 0; 0 gives the boundary pixels themselves.

    Returns:
        BoolTensor[N, H, W]: the band.
    """
    fn = "boundary_band"
    check_tensor(fn, "target", target, ndim=3, floating=False)
    check_int(fn, "width", width, minimum=0)
    edge = torch.zeros_like(target, dtype=torch.bool)
    dy = target[:, 1:, :] != target[:, :-1, :]  # (N, H-1, W)
    dx = target[:, :, 1:] != target[:, :, :-1]  # (N, H, W-1)
    edge[:, 1:, :] |= dy
    edge[:, :-1, :] |= dy
    edge[:, :, 1:] |= dx
    edge[:, :, :-1] |= dx
    if width == 0:
        return edge
    # Dilation by a (2d+1) x (2d+1) square: max pooling of the 0/1 map.
    band = F.max_pool2d(edge[:, None].float(), 2 * width + 1, stride=1, padding=width)
    return band[:, 0] > 0


def evaluate_fcn(
    model: nn.Module,
    dataset: Dataset,
    num_classes: int,
    *,
    boundary_widths: Sequence[int] = (),
    batch_size: int = 16,
    device: torch.device | str | None = None,
    ignore_index: int = 255,
) -> dict:
    """The paper's four scores on a data set, overall and within boundary bands.

    Args:
        model (nn.Module): returns logits Tensor[N, K, H, W].
        dataset (Dataset): ``(image Tensor[3, H, W], label Tensor[H, W])``, read in order (under
            torchrun each process reads its shard; the counts are summed over processes).
        num_classes (int): K.
        boundary_widths (sequence of int): for each d, the scores restricted to
            :func:`boundary_band` ``(label, d)``.
        batch_size (int): images per forward pass.
        device: where to run (default: the model's device).
        ignore_index (int): label left out.

    Returns:
        dict: ``pixel_accuracy``, ``mean_accuracy``, ``mean_iu``, ``frequency_weighted_iu`` (floats),
        ``iu`` and ``accuracy`` (lists of K floats, NaN for absent classes), and ``boundary``:
        ``{d: the same dict for the band of width d}`` (keys are str(d)).
    """
    fn = "evaluate_fcn"
    check_int(fn, "num_classes", num_classes, minimum=1)
    check_int(fn, "batch_size", batch_size, minimum=1)
    for width in boundary_widths:
        check_int(fn, "boundary_widths[i]", width, minimum=0)
    device = model_device(model) if device is None else torch.device(device)
    overall = ConfusionMatrix(num_classes, ignore_index).to(device)
    bands = {w: ConfusionMatrix(num_classes, ignore_index).to(device) for w in boundary_widths}
    # Under torchrun each process scores its shard and the counts are summed below.
    loader = DataLoader(distributed.shard(dataset), batch_size=batch_size, shuffle=False, generator=torch.Generator())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for images, targets in loader:
                targets = targets.to(device)
                pred = model(images.to(device)).argmax(1)  # (N, H, W)
                overall.update(pred, targets)
                for width, matrix in bands.items():
                    in_band = boundary_band(targets, width)
                    matrix.update(pred, torch.where(in_band, targets, torch.full_like(targets, ignore_index)))
    finally:
        model.train(was_training)
    scores = _plain_scores(overall.all_reduce().compute())
    scores["boundary"] = {str(w): _plain_scores(m.all_reduce().compute()) for w, m in bands.items()}
    return scores


def stride_ceiling(
    labels: Tensor, stride: int, num_classes: int, *, steps: int = 200, lr: float = 0.5, ignore_index: int = 255
) -> dict:
    """How well *any* FCN with output stride ``stride`` could do: its score map, fitted to each label.

    Whatever its backbone learns, FCN-Xs ends in a ``[K, ceil(H / s), ceil(W / s)]`` map of scores
    upsampled by a fixed bilinear layer (:class:`~segnotes.ops.BilinearUpsample`), then cropped.
    This fits that map directly to each ground-truth label: Adam on the per-pixel cross-entropy, the
    training loss, which is convex in the map since the upsampling is linear. The argmax of the fitted
    maps scores what the output layer can represent, a ceiling that does not depend on what a net
    learns (an estimate: the cross-entropy optimum need not be the IU optimum).

    Args:
        labels (Tensor[N, H, W], integer): ground truth, ``ignore_index`` for void.
        stride (int): s >= 1 (32, 16 and 8 for FCN-32s, 16s and 8s).
        num_classes (int): K.
        steps (int): Adam steps.
        lr (float): Adam's learning rate.
        ignore_index (int): label left out of the fit and of the scores.

    Returns:
        dict: the scores of :func:`evaluate_fcn` (without boundary bands) of the fitted maps.
    """
    fn = "stride_ceiling"
    check_tensor(fn, "labels", labels, ndim=3, floating=False)
    check_int(fn, "stride", stride, minimum=1)
    check_int(fn, "num_classes", num_classes, minimum=1)
    check_int(fn, "steps", steps, minimum=1)
    check_positive(fn, "lr", lr)
    known = labels[labels != ignore_index]
    if known.numel() and (int(known.min()) < 0 or int(known.max()) >= num_classes):
        raise ValueError(f"{fn}: labels must be in [0, {num_classes}) or {ignore_index}, got values from "
                         f"{int(known.min())} to {int(known.max())}")
    n, h, w = labels.shape
    labels = labels.long()

    def upsample(x: Tensor) -> Tensor:  # (N, K, h', w') -> (N, K, H, W)
        # F.interpolate equals BilinearUpsample in the interior; in the outer half cell the transposed
        # convolution sees only the border cell's tent, a positive multiple of it, and the clamped
        # interpolation sees that cell itself: the same argmax. Interpolation is many times faster.
        return F.interpolate(x, scale_factor=stride, mode="bilinear", align_corners=False)[..., :h, :w]

    scores = torch.zeros(n, num_classes, math.ceil(h / stride), math.ceil(w / stride), device=labels.device, requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=lr)
    with torch.enable_grad():
        for _ in range(steps):
            logits = upsample(scores)  # (N, K, H, W)
            loss = F.cross_entropy(logits, labels, ignore_index=ignore_index)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        matrix = ConfusionMatrix(num_classes, ignore_index).to(labels.device)
        matrix.update(upsample(scores).argmax(1), labels)
    return _plain_scores(matrix.compute())


def _plain_scores(scores: Mapping) -> dict:
    return {k: (v.tolist() if isinstance(v, Tensor) else float(v)) for k, v in scores.items()}


# ----------------------------------------------------------------------------------------------
# The chapter: model, trainer, scores


def _build_model(spec: RunSpec, recipe: FCNRecipe, parent: FCN | None) -> FCN:
    """The run's initial model: a fresh FCN (the runner seeds it), or built from its parent's
    trained model (staged init)."""
    if parent is None:
        return fcn(spec.variant, recipe.num_classes, recipe.backbone)
    if spec.variant == parent.variant:  # a control: the same net, trained on
        return copy.deepcopy(parent)
    return FCN.from_parent(parent, spec.variant)


def _rebuild(meta: dict) -> FCN:
    return fcn(meta["variant"], meta["num_classes"], meta["backbone_name"])


def _freeze_upsampling(model: FCN) -> None:
    for name in ("upscore2", "upscore_pool4"):
        layer = getattr(model, name, None)
        if layer is not None:
            layer.weight.requires_grad_(False)


def training_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout :func:`~segnotes.experiments.train_run` gives an FCN's weights on ``device``.

    channels_last (NHWC) on a CPU, where oneDNN's convolutions run 20-30% faster in it (the inputs
    may stay NCHW); NCHW on a GPU, where channels_last made FCN-32s's float32 training step 0.61x
    as fast on an H100 (``benchmarks/bench_fcn.py``). The layout does not change the model, only
    the speed (and the last bits of the sums).
    """
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def _trainer(model: FCN, train_set, val_set, spec: RunSpec, recipe: FCNRecipe, *, checkpoint_path, device,
             progress) -> Trainer:
    model = model.to(memory_format=training_memory_format(device))
    if not spec.learn_upsampling:
        _freeze_upsampling(model)
    config = TrainConfig(
        epochs=spec.epochs, batch_size=recipe.batch_size, optimizer=recipe.optimizer, lr=spec.lr, momentum=recipe.momentum,
        weight_decay=recipe.weight_decay, schedule="poly", power=recipe.power, warmup_steps=spec.warmup_steps,
        amp=False, seed=spec.seed, num_workers=0, eval_every=1, checkpoint_every=recipe.checkpoint_every,
    )
    monitor = torch.utils.data.Subset(val_set, range(min(recipe.monitor_images, len(val_set))))
    step_fn = None
    if spec.loss_fraction < 1:
        step_fn = functools.partial(sampled_semantic_step, fraction=spec.loss_fraction, cell=32)
    return Trainer(
        model, train_set, config, device=device, checkpoint_path=checkpoint_path,
        meta={"run": spec.name}, step_fn=step_fn, progress=progress,
        eval_fn=lambda m: evaluate_fcn(m, monitor, recipe.num_classes, batch_size=16),
    )


def _evaluate(model: FCN, val_set: Dataset, recipe: FCNRecipe) -> dict:
    return evaluate_fcn(model, val_set, recipe.num_classes, boundary_widths=recipe.boundary_widths)


CHAPTER = Chapter(
    name="fcn", recipe=FCNRecipe, spec=RunSpec, runs=fcn_runs, build=_build_model, rebuild=_rebuild,
    data=_load_data, trainer=_trainer, evaluate=_evaluate,
)
run_path, is_done, load_run, load_run_model = CHAPTER.run_path, CHAPTER.is_done, CHAPTER.load_run, CHAPTER.load_run_model
_partial_path = CHAPTER.partial_path
