"""Checkpoints that survive crashes and load safely.

* :func:`save_checkpoint` writes to a temporary file in the target's folder, flushes and fsyncs
  it, then renames it over the target with ``os.replace`` (atomic on POSIX and Windows): a crash
  mid-save leaves the previous checkpoint intact, never a half-written one.
* :func:`load_checkpoint` uses ``torch.load(weights_only=True)``, which unpickles only tensors
  and plain containers (no arbitrary code from a downloaded file), and turns a missing,
  truncated or corrupt file, or one made for another model, into an error naming the path.
* :func:`get_rng_state` / :func:`set_rng_state` capture torch's, CUDA's, NumPy's and Python's
  global generators as tensors and lists, so they too load with ``weights_only=True``.
"""
from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .._checks import describe

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "get_rng_state",
    "set_rng_state",
    "seeded_rng_state",
]


class CheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated, corrupt, not a checkpoint)."""


def _check_path(fn: str, path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path must be a str or os.PathLike, got {describe(path)}")
    return Path(path)


def _to_half(model_state: Mapping) -> dict:
    return {k: v.half() if torch.is_tensor(v) and v.dtype == torch.float32 else v for k, v in model_state.items()}


def _to_float(model_state: Mapping) -> dict:
    return {k: v.float() if torch.is_tensor(v) and v.dtype == torch.float16 else v for k, v in model_state.items()}


def save_checkpoint(path: str | os.PathLike, *, half: bool = False, **state) -> Path:
    """Save ``state`` to ``path`` atomically.

    Args:
        path: destination file; its folder is created if needed.
        half (bool): store the float32 tensors of ``state["model"]`` as float16 (half the size,
            for checkpoints committed to the book's repository); :func:`load_checkpoint` turns
            them back into float32. Other entries are stored as they are.
        **state: what to save: tensors, state dicts, numbers, strings, lists, dicts, None
            (e.g. ``model=model.state_dict(), optimizer=..., meta={"variant": "fcn8s"}``).

    Returns:
        Path: ``path``.
    """
    fn = "save_checkpoint"
    path = _check_path(fn, path)
    if half:
        if not isinstance(state.get("model"), Mapping):
            raise ValueError(f"{fn}: half=True needs a model state dict under the key 'model', got keys {sorted(state)}")
        state = {**state, "model": _to_half(state["model"]), "half_precision": True}
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary file must be in the same folder: os.replace is atomic only within a file system.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        # mkstemp creates the file as 0600; give it the permissions an ordinary open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)
        os.replace(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    _fsync_folder(path.parent)
    return path


def _fsync_folder(folder: Path) -> None:
    """Persist the rename itself (POSIX); Windows cannot open folders, and needs no such step."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(
    path: str | os.PathLike, map_location="cpu", *, expect: Mapping | None = None
) -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the file.
        map_location: where tensors go (``torch.load``'s argument), default the CPU.
        expect (dict): entries ``state["meta"]`` must have, e.g. ``{"variant": "fcn8s",
            "num_classes": 10}``: a checkpoint of another model fails here with a clear message
            instead of later with a shape mismatch.

    Returns:
        dict: the saved state; half-precision model weights are back in float32.

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: the file is truncated, corrupt or not a checkpoint.
        ValueError: ``meta`` lacks a key of ``expect`` or has another value.
    """
    fn = "load_checkpoint"
    path = _check_path(fn, path)
    if not path.is_file():
        raise FileNotFoundError(f"{fn}: no checkpoint at {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # zip, pickle and EOF errors all mean "not a readable checkpoint"
        raise CheckpointError(
            f"{fn}: cannot read the checkpoint {path} (truncated or corrupt?): {type(err).__name__}: {err}. "
            "Delete it and rerun the training that makes it."
        ) from err
    if not isinstance(state, dict):
        raise CheckpointError(f"{fn}: {path} holds a {type(state).__name__}, not a checkpoint dict")
    if state.pop("half_precision", False):
        state["model"] = _to_float(state["model"])
    if expect:
        _check_meta(fn, path, state.get("meta") or {}, expect)
    return state


def _check_meta(fn: str, path: Path, meta: Mapping, expect: Mapping) -> None:
    for key, wanted in expect.items():
        if key not in meta:
            raise ValueError(f"{fn}: checkpoint {path} has no meta[{key!r}] (expected {wanted!r}); its meta is {dict(meta)}")
        if meta[key] != wanted:
            raise ValueError(f"{fn}: checkpoint {path} has meta[{key!r}] = {meta[key]!r}, expected {wanted!r}")


# ----------------------------------------------------------------------------------------------
# Random number generator states, as tensors and lists (loadable with weights_only=True).


def get_rng_state(device: torch.device | str | None = None) -> dict:
    """The global generators' states: torch CPU, CUDA (for ``device`` if it is CUDA), NumPy, Python.

    Returns:
        dict with ``torch`` (ByteTensor), ``cuda`` (ByteTensor or None), ``numpy`` (dict of a
        Tensor[624] int64 key and ints/float) and ``python`` (dict of lists and numbers).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": cuda,
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }


def set_rng_state(state: Mapping, device: torch.device | str | None = None) -> None:
    """Restore the global generators from :func:`get_rng_state`'s result."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    torch.set_rng_state(state["torch"].cpu())
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"].cpu(), device)
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["keys"].cpu().numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss_next"]))


def seeded_rng_state(seed: int, device: torch.device | str | None = None) -> dict:
    """The states the global generators would have after seeding them all with ``seed``.

    Built from private generators, so nothing global is touched: a training run starts from
    this and swaps it in only while it runs (see :class:`segnotes.engine.Trainer`).
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    cuda = None
    if device.type == "cuda":
        cuda = torch.Generator(device=device).manual_seed(seed).get_state()
    _, keys, pos, has_gauss, cached = np.random.RandomState(seed % 2**32).get_state()
    version, internal, gauss_next = random.Random(seed).getstate()
    return {
        "torch": torch.Generator().manual_seed(seed).get_state(),
        "cuda": cuda,
        "numpy": {
            "kind": "MT19937",
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
    }
