"""The "Learning to Segment Every Thing" chapter's experiments: masks for box-only classes.

Hu et al. (CVPR 2018) split the classes into a group A with masks and a group B with boxes only,
train on both, and measure mask AP on B. We follow their protocol on the shapes data set with
handles (:func:`segnotes.data.render`, ``handles=True``), whose group A and B are
:data:`segnotes.data.GROUPS`. A handle's box is the object's, but whether the handle belongs to
the mask depends on the category (:data:`segnotes.data.HANDLE_IN_MASK`), so a head that does not
know the class cannot be right for every class. The runs, per seed (``LSERecipe.seeds``)::

    lse_oracle_s{seed}              Mask R-CNN, class-specific masks for every class (the upper bound)
    lse_agnostic_{dir}_s{seed}      class-agnostic FCN mask head + fused MLP (the paper's baseline)
    lse_transfer_{dir}_s{seed}      Mask^X R-CNN: cls+box -> 2-layer LeakyReLU transfer, fused MLP,
                                    stop-gradient, end-to-end

for both directions ``dir``: ``a2b`` (masks from A, evaluated on B) and ``b2a``. The ablations of
the paper's Table 1 train once, on the first seed, in the direction ``a2b``::

    lse_transfer_cls_a2b_s0 / _box_   transfer input: class or box weights only
    lse_transfer_linear_a2b_s0        a linear transfer function
    lse_transfer_fcn_a2b_s0           transfer without the fused MLP
    lse_agnostic_fcn_a2b_s0           class-agnostic head without the fused MLP (not by default)
    lse_transfer_stagewise_a2b_s0     stage-wise: box detector first, then the frozen detector's
                                      mask head and transfer function (half the steps each)

A third split asks whether the transfer function needs more mask classes than a group's 4-5:
masks from 7 classes, withheld for the look-alike pair :data:`HOLDOUT` (square and frame, whose
handle rules differ and each match a mask class's: triangle's and ring's)::

    lse_agnostic_holdout_s0 / lse_transfer_holdout_s0

Every run has the same data order, schedule and number of steps (equal compute). The oracle is
direction-free: one run scores both groups. Each run is deterministic for a fixed thread count and
resumable; its finished file ``<out>/lse/<name>.pt`` holds the history and the scores of
:func:`evaluate_lse` on the whole val set (with the float16 weights it stores), and, for the runs of
``keep_weights_seeds`` in ``keep_weights_directions``, the weights.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import check_choice, check_int, describe
from ..engine import Trainer, detection_step
from ..metrics.coco import decode_segmentation
from ..utils import model_device
from .detection import (
    box_and_mask_ap,
    check_recipe_schedule,
    coco_of,
    collate_instances,
    detect_for_ap,
    detection_trainer,
    flat_scores,
    hflip_instances,
)
from .runner import Chapter, run_all

__all__ = [
    "LSERecipe",
    "LSERunSpec",
    "VARIANTS",
    "DIRECTIONS",
    "HOLDOUT",
    "mask_split",
    "lse_runs",
    "masks_given_boxes",
    "evaluate_lse",
    "handles_root",
    "build_model",
    "CHAPTER",
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "run_all",
]

# direction -> (group with masks at training time, group whose masks are withheld and evaluated)
DIRECTIONS = {"a2b": ("A", "B"), "b2a": ("B", "A")}
# The "holdout" split withholds only these masks: square (handle not in its mask, as the triangle's)
# and frame (handle in its mask, as the ring's), a look-alike pair with opposite rules.
HOLDOUT = (3, 4)
SPLITS = (*DIRECTIONS, "holdout")
HOLDOUT_VARIANTS = ("agnostic", "transfer")

# variant -> how to build it: "oracle" is Mask R-CNN; the others are maskx_rcnn() switches
VARIANTS: dict[str, dict] = {
    "oracle": {},
    "agnostic": dict(class_agnostic=True, fused_mlp=True),
    "transfer": dict(transfer_input="cls+box", transfer_layers=2, fused_mlp=True),
    "transfer_cls": dict(transfer_input="cls", transfer_layers=2, fused_mlp=True),
    "transfer_box": dict(transfer_input="box", transfer_layers=2, fused_mlp=True),
    "transfer_linear": dict(transfer_input="cls+box", transfer_layers=1, fused_mlp=True),
    "transfer_fcn": dict(transfer_input="cls+box", transfer_layers=2, fused_mlp=False),
    "agnostic_fcn": dict(class_agnostic=True, fused_mlp=False),
    "transfer_stagewise": dict(transfer_input="cls+box", transfer_layers=2, fused_mlp=True),
}
MAIN_VARIANTS = ("oracle", "agnostic", "transfer")
ABLATIONS = ("transfer_cls", "transfer_box", "transfer_linear", "transfer_fcn", "agnostic_fcn", "transfer_stagewise")
# trained by default: all but the baseline without MLP (the MLP's effect is measured on transfer)
DEFAULT_ABLATIONS = ("transfer_cls", "transfer_box", "transfer_linear", "transfer_fcn", "transfer_stagewise")


@dataclass(frozen=True)
class LSERecipe:
    """Settings shared by all LSE runs (the defaults are what ``make checkpoints`` trains).

    Attributes:
        num_classes: K, background included (shapes: 10).
        seeds: seeds of the main comparison (oracle, agnostic, transfer in both directions).
        ablations: which of the ablation variants (:data:`ABLATIONS`) to train (first seed,
            direction ``a2b``); by default all but ``agnostic_fcn``.
        batch_size, epochs, lr, weight_decay, warmup_steps, min_lr_factor, grad_clip, flip: as
            the Mask R-CNN chapter's recipe (AdamW, warmup then cosine decay, from scratch).
        train_images, val_images: use only the first so many images (None: all).
        monitor_images: val images evaluated after each epoch, for the learning curves.
        keep_weights_seeds, keep_weights_directions: which main runs store their weights (the
            oracle keeps them with any direction listed).
        holdout_variants: variants trained on the ``"holdout"`` split (first seed); () for none.
        checkpoint_every: optimizer steps between resumable checkpoints.
    """

    num_classes: int = 10
    seeds: tuple[int, ...] = (0, 1)
    ablations: tuple[str, ...] = DEFAULT_ABLATIONS
    batch_size: int = 8
    epochs: int = 4
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
    keep_weights_directions: tuple[str, ...] = ("a2b",)
    holdout_variants: tuple[str, ...] = HOLDOUT_VARIANTS
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        fn = "LSERecipe"
        check_recipe_schedule(fn, self)
        for seed in (*self.seeds, *self.keep_weights_seeds):
            check_int(fn, "seeds[i]", seed, minimum=0)
        for variant in self.ablations:
            check_choice(fn, "ablations[i]", variant, ABLATIONS)
        for direction in self.keep_weights_directions:
            check_choice(fn, "keep_weights_directions[i]", direction, tuple(DIRECTIONS))
        for variant in self.holdout_variants:
            check_choice(fn, "holdout_variants[i]", variant, HOLDOUT_VARIANTS)
        for name in ("seeds", "ablations", "keep_weights_seeds", "keep_weights_directions", "holdout_variants"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


@dataclass(frozen=True)
class LSERunSpec:
    """One training run: ``name``, ``variant`` (a key of :data:`VARIANTS`), ``direction`` (a key
    of :data:`DIRECTIONS`, None for the oracle), ``seed``, ``keep_weights``. ``parent`` is always
    None (every run starts from a random initialisation); it is there for :func:`run_all`."""

    name: str
    variant: str
    direction: str | None
    seed: int
    keep_weights: bool = True
    parent: str | None = None


def lse_runs(recipe: LSERecipe | None = None) -> list[LSERunSpec]:
    """The runs of the LSE chapter: per seed agnostic and transfer in ``a2b``, the oracle, the same
    pair in ``b2a``; then the ablations (first seed, ``a2b``).

    Returns:
        list of LSERunSpec named ``lse_oracle_s{seed}`` and ``lse_{variant}_{direction}_s{seed}``,
        then ``lse_{variant}_holdout_s{seed}`` for the ``holdout_variants`` (first seed).
    """
    recipe = LSERecipe() if recipe is None else recipe
    if not isinstance(recipe, LSERecipe):
        raise TypeError(f"lse_runs: recipe must be an LSERecipe, got {describe(recipe)}")

    def keep(seed, direction):
        return seed in recipe.keep_weights_seeds and (direction is None or direction in recipe.keep_weights_directions)

    runs = []
    for seed in recipe.seeds:
        for direction in DIRECTIONS:
            for variant in ("agnostic", "transfer"):
                runs.append(
                    LSERunSpec(f"lse_{variant}_{direction}_s{seed}", variant, direction, seed, keep(seed, direction))
                )
        runs.insert(-2, LSERunSpec(f"lse_oracle_s{seed}", "oracle", None, seed, keep(seed, None)))
    seed = recipe.seeds[0]
    runs += [LSERunSpec(f"lse_{v}_a2b_s{seed}", v, "a2b", seed, keep_weights=False) for v in recipe.ablations]
    runs += [LSERunSpec(f"lse_{v}_holdout_s{seed}", v, "holdout", seed, keep_weights=False) for v in recipe.holdout_variants]
    return runs


# ----------------------------------------------------------------------------------------------
# Data


def handles_root() -> Path:
    """Default folder of the shapes data set with handles: ``shapes_handles`` beside the default one."""
    from ..data import default_root, variant_folder

    return default_root().with_name(variant_folder(handles=True))


def mask_split(direction: str) -> tuple[tuple[int, ...], str | tuple[int, ...]]:
    """Which classes have masks at training time, and whose masks are withheld.

    Args:
        direction (str): ``"a2b"``, ``"b2a"`` (:data:`DIRECTIONS`) or ``"holdout"``.

    Returns:
        (mask class ids, withheld): ``withheld`` is the group name (``"A"`` / ``"B"``) for a
        direction and the ids :data:`HOLDOUT` for ``"holdout"``, as ``ShapesInstances(partial=...)`` takes them.
    """
    from ..data import CATEGORIES, GROUPS

    check_choice("mask_split", "direction", direction, SPLITS)
    if direction == "holdout":
        return tuple(c["id"] for c in CATEGORIES if c["id"] not in HOLDOUT), HOLDOUT
    masked, withheld = DIRECTIONS[direction]
    return GROUPS[masked], withheld


def _load_data(spec: LSERunSpec, recipe: LSERecipe, data_root) -> tuple[Dataset, Dataset]:
    from ..data import ShapesInstances

    root = handles_root() if data_root is None else data_root
    withheld = None if spec.direction is None else mask_split(spec.direction)[1]
    train = ShapesInstances(root, "train", partial=withheld, transforms=hflip_instances if recipe.flip else None)
    val = ShapesInstances(root, "val")
    if recipe.train_images is not None:
        train = Subset(train, range(min(recipe.train_images, len(train))))
    if recipe.val_images is not None:
        val = Subset(val, range(min(recipe.val_images, len(val))))
    return train, val


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def masks_given_boxes(model: nn.Module, images: Sequence[Tensor], boxes: Sequence[Tensor], labels: Sequence[Tensor]):
    """The mask branch's masks for given boxes and classes (no detection involved).

    Isolates the mask head from the detector: the question "given the right box and class, how
    good is the mask?" is what a transfer function can change.

    Args:
        model: a :class:`~segnotes.models.MaskRCNN` or :class:`~segnotes.models.MaskXRCNN` (its
            transform must not resize, as for the tiny models at 128 px).
        images (list of Tensor[3, H, W]): RGB in [0, 1].
        boxes (list of Tensor[N_i, 4], float): ``x1 y1 x2 y2`` per image.
        labels (list of Tensor[N_i], int64): classes per image.

    Returns:
        list of Tensor[N_i, H, W] (float): mask probabilities pasted into each image.
    """
    from torchvision.models.detection.roi_heads import paste_masks_in_image

    from ..models import mask_probabilities

    was_training = model.training
    model.eval()
    try:
        device = model_device(model)
        image_list, _ = model.transform([im.to(device) for im in images])
        if [tuple(im.shape[-2:]) for im in images] != [tuple(s) for s in image_list.image_sizes]:
            raise ValueError("masks_given_boxes: the model's transform resizes the images; use min_size = max_size = the image size")
        features = model.backbone(image_list.tensors)
        heads = model.roi_heads
        boxes = [b.to(device, torch.float32) for b in boxes]
        labels = [lab.to(device) for lab in labels]
        logits = heads._mask_logits(features, boxes, image_list.image_sizes)
        probs = mask_probabilities(logits, labels, loss=heads.mask_loss, class_agnostic=heads.class_agnostic)
        return [
            paste_masks_in_image(p, b, tuple(im.shape[-2:]))[:, 0].cpu() if len(b) else torch.zeros(0, *im.shape[-2:])
            for p, b, im in zip(probs, boxes, images)
        ]
    finally:
        model.train(was_training)


def _given_box_scores(model: nn.Module, dataset: Dataset, coco, batch_size: int = 16) -> dict:
    """Per category: mean mask IoU given the true box and class, and how much of the handle is mask.

    Returns:
        dict: category id -> {"iou": mean IoU, "handle_kept": mean fraction of the visible handle
        pixels predicted as mask (instances with a visible handle), "instances": count}.
    """
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_instances)
    ious, kept = {}, {}
    for images, targets in loader:
        boxes = [t["boxes"] for t in targets]
        labels = [t["labels"] for t in targets]
        probs = masks_given_boxes(model, images, boxes, labels)
        for target, prob in zip(targets, probs):
            pred = prob >= 0.5
            gt = target["masks"].bool()
            inter = (pred & gt).flatten(1).sum(1).double()
            union = (pred | gt).flatten(1).sum(1).double()
            for k, (label, ann_id) in enumerate(zip(target["labels"].tolist(), target["ann_ids"].tolist())):
                ious.setdefault(label, []).append(float(inter[k] / union[k].clamp(min=1)))
                handle_rle = coco.anns[ann_id].get("handle")
                if handle_rle is None:
                    continue
                handle = torch.from_numpy(decode_segmentation(handle_rle, *handle_rle["size"]))
                if handle.any():
                    kept.setdefault(label, []).append(float((pred[k] & handle).sum() / handle.sum()))
    return {
        c: {"iou": float(np.mean(v)), "handle_kept": float(np.mean(kept[c])) if c in kept else float("nan"),
            "instances": len(v)}
        for c, v in sorted(ious.items())
    }


def _group_ap(ground_truth: dict, detections: list[dict], category_ids, area_ranges) -> dict:
    """Box and mask AP over the categories ``category_ids`` only (COCO's mean over those)."""
    wanted = set(category_ids)
    gt = dict(ground_truth)
    gt["categories"] = [c for c in ground_truth["categories"] if c["id"] in wanted]
    gt["annotations"] = [a for a in ground_truth["annotations"] if a["category_id"] in wanted]
    return box_and_mask_ap(gt, [d for d in detections if d["category_id"] in wanted], area_ranges)


def evaluate_lse(model: nn.Module, dataset: Dataset, *, batch_size: int = 8, given_box: bool = True,
                 groups: dict | None = None) -> dict:
    """Box and mask AP per category group, and the given-box mask diagnostics.

    Args:
        model: a Mask R-CNN or Mask^X R-CNN.
        dataset: the shapes-with-handles val set (a ``ShapesInstances`` or a Subset of one).
        batch_size (int): images per forward pass.
        given_box (bool): also compute :func:`masks_given_boxes` scores per category.
        groups (dict): group name -> category ids to score (default :data:`segnotes.data.GROUPS`).

    Returns:
        dict: ``{"A": {"bbox": {AP, ...}, "segm": {...}}, "B": {...}, "all": {...}}`` (one entry per
        group) and, with ``given_box``, ``"given_box"``: category id -> {"iou", "handle_kept", "instances"}.
    """
    from ..data import GROUPS

    groups = GROUPS if groups is None else groups
    gathered = detect_for_ap(model, dataset, batch_size=batch_size)
    if gathered is None:  # under torchrun, on the processes other than rank 0
        return None
    ground_truth, detections, ranges = gathered
    all_ids = [c["id"] for c in ground_truth["categories"]]
    scores = {name: _group_ap(ground_truth, detections, ids, ranges) for name, ids in groups.items()}
    scores["all"] = _group_ap(ground_truth, detections, all_ids, ranges)
    if given_box:
        scores["given_box"] = _given_box_scores(model, dataset, coco_of(dataset))
    return scores


def _monitor_scores(model: nn.Module, dataset: Dataset, groups: dict | None = None) -> dict:
    """Flat per-epoch scores for the learning curves: mask AP of each group (default A and B)."""
    scores = evaluate_lse(model, dataset, given_box=False, groups=groups)
    if scores is None:
        return None
    names = ("A", "B") if groups is None else tuple(groups)
    return {f"{group}_{k}": v for group in names for k, v in flat_scores(scores[group]).items() if k.endswith("AP")}


# ----------------------------------------------------------------------------------------------
# The chapter: model, trainer, scores


def build_model(variant: str, direction: str | None, num_classes: int = 10) -> nn.Module:
    """The untrained model of a run: Mask R-CNN for the oracle, else Mask^X R-CNN whose
    ``mask_classes`` are the direction's mask classes (:func:`mask_split`)."""
    from ..models import mask_rcnn, maskx_rcnn

    check_choice("build_model", "variant", variant, tuple(VARIANTS))
    if variant == "oracle":
        return mask_rcnn(num_classes)
    check_choice("build_model", "direction", direction, SPLITS)
    return maskx_rcnn(num_classes, mask_split(direction)[0], **VARIANTS[variant])


def _build(spec: LSERunSpec, recipe: LSERecipe, parent) -> nn.Module:
    return build_model(spec.variant, spec.direction, recipe.num_classes)


def _rebuild(meta: dict) -> nn.Module:
    spec, recipe = meta["spec"], meta["recipe"]
    return build_model(spec["variant"], spec["direction"], recipe["num_classes"])


def _stagewise_step(model: nn.Module, batch, *, trainer: Trainer, switch_step: int):
    """Stage-wise training in one schedule: the detector alone, then the mask branch on it, frozen."""
    stage = "detector" if trainer.step < switch_step else "mask"
    if model.stage != stage:
        model.set_stage(stage)
    return detection_step(model, batch)


def _trainer(model, train_set, val_set, spec, recipe, *, checkpoint_path, device, progress) -> Trainer:
    monitor = Subset(val_set, range(min(recipe.monitor_images, len(val_set))))
    trainer = detection_trainer(
        model, train_set, recipe, spec, checkpoint_path, functools.partial(_monitor_scores, dataset=monitor),
        device=device, progress=progress,
    )
    if spec.variant == "transfer_stagewise":
        total = recipe.epochs * trainer.steps_per_epoch
        trainer.step_fn = functools.partial(_stagewise_step, trainer=trainer, switch_step=total // 2)
    return trainer


def _evaluate(model: nn.Module, val_set: Dataset, recipe: LSERecipe) -> dict:
    if hasattr(model, "set_stage"):  # a stage-wise run is scored as the joint model it ends as
        model.set_stage("joint")
    return evaluate_lse(model, val_set)


CHAPTER = Chapter(
    name="lse", recipe=LSERecipe, spec=LSERunSpec, runs=lse_runs, build=_build, rebuild=_rebuild, data=_load_data,
    trainer=_trainer, evaluate=_evaluate, data_set="shapes_handles",
)
run_path, is_done, load_run, load_run_model = CHAPTER.run_path, CHAPTER.is_done, CHAPTER.load_run, CHAPTER.load_run_model
_partial_path = CHAPTER.partial_path
