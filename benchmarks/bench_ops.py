"""Benchmark segnotes.ops.roi_align (and roi_pool) against torchvision's C++/CUDA kernels.

Case (Mask R-CNN's mask branch on a small FPN level): 2 images, 256 channels, a 50x50 map at
spatial_scale 1/4 (200x200 images), 512 RoIs with sides log-uniform in [16, 128] px, output
14x14, sampling_ratio 2, aligned=True. Forward, and forward + backward (gradient wrt the
input), on CPU and, when available, CUDA. Times are medians of several runs after warmup, both
ops on the same inputs in the same process; ``ratio`` = reference time / ours (> 1: ours is
faster).

Run ``python benchmarks/bench_ops.py [--quick] [--threads N]`` for a table.
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import torch
import torchvision

from segnotes.ops.roi_align import roi_align
from segnotes.ops.roi_pool import roi_pool
from timing import bench_devices, median_time

__all__ = ["run", "make_case"]


def make_case(
    num_rois: int = 512,
    channels: int = 256,
    image_size: int = 200,
    spatial_scale: float = 0.25,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature maps and RoIs for the benchmark.

    Returns:
        features (Tensor[2, C, S, S], float32): with ``S = image_size * spatial_scale``.
        rois (Tensor[K, 5], float32): ``(batch index, x1, y1, x2, y2)`` in image pixels,
        sides log-uniform in [16, 128] px, inside the image, sorted by image.
    """
    g = torch.Generator().manual_seed(seed)
    side = round(image_size * spatial_scale)
    features = torch.randn(2, channels, side, side, generator=g)
    log_min, log_max = math.log(16.0), math.log(128.0)
    size = torch.exp(torch.empty(num_rois, 2).uniform_(log_min, log_max, generator=g))  # [K, 2] (w, h)
    corner = torch.rand(num_rois, 2, generator=g) * (image_size - size)
    index = torch.randint(0, 2, (num_rois, 1), generator=g).float().sort(dim=0).values
    rois = torch.cat([index, corner, corner + size], dim=1)
    return features.to(device), rois.to(device)


def _forward_backward(op: Callable, features: torch.Tensor, rois: torch.Tensor, args: tuple) -> Callable[[], None]:
    leaf = features.detach().clone().requires_grad_()

    def step() -> None:
        out = op(leaf, rois, *args)
        out.backward(torch.ones_like(out))
        leaf.grad = None

    return step


def run(quick: bool = False, threads: int | None = None) -> list[dict]:
    """Time ours against torchvision.

    Args:
        quick: a 64-RoI case and fewer repeats, for a smoke test.
        threads: CPU threads for the run (restored afterwards); None keeps the current setting.

    Returns:
        list of dict with keys ``case``, ``ours``, ``reference`` (seconds), ``reference_name``,
        ``ratio`` (reference / ours) and ``note`` (device, threads, versions).
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        devices = bench_devices()
        rows = []
        for device in devices:
            rows += _run_device(device, quick)
        return rows
    finally:
        torch.set_num_threads(previous_threads)


def _run_device(device: torch.device, quick: bool) -> list[dict]:
    num_rois, warmup, repeats = (64, 1, 3) if quick else (512, 2, 7)
    features, rois = make_case(num_rois=num_rois, device=device)
    align_args = ((14, 14), 0.25, 2, True)
    pool_args = ((14, 14), 0.25)
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu, {torch.get_num_threads()} threads"
    note = f"{name}; torch {torch.__version__}, torchvision {torchvision.__version__}; K={num_rois}"
    cases = [
        ("roi_align forward", roi_align, torchvision.ops.roi_align, align_args, False),
        ("roi_align forward+backward", roi_align, torchvision.ops.roi_align, align_args, True),
        ("roi_pool forward", roi_pool, torchvision.ops.roi_pool, pool_args, False),
        ("roi_pool forward+backward", roi_pool, torchvision.ops.roi_pool, pool_args, True),
    ]
    rows = []
    for case, ours_op, ref_op, args, backward in cases:
        if backward:
            ours_fn = _forward_backward(ours_op, features, rois, args)
            ref_fn = _forward_backward(ref_op, features, rois, args)
        else:
            ours_fn = lambda op=ours_op, a=args: op(features, rois, *a)  # noqa: E731
            ref_fn = lambda op=ref_op, a=args: op(features, rois, *a)  # noqa: E731
        ours = median_time(ours_fn, device, repeats, warmup=warmup)
        reference = median_time(ref_fn, device, repeats, warmup=warmup)
        rows.append(
            dict(
                case=f"{case} ({device.type})",
                ours=ours,
                reference=reference,
                reference_name=f"torchvision.ops.{ref_op.__name__}",
                ratio=reference / ours,
                note=note,
            )
        )
    return rows


def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    options = parser.parse_args()
    rows = run(quick=options.quick, threads=options.threads)
    print(f"{'case':36s} {'ours (ms)':>10s} {'ref (ms)':>10s} {'ratio':>6s}  note")
    for row in rows:
        print(
            f"{row['case']:36s} {row['ours'] * 1e3:10.1f} {row['reference'] * 1e3:10.1f} "
            f"{row['ratio']:6.2f}  {row['note']}"
        )


if __name__ == "__main__":
    _main()
