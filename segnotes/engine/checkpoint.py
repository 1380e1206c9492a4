"""Checkpoints that survive crashes and load safely.

* :func:`save_checkpoint` writes to a temporary file in the target's folder, flushes and fsyncs
  it, reads it back as :func:`load_checkpoint` will (so a state that could not be loaded, e.g.
  a ``Path`` in ``meta``, is refused now rather than found out later), then renames it over the
  target with ``os.replace`` (atomic on POSIX and Windows): a crash mid-save leaves the previous
  checkpoint intact, never a half-written one. The temporary files of saves that were killed are
  removed by the next save to the same target.
* Each checkpoint stores a SHA-256 of its contents (every tensor's bytes, dtype and shape, and
  every other value); :func:`load_checkpoint` recomputes it, so bytes changed on disk are an
  error, not silently different weights. Checkpoints written before the hash existed load as
  they always did.
* :func:`load_checkpoint` uses ``torch.load(weights_only=True)``, which unpickles only tensors
  and plain containers (no arbitrary code from a downloaded file), and turns a missing,
  truncated or corrupt file, or one made for another model, into an error naming the path.
* :func:`get_rng_state` / :func:`set_rng_state` capture torch's, CUDA's, NumPy's and Python's
  global generators as tensors and lists, so they too load with ``weights_only=True``.
"""
from __future__ import annotations

import glob
import hashlib
import io
import os
import random
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from .._checks import describe

__all__ = [
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "state_sha256",
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

    Raises:
        TypeError: ``state`` holds a value that :func:`load_checkpoint` could not read back (e.g.
            a ``pathlib.Path`` or a NumPy array in ``meta``); the message says where. Nothing
            is written then, and an older checkpoint at ``path`` is kept.

    The file also holds ``state_sha256`` (see :func:`state_sha256`), which :func:`load_checkpoint`
    checks and removes.
    """
    fn = "save_checkpoint"
    path = _check_path(fn, path)
    if half:
        if not isinstance(state.get("model"), Mapping):
            raise ValueError(f"{fn}: half=True needs a model state dict under the key 'model', got keys {sorted(state)}")
        state = {**state, "model": _to_half(state["model"]), "half_precision": True}
    state = {**state, _HASH_KEY: state_sha256(state)}
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_orphans(path)
    # The temporary file must be in the same folder: os.replace is atomic only within a file system.
    # Its name holds this process's id, so that a later save can tell an orphan from a live save.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        _check_loadable(fn, tmp_name, state)
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


# The key under which a checkpoint stores state_sha256 of the rest (removed by load_checkpoint).
_HASH_KEY = "state_sha256"
# A temporary file older than this is an orphan even if its process id is in use again.
_ORPHAN_AGE_S = 24 * 3600


def state_sha256(state) -> str:
    """SHA-256 of a checkpoint state: every tensor's dtype, shape and bytes, and every other value.

    Walks dicts (in their order), lists and tuples; the same state loaded back from a file gives
    the same digest (pickle keeps dict order, tuple and list types, and floats exactly).
    """
    digest = hashlib.sha256()

    def walk(obj) -> None:
        if isinstance(obj, torch.Tensor):
            data = obj.detach().cpu().contiguous().reshape(-1)
            digest.update(f"T{data.dtype}{tuple(obj.shape)}".encode())
            digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        elif isinstance(obj, Mapping):
            digest.update(f"D{len(obj)}".encode())
            for key, value in obj.items():
                digest.update(f"K{type(key).__name__}:{key!r}".encode())
                walk(value)
        elif isinstance(obj, (list, tuple)):
            digest.update(f"{type(obj).__name__}{len(obj)}".encode())
            for value in obj:
                walk(value)
        else:
            digest.update(f"V{type(obj).__name__}:{obj!r}".encode())

    walk(state)
    return digest.hexdigest()


def _check_loadable(fn: str, tmp_name: str, state: Mapping) -> None:
    """Read the written file back with ``weights_only=True``, as load_checkpoint will; refuse what fails.

    ``mmap=True`` maps the tensors' bytes instead of reading them, so this costs about what
    unpickling the non-tensor part does.
    """
    try:
        loaded = torch.load(tmp_name, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:
        where, what = _first_unloadable(state)
        raise TypeError(
            f"{fn}: {where} is {what}, which load_checkpoint could not read back (it loads with "
            "torch.load(weights_only=True): tensors, numbers, strings, None, and lists, tuples and dicts of them); "
            f"store it as one of those (e.g. a path as str). Nothing was written. ({type(err).__name__}: {err})"
        ) from None
    del loaded


def _first_unloadable(state, where: str = "state") -> tuple[str, str]:
    """Where the first value that ``weights_only=True`` refuses sits in ``state``, and what it is."""
    plain = (str, bytes, int, float, complex, bool, type(None), torch.Tensor, torch.dtype, torch.device, torch.Size)
    if type(state) in (dict, list, tuple) or type(state).__name__ == "OrderedDict":
        items = state.items() if isinstance(state, Mapping) else enumerate(state)
        for key, value in items:
            found = _first_unloadable(value, f"{where}[{key!r}]")
            if found[0]:
                return found
        return "", ""
    if type(state) in plain or isinstance(state, torch.Tensor):
        return "", ""
    buffer = io.BytesIO()
    try:
        torch.save(state, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:
        return where, f"a {type(state).__module__}.{type(state).__qualname__}"
    return "", ""


def _remove_orphans(path: Path) -> None:
    """Delete the temporary files that killed saves to ``path`` left behind.

    A temporary file is ``.<name>.<pid>.<random>.tmp``: it is an orphan when no process with
    that id runs, when it is older than a day, or when it has the name of an older version
    (``.<name>.<random>.tmp``, no id). A live save's file (its process runs) is left alone.
    """
    prefix = f".{path.name}."
    for name in glob.glob(glob.escape(str(path.parent / prefix)) + "*.tmp"):
        middle = os.path.basename(name)[len(prefix):-len(".tmp")]
        pid = middle.split(".")[0] if "." in middle else ""
        try:
            old = time.time() - os.path.getmtime(name) > _ORPHAN_AGE_S
            if old or not pid.isdigit() or not _process_alive(int(pid)):
                os.unlink(name)
        except OSError:  # gone already (another save cleaned it), or not ours to delete
            pass


def _process_alive(pid: int) -> bool:
    """Whether a process with id ``pid`` runs (POSIX); on Windows assume it does (age decides)."""
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send it CTRL_C_EVENT there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


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
        CheckpointError: the file is truncated, corrupt or not a checkpoint, or its contents do not
            match the SHA-256 stored when it was saved.
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
    stored_hash = state.pop(_HASH_KEY, None)  # absent from checkpoints written before it existed
    if stored_hash is not None and stored_hash != state_sha256(state):
        raise CheckpointError(
            f"{fn}: the checkpoint {path} does not match the SHA-256 of its contents stored when it was saved: "
            "its bytes changed on disk (corrupt copy or storage?). Delete it and rerun the training that makes it, "
            "or copy it again."
        )
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
