"""The ``segnotes`` command line (also ``python -m segnotes``).

Examples::

    segnotes data shapes --root data/shapes --num-train 2000 --num-val 500 --seed 0
    segnotes data checksums --root data/shapes --output data/shapes.sha256
    segnotes data verify --root data/shapes --checksums data/shapes.sha256
    segnotes data stats --root data/shapes

    segnotes train fcn8s --data coco:data/mycoco --out runs/fcn --epochs 20 --image-size 320 --crop 256
    segnotes train mask-rcnn --data voc:data/VOCdevkit/VOC2012 --out runs/mrcnn --resume
    torchrun --nproc_per_node=2 -m segnotes train fcn8s --data shapes:data/shapes --out runs/ddp
    segnotes evaluate runs/fcn --data coco:data/mycoco --split val --json scores.json
    segnotes predict runs/mrcnn photos/ --out predictions/
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._args import int_at_least

__all__ = ["main", "build_parser"]


_nonnegative_int = int_at_least(0)
_positive_int = int_at_least(1)
_MODELS = ("fcn32s", "fcn16s", "fcn8s", "mask-rcnn", "maskx-rcnn")  # = experiments.own_data.MODELS (not imported: slow)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


_positive_float.__name__ = "positive number"


def _image_size(text: str) -> tuple[int, ...]:
    """``"512"`` (shorter side) or ``"480x640"`` (height x width)."""
    parts = text.lower().split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values, default=0) < 1:
        raise argparse.ArgumentTypeError(f"expected SIDE (e.g. 512) or HEIGHTxWIDTH (e.g. 480x640), got {text!r}")
    return values


_image_size.__name__ = "image size"


def _scale_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(p) for p in text.split(","))
    except ValueError:
        lo = hi = -1.0
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 < LO <= HI (e.g. 0.5,2.0), got {text!r}")
    return lo, hi


_scale_range.__name__ = "scale range"


def _add_train_parser(commands) -> None:
    train = commands.add_parser(
        "train", help="train FCN or Mask R-CNN on a COCO, VOC or shapes folder",
        description="Train one of the book's models on your data. DIR receives config.json, the checkpoint "
        "(model.partial.pt while training, resumable; model.pt when done), metrics.json (val scores per epoch) "
        "and train.log. Under `torchrun --nproc_per_node=N -m segnotes train ...` N processes train "
        "data-parallel (gloo on the CPU, NCCL on CUDA).",
    )
    train.add_argument("model", choices=_MODELS, help="the model")
    train.add_argument("--data", required=True, metavar="FORMAT:ROOT",
                       help="coco:ROOT (annotations/instances_<split>.json, <split>/), voc:ROOT (VOCdevkit/VOC20xx "
                            "layout) or shapes:ROOT (the book's data)")
    train.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    train.add_argument("--train-split", default="train", help="training split (default train)")
    train.add_argument("--val-split", default="val", help="validation split, scored after each epoch (default val)")
    train.add_argument("--epochs", type=_positive_int, default=10, help="passes over the training split (default 10)")
    train.add_argument("--batch-size", type=_positive_int, default=None,
                       help="images per step and process (default 8 for FCN, 4 for Mask R-CNN)")
    train.add_argument("--lr", type=_positive_float, default=None,
                       help="AdamW learning rate (default 3e-3 FCN, 2e-3 Mask R-CNN; 1e-4 with --pretrained)")
    train.add_argument("--image-size", type=_image_size, default=None, metavar="SIDE|HxW",
                       help="resize: shorter side SIDE (aspect kept), or HxW (FCN only); default: as they are for "
                            "FCN, the backbone's for Mask R-CNN (128 tiny, 800 resnet50_fpn)")
    train.add_argument("--max-size", type=_positive_int, default=None, help="cap on the longer side, with --image-size SIDE")
    train.add_argument("--scale-jitter", type=_scale_range, default=None, metavar="LO,HI",
                       help="FCN: random shorter side in [LO*SIDE, HI*SIDE] (e.g. 0.5,2.0); needs --image-size SIDE")
    train.add_argument("--crop", type=_positive_int, default=None, help="FCN: random CROP x CROP training windows")
    train.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    train.add_argument("--backbone", default=None,
                       help="vgg_small (default) or vgg16 for FCN; tiny_resnet_fpn (default) or resnet50_fpn for "
                            "Mask R-CNN")
    train.add_argument("--pretrained", action="store_true",
                       help="ImageNet backbone weights (vgg16, resnet50_fpn) through torchvision's weights API")
    train.add_argument("--mask-classes", default=None, metavar="NAMES",
                       help="maskx-rcnn: comma-separated category names or ids whose masks train; the others "
                            "learn boxes only and get masks from the weight transfer")
    train.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default auto: CUDA if there is one")
    train.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    train.add_argument("--seed", type=_nonnegative_int, default=0, help="seed of the initialisation, data order and "
                       "augmentations (default 0)")
    train.add_argument("--workers", type=_nonnegative_int, default=0, help="data loading processes (default 0)")
    train.add_argument("--checkpoint-every", type=_nonnegative_int, default=100,
                       help="steps between resumable checkpoints (default 100; one is also written after each epoch's end of fit)")
    train.add_argument("--resume", action="store_true", help="continue the run in DIR (started with the same options)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (shown by default in a terminal)")


def _add_evaluate_parser(commands) -> None:
    evaluate = commands.add_parser(
        "evaluate", help="score a trained model on a split",
        description="Print (and write) the scores of DIR's model: pixel accuracy, mean accuracy, mean IU and "
        "frequency-weighted IU for FCN; box and mask AP, AP50, AP75, APs, APm, APl for Mask R-CNN.",
    )
    evaluate.add_argument("dir", type=Path, metavar="DIR", help="a segnotes train output folder")
    evaluate.add_argument("--data", required=True, metavar="FORMAT:ROOT", help="as for train")
    evaluate.add_argument("--split", default="val", help="the split to score (default val)")
    evaluate.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the scores to FILE")
    evaluate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


def _add_predict_parser(commands) -> None:
    predict = commands.add_parser(
        "predict", help="run a trained model on images",
        description="FCN: a label PNG (category ids) per image; Mask R-CNN: predictions.json (COCO results, "
        "readable by pycocotools' loadRes with images.json); both: an overlay PNG per image.",
    )
    predict.add_argument("dir", type=Path, metavar="DIR", help="a segnotes train output folder")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files or folders of images")
    predict.add_argument("--out", type=Path, required=True, metavar="OUT", help="where the outputs go")
    predict.add_argument("--score-threshold", type=float, default=0.5,
                         help="detections drawn in the overlays (all are written to predictions.json; default 0.5)")
    predict.add_argument("--coco", type=Path, default=None, metavar="ANN_FILE",
                         help="take the image ids from this COCO file, by file name (default 1, 2, ...)")
    predict.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))


# Paths stay str here: Path("") is the current folder, so an empty --root would write there. The
# data functions refuse an empty path themselves, as one clear line.


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segnotes", description="segnotes: the book's companion package.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make, check and describe data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    shapes = data_commands.add_parser(
        "shapes",
        help="generate the procedural shapes data set",
        description="Generate the procedural shapes data set (images, COCO instances JSON, semantic label PNGs). "
        "Same arguments give byte-identical files; an existing complete set made with the same arguments is kept.",
    )
    shapes.add_argument("--root", type=str, required=True, help="output folder (e.g. data/shapes)")
    shapes.add_argument("--num-train", type=_nonnegative_int, default=2000, help="training images (default 2000)")
    shapes.add_argument("--num-val", type=_nonnegative_int, default=500, help="validation images (default 500)")
    shapes.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default 0)")
    shapes.add_argument("--image-size", type=_nonnegative_int, default=128, help="image side in pixels (default 128)")
    shapes.add_argument("--workers", type=_nonnegative_int, default=None, help="processes (default: CPU count)")
    shapes.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    shapes.add_argument(
        "--handles", action="store_true",
        help="the variant with handles (the LSE chapter's data): the mask includes an object's handle for some categories only",
    )
    shapes.add_argument(
        "--attributes", action="store_true",
        help="the many-category variant: 50 categories, each an outline, a colour family and a texture "
        "(with --handles: the LSE chapter's curve over the number of mask classes)",
    )

    checksums = data_commands.add_parser("checksums", help="write SHA-256 checksums of a data set")
    checksums.add_argument("--root", type=str, required=True, help="data set folder")
    checksums.add_argument("--output", type=str, required=True, help="checksum file to write (sha256sum format)")

    verify = data_commands.add_parser("verify", help="check a data set against its SHA-256 checksums")
    verify.add_argument("--root", type=str, required=True, help="data set folder")
    verify.add_argument("--checksums", type=str, required=True, help="checksum file (sha256sum format)")

    stats = data_commands.add_parser("stats", help="print a data set's statistics as JSON")
    stats.add_argument("--root", type=str, required=True, help="data set folder")
    _add_train_parser(commands)
    _add_evaluate_parser(commands)
    _add_predict_parser(commands)
    return parser


def _run_data(args: argparse.Namespace) -> int:
    from .data import shapes

    if args.data_command == "shapes":
        root = shapes.generate(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            image_size=args.image_size,
            workers=args.workers,
            progress=not args.no_progress,
            handles=args.handles,
            attributes=args.attributes,
        )
        print(f"shapes data set ready in {root}")
    elif args.data_command == "checksums":
        shapes.write_checksums(args.root, args.output)
        print(f"checksums of {args.root} written to {args.output}")
    elif args.data_command == "verify":
        shapes.verify(args.root, args.checksums)
        print(f"{args.root} matches {args.checksums}")
    elif args.data_command == "stats":
        print(json.dumps(shapes.statistics(args.root), indent=2, sort_keys=True))
    return 0


def _device(text: str):
    from .utils import get_device

    try:
        return get_device(text)
    except RuntimeError as error:
        raise ValueError(f"--device {text}: {error}") from None


def _mask_classes(text: str | None, categories) -> tuple[int, ...] | None:
    """``--mask-classes``: category names or ids, as ids; unknown ones are named with the known ones."""
    if text is None:
        return None
    by_name = {name: cid for cid, name in categories}
    ids = {cid for cid, _ in categories}
    chosen, unknown = [], []
    for item in (part.strip() for part in text.split(",") if part.strip()):
        if item in by_name:
            chosen.append(by_name[item])
        elif item.isdigit() and int(item) in ids:
            chosen.append(int(item))
        else:
            unknown.append(item)
    if unknown or not chosen:
        known = ", ".join(f"{name} ({cid})" for cid, name in categories)
        raise ValueError(f"--mask-classes: unknown class(es) {', '.join(map(repr, unknown)) or repr(text)}; the "
                         f"training split's categories are {known}")
    return tuple(dict.fromkeys(chosen))


def _run_train(args: argparse.Namespace) -> int:
    from .engine import distributed
    from .experiments import own_data, run_folder, train_run

    device = _device(args.device)
    distributed.launch_from_env()  # a bad torchrun environment fails here, before anything is read
    categories = own_data.find_categories(args.data, args.train_split, args.model)
    if args.mask_classes is not None and args.model != "maskx-rcnn":
        raise ValueError(f"--mask-classes is for maskx-rcnn, got model {args.model}")
    recipe = own_data.OwnDataRecipe(
        model=args.model, data=args.data, categories=categories, train_split=args.train_split,
        val_split=args.val_split, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        image_size=args.image_size, max_size=args.max_size, scale_range=args.scale_jitter, crop=args.crop,
        flip=not args.no_flip, backbone=args.backbone, pretrained=args.pretrained,
        mask_classes=_mask_classes(args.mask_classes, categories), amp=args.amp, seed=args.seed,
        workers=args.workers, checkpoint_every=args.checkpoint_every,
    )
    own_data.check_split_categories(recipe, recipe.val_split)
    own_data.check_files(own_data.open_splits(recipe))  # every image readable, before anything is written
    state = run_folder.prepare(args.out, recipe, args.resume)
    if state == "finished":
        print(f"{args.out} holds a finished run: nothing to train (segnotes evaluate / predict read it)")
        return 0
    device = distributed.init_from_env(device)
    try:
        main_process = distributed.is_main_process()
        if main_process:
            run_folder.start(args.out, recipe)
        distributed.barrier()  # the folder exists before anyone trains
        with run_folder.log_to(args.out / run_folder.LOG if main_process else None, console=main_process):
            import logging

            logger = logging.getLogger("segnotes.cli")
            logger.info("%s %s on %s (%d categories), %d process(es) on %s -> %s",
                        "resuming" if state == "resume" else "training", recipe.model, recipe.data,
                        len(recipe.categories), distributed.world_size(), device, args.out)
            meta = train_run(own_data.OwnDataRun("model", recipe.seed), recipe, args.out, device=device,
                             progress=sys.stderr.isatty() and not args.no_progress)
            if meta is None:  # stopped before the end (the resumable checkpoint is there)
                logger.info("stopped; continue with --resume")
            else:
                logger.info("done in %.1f min: %s", meta["train_seconds"] / 60, _headline(recipe, meta["scores"]))
    finally:
        if distributed.is_distributed():
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0


def _headline(recipe, scores: dict | None) -> str:
    if scores is None:
        return "scores on rank 0"
    if recipe.kind == "semantic":
        return ", ".join(f"{k} {scores[k]:.4f}" for k in ("pixel_accuracy", "mean_accuracy", "mean_iu",
                                                             "frequency_weighted_iu"))
    return ", ".join(f"{kind} AP {scores[kind]['AP']:.4f}" for kind in ("bbox", "segm"))


def _run_evaluate(args: argparse.Namespace) -> int:
    from .experiments import run_folder

    recipe, scores = run_folder.evaluate_folder(args.dir, args.data, args.split, _device(args.device))
    if recipe.kind == "semantic":
        print(f"{recipe.model} on {args.data} {args.split}:")
        for key in ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu"):
            print(f"  {key:<22} {scores[key]:.4f}")
        result = {k: v for k, v in scores.items() if k != "boundary"}
    else:
        from .experiments.detection import AP_KEYS

        print(f"{recipe.model} on {args.data} {args.split}:")
        print("        " + " ".join(f"{k:>7}" for k in AP_KEYS))
        for kind, name in (("bbox", "box"), ("segm", "mask")):
            print(f"  {name:<5} " + " ".join(f"{scores[kind][k]:7.4f}" for k in AP_KEYS))
        result = scores
    if args.json is not None:
        text = json.dumps({"dir": str(args.dir), "model": recipe.model, "data": args.data, "split": args.split,
                           "scores": result}, indent=1)
        temporary = args.json.with_name(f".{args.json.name}.tmp")
        temporary.write_text(text + "\n")
        temporary.replace(args.json)
        print(f"written to {args.json}")
    return 0


def _run_predict(args: argparse.Namespace) -> int:
    from .experiments import run_folder

    summary = run_folder.predict_images(args.dir, args.inputs, args.out, device=_device(args.device),
                                        score_threshold=args.score_threshold, coco_file=args.coco)
    extra = f", {summary['detections']} detections in {args.out / 'predictions.json'}" if "detections" in summary else ""
    print(f"{summary['images']} image(s): {len(summary['files'])} files in {args.out}{extra}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segnotes`` command; returns the exit status."""
    from .engine import CheckpointError

    args = build_parser().parse_args(argv)
    commands = {"data": _run_data, "train": _run_train, "evaluate": _run_evaluate, "predict": _run_predict}
    try:
        return commands[args.command](args)
    except (ValueError, TypeError, OSError, CheckpointError) as error:
        # Bad input, unreadable or unwritable files (OSError: missing, a folder, truncated, no
        # permission) and unreadable checkpoints are reported as one clear line, not a traceback.
        print(f"segnotes: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
