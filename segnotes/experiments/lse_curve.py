"""The LSE chapter's curve: how many mask classes does the weight transfer function need?

Hu et al. train the transfer function T on 20-60 mask classes, and their random-split experiment
shows mask AP on the box-only group rising with the number of classes in A. The shapes data with
handles has 9 categories, so T learns from 4-5. This experiment moves along the paper's axis on
the attributes variant of the shapes data (:func:`segnotes.data.render`, ``attributes=True,
handles=True``): 50 categories, each an outline, a colour family and a texture, with a fixed
box-only group B of 10 (:data:`segnotes.data.ATTRIBUTE_GROUPS`) and the first ``n`` categories of
:data:`segnotes.data.ATTRIBUTE_MASK_ORDER` as the mask classes. Whether a handle belongs to the mask
follows the outline (:data:`segnotes.data.ATTRIBUTE_HANDLE_IN_MASK`). The runs, per seed::

    lsec_oracle_s{seed}                  Mask R-CNN, class-specific masks for all 50 classes (upper bound)
    lsec_agnostic_m{n}_s{seed}           class-agnostic head + fused MLP, masks of n classes of A
    lsec_transfer_m{n}_s{seed}           Mask^X R-CNN (cls+box, 2-layer T, fused MLP), masks of n classes

Every run sees every box and label of all 50 classes, with the same data order, schedule and
number of steps (equal compute); only which masks it sees and its mask head differ. The classes of
A beyond the first ``n`` are box-only too, but only group B is scored. A finished run
``<out>/lse_curve/<name>.pt`` holds the history and the scores of
:func:`segnotes.experiments.lse.evaluate_lse` on the whole val set, for groups ``B`` and ``A``
(all 40), and the given-box diagnostics per category. It keeps no weights.

Train with ``python -m segnotes.experiments lse_curve`` (``--set mask_counts=5,10,20,40 --set
seeds=0,1,2`` for the whole curve, into another ``--out``).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from .._checks import check_choice, check_int, describe
from ..engine import Trainer
from .detection import check_recipe_schedule, detection_trainer, hflip_instances
from .lse import VARIANTS, LSERecipe, _monitor_scores, evaluate_lse
from .runner import Chapter

__all__ = [
    "LSECurveRecipe",
    "LSECurveRunSpec",
    "CURVE_VARIANTS",
    "MASK_COUNTS",
    "mask_classes",
    "curve_runs",
    "attributes_root",
    "build_model",
    "handle_separation",
    "CHAPTER",
    "run_path",
    "is_done",
    "load_run",
]

CURVE_VARIANTS = ("agnostic", "transfer")  # each trained at every number of mask classes; the oracle once
MASK_COUNTS = (5, 10, 20, 40)  # balanced prefixes of ATTRIBUTE_MASK_ORDER (every outline and colour equally often)


@dataclass(frozen=True)
class LSECurveRecipe:
    """Settings of the curve's runs (the defaults are what ``make checkpoints`` trains: the pilot).

    Attributes:
        num_classes: K, background included (the attributes variant: 51).
        seeds: seeds of every run.
        mask_counts: numbers of mask classes, each the first ``n`` of ``ATTRIBUTE_MASK_ORDER`` (1..40).
        batch_size, epochs, lr, weight_decay, warmup_steps, min_lr_factor, grad_clip, flip: as the
            LSE chapter's recipe (:class:`~segnotes.experiments.lse.LSERecipe`), so a run costs the same.
        train_images, val_images: use only the first so many images (None: all).
        monitor_images: val images evaluated after each epoch, for the learning curves.
        checkpoint_every: optimizer steps between resumable checkpoints.
    """

    num_classes: int = 51
    seeds: tuple[int, ...] = (0,)
    mask_counts: tuple[int, ...] = (5, 40)
    # the LSE chapter's schedule, by reference: a curve run costs what an LSE run costs
    batch_size: int = LSERecipe.batch_size
    epochs: int = LSERecipe.epochs
    lr: float = LSERecipe.lr
    weight_decay: float = LSERecipe.weight_decay
    warmup_steps: int = LSERecipe.warmup_steps
    min_lr_factor: float = LSERecipe.min_lr_factor
    grad_clip: float | None = LSERecipe.grad_clip
    flip: bool = LSERecipe.flip
    train_images: int | None = None
    val_images: int | None = None
    monitor_images: int = LSERecipe.monitor_images
    checkpoint_every: int = LSERecipe.checkpoint_every

    def __post_init__(self) -> None:
        fn = "LSECurveRecipe"
        check_recipe_schedule(fn, self)
        if not self.mask_counts:
            raise ValueError(f"{fn}: mask_counts must hold at least one count, got {self.mask_counts!r}")
        for seed in self.seeds:
            check_int(fn, "seeds[i]", seed, minimum=0)
        for count in self.mask_counts:
            check_int(fn, "mask_counts[i]", count, minimum=1)
            if count > 40:
                raise ValueError(f"{fn}: mask_counts[i] must be at most 40 (the classes of group A), got {count}")
        for name in ("seeds", "mask_counts"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class LSECurveRunSpec:
    """One run: ``name``, ``variant`` (``"oracle"`` or one of :data:`CURVE_VARIANTS`), ``mask_count``
    (None for the oracle, which has every class's masks), ``seed``. ``keep_weights`` is False and
    ``parent`` None (every run starts from a random initialisation); both are there for the runner."""

    name: str
    variant: str
    mask_count: int | None
    seed: int
    keep_weights: bool = False
    parent: str | None = None


def curve_runs(recipe: LSECurveRecipe | None = None) -> list[LSECurveRunSpec]:
    """The curve's runs: per seed, agnostic and transfer at each number of mask classes, then the oracle.

    Returns:
        list of LSECurveRunSpec named ``lsec_{variant}_m{n}_s{seed}`` and ``lsec_oracle_s{seed}``.
    """
    recipe = LSECurveRecipe() if recipe is None else recipe
    if not isinstance(recipe, LSECurveRecipe):
        raise TypeError(f"curve_runs: recipe must be an LSECurveRecipe, got {describe(recipe)}")
    runs = []
    for seed in recipe.seeds:
        for count in recipe.mask_counts:
            runs += [LSECurveRunSpec(f"lsec_{v}_m{count}_s{seed}", v, count, seed) for v in CURVE_VARIANTS]
        runs.append(LSECurveRunSpec(f"lsec_oracle_s{seed}", "oracle", None, seed))
    return runs


def mask_classes(count: int) -> tuple[int, ...]:
    """The ``count`` mask classes of the curve: the first ``count`` of ``ATTRIBUTE_MASK_ORDER``, sorted.

    Args:
        count (int): 1..40.
    """
    from ..data import ATTRIBUTE_MASK_ORDER

    check_int("mask_classes", "count", count, minimum=1)
    if count > len(ATTRIBUTE_MASK_ORDER):
        raise ValueError(f"mask_classes: count must be at most {len(ATTRIBUTE_MASK_ORDER)} (group A), got {count}")
    return tuple(sorted(ATTRIBUTE_MASK_ORDER[:count]))


def attributes_root() -> Path:
    """Default folder of the attributes variant with handles: ``shapes_attributes`` beside the default data set."""
    from ..data import default_root, variant_folder

    return default_root().with_name(variant_folder(handles=True, attributes=True))


def _groups() -> dict:
    from ..data import ATTRIBUTE_GROUPS

    return {"B": ATTRIBUTE_GROUPS["B"], "A": ATTRIBUTE_GROUPS["A"]}


def _load_data(spec: LSECurveRunSpec, recipe: LSECurveRecipe, data_root) -> tuple[Dataset, Dataset]:
    from ..data import ATTRIBUTE_CATEGORIES, ShapesInstances

    root = attributes_root() if data_root is None else data_root
    val = ShapesInstances(root, "val")
    # checked before the train set, whose withheld ids the nine-category data set would refuse less clearly
    categories = {c["id"] for c in val.categories}
    if categories != {c["id"] for c in ATTRIBUTE_CATEGORIES}:
        raise ValueError(f"lse_curve: the data set at {root} is not the attributes variant ({len(categories)} "
                         "categories, not 50); make it with `make data` or segnotes.data.ensure_shapes(handles=True, "
                         "attributes=True)")
    withheld = ()
    if spec.mask_count is not None:
        masked = set(mask_classes(spec.mask_count))
        withheld = tuple(c["id"] for c in ATTRIBUTE_CATEGORIES if c["id"] not in masked)
    train = ShapesInstances(root, "train", partial=withheld or None, transforms=hflip_instances if recipe.flip else None)
    if recipe.train_images is not None:
        train = Subset(train, range(min(recipe.train_images, len(train))))
    if recipe.val_images is not None:
        val = Subset(val, range(min(recipe.val_images, len(val))))
    return train, val


def build_model(variant: str, mask_count: int | None, num_classes: int = 51) -> nn.Module:
    """The untrained model of a run: Mask R-CNN for the oracle, else Mask^X R-CNN whose mask classes
    are :func:`mask_classes` of ``mask_count``, with the LSE chapter's settings of ``variant``."""
    from ..models import mask_rcnn, maskx_rcnn

    check_choice("build_model", "variant", variant, ("oracle", *CURVE_VARIANTS))
    if variant == "oracle":
        return mask_rcnn(num_classes)
    return maskx_rcnn(num_classes, mask_classes(mask_count), **VARIANTS[variant])


def _build(spec: LSECurveRunSpec, recipe: LSECurveRecipe, parent) -> nn.Module:
    return build_model(spec.variant, spec.mask_count, recipe.num_classes)


def _rebuild(meta: dict) -> nn.Module:
    spec, recipe = meta["spec"], meta["recipe"]
    return build_model(spec["variant"], spec["mask_count"], recipe["num_classes"])


def _trainer(model, train_set, val_set, spec, recipe, *, checkpoint_path, device, progress) -> Trainer:
    monitor = Subset(val_set, range(min(recipe.monitor_images, len(val_set))))
    return detection_trainer(
        model, train_set, recipe, spec, checkpoint_path,
        functools.partial(_monitor_scores, dataset=monitor, groups={"B": _groups()["B"]}), device=device,
        progress=progress,
    )


def _evaluate(model: nn.Module, val_set: Dataset, recipe: LSECurveRecipe) -> dict:
    return evaluate_lse(model, val_set, groups=_groups())


def handle_separation(given_box: dict, categories) -> float:
    """How well a model follows the handle rule on ``categories``, given the true box and class.

    The mean share of the visible handle kept in the mask for categories whose rule includes it,
    minus the same for categories whose rule leaves it out (percentage points): 100 follows the
    rule perfectly, 0 treats both alike.

    Args:
        given_box (dict): category id -> {"handle_kept", ...}, as ``scores["given_box"]``.
        categories: category ids of the attributes variant.
    """
    from ..data import ATTRIBUTE_HANDLE_IN_MASK

    kept = {rule: [given_box[c]["handle_kept"] for c in categories if ATTRIBUTE_HANDLE_IN_MASK[c] == rule]
            for rule in (True, False)}
    if not kept[True] or not kept[False]:
        raise ValueError("handle_separation: categories must hold both rules (handle in and out of the mask), "
                         f"got {tuple(categories)!r}")
    return 100.0 * (float(np.nanmean(kept[True])) - float(np.nanmean(kept[False])))


CHAPTER = Chapter(
    name="lse_curve", recipe=LSECurveRecipe, spec=LSECurveRunSpec, runs=curve_runs, build=_build, rebuild=_rebuild,
    data=_load_data, trainer=_trainer, evaluate=_evaluate, data_set="shapes_attributes",
)
run_path, is_done, load_run = CHAPTER.run_path, CHAPTER.is_done, CHAPTER.load_run
_partial_path = CHAPTER.partial_path
