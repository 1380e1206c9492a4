"""Helpers every instance-segmentation experiment shares: the Mask R-CNN and LSE chapters' and
``segnotes train mask-rcnn``'s.

    hflip_instances, collate_instances     data: a random mirror, list batches
    predict, detect_for_ap                 run a detector over a data set (gathered under torchrun)
    evaluate_mask_rcnn, box_and_mask_ap    COCO box and mask AP
    detection_trainer, flat_scores         the Trainer of a detection run, and its history entries
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._checks import check_int, check_positive, check_range, describe
from ..engine import TrainConfig, Trainer, detection_step, distributed
from ..metrics import average_precision, detections_from_predictions
from ..utils import model_device

__all__ = [
    "AP_KEYS",
    "hflip_instances",
    "collate_instances",
    "coco_of",
    "predict",
    "detect_for_ap",
    "box_and_mask_ap",
    "evaluate_mask_rcnn",
    "detection_trainer",
    "flat_scores",
]

AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


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


def coco_of(dataset: Dataset, fn: str = "evaluate_mask_rcnn"):
    """The pycocotools COCO object behind a CocoInstances-like data set (or a Subset of one)."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    coco = getattr(dataset, "coco", None)
    if coco is None:
        raise TypeError(f"{fn}: dataset must be a CocoInstances (or a Subset of one), got {describe(dataset)}")
    return coco


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


def detect_for_ap(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, device=None,
    labels_to_ids: Callable[[list[dict]], list[dict]] | None = None,
) -> tuple[dict, list, dict] | None:
    """Run ``model`` over ``dataset`` and gather what COCO AP needs.

    Under torchrun each process runs its shard and rank 0 gathers the detections, in the order
    one process would have made them; the other processes get None.

    Args:
        labels_to_ids: turns the model's labels in the COCO results into the data set's
            category ids (default: they are the same, as for the shapes data).

    Returns:
        (ground_truth: the COCO dict restricted to the images of ``dataset``, detections: COCO
        results, area_ranges: COCO's small/medium/large scaled to the images,
        :func:`segnotes.data.area_ranges`), or None on the processes other than rank 0.
    """
    from ..data import area_ranges as shapes_area_ranges

    coco = coco_of(dataset)
    part = distributed.shard(dataset)
    predictions, image_ids = predict(model, part, batch_size=batch_size, device=device)
    per_image = [detections_from_predictions([p], [i]) for p, i in zip(predictions, image_ids)]
    gathered = distributed.gather_to_main(list(zip(image_ids, per_image)))
    if gathered is None:
        return None
    # Process r holds items r, r + N, ...: interleave back into the data set's order.
    ordered = []
    for k in range(max(len(items) for items in gathered)):
        ordered += [items[k] for items in gathered if k < len(items)]
    image_ids = [image_id for image_id, _ in ordered]
    detections = [d for _, image_detections in ordered for d in image_detections]
    if labels_to_ids is not None:
        detections = labels_to_ids(detections)
    ground_truth = dict(coco.dataset)
    ground_truth["images"] = [coco.imgs[i] for i in image_ids]
    ground_truth["annotations"] = [a for i in image_ids for a in coco.imgToAnns.get(i, [])]
    side = max(coco.imgs[image_ids[0]]["height"], coco.imgs[image_ids[0]]["width"]) if image_ids else 128
    return ground_truth, detections, shapes_area_ranges(side)


def box_and_mask_ap(ground_truth: dict, detections: Sequence[dict], area_ranges: dict | None) -> dict:
    """``{"bbox": {AP, AP50, AP75, APs, APm, APl}, "segm": {...}}`` (floats) of ``detections``.

    ``area_ranges`` None means COCO's own (32² and 96² pixels).
    """
    scores = {}
    for iou_type in ("bbox", "segm"):
        result = average_precision(ground_truth, detections, iou_type=iou_type, area_ranges=area_ranges)
        scores[iou_type] = {k: float(result[k]) for k in AP_KEYS}
    return scores


def evaluate_mask_rcnn(
    model: nn.Module, dataset: Dataset, *, batch_size: int = 8, device: torch.device | str | None = None,
    area_ranges: dict | None = None,
) -> dict | None:
    """COCO box and mask AP of a detector on a COCO-layout data set (or a Subset of one).

    AP is :func:`segnotes.metrics.average_precision` (equal to pycocotools' COCOeval), restricted
    to the images of ``dataset``; the small/medium/large ranges default to COCO's scaled to
    the shapes images (:func:`segnotes.data.area_ranges`).

    Returns:
        dict: ``{"bbox": {AP, AP50, AP75, APs, APm, APl}, "segm": {...}}`` (floats in [0, 1]);
        None under torchrun on the processes other than rank 0.
    """
    gathered = detect_for_ap(model, dataset, batch_size=batch_size, device=device)
    if gathered is None:
        return None
    ground_truth, detections, default_ranges = gathered
    return box_and_mask_ap(ground_truth, detections, default_ranges if area_ranges is None else area_ranges)


def flat_scores(scores: dict | None) -> dict | None:
    """``{"bbox": {"AP": ..}, "segm": {..}}`` -> ``{"box_AP": .., "mask_AP": ..}`` for the history."""
    if scores is None:
        return None
    return {f"{'box' if kind == 'bbox' else 'mask'}_{k}": v for kind, d in scores.items() for k, v in d.items()}


def check_recipe_schedule(fn: str, recipe) -> None:
    """Check the fields the detection chapters' recipes share (their ``__post_init__`` calls it).

    ``num_classes``, ``batch_size``, ``epochs``, ``monitor_images``, ``checkpoint_every`` >= 1;
    ``warmup_steps`` >= 0; ``lr`` > 0; ``weight_decay`` >= 0; ``min_lr_factor`` in [0, 1];
    ``grad_clip`` None or > 0; ``seeds`` not empty; ``train_images``, ``val_images`` None or >= 1.
    Each error names ``fn`` (the recipe) and the field.
    """
    for name in ("num_classes", "batch_size", "epochs", "monitor_images", "checkpoint_every"):
        check_int(fn, name, getattr(recipe, name), minimum=1)
    check_int(fn, "warmup_steps", recipe.warmup_steps, minimum=0)
    check_positive(fn, "lr", recipe.lr)
    check_positive(fn, "weight_decay", recipe.weight_decay, allow_zero=True)
    check_range(fn, "min_lr_factor", recipe.min_lr_factor, 0, 1)
    if recipe.grad_clip is not None:
        check_positive(fn, "grad_clip", recipe.grad_clip)
    if not recipe.seeds:
        raise ValueError(f"{fn}: seeds must hold at least one seed, got {recipe.seeds!r}")
    for name in ("train_images", "val_images"):
        if getattr(recipe, name) is not None:
            check_int(fn, name, getattr(recipe, name), minimum=1)


def detection_trainer(model, train_set, recipe, spec, checkpoint_path: Path, monitor, *, device="cpu",
                      progress: bool = False, **options) -> Trainer:
    """The :class:`~segnotes.engine.Trainer` of one detection run (the Mask R-CNN and LSE chapters').

    AdamW at ``recipe.lr`` with a linear warmup and a cosine decay to ``recipe.min_lr_factor``, gradient
    clipping, no mixed precision (the runs must be reproducible on a CPU), ``monitor(model) -> dict``
    after every epoch, a resumable checkpoint every ``recipe.checkpoint_every`` steps; seeded by
    ``spec.seed`` and tagged with ``spec.name``. ``options`` go to the Trainer.
    """
    config = TrainConfig(
        epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer="adamw", lr=recipe.lr,
        weight_decay=recipe.weight_decay, schedule="cosine", min_factor=recipe.min_lr_factor,
        warmup_steps=recipe.warmup_steps, grad_clip=recipe.grad_clip, amp=False, seed=spec.seed, num_workers=0,
        eval_every=1, checkpoint_every=recipe.checkpoint_every,
    )
    return Trainer(
        model, train_set, config, device=device, checkpoint_path=checkpoint_path, meta={"run": spec.name},
        step_fn=detection_step, collate_fn=collate_instances, progress=progress, eval_fn=monitor, **options,
    )
