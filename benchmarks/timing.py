"""Timing helpers shared by the benchmark modules (the runner puts this folder on sys.path)."""
from __future__ import annotations

import os
import statistics
import time

import torch


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so a timer measures the kernels and not just their launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_devices() -> list[torch.device]:
    """The devices to time on: ``SEGNOTES_BENCH_DEVICES`` (comma-separated, set by ``run.py --devices``),
    else the CPU and, when there is one, the GPU."""
    names = os.environ.get("SEGNOTES_BENCH_DEVICES")
    if not names:
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    devices = [torch.device(name.strip()) for name in names.split(",") if name.strip()]
    if any(d.type == "cuda" for d in devices) and not torch.cuda.is_available():
        raise RuntimeError(f"SEGNOTES_BENCH_DEVICES={names!r} asks for CUDA, but torch.cuda.is_available() is False")
    return devices
