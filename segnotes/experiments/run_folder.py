"""The output folder of ``segnotes train``, and the ``evaluate`` and ``predict`` commands that read it.

A folder ``DIR`` holds::

    config.json         the options the run trains with (its OwnDataRecipe, category mapping included)
    model.partial.pt    while it trains: the resumable checkpoint (weights, optimizer, generators)
    model.pt            when finished: float32 weights, the options and the val scores
    metrics.json        the val scores after each epoch
    train.log           one line per epoch and event

Every file is written atomically (a temporary file renamed over the target), and a command
that finds something wrong with its input stops before writing anything, so an existing folder is
never left damaged. Training into a folder that holds a run needs ``--resume``, with the options
that run started with.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .own_data import CHAPTER, OwnDataRecipe, open_split, recipe_from_meta

__all__ = ["FILES", "prepare", "start", "log_to", "load_model", "evaluate_folder", "collect_images", "predict_images"]

CONFIG, MODEL, PARTIAL, METRICS, LOG = "config.json", "model.pt", "model.partial.pt", "metrics.json", "train.log"
FILES = (CONFIG, MODEL, PARTIAL, METRICS, LOG)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _plain(value):
    return json.loads(json.dumps(value))


def _write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def prepare(out: Path, recipe: OwnDataRecipe, resume: bool) -> str:
    """Check that ``segnotes train`` may train ``recipe`` into ``out``; writes nothing.

    Returns:
        str: ``"new"`` (nothing there yet), ``"resume"`` (continue the run there) or
        ``"finished"`` (with ``resume``: the run there is done).

    Raises:
        NotADirectoryError: ``out`` is a file.
        ValueError: ``out`` holds a run and ``resume`` is False, or ``resume`` is True and the
            run there was started with other options (named).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} is a file, not a folder")
    present = [name for name in (CONFIG, PARTIAL, MODEL) if (out / name).exists()]
    if not present:
        return "new"
    if not resume:
        what = "a finished run" if (out / MODEL).exists() else "an unfinished run"
        raise ValueError(f"--out {out} holds {what} ({', '.join(present)}); add --resume to continue it with the same "
                         "options, or give another --out")
    if (out / CONFIG).exists():
        stored = json.loads((out / CONFIG).read_text())
        current = _plain(dataclasses.asdict(recipe))
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            pairs = "; ".join(f"{k}: {stored.get(k)!r} there, {current.get(k)!r} now" for k in differ)
            raise ValueError(f"--resume: the run in {out} was started with other options ({pairs}); repeat its "
                             f"options (see {out / CONFIG}) or give another --out")
    return "finished" if (out / MODEL).exists() else "resume"


def start(out: Path, recipe: OwnDataRecipe) -> None:
    """Create ``out`` and write ``config.json`` (once; a resumed run keeps the one it started with)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if not (out / CONFIG).exists():
        _write_text(out / CONFIG, json.dumps(_plain(dataclasses.asdict(recipe)), indent=1) + "\n")


@contextlib.contextmanager
def log_to(path: Path | None, console: bool = True) -> Iterator[None]:
    """Send the ``segnotes`` loggers' INFO lines to ``path`` (appended) and to stdout, for the block."""
    logger = logging.getLogger("segnotes")
    handlers: list[logging.Handler] = []
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        handlers.append(handler)
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(message)s"))
        handlers.append(stream)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    for handler in handlers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(old_level)


# ----------------------------------------------------------------------------------------------
# Reading a finished run


def load_model(out: Path, device: torch.device | str = "cpu") -> tuple[OwnDataRecipe, nn.Module, dict]:
    """The finished model of a ``segnotes train`` folder, in eval mode, with its recipe and meta.

    Raises:
        FileNotFoundError: no finished ``model.pt`` (the message says whether a run is unfinished).
        ValueError: ``model.pt`` was not written by ``segnotes train``, or holds another model than
            ``config.json`` describes, or weights that do not fit it.
    """
    from ..engine import load_checkpoint

    out = Path(out)
    path = out / MODEL
    if not path.is_file():
        if (out / PARTIAL).exists():
            raise FileNotFoundError(f"{out} holds an unfinished run (no {MODEL} yet): finish it with `segnotes train "
                                    f"... --out {out} --resume`")
        raise FileNotFoundError(f"{out} holds no trained model ({path} not found); train one with `segnotes train`")
    state = load_checkpoint(path)
    meta = state.get("meta") or {}
    try:
        recipe = recipe_from_meta(meta["recipe"])
        if meta.get("run") != "model" or not meta.get("done"):
            raise KeyError("run")
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path} is not a checkpoint written by `segnotes train` (it holds run {meta.get('run')!r}, "
                         f"model {meta.get('model')!r})") from None
    config = out / CONFIG
    if config.is_file():
        described = json.loads(config.read_text())
        for key in ("model", "categories", "backbone", "mask_classes"):
            if _plain(described.get(key)) != _plain(meta["recipe"].get(key)):
                raise ValueError(f"{path} holds another model than {config} describes ({key}: "
                                 f"{meta['recipe'].get(key)!r} in the checkpoint, {described.get(key)!r} in the "
                                 "config); the checkpoint was copied from another run")
    model = CHAPTER.rebuild(meta)
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: its weights do not fit a {recipe.model} ({recipe.backbone}) with "
                         f"{recipe.num_classes} classes: {str(error).splitlines()[0]}") from None
    return recipe, model.to(device).eval(), meta


def evaluate_folder(out: Path, data: str, split: str, device: torch.device | str = "cpu") -> tuple[OwnDataRecipe, dict]:
    """Score the finished model of ``out`` on ``split`` of ``data`` (``FORMAT:ROOT``).

    Returns:
        (the recipe with ``data`` and ``split``, the scores of :func:`segnotes.experiments.own_data.evaluate`).
    """
    from . import own_data

    recipe, model, _ = load_model(out, device)
    own_data.parse_data(data)
    recipe = dataclasses.replace(recipe, data=data, val_split=split)
    own_data.check_split_categories(recipe, split)
    dataset = open_split(recipe, split, train=False)
    own_data.check_files([dataset])
    return recipe, own_data.evaluate(model, dataset, recipe)


# ----------------------------------------------------------------------------------------------
# Prediction


def collect_images(inputs: Sequence[str | Path]) -> list[Path]:
    """The image files named by ``inputs``: files as given, folders' images (sorted, not recursive).

    Raises:
        FileNotFoundError: an input does not exist.
        ValueError: a folder without images, or two images with the same file name (their
            outputs would collide).
    """
    images: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ValueError(f"IMAGE_OR_FOLDER {path}: a folder without images ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        elif path.is_file():
            images.append(path)
        else:
            raise FileNotFoundError(f"IMAGE_OR_FOLDER {path} not found")
    stems: dict[str, Path] = {}
    for path in images:
        if path.stem in stems:
            raise ValueError(f"IMAGE_OR_FOLDER: {stems[path.stem]} and {path} have the same name; their outputs "
                             "would overwrite each other")
        stems[path.stem] = path
    return images


def _image_ids(images: list[Path], coco_file: Path | None) -> list[int]:
    """COCO image ids: from ``coco_file``'s images by file name, else 1, 2, ... in order."""
    if coco_file is None:
        return list(range(1, len(images) + 1))
    from ..data.datasets import _read_coco

    by_name = {Path(i["file_name"]).name: i["id"] for i in _read_coco("--coco", Path(coco_file)).dataset["images"]}
    missing = [p.name for p in images if p.name not in by_name]
    if missing:
        raise ValueError(f"--coco {coco_file} lists no image named {missing[0]} ({len(missing)} missing)")
    return [by_name[p.name] for p in images]


def _png(path: Path, array: np.ndarray, palette=None) -> None:
    from ..data.png import write_png

    temporary = path.with_name(f".{path.name}.tmp")
    write_png(temporary, array, palette=palette)
    os.replace(temporary, path)


def _draw_box(rgb: np.ndarray, box, color) -> None:
    """A 1 px rectangle outline, clipped to the image."""
    height, width = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, x2 = max(0, min(x1, width - 1)), max(0, min(x2 - 1, width - 1))
    y1, y2 = max(0, min(y1, height - 1)), max(0, min(y2 - 1, height - 1))
    rgb[y1, x1:x2 + 1] = rgb[y2, x1:x2 + 1] = color
    rgb[y1:y2 + 1, x1] = rgb[y1:y2 + 1, x2] = color


@torch.no_grad()
def predict_images(out: Path, inputs: Sequence, dest: Path, *, device: torch.device | str = "cpu",
                   score_threshold: float = 0.5, coco_file: Path | None = None) -> dict:
    """Run the finished model of ``out`` over images and write what it predicts into ``dest``.

    FCN: ``<name>.png``, a palette PNG of category ids (0 background), at the image's size.
    Mask R-CNN: ``predictions.json``, every detection as COCO results (RLE masks, the data's
    category ids; pycocotools' ``loadRes`` reads it), and ``images.json``, the images and
    categories as a COCO file for ``COCO(images.json).loadRes(predictions.json)`` (image ids from
    ``coco_file`` when given). Both: ``<name>_overlay.png``, the image with the prediction
    (detections scoring at least ``score_threshold``).

    Returns:
        dict: ``images`` (count), ``files`` (the paths written) and, for Mask R-CNN, ``detections``.
    """
    from ..data import load_rgb, voc_palette
    from ..metrics import detections_from_predictions
    from ..viz.masks import colorize_labels, instance_colors, overlay_instances
    from .own_data import model_transforms

    recipe, model, _ = load_model(out, device)
    images = collect_images(inputs)
    ids = _image_ids(images, coco_file)
    if not 0 <= score_threshold <= 1:
        raise ValueError(f"--score-threshold must be in [0, 1], got {score_threshold}")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise NotADirectoryError(f"--out {dest} is a file, not a folder")
    id_of = recipe.id_of()
    if recipe.kind == "semantic" and max(id_of.values()) > 254:
        raise ValueError(f"predict: category ids up to {max(id_of.values())} do not fit a label PNG (0-254)")
    loaded = [load_rgb(path, "predict") for path in images]  # every image readable before anything is written
    dest.mkdir(parents=True, exist_ok=True)
    written, results, coco_images = [], [], []
    transform = model_transforms(recipe, train=False)
    table = torch.tensor([id_of[k] for k in range(recipe.num_classes)])
    for path, image_id, image in zip(images, ids, loaded):
        height, width = image.shape[1:]
        if recipe.kind == "semantic":
            x, _ = transform(image, torch.zeros(height, width, dtype=torch.int64))
            logits = model(x[None].to(device))  # (1, K, h, w) at the model's input size
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            labels = table[logits.argmax(1)[0].cpu()]  # (H, W) category ids
            _png(dest / f"{path.stem}.png", labels.numpy().astype(np.uint8), palette=voc_palette())
            written.append(dest / f"{path.stem}.png")
            colours = colorize_labels(labels.clamp(max=255))
            rgb = image.permute(1, 2, 0).numpy().copy()
            fg = (labels != 0).numpy()
            rgb[fg] = 0.45 * rgb[fg] + 0.55 * colours[fg]
        else:
            output = {k: v.cpu() for k, v in model([image.to(device)])[0].items()}
            detections = detections_from_predictions([output], [image_id])
            results += [dict(d, category_id=id_of[d["category_id"]]) for d in detections]
            coco_images.append({"id": image_id, "file_name": path.name, "height": height, "width": width})
            keep = output["scores"] >= score_threshold
            masks = output["masks"][keep][:, 0] >= 0.5  # (D, H, W)
            colours = instance_colors(int(keep.sum()))
            rgb = overlay_instances(image, masks, colors=colours)
            for box, colour in zip(output["boxes"][keep].tolist(), colours):
                _draw_box(rgb, box, 0.6 * colour)  # darker than its mask, so that it shows over the mask's edge
        _png(dest / f"{path.stem}_overlay.png", (rgb.clip(0, 1) * 255).round().astype(np.uint8))
        written.append(dest / f"{path.stem}_overlay.png")
    summary = {"images": len(images), "files": written}
    if recipe.kind == "instances":
        categories = [{"id": cid, "name": name} for cid, name in recipe.categories]
        _write_text(dest / "predictions.json", json.dumps(results) + "\n")
        _write_text(dest / "images.json", json.dumps({"images": coco_images, "annotations": [],
                                                       "categories": categories}) + "\n")
        written += [dest / "predictions.json", dest / "images.json"]
        summary["detections"] = len(results)
    return summary
