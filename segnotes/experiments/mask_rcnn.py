"""The Mask R-CNN chapter's experiments: the paper's Table 2 ablations at equal compute.

He et al. (ICCV 2017) ablate one design choice at a time against their baseline (ResNet-50-C4,
RoIAlign, class-specific sigmoid masks): RoIPool instead of RoIAlign (Table 2c), a multinomial
softmax across classes instead of per-class sigmoids (2b), one class-agnostic mask instead of
one per class (section 4.2). Per seed (``MaskRCNNRecipe.seeds``) the runs are::

    maskrcnn_align_s{seed}      the baseline: RoIAlign, per-class sigmoid masks
    maskrcnn_pool_s{seed}       RoIPool for the box and mask features
    maskrcnn_softmax_s{seed}    per-pixel softmax across the classes      (ablation_seeds only)
    maskrcnn_agnostic_s{seed}   one class-agnostic sigmoid mask           (ablation_seeds only)

all with the same data order, schedule and number of steps (equal compute), each from its own
seeded random initialisation (the same initialisation across variants of one seed, where the
parameters coincide). The small backbone trains from scratch; no ImageNet weights exist here.

Each run is deterministic for a fixed thread count and resumable (``<name>.partial.pt`` every
``checkpoint_every`` steps). Its finished file ``<out>/mask_rcnn/<name>.pt`` holds the history, the
box and mask AP on the whole val set computed with the float16 weights it stores (the float32
scores beside them), and, for the runs listed in ``keep_weights_seeds``, the weights.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn
from torch.utils.data import Dataset, Subset

from .._checks import check_choice, check_int, describe
from .detection import (  # the detection helpers, importable from here as before
    AP_KEYS,
    box_and_mask_ap,
    check_recipe_schedule,
    collate_instances,
    detect_for_ap,
    detection_trainer,
    evaluate_mask_rcnn,
    flat_scores,
    hflip_instances,
    predict,
)
from .runner import Chapter, run_all

__all__ = [
    "MaskRCNNRecipe",
    "MaskRCNNRunSpec",
    "VARIANTS",
    "mask_rcnn_runs",
    "hflip_instances",
    "collate_instances",
    "predict",
    "evaluate_mask_rcnn",
    "detect_for_ap",
    "box_and_mask_ap",
    "detection_trainer",
    "CHAPTER",
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "run_all",
]

# variant -> the mask_rcnn() switches it sets (everything else is the baseline's).
VARIANTS: dict[str, dict] = {
    "align": dict(roi_op="align", mask_loss="sigmoid", class_agnostic_masks=False),
    "pool": dict(roi_op="pool", mask_loss="sigmoid", class_agnostic_masks=False),
    "softmax": dict(roi_op="align", mask_loss="softmax", class_agnostic_masks=False),
    "agnostic": dict(roi_op="align", mask_loss="sigmoid", class_agnostic_masks=True),
}


@dataclass(frozen=True)
class MaskRCNNRecipe:
    """Settings shared by all Mask R-CNN runs (the defaults are what ``make checkpoints`` trains).

    Attributes:
        backbone: ``"tiny_resnet_fpn"`` (default, trains from scratch) or ``"resnet50_fpn"``.
        num_classes: K, background included (shapes: 10).
        seeds: seeds of the RoIAlign baseline and of RoIPool (the paper's headline comparison).
            Two by default: the eight runs take about 1.5 hours on two CPU cores.
        variants: which of :data:`VARIANTS` to train.
        ablation_seeds: seeds of the other variants (softmax, class-agnostic), e.g. fewer than
            ``seeds`` to save time; None: the same as ``seeds``.
        batch_size: images per step.
        epochs: passes over the training images (every variant gets the same steps).
        lr, weight_decay: AdamW settings (the paper's SGD at 0.02 assumes ImageNet initialisation
            and batch 16; from scratch at batch 8 AdamW is the robust choice).
        warmup_steps: linear warmup, then cosine decay to ``min_lr_factor * lr`` at the last step.
        grad_clip: clip the gradient norm (early RPN losses can spike from a random init).
        flip: random horizontal flips.
        train_images, val_images: use only the first so many images (None: all).
        monitor_images: val images evaluated after each epoch, for the learning curves.
        keep_weights_seeds: seeds whose runs store their weights (the others: scores and history).
        checkpoint_every: optimizer steps between resumable checkpoints.
    """

    backbone: str = "tiny_resnet_fpn"
    num_classes: int = 10
    seeds: tuple[int, ...] = (0, 1)
    variants: tuple[str, ...] = ("align", "pool", "softmax", "agnostic")
    ablation_seeds: tuple[int, ...] | None = None
    batch_size: int = 8
    epochs: int = 6
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    min_lr_factor: float = 0.02
    grad_clip: float | None = 10.0
    flip: bool = True
    train_images: int | None = None
    val_images: int | None = None
    monitor_images: int = 100
    keep_weights_seeds: tuple[int, ...] = (0,)
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        fn = "MaskRCNNRecipe"
        check_recipe_schedule(fn, self)
        if self.ablation_seeds is not None:
            object.__setattr__(self, "ablation_seeds", tuple(self.ablation_seeds))
        for seed in (*self.seeds, *self.keep_weights_seeds, *(self.ablation_seeds or ())):
            check_int(fn, "seeds[i]", seed, minimum=0)
        if not self.variants:
            raise ValueError(f"{fn}: variants must name at least one of {sorted(VARIANTS)}, got {self.variants!r}")
        for variant in self.variants:
            check_choice(fn, "variants[i]", variant, tuple(VARIANTS))
        object.__setattr__(self, "seeds", tuple(self.seeds))
        object.__setattr__(self, "variants", tuple(self.variants))
        object.__setattr__(self, "keep_weights_seeds", tuple(self.keep_weights_seeds))


@dataclass(frozen=True)
class MaskRCNNRunSpec:
    """One training run: ``name`` (file stem), ``variant`` (a key of :data:`VARIANTS`), ``seed``,
    ``keep_weights`` (store the weights in the finished file). ``parent`` is always None (every
    run starts from a random initialisation); it is there for :func:`run_all`."""

    name: str
    variant: str
    seed: int
    keep_weights: bool = True
    parent: str | None = None


def mask_rcnn_runs(recipe: MaskRCNNRecipe | None = None) -> list[MaskRCNNRunSpec]:
    """The runs of the Mask R-CNN chapter, seed by seed: RoIAlign and RoIPool for every seed in
    ``seeds``, the other variants for every seed in ``ablation_seeds``.

    Returns:
        list of MaskRCNNRunSpec named ``maskrcnn_{variant}_s{seed}``.
    """
    recipe = MaskRCNNRecipe() if recipe is None else recipe
    if not isinstance(recipe, MaskRCNNRecipe):
        raise TypeError(f"mask_rcnn_runs: recipe must be a MaskRCNNRecipe, got {describe(recipe)}")
    ablation_seeds = recipe.seeds if recipe.ablation_seeds is None else recipe.ablation_seeds
    seeds = sorted(set(recipe.seeds) | set(ablation_seeds), key=lambda s: (s not in recipe.seeds, s))
    return [
        MaskRCNNRunSpec(f"maskrcnn_{variant}_s{seed}", variant, seed, keep_weights=seed in recipe.keep_weights_seeds)
        for seed in seeds
        for variant in recipe.variants
        if seed in (recipe.seeds if variant in ("align", "pool") else ablation_seeds)
    ]


# ----------------------------------------------------------------------------------------------
# The chapter: data, model, trainer, scores


def _load_data(spec: MaskRCNNRunSpec, recipe: MaskRCNNRecipe, data_root) -> tuple[Dataset, Dataset]:
    from ..data import ShapesInstances

    train = ShapesInstances(data_root, "train", transforms=hflip_instances if recipe.flip else None)
    val = ShapesInstances(data_root, "val")
    if recipe.train_images is not None:
        train = Subset(train, range(min(recipe.train_images, len(train))))
    if recipe.val_images is not None:
        val = Subset(val, range(min(recipe.val_images, len(val))))
    return train, val


def _model(variant: str, num_classes: int, backbone: str) -> nn.Module:
    from ..models import mask_rcnn

    return mask_rcnn(num_classes, backbone, **VARIANTS[variant])


def _build(spec: MaskRCNNRunSpec, recipe: MaskRCNNRecipe, parent) -> nn.Module:
    return _model(spec.variant, recipe.num_classes, recipe.backbone)


def _rebuild(meta: dict) -> nn.Module:
    return _model(meta["spec"]["variant"], meta["recipe"]["num_classes"], meta["recipe"]["backbone"])


def _trainer(model, train_set, val_set, spec, recipe, *, checkpoint_path, device, progress):
    monitor = Subset(val_set, range(min(recipe.monitor_images, len(val_set))))
    return detection_trainer(model, train_set, recipe, spec, checkpoint_path,
                             lambda m: flat_scores(evaluate_mask_rcnn(m, monitor)), device=device, progress=progress)


def _evaluate(model: nn.Module, val_set: Dataset, recipe: MaskRCNNRecipe) -> dict:
    return evaluate_mask_rcnn(model, val_set)


CHAPTER = Chapter(
    name="mask_rcnn", recipe=MaskRCNNRecipe, spec=MaskRCNNRunSpec, runs=mask_rcnn_runs, build=_build,
    rebuild=_rebuild, data=_load_data, trainer=_trainer, evaluate=_evaluate,
)
run_path, is_done, load_run, load_run_model = CHAPTER.run_path, CHAPTER.is_done, CHAPTER.load_run, CHAPTER.load_run_model
_partial_path = CHAPTER.partial_path
