"""The book's models on your own data: what ``segnotes train`` runs.

A COCO, VOC or shapes folder is one more "chapter" with a single run: its recipe is the
command's options (:class:`OwnDataRecipe`), its data the folder's train and val splits, its
builder one of the book's models. It trains through the same path as the chapters
(:func:`~segnotes.experiments.train_run`), with these differences:

* the run's files live in the output folder itself: ``model.pt`` when finished (float32
  weights, the options, the category mapping and the val scores), ``model.partial.pt`` while it
  trains; the command line adds ``config.json``, ``metrics.json`` (the val scores after each
  epoch, rewritten by rank 0 after each) and ``train.log``;
* category ids (COCO's 1..90 with gaps, VOC's class indices) are mapped to contiguous labels
  1..K-1 (0 is the background) and back; the mapping, ``categories``, is part of the recipe and
  so stored with the checkpoint;
* images go through :mod:`segnotes.data.transforms` (resize, flips, scale jitter and crop for
  FCN, the backbone's normalisation); Mask R-CNN resizes inside the model;
* under torchrun the data order is a ``DistributedSampler``'s (in one process too, so one process
  with batch N * B takes the steps of N processes with batch B).
"""
from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .._checks import check_choice, check_int, check_positive
from ..engine import TrainConfig, Trainer, detection_step, distributed, semantic_step
from .detection import box_and_mask_ap, collate_instances, detect_for_ap, flat_scores
from .fcn import evaluate_fcn
from .runner import Chapter

__all__ = [
    "MODELS",
    "FORMATS",
    "BACKBONES",
    "OwnDataRecipe",
    "OwnDataRun",
    "parse_data",
    "find_categories",
    "open_split",
    "open_splits",
    "check_split_categories",
    "check_files",
    "evaluate",
    "build_model",
    "model_transforms",
    "recipe_from_meta",
    "CHAPTER",
]

log = logging.getLogger(__name__)

# model -> what it predicts
MODELS = {"fcn32s": "semantic", "fcn16s": "semantic", "fcn8s": "semantic", "mask-rcnn": "instances",
          "maskx-rcnn": "instances"}
FORMATS = ("coco", "voc", "shapes")
# kind -> backbones, the first the default (the book's small ones, which train from scratch)
BACKBONES = {"semantic": ("vgg_small", "vgg16"), "instances": ("tiny_resnet_fpn", "resnet50_fpn")}
# defaults per kind: the book's recipes (AdamW from scratch); 1e-4 with ImageNet weights
_DEFAULTS = {"semantic": {"batch_size": 8, "lr": 3e-3, "weight_decay": 1e-2, "warmup": 100},
             "instances": {"batch_size": 4, "lr": 2e-3, "weight_decay": 1e-4, "warmup": 200}}
PRETRAINED_LR = 1e-4


def parse_format(option: str, text: str) -> tuple[str, str]:
    """``"FORMAT:ROOT"`` -> ``(format, root)``; a ValueError naming ``option`` when it is not one."""
    fmt, sep, root = str(text).partition(":")
    if not sep or fmt not in FORMATS or not root:
        raise ValueError(f"{option} must be FORMAT:ROOT with FORMAT one of {', '.join(FORMATS)} "
                         f"(e.g. coco:data/mycoco), got {text!r}")
    return fmt, root


def parse_data(text: str, option: str = "--data") -> tuple[str, Path]:
    """``"FORMAT:ROOT"`` -> ``(format, root folder)``, which must exist; errors name ``option``."""
    fmt, root = parse_format(option, text)
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise FileNotFoundError(f"{option}: {fmt} folder {root_path} not found")
    return fmt, root_path


@dataclass(frozen=True)
class OwnDataRecipe:
    """The options of one ``segnotes train`` run (stored as ``config.json`` and in the checkpoint).

    Attributes:
        model: one of :data:`MODELS`.
        data: ``"FORMAT:ROOT"``, FORMAT in :data:`FORMATS`.
        categories: ``((id, name), ...)``, the classes learned: label k (1..K-1) is the k-th
            (0 is the background). Found in the training split by :func:`find_categories`.
        train_split, val_split: the splits (COCO: ``<split>/`` and
            ``annotations/instances_<split>.json``; VOC: ``ImageSets/Segmentation/<split>.txt``).
        epochs: passes over the training split.
        batch_size: images per step and process (None: 8 for FCN, 4 for Mask R-CNN).
        lr: AdamW's rate (None: the book's 3e-3 for FCN and 2e-3 for Mask R-CNN from scratch,
            1e-4 with ``pretrained``).
        image_size: ``(S,)``: shorter side S (aspect kept); ``(H, W)``: fixed (FCN only); None:
            as they are (FCN) or the backbone's default (Mask R-CNN: 128 for the tiny one,
            800 for ResNet-50).
        max_size: cap on the longer side with ``(S,)`` (Mask R-CNN default: S for the tiny
            backbone, S * 1333 / 800 for ResNet-50).
        scale_range: FCN's scale jitter of the shorter side, ``(lo, hi)`` times S.
        crop: FCN's random training windows (pixels); None: whole images, padded in batches.
        flip: random horizontal flips.
        backbone: one of :data:`BACKBONES` for the model's kind (None: the book's small one).
        pretrained: ImageNet backbone weights (``vgg16``, ``resnet50_fpn``) through torchvision.
        mask_classes: ``maskx-rcnn``'s classes with masks (category ids); the others train
            with boxes only and get their masks from the weight transfer function.
        amp: mixed precision on CUDA.
        seed: the initialisation, data order and augmentations.
        workers: DataLoader worker processes.
        checkpoint_every: steps between resumable checkpoints (0: once per ``fit`` end).
    """

    model: str
    data: str
    categories: tuple[tuple[int, str], ...]
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 10
    batch_size: int | None = None
    lr: float | None = None
    image_size: tuple[int, ...] | None = None
    max_size: int | None = None
    scale_range: tuple[float, float] | None = None
    crop: int | None = None
    flip: bool = True
    backbone: str | None = None
    pretrained: bool = False
    mask_classes: tuple[int, ...] | None = None
    amp: bool = False
    seed: int = 0
    workers: int = 0
    checkpoint_every: int = 100

    def __post_init__(self) -> None:
        fn = "OwnDataRecipe"
        check_choice(fn, "model", self.model, list(MODELS))
        parse_format(f"{fn}: data", self.data)
        kind = self.kind
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        set_("categories", tuple((int(i), str(n)) for i, n in self.categories))
        if not self.categories:
            raise ValueError(f"{fn}: categories must hold at least one (id, name), got ()")
        ids = [i for i, _ in self.categories]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{fn}: categories must have distinct ids, got {ids}")
        for name in ("epochs",):
            check_int(fn, name, getattr(self, name), minimum=1)
        for name in ("seed", "workers", "checkpoint_every"):
            check_int(fn, name, getattr(self, name), minimum=0)
        set_("backbone", BACKBONES[kind][0] if self.backbone is None else self.backbone)
        check_choice(fn, "backbone", self.backbone, BACKBONES[kind])
        if self.pretrained and self.backbone == BACKBONES[kind][0]:
            raise ValueError(f"{fn}: pretrained weights exist for {BACKBONES[kind][1]} only (the book's "
                             f"{self.backbone} trains from scratch); choose backbone {BACKBONES[kind][1]!r}")
        set_("batch_size", _DEFAULTS[kind]["batch_size"] if self.batch_size is None else self.batch_size)
        check_int(fn, "batch_size", self.batch_size, minimum=1)
        default_lr = PRETRAINED_LR if self.pretrained else _DEFAULTS[kind]["lr"]
        set_("lr", default_lr if self.lr is None else float(self.lr))
        check_positive(fn, "lr", self.lr)
        self._check_sizes(fn, kind)
        if self.mask_classes is not None:
            set_("mask_classes", tuple(int(c) for c in self.mask_classes))
            if self.model != "maskx-rcnn":
                raise ValueError(f"{fn}: mask_classes is for maskx-rcnn, got model {self.model!r}")
            unknown = sorted(set(self.mask_classes) - set(ids))
            if unknown or not self.mask_classes:
                raise ValueError(f"{fn}: mask_classes must be among the categories {dict(self.categories)}, "
                                 f"got {self.mask_classes}")
        elif self.model == "maskx-rcnn":
            raise ValueError(f"{fn}: maskx-rcnn needs mask_classes (the categories whose masks train)")

    def _check_sizes(self, fn: str, kind: str) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        if self.image_size is not None:
            set_("image_size", tuple(int(s) for s in self.image_size))
            if len(self.image_size) not in (1, 2) or min(self.image_size) < 1:
                raise ValueError(f"{fn}: image_size must be (shorter side,) or (height, width), got {self.image_size}")
            if len(self.image_size) == 2 and kind == "instances":
                raise ValueError(f"{fn}: a fixed image_size (height, width) is for FCN; Mask R-CNN resizes the "
                                 "shorter side (give one number, and max_size)")
        if self.max_size is not None:
            check_int(fn, "max_size", self.max_size, minimum=1)
            if self.image_size is None or len(self.image_size) != 1 or self.max_size < self.image_size[0]:
                raise ValueError(f"{fn}: max_size needs a shorter-side image_size at most max_size, got "
                                 f"image_size={self.image_size}, max_size={self.max_size}")
        if self.scale_range is not None:
            set_("scale_range", tuple(float(s) for s in self.scale_range))
            if kind != "semantic" or self.image_size is None or len(self.image_size) != 1:
                raise ValueError(f"{fn}: scale_range is FCN's and needs a shorter-side image_size, got model "
                                 f"{self.model!r} and image_size={self.image_size}")
            if len(self.scale_range) != 2 or not 0 < self.scale_range[0] <= self.scale_range[1]:
                raise ValueError(f"{fn}: scale_range must be (lo, hi) with 0 < lo <= hi, got {self.scale_range}")
        if self.crop is not None:
            check_int(fn, "crop", self.crop, minimum=32)
            if kind != "semantic":
                raise ValueError(f"{fn}: crop is FCN's (Mask R-CNN trains on whole images), got model {self.model!r}")

    @property
    def kind(self) -> str:
        """``"semantic"`` (FCN) or ``"instances"`` (Mask R-CNN, Mask^X R-CNN)."""
        return MODELS[self.model]

    @property
    def num_classes(self) -> int:
        """K: the categories plus the background."""
        return len(self.categories) + 1

    def label_of(self) -> dict[int, int]:
        """Category id -> contiguous label (1..K-1)."""
        return {cid: k + 1 for k, (cid, _) in enumerate(self.categories)}

    def id_of(self) -> dict[int, int]:
        """Contiguous label -> category id (the inverse of :meth:`label_of`; 0 -> 0)."""
        return {0: 0, **{k + 1: cid for k, (cid, _) in enumerate(self.categories)}}


def recipe_from_meta(recipe: dict) -> OwnDataRecipe:
    """The recipe stored in a checkpoint or ``config.json`` (lists back to tuples)."""
    names = {f.name for f in fields(OwnDataRecipe)}
    unknown = sorted(set(recipe) - names)
    if unknown or "model" not in recipe:
        raise ValueError(f"recipe_from_meta: not a segnotes train recipe (fields {sorted(recipe)})")
    values = {k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
              for k, v in recipe.items()}
    return OwnDataRecipe(**values)


@dataclass(frozen=True)
class OwnDataRun:
    """The one run of a ``segnotes train`` folder (:class:`~segnotes.experiments.runner.Chapter`'s spec)."""

    name: str = "model"
    seed: int = 0
    parent: str | None = None
    keep_weights: bool = True


def _runs(recipe: OwnDataRecipe) -> list[OwnDataRun]:
    return [OwnDataRun("model", recipe.seed)]


# ----------------------------------------------------------------------------------------------
# Data


def _coco_files(fmt_root: Path, split: str) -> tuple[Path, Path]:
    """COCO 2017's layout: ``annotations/instances_<split>.json`` and the ``<split>/`` image folder."""
    ann = fmt_root / "annotations" / f"instances_{split}.json"
    images = fmt_root / split
    if not ann.is_file():
        have = sorted(p.name for p in (fmt_root / "annotations").glob("instances_*.json"))
        raise FileNotFoundError(f"split {split!r}: annotation file {ann} not found (there: {', '.join(have) or 'none'})")
    if not images.is_dir():
        raise FileNotFoundError(f"split {split!r}: image folder {images} not found")
    return images, ann


def find_categories(data: str, split: str, model: str) -> tuple[tuple[int, str], ...]:
    """The categories a model trained on ``split`` of ``data`` learns, ``((id, name), ...)`` sorted by id.

    COCO: the annotation file's categories, each of which must have an annotation in the split;
    VOC: the class indices its class maps use; shapes: its nine categories.

    Raises:
        ValueError: a category listed with no (non-crowd) annotation in the split, naming the
            file; or a split with no category at all.
    """
    from ..data import CATEGORIES, VOCInstances, VOCSemantic
    from ..data.datasets import _read_coco
    from ..data.voc import voc_class_name

    fmt, root = parse_data(data)
    check_choice("find_categories", "model", model, list(MODELS))
    if fmt == "shapes":
        return tuple((c["id"], c["name"]) for c in CATEGORIES)
    if fmt == "coco":
        _, ann = _coco_files(root, split)
        coco = _read_coco("find_categories", ann)
        categories = sorted((c["id"], c["name"]) for c in coco.dataset.get("categories", []))
        used = {a["category_id"] for a in coco.dataset.get("annotations", []) if not a.get("iscrowd", 0)}
        absent = [f"{name!r} (id {cid})" for cid, name in categories if cid not in used]
        if absent:
            raise ValueError(f"categories absent from split {split!r}: {', '.join(absent)} have no annotation in "
                             f"{ann}; give them examples, or remove them from its 'categories'")
    elif MODELS[model] == "semantic":
        categories = [(v, voc_class_name(v)) for v in sorted(VOCSemantic(root, split).label_values())]
    else:
        categories = [(c["id"], c["name"]) for c in VOCInstances(root, split).categories]
    if not categories:
        raise ValueError(f"split {split!r} of {data} has no labelled object: nothing to learn")
    return tuple(categories)


def check_split_categories(recipe: OwnDataRecipe, split: str) -> None:
    """Refuse a split whose categories the recipe does not know (they would have no label)."""
    fmt, root = parse_data(recipe.data)
    if fmt == "shapes":
        return
    known = set(recipe.label_of())
    if fmt == "coco":
        from ..data.datasets import _read_coco

        _, ann = _coco_files(root, split)
        listed = {c["id"]: c["name"] for c in _read_coco("check_split_categories", ann).dataset.get("categories", [])}
        unknown = {cid: name for cid, name in listed.items() if cid not in known}
        where = str(ann)
    else:
        from ..data import VOCSemantic

        unknown = {v: f"class {v}" for v in VOCSemantic(root, split).label_values() if v not in known}
        where = f"the class maps of split {split!r} in {root}"
    if unknown:
        raise ValueError(f"categories absent from the training split: {where} has {sorted(unknown.items())}, which "
                         f"the model does not know (it learned {list(recipe.categories)})")


class _Relabel:
    """Category ids -> contiguous labels, for label maps (unknown values become 255) and for instances."""

    def __init__(self, label_of: dict[int, int], kind: str):
        self.kind = kind
        self.table = torch.full((max(max(label_of), 255) + 1,), 255, dtype=torch.int64)
        self.table[0] = 0
        for cid, label in label_of.items():
            self.table[cid] = label

    def __call__(self, image: Tensor, target):
        if self.kind == "semantic":
            return image, self.table[target.clamp(0, len(self.table) - 1)]
        target = dict(target)
        target["labels"] = self.table[target["labels"]]
        return image, target


class _Chain:
    def __init__(self, *steps):
        self.steps = [s for s in steps if s is not None]

    def __call__(self, image, target):
        for step in self.steps:
            image, target = step(image, target)
        return image, target


def model_transforms(recipe: OwnDataRecipe, train: bool):
    """The :mod:`segnotes.data.transforms` pipeline of the recipe's model (training or evaluation)."""
    from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transforms, train_transforms

    if recipe.kind == "instances":  # Mask R-CNN resizes and normalises inside the model
        return train_transforms("instances", flip=recipe.flip) if train else None
    # vgg16 (ImageNet's layout, no BatchNorm) sees ImageNet-normalised inputs; vgg_small's
    # BatchNorm takes them in [0, 1], as the book trains it.
    norm = dict(mean=IMAGENET_MEAN, std=IMAGENET_STD) if recipe.backbone == "vgg16" else {}
    size = recipe.image_size[0] if recipe.image_size and len(recipe.image_size) == 1 else recipe.image_size
    if train:
        return train_transforms("semantic", size=size, max_size=recipe.max_size, scale_range=recipe.scale_range,
                                crop=recipe.crop, flip=recipe.flip, **norm)
    return eval_transforms("semantic", size=size, max_size=recipe.max_size, **norm)


def open_split(recipe: OwnDataRecipe, split: str, train: bool) -> Dataset:
    """``split`` of the recipe's data, with contiguous labels and the model's transforms."""
    from ..data import CocoInstances, CocoSemantic, ShapesInstances, ShapesSemantic, VOCInstances, VOCSemantic

    fmt, root = parse_data(recipe.data)
    transform = _Chain(_Relabel(recipe.label_of(), recipe.kind), model_transforms(recipe, train))
    if fmt == "shapes":
        cls = ShapesSemantic if recipe.kind == "semantic" else ShapesInstances
        return cls(root, split, transforms=transform)
    if fmt == "voc":
        cls = VOCSemantic if recipe.kind == "semantic" else VOCInstances
        return cls(root, split, transforms=transform)
    images, ann = _coco_files(root, split)
    if recipe.kind == "semantic":  # crowd regions become "ignore"
        instances = CocoInstances(images, ann, include_crowd=True)
        return CocoSemantic(instances, labels=recipe.label_of(), transforms=_Chain(model_transforms(recipe, train)))
    return CocoInstances(images, ann, transforms=transform)


def open_splits(recipe: OwnDataRecipe) -> tuple[Dataset, Dataset]:
    """``(train, val)``: the recipe's training split with the training transforms, and its val split."""
    return open_split(recipe, recipe.train_split, train=True), open_split(recipe, recipe.val_split, train=False)


def _load_data(spec: OwnDataRun, recipe: OwnDataRecipe, data_root) -> tuple[Dataset, Dataset]:
    return open_splits(recipe)


# ----------------------------------------------------------------------------------------------
# Model


def build_model(recipe: OwnDataRecipe, load_pretrained: bool = True) -> nn.Module:
    """The recipe's untrained model (ImageNet backbone weights with ``pretrained``).

    ``load_pretrained=False`` builds the same model without fetching those weights: the one to
    load a finished run's checkpoint into.
    """
    from ..models import fcn, mask_rcnn, maskx_rcnn

    if recipe.kind == "semantic":  # vgg16's layout is the same with or without ImageNet weights
        pretrained = recipe.pretrained and load_pretrained
        return fcn(recipe.model, recipe.num_classes, recipe.backbone, pretrained_backbone=pretrained)
    sizes = {}
    if recipe.image_size is not None:
        shorter = recipe.image_size[0]
        default_max = shorter if recipe.backbone == "tiny_resnet_fpn" else round(shorter * 1333 / 800)
        sizes = {"min_size": shorter, "max_size": recipe.max_size or default_max}
    weights = {"pretrained_backbone": recipe.pretrained, "load_pretrained": load_pretrained}
    if recipe.model == "mask-rcnn":
        return mask_rcnn(recipe.num_classes, recipe.backbone, **weights, **sizes)
    labels = recipe.label_of()
    return maskx_rcnn(recipe.num_classes, tuple(labels[c] for c in recipe.mask_classes), backbone=recipe.backbone,
                      **weights, **sizes)


def _build(spec: OwnDataRun, recipe: OwnDataRecipe, parent) -> nn.Module:
    return build_model(recipe)


def _rebuild(meta: dict) -> nn.Module:
    # The weights come from the checkpoint: do not fetch ImageNet's to overwrite them.
    return build_model(recipe_from_meta(meta["recipe"]), load_pretrained=False)


# ----------------------------------------------------------------------------------------------
# Scores


def evaluate(model: nn.Module, dataset: Dataset, recipe: OwnDataRecipe) -> dict | None:
    """The val scores: FCN's four metrics (and IU per category name), or COCO box and mask AP.

    AP uses COCO's area ranges (32² and 96² pixels) and the data set's category ids. Under
    torchrun every process scores its shard; rank 0 gets the AP, the others None.
    """
    if recipe.kind == "semantic":
        fixed = recipe.image_size is not None and len(recipe.image_size) == 2
        # Images of different sizes go one at a time: padding would change the predictions near borders.
        scores = evaluate_fcn(model, dataset, recipe.num_classes, batch_size=16 if fixed else 1)
        del scores["boundary"]  # the book's boundary bands: not asked for here
        names = ["background", *(name for _, name in recipe.categories)]
        scores["iu_per_category"] = dict(zip(names, scores["iu"]))
        return scores
    id_of = recipe.id_of()

    def to_ids(detections: list[dict]) -> list[dict]:
        return [dict(d, category_id=id_of[d["category_id"]]) for d in detections]

    gathered = detect_for_ap(model, dataset, batch_size=recipe.batch_size, labels_to_ids=to_ids)
    if gathered is None:
        return None
    ground_truth, detections, _ = gathered
    return box_and_mask_ap(ground_truth, detections, None)


def _monitor(model, dataset, recipe) -> dict | None:
    scores = evaluate(model, dataset, recipe)
    if scores is None or recipe.kind == "semantic":
        return scores
    return flat_scores(scores)


# ----------------------------------------------------------------------------------------------
# Trainer


def _write_json(path: Path, value) -> None:
    """Write ``value`` as JSON atomically (a reader never sees half a file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(temporary, path)


class _EpochRecorder:
    """A Trainer's ``on_history``: a log line per entry, and ``metrics.json`` (every val
    evaluation of the run so far, resumed parts included) after each evaluation."""

    def __init__(self, folder: Path, trainer: Trainer):
        self.folder = folder
        self.trainer = trainer

    def __call__(self, entry: dict) -> None:
        if entry["kind"] == "train":
            log.info("epoch %d step %d: loss %.4f, lr %.2e, %.1f images/s", entry["epoch"] + 1, entry["step"],
                     entry["loss"], entry["lr"], entry["images_per_s"])
            return
        scores = {k: v for k, v in entry.items() if k not in ("kind", "epoch", "step", "seconds", "eval_seconds")}
        headline = {k: v for k, v in scores.items() if isinstance(v, float)}
        log.info("epoch %d val: %s", entry["epoch"] + 1, ", ".join(f"{k} {v:.4f}" for k, v in headline.items()))
        history = self.trainer.history
        epochs = [{"epoch": e["epoch"] + 1, "step": e["step"], "seconds": e["seconds"],
                   **{k: v for k, v in e.items() if k not in ("kind", "epoch", "step", "seconds")}}
                  for e in history if e["kind"] == "eval"]
        _write_json(self.folder / "metrics.json", {"epochs": epochs})


def _trainer(model, train_set, val_set, spec, recipe: OwnDataRecipe, *, checkpoint_path, device, progress) -> Trainer:
    from ..data.transforms import pad_collate

    defaults = _DEFAULTS[recipe.kind]
    order = distributed.epoch_order(train_set, recipe.seed)
    steps = recipe.epochs * math.ceil(len(order(0)) / recipe.batch_size)
    common = dict(epochs=recipe.epochs, batch_size=recipe.batch_size, optimizer="adamw", lr=recipe.lr,
                  weight_decay=defaults["weight_decay"], warmup_steps=min(defaults["warmup"], steps // 10),
                  amp=recipe.amp, seed=recipe.seed, num_workers=recipe.workers, eval_every=1,
                  checkpoint_every=recipe.checkpoint_every)
    options = dict(device=device, checkpoint_path=checkpoint_path, meta={"run": spec.name}, sampler_fn=order,
                   progress=progress, eval_fn=lambda m: _monitor(m, val_set, recipe))
    if recipe.kind == "semantic":
        config = TrainConfig(**common, schedule="poly", power=0.9)
        trainer = Trainer(model, train_set, config, step_fn=semantic_step, collate_fn=pad_collate, **options)
    else:
        config = TrainConfig(**common, schedule="cosine", min_factor=0.02, grad_clip=10.0)
        trainer = Trainer(model, train_set, config, step_fn=detection_step, collate_fn=collate_instances,
                          find_unused_parameters=True, **options)
    trainer.on_history = _EpochRecorder(Path(checkpoint_path).parent, trainer)
    return trainer


CHAPTER = Chapter(
    name="", recipe=OwnDataRecipe, spec=OwnDataRun, runs=_runs, build=_build, rebuild=_rebuild, data=_load_data,
    trainer=_trainer, evaluate=evaluate, data_set="own", half=False,
)


def check_files(datasets: Sequence[Dataset]) -> None:
    """Run each data set's ``check_files`` (image headers and sizes), where it has one."""
    for dataset in datasets:
        inner = getattr(dataset, "instances", dataset)  # CocoSemantic wraps a CocoInstances
        check = getattr(inner, "check_files", None)
        if check is not None:
            check()
