"""Benchmarks of segnotes.metrics against the reference libraries.

Cases:
    coco_ap_segm             average_precision vs pycocotools' COCOeval (loadRes, evaluate,
                             accumulate, summarize) on a synthetic instance-segmentation case:
                             500 images of 128 px, 9 categories, 100 detections per image
                             (perturbed ground truth plus random false positives).
    coco_ap_segm (faster)    the same case, against faster-coco-eval's C++ COCOeval_faster.
    confusion_matrix_<dev>   confusion_matrix (input checks on) vs torchmetrics'
                             multiclass_confusion_matrix (default arguments, ignore_index=255) on
                             8 x 512 x 512 int64 labels with 21 classes, on the CPU and on CUDA
                             when available.

``ratio`` = reference time / ours (above 1: ours is faster). Times are medians after a warmup.
Run ``python benchmarks/bench_metrics.py [--quick]`` for a table.
"""
from __future__ import annotations

import contextlib
import copy
import io
import platform
import sys

import numpy as np
import torch

from segnotes.metrics import average_precision, confusion_matrix
from segnotes.metrics._synthetic import synthetic_instances
from timing import bench_devices, median_time

CPU = torch.device("cpu")

__all__ = ["run"]


def _cocoeval_reference(inputs):
    """pycocotools: COCO index, loadRes, evaluate, accumulate, summarize (prints silenced)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, dets = inputs
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), iouType="segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _faster_coco_eval_reference(inputs):
    from faster_coco_eval import COCO, COCOeval_faster

    gt, dets = inputs
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(gt)
        evaluator = COCOeval_faster(coco, coco.loadRes(dets), iouType="segm", print_function=lambda *a, **k: None)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator.stats


def _coco_cases(quick: bool) -> list[dict]:
    size = dict(num_images=40, image_size=64, detections_per_image=20) if quick else \
        dict(num_images=500, image_size=128, detections_per_image=100)
    gt, dets = synthetic_instances(num_categories=9, max_objects=8, seed=0, **size)
    repeats = 2 if quick else 3
    fresh = lambda: (copy.deepcopy(gt), copy.deepcopy(dets))  # noqa: E731  (COCO rewrites its inputs)
    ours_result = average_precision(gt, dets)
    ours = median_time(lambda: average_precision(gt, dets), CPU, repeats)
    description = (f"{size['num_images']} images {size['image_size']} px, 9 categories, {len(gt['annotations'])} "
                   f"objects, {len(dets)} detections, segm")
    rows = []
    reference_stats = _cocoeval_reference(fresh())
    reference = median_time(_cocoeval_reference, CPU, repeats, setup=fresh)
    rows.append({
        "case": "coco_ap_segm",
        "ours": ours,
        "reference": reference,
        "reference_name": "pycocotools COCOeval",
        "ratio": reference / ours,
        "note": f"{description}; AP {ours_result['AP']:.4f} vs {reference_stats[0]:.4f}",
    })
    try:
        faster_stats = _faster_coco_eval_reference(fresh())
    except ImportError:
        return rows
    faster = median_time(_faster_coco_eval_reference, CPU, repeats, setup=fresh)
    rows.append({
        "case": "coco_ap_segm",
        "ours": ours,
        "reference": faster,
        "reference_name": "faster-coco-eval COCOeval_faster",
        "ratio": faster / ours,
        "note": f"same case; extra row, C++ evaluation; AP {faster_stats[0]:.4f}",
    })
    return rows


def _confusion_cases(quick: bool) -> list[dict]:
    try:
        from torchmetrics.functional.classification import multiclass_confusion_matrix
    except ImportError:
        return []
    shape = (2, 128, 128) if quick else (8, 512, 512)
    generator = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 21, shape, generator=generator)
    target = torch.randint(0, 21, shape, generator=generator)
    target[torch.rand(shape, generator=generator) < 0.1] = 255  # VOC's border label
    devices = bench_devices()
    rows = []
    for device in devices:
        p, t = pred.to(device), target.to(device)
        if not torch.equal(confusion_matrix(p, t, 21), multiclass_confusion_matrix(p, t, 21, ignore_index=255)):
            raise RuntimeError("bench_metrics: confusion_matrix and torchmetrics disagree")
        repeats = 5 if quick else 20
        ours = median_time(lambda: confusion_matrix(p, t, 21), device, repeats)
        reference = median_time(lambda: multiclass_confusion_matrix(p, t, 21, ignore_index=255), device, repeats)
        rows.append({
            "case": f"confusion_matrix_{device.type}",
            "ours": ours,
            "reference": reference,
            "reference_name": "torchmetrics multiclass_confusion_matrix",
            "ratio": reference / ours,
            "note": f"{'x'.join(map(str, shape))} int64, 21 classes, 10% ignored; checks on in both; "
                    f"{torch.get_num_threads()} CPU threads",
        })
    return rows


def run(quick: bool = False) -> list[dict]:
    """Time segnotes.metrics against the references; one dict per case (see the module docstring).

    Args:
        quick: small sizes, for a smoke test.

    Returns:
        list of dicts with keys ``case``, ``ours``, ``reference`` (seconds), ``reference_name``,
        ``ratio`` (reference / ours) and ``note``.
    """
    return _confusion_cases(quick) + _coco_cases(quick)


def _versions() -> str:
    import pycocotools  # noqa: F401  (no __version__)

    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {np.__version__}"]
    for name in ("torchmetrics", "faster_coco_eval"):
        with contextlib.suppress(ImportError):
            parts.append(f"{name} {__import__(name).__version__}")
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu"
    return f"{device}; " + ", ".join(parts)


if __name__ == "__main__":
    rows = run(quick="--quick" in sys.argv)
    print(_versions())
    print(f"{'case':<24} {'ours (s)':>10} {'reference (s)':>14} {'ratio':>7}  reference / note")
    for row in rows:
        print(f"{row['case']:<24} {row['ours']:>10.4f} {row['reference']:>14.4f} {row['ratio']:>7.2f}  "
              f"{row['reference_name']}: {row['note']}")
