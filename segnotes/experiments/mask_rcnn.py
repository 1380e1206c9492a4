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

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import check_choice, check_int, check_positive, check_range, describe
from ..engine import TrainConfig, Trainer, detection_step
from ..metrics import average_precision, detections_from_predictions
from ..utils import model_device
from .runner import RunFiles, finish_run, run_all

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
    "run_path",
    "is_done",
    "load_run",
    "load_run_model",
    "train_run",
    "run_all",
]

# variant -> the mask_rcnn() switches it sets (everything else is the baseline's).
VARIANTS: dict[str, dict] = {
    "align": dict(roi_op="align", mask_loss="sigmoid", class_agnostic_masks=False),
    "pool": dict(roi_op="pool", mask_loss="sigmoid", class_agnostic_masks=False),
    "softmax": dict(roi_op="align", mask_loss="softmax", class_agnostic_masks=False),
    "agnostic": dict(roi_op="align", mask_loss="sigmoid", class_agnostic_masks=True),
}
AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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
        for name in ("num_classes", "batch_size", "epochs", "monitor_images", "checkpoint_every"):
            check_int(fn, name, getattr(self, name), minimum=1)
        check_int(fn, "warmup_steps", self.warmup_steps, minimum=0)
        check_positive(fn, "lr", self.lr)
        check_positive(fn, "weight_decay", self.weight_decay, allow_zero=True)
        check_range(fn, "min_lr_factor", self.min_lr_factor, 0, 1)
        if self.grad_clip is not None:
            check_positive(fn, "grad_clip", self.grad_clip)
        if not self.seeds:
            raise ValueError(f"{fn}: seeds must hold at least one seed, got {self.seeds!r}")
        if self.ablation_seeds is not None:
            object.__setattr__(self, "ablation_seeds", tuple(self.ablation_seeds))
        for seed in (*self.seeds, *self.keep_weights_seeds, *(self.ablation_seeds or ())):
            check_int(fn, "seeds[i]", seed, minimum=0)
        if not self.variants:
            raise ValueError(f"{fn}: variants must name at least one of {sorted(VARIANTS)}, got {self.variants!r}")
        for variant in self.variants:
            check_choice(fn, "variants[i]", variant, tuple(VARIANTS))
        for name in ("train_images", "val_images"):
            if getattr(self, name) is not None:
                check_int(fn, name, getattr(self, name), minimum=1)
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
# Data


def hflip_instances(image: Tensor, target: dict) -> tuple[Tensor, dict]:
    """Mirror an instance-segmentation sample left-right with probability 1/2.

    Draws from the global torch generator (which :class:`~segnotes.engine.Trainer` seeds and
    restores), so the flips are part of a run's reproducible randomness.

    Args:
        image (Tensor[3, H, W]): the image.
        target (dict): ``boxes`` (Tensor[N, 4], x1 y1 x2 y2), ``masks`` (Tensor[N, H, W]) and
            anything else (copied unchanged).

    Returns:
        (image, target), flipped or as given.
    """
    if torch.rand(()) >= 0.5:
        return image, target
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]  # x1' = W - x2, x2' = W - x1
    target["boxes"] = boxes
    target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


def collate_instances(batch: Sequence) -> tuple[list[Tensor], list[dict]]:
    """Keep images and targets as lists (they may differ in size and instance count)."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def _load_data(recipe: MaskRCNNRecipe, data_root) -> tuple[Dataset, Dataset]:
    from ..data import ShapesInstances

    train = ShapesInstances(data_root, "train", transforms=hflip_instances if recipe.flip else None)
    val = ShapesInstances(data_root, "val")
    if recipe.train_images is not None:
        train = Subset(train, range(min(recipe.train_images, len(train))))
    if recipe.val_images is not None:
        val = Subset(val, range(min(recipe.val_images, len(val))))
    return train, val


def _coco_of(dataset: Dataset):
    """The COCO object behind a ShapesInstances / CocoInstances (or a Subset of one)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    coco = getattr(dataset, "coco", None)
    if coco is None:
        raise TypeError(f"evaluate_mask_rcnn: dataset must be a CocoInstances (or a Subset of one), got {describe(dataset)}")
    return coco


# ----------------------------------------------------------------------------------------------
# Evaluation


@torch.no_grad()
def predict(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, device: torch.device | str | None = None
) -> tuple[list[dict], list[int]]:
    """Run a detection model over a data set in order.

    Args:
        model (nn.Module): torchvision-style detector; eval mode is set for the call and restored.
        dataset (Dataset): ``(image, target)`` with ``target["image_id"]``.
        batch_size (int): images per forward pass.
        device: where to run (default: the model's device).

    Returns:
        (predictions: one dict per image with ``boxes``, ``labels``, ``scores``, ``masks``
        (Tensor[D, 1, H, W] float) on the CPU, image_ids: list of int).
    """
    check_int("predict", "batch_size", batch_size, minimum=1)
    device = model_device(model) if device is None else torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_instances)
    was_training = model.training
    model.eval()
    predictions, image_ids = [], []
    try:
        for images, targets in loader:
            outputs = model([image.to(device) for image in images])
            predictions += [{k: v.cpu() for k, v in out.items()} for out in outputs]
            image_ids += [int(t["image_id"]) for t in targets]
    finally:
        model.train(was_training)
    return predictions, image_ids


def evaluate_mask_rcnn(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, device: torch.device | str | None = None,
    area_ranges: dict | None = None,
) -> dict:
    """COCO box and mask AP of a detector on a COCO-layout data set (or a Subset of one).

    AP is :func:`segnotes.metrics.average_precision` (equal to pycocotools' COCOeval), restricted
    to the images of ``dataset``; the small/medium/large ranges default to COCO's scaled to
    the shapes images (:func:`segnotes.data.area_ranges`).

    Returns:
        dict: ``{"bbox": {AP, AP50, AP75, APs, APm, APl}, "segm": {...}}`` (floats in [0, 1]).
    """
    ground_truth, detections, default_ranges = detect_for_ap(model, dataset, batch_size=batch_size, device=device)
    return box_and_mask_ap(ground_truth, detections, default_ranges if area_ranges is None else area_ranges)


def detect_for_ap(model: nn.Module, dataset: Dataset, *, batch_size: int = 8, device=None) -> tuple[dict, list, dict]:
    """Run ``model`` over ``dataset`` and gather what COCO AP needs (this chapter's and the LSE chapter's).

    Returns:
        (ground_truth: the COCO dict restricted to the images of ``dataset``, detections: COCO
        results, area_ranges: COCO's small/medium/large scaled to the images,
        :func:`segnotes.data.area_ranges`).
    """
    from ..data import area_ranges as shapes_area_ranges

    coco = _coco_of(dataset)
    predictions, image_ids = predict(model, dataset, batch_size=batch_size, device=device)
    detections = detections_from_predictions(predictions, image_ids)
    ground_truth = dict(coco.dataset)
    ground_truth["images"] = [coco.imgs[i] for i in image_ids]
    ground_truth["annotations"] = [a for i in image_ids for a in coco.imgToAnns.get(i, [])]
    side = max(coco.imgs[image_ids[0]]["height"], coco.imgs[image_ids[0]]["width"]) if image_ids else 128
    return ground_truth, detections, shapes_area_ranges(side)


def box_and_mask_ap(ground_truth: dict, detections: Sequence[dict], area_ranges: dict) -> dict:
    """``{"bbox": {AP, AP50, AP75, APs, APm, APl}, "segm": {...}}`` (floats) of ``detections``."""
    scores = {}
    for iou_type in ("bbox", "segm"):
        result = average_precision(ground_truth, detections, iou_type=iou_type, area_ranges=area_ranges)
        scores[iou_type] = {k: float(result[k]) for k in AP_KEYS}
    return scores


# ----------------------------------------------------------------------------------------------
# Files


_FILES = RunFiles("mask_rcnn")
run_path, is_done, load_run, _partial_path = _FILES.run_path, _FILES.is_done, _FILES.load_run, _FILES.partial_path


def _build_model(variant: str, num_classes: int, backbone: str) -> nn.Module:
    from ..models import mask_rcnn

    return mask_rcnn(num_classes, backbone, **VARIANTS[variant])


def load_run_model(out: str | Path, name: str, device: torch.device | str = "cpu") -> nn.Module:
    """The trained model of a finished run, in eval mode.

    Raises:
        ValueError: the run was saved without weights (only ``keep_weights_seeds`` keep them).
    """
    state = load_run(out, name)
    if state["model"] is None:
        raise ValueError(f"load_run_model: run {name!r} was saved without weights (keep_weights=False)")
    meta = state["meta"]
    model = _build_model(meta["spec"]["variant"], meta["recipe"]["num_classes"], meta["recipe"]["backbone"])
    model.load_state_dict(state["model"])
    return model.to(device).eval()


# ----------------------------------------------------------------------------------------------
# Training


def train_run(
    spec: MaskRCNNRunSpec,
    recipe: MaskRCNNRecipe,
    out: str | Path,
    *,
    data_root=None,
    data: tuple[Dataset, Dataset] | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    stop_at_step: int | None = None,
) -> dict | None:
    """Train one run (or resume it, or skip it when finished) and write its checkpoint.

    Args:
        spec (MaskRCNNRunSpec): the run.
        recipe (MaskRCNNRecipe): shared settings.
        out: checkpoint root; files go to ``<out>/mask_rcnn/``.
        data_root: the shapes data set's folder (default :func:`segnotes.data.default_root`).
        data: ``(train, val)`` data sets instead of loading the shapes set (tests).
        device: where to train.
        progress (bool): tqdm bars.
        stop_at_step (int): interrupt after this many steps (tests); the partial checkpoint stays.

    Returns:
        dict: the finished run's ``meta``; None when interrupted by ``stop_at_step``.
    """
    fn = "train_run"
    if not isinstance(spec, MaskRCNNRunSpec):
        raise TypeError(f"{fn}: spec must be a MaskRCNNRunSpec, got {describe(spec)}")
    if not isinstance(recipe, MaskRCNNRecipe):
        raise TypeError(f"{fn}: recipe must be a MaskRCNNRecipe, got {describe(recipe)}")
    if is_done(out, spec.name):
        return load_run(out, spec.name)["meta"]
    train_set, val_set = data if data is not None else _load_data(recipe, data_root)
    # Seed the initialisation without touching the caller's global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        model = _build_model(spec.variant, recipe.num_classes, recipe.backbone)
    monitor = Subset(val_set, range(min(recipe.monitor_images, len(val_set))))
    trainer = detection_trainer(
        model, train_set, recipe, spec, _partial_path(out, spec.name), lambda m: _flat(evaluate_mask_rcnn(m, monitor)),
        device=device, progress=progress,
    )
    trainer.fit(resume=True, stop_at_step=stop_at_step)
    if trainer.epoch < trainer.config.epochs:
        return None
    return _finish(trainer, spec, recipe, out, val_set)


def detection_trainer(model, train_set, recipe, spec, checkpoint_path: Path, monitor, *, device="cpu",
                      progress: bool = False) -> Trainer:
    """The :class:`~segnotes.engine.Trainer` of one detection run (this chapter's and the LSE chapter's).

    AdamW at ``recipe.lr`` with a linear warmup and a cosine decay to ``recipe.min_lr_factor``, gradient
    clipping, no mixed precision (the runs must be reproducible on a CPU), ``monitor(model) -> dict``
    after every epoch, a resumable checkpoint every ``recipe.checkpoint_every`` steps; seeded by
    ``spec.seed`` and tagged with ``spec.name``.
    """
    config = TrainConfig(
        epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer="adamw", lr=recipe.lr,
        weight_decay=recipe.weight_decay, schedule="cosine", min_factor=recipe.min_lr_factor,
        warmup_steps=recipe.warmup_steps, grad_clip=recipe.grad_clip, amp=False, seed=spec.seed, num_workers=0,
        eval_every=1, checkpoint_every=recipe.checkpoint_every,
    )
    return Trainer(
        model, train_set, config, device=device, checkpoint_path=checkpoint_path, meta={"run": spec.name},
        step_fn=detection_step, collate_fn=collate_instances, progress=progress, eval_fn=monitor,
    )


def _flat(scores: dict) -> dict:
    """``{"bbox": {"AP": ..}, "segm": {..}}`` -> ``{"box_AP": .., "mask_AP": ..}`` for the history."""
    return {f"{'box' if kind == 'bbox' else 'mask'}_{k}": v for kind, d in scores.items() for k, v in d.items()}


def _finish(trainer: Trainer, spec: MaskRCNNRunSpec, recipe: MaskRCNNRecipe, out, val_set: Dataset) -> dict:
    """Score the float32 and the float16-stored weights on the whole val set; write ``<name>.pt``."""
    evaluate = functools.partial(evaluate_mask_rcnn, dataset=val_set)
    return finish_run(trainer, spec, recipe, run_path(out, spec.name), _partial_path(out, spec.name), evaluate)
