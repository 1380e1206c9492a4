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


def median_time(fn, device: torch.device, repeats: int, warmup: int = 1, setup=None) -> float:
    """Median wall time in seconds of ``fn()`` over ``repeats`` calls, after ``warmup`` untimed calls.

    With ``setup``, each call is ``fn(setup())`` and ``setup()`` is not timed (e.g. a fresh copy of
    inputs that ``fn`` consumes).
    """
    def call(timed: list | None) -> None:
        argument = setup() if setup is not None else None
        sync(device)
        start = time.perf_counter()
        fn(argument) if setup is not None else fn()
        sync(device)
        if timed is not None:
            timed.append(time.perf_counter() - start)

    for _ in range(warmup):
        call(None)
    times: list[float] = []
    for _ in range(repeats):
        call(times)
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
