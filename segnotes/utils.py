"""Device choice, seeding and deterministic mode.

Library code never seeds or flips global flags by itself: randomness comes in as a
``torch.Generator`` or a ``seed``, and only notebooks and the CLI call :func:`manual_seed`.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch

from ._checks import check_choice, check_int

__all__ = ["get_device", "model_device", "manual_seed", "deterministic", "num_threads"]

_DEVICES = ("auto", "cuda", "mps", "cpu")


def get_device(preference: str | torch.device = "auto") -> torch.device:
    """Resolve a device name: ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.

    Args:
        preference: ``"auto"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"`` or a ``torch.device``.

    Returns:
        torch.device: the device to use. Asking for an unavailable accelerator raises a
        ``RuntimeError`` that says so, rather than failing later inside a kernel.
    """
    if isinstance(preference, torch.device):
        preference = str(preference)
    if not isinstance(preference, str):
        raise TypeError(f"get_device: preference must be a str or torch.device, got {preference!r}")
    kind = preference.split(":")[0]
    check_choice("get_device", "preference", kind, _DEVICES)
    if kind == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("get_device: preference 'cuda' asked for, but torch.cuda.is_available() is False")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError("get_device: preference 'mps' asked for, but torch.backends.mps.is_available() is False")
    return torch.device(preference)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def manual_seed(seed: int) -> torch.Generator:
    """Seed Python's, NumPy's and torch's global generators (notebooks and CLI only).

    Returns:
        torch.Generator: a fresh CPU generator seeded with ``seed``, to pass along explicitly.
    """
    check_int("manual_seed", "seed", seed, minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@contextlib.contextmanager
def deterministic(enabled: bool = True, *, warn_only: bool = False):
    """Context manager: turn torch's deterministic algorithms on (or off) and restore on exit.

    Also switches cuDNN's benchmark mode off inside, since autotuning picks kernels by timing.
    CUDA's cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` in the environment for some
    deterministic matmuls; it is set here when missing and removed again on exit.
    """
    old_flag = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_bench = torch.backends.cudnn.benchmark
    old_cudnn_det = torch.backends.cudnn.deterministic
    set_env = enabled and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    if set_env:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = ":4096:8"
    try:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.benchmark = False if enabled else old_bench
        torch.backends.cudnn.deterministic = enabled
        yield
    finally:
        torch.use_deterministic_algorithms(old_flag, warn_only=old_warn)
        torch.backends.cudnn.benchmark = old_bench
        torch.backends.cudnn.deterministic = old_cudnn_det
        if set_env:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


@contextlib.contextmanager
def num_threads(n: int):
    """Context manager: run torch's CPU ops on ``n`` threads, restoring the old count on exit."""
    check_int("num_threads", "n", n, minimum=1)
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
