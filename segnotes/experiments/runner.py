"""Train many runs of one chapter, in dependency order, in parallel processes.

A chapter's experiments live in one module (``segnotes.experiments.fcn``, ``.mask_rcnn``) that
defines a recipe dataclass (settings shared by its runs), run specs with ``name``, ``parent``
(None or the name of the run whose weights start this one) and two functions::

    train_run(spec, recipe, out, *, data_root=None, device="cpu") -> meta dict
    is_done(out, name) -> bool

:func:`run_all` finds them through the recipe's module, so one loop serves every chapter.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from .. import hub
from .._checks import check_int, describe

__all__ = ["run_all"]


def _chapter(recipe):
    """The module that defines ``recipe``'s class, with its ``train_run`` and ``is_done``."""
    module = importlib.import_module(type(recipe).__module__)
    if not (callable(getattr(module, "train_run", None)) and callable(getattr(module, "is_done", None))):
        raise TypeError(f"run_all: recipe must be a chapter's recipe (e.g. FCNRecipe), got {describe(recipe)}")
    return module


def _worker(spec, recipe, out: str, data_root, device: str, threads: int) -> tuple[str, float]:
    # One thread per process: the order of float reductions, and so the result, depends on it.
    torch.set_num_threads(threads)
    start = time.perf_counter()
    _chapter(recipe).train_run(spec, recipe, out, data_root=data_root, device=device)
    return spec.name, time.perf_counter() - start


def run_all(
    runs: Sequence,
    recipe,
    out: str | Path,
    *,
    jobs: int = 1,
    data_root=None,
    device: str = "cpu",
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Train every unfinished run, at most ``jobs`` at a time.

    With ``jobs=1`` the runs train one after another in this process (``threads`` is then not
    applied: the caller's torch thread setting stays). With ``jobs > 1`` each run trains in a
    fresh process using ``threads`` torch threads, and a run starts when its parent has finished,
    in the order of ``runs``.

    Args:
        runs (sequence of run specs): e.g. :func:`~segnotes.experiments.fcn_runs`; a parent must
            precede its children.
        recipe: the chapter's settings (``FCNRecipe``, ``MaskRCNNRecipe``).
        out: checkpoint root.
        jobs (int): runs trained at once.
        data_root: the shapes data set's folder.
        device (str): where to train.
        threads (int): torch threads per worker process.
        log: called with one line per started and finished run.

    Returns:
        list of str: the names of the runs trained now (finished ones are skipped).
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    check_int("run_all", "jobs", jobs, minimum=1)
    chapter = _chapter(recipe)
    names = {spec.name for spec in runs}
    pending = [spec for spec in runs if not chapter.is_done(out, spec.name)]
    for spec in runs:
        if spec.parent is not None and spec.parent not in names and not chapter.is_done(out, spec.parent):
            raise ValueError(f"run_all: run {spec.name!r} needs {spec.parent!r}, which is neither done nor listed")
    trained: list[str] = []
    if jobs == 1:  # in this process, with its thread setting: no process start-up cost
        for spec in pending:
            log(f"start {spec.name}")
            start = time.perf_counter()
            chapter.train_run(spec, recipe, out, data_root=data_root, device=device)
            trained.append(spec.name)
            log(f"done  {spec.name} in {(time.perf_counter() - start) / 60:.1f} min")
        return trained
    running: dict[cf.Future, object] = {}
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
        while pending or running:
            for spec in list(pending):
                if len(running) >= jobs:
                    break
                if spec.parent is None or chapter.is_done(out, spec.parent):
                    pending.remove(spec)
                    log(f"start {spec.name}")
                    future = pool.submit(_worker, spec, recipe, str(out), data_root, device, threads)
                    running[future] = spec
            if not running:
                missing = sorted({s.parent for s in pending})
                raise RuntimeError(f"run_all: runs {[s.name for s in pending]} wait for {missing}, which cannot run")
            done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in done:
                spec = running.pop(future)
                name, seconds = future.result()  # re-raises a worker's error
                trained.append(name)
                log(f"done  {name} in {seconds / 60:.1f} min")
    return trained


# ----------------------------------------------------------------------------------------------
# One run's files: shared by the chapters


class RunFiles:
    """Where one chapter's runs are stored under a checkpoint root ``out``.

    A finished run is ``<out>/<chapter>/<name>.pt``; while it trains, ``<name>.partial.pt`` holds
    what resuming needs (optimizer, scheduler and RNG states) and is deleted when it finishes.
    """

    def __init__(self, chapter: str):
        self.chapter = chapter

    def run_path(self, out: str | Path, name: str) -> Path:
        """Where the finished checkpoint of run ``name`` lives: ``<out>/<chapter>/<name>.pt``."""
        return Path(out) / self.chapter / f"{name}.pt"

    def partial_path(self, out: str | Path, name: str) -> Path:
        """The resumable checkpoint of run ``name`` while it trains: ``<out>/<chapter>/<name>.partial.pt``."""
        return Path(out) / self.chapter / f"{name}.partial.pt"

    def is_done(self, out: str | Path, name: str) -> bool:
        """Whether run ``name`` has a finished checkpoint under ``out``."""
        return self.run_path(out, name).is_file()

    def hub_name(self, name: str) -> str:
        """Run ``name``'s file in :mod:`segnotes.hub`'s manifest: ``checkpoints/<chapter>/<name>.pt``."""
        return f"checkpoints/{self.chapter}/{name}.pt"

    def load_run(self, out: str | Path, name: str) -> dict:
        """A finished run's checkpoint: ``meta`` (spec, recipe, scores), ``history`` and ``model`` (float32, or None).

        When ``out`` is the download cache (``checkpoint_root()`` outside a source checkout) and the
        run is missing there, the book's checkpoint is fetched first (:func:`segnotes.hub.fetch`).
        """
        path = self.run_path(out, name)
        if not path.is_file() and _is_download_root(out) and self.hub_name(name) in hub.manifest():
            path = hub.fetch(self.hub_name(name), progress=True)
        return load_finished(path, name)


def download_root() -> Path:
    """Where :mod:`segnotes.hub` keeps the book's checkpoints outside a checkout: ``<cache>/checkpoints``."""
    return hub.cache_dir() / "checkpoints"


def _is_download_root(out: str | Path) -> bool:
    return Path(out).expanduser().resolve() == download_root().resolve()


def load_finished(path: Path, name: str) -> dict:
    """A finished run's checkpoint: ``meta`` (spec, recipe, scores), ``history`` and ``model`` (or None)."""
    from ..engine import load_checkpoint

    state = load_checkpoint(path, expect={"run": name, "done": True})
    state.setdefault("model", None)
    return state


def finish_run(trainer, spec, recipe, path: Path, partial: Path, evaluate: Callable) -> dict:
    """Score the float32 and the float16-stored weights, write the finished checkpoint, drop the partial one.

    The scores kept in ``meta["scores"]`` are those of the float16 weights the file holds (so a
    loaded checkpoint reproduces them); ``meta["scores_float32"]`` are the trained weights'.

    Args:
        trainer (Trainer): the finished trainer (its model is left holding the float16-rounded weights).
        spec, recipe: dataclasses recorded in ``meta``; ``spec.keep_weights`` decides whether the
            weights are stored.
        path (Path): the finished checkpoint to write (atomically).
        partial (Path): the resumable checkpoint to delete afterwards.
        evaluate: ``evaluate(model) -> dict`` of scores on the whole val set.

    Returns:
        dict: the run's ``meta``.
    """
    import dataclasses

    from ..engine import save_checkpoint

    model = trainer.model
    start = time.perf_counter()
    scores_float32 = evaluate(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    # What the committed file will hold: float16 weights, back in float32 when loaded.
    stored = {k: v.half().float() if v.dtype == torch.float32 else v for k, v in state.items()}
    model.load_state_dict(stored)
    scores = evaluate(model)
    meta = {
        **trainer.meta,
        "done": True,
        "spec": dataclasses.asdict(spec),
        "recipe": dataclasses.asdict(recipe),
        "steps": trainer.step,
        "train_seconds": trainer.seconds,
        "eval_seconds": time.perf_counter() - start,
        "threads": torch.get_num_threads(),
        "device": str(trainer.device),
        "scores": scores,
        "scores_float32": scores_float32,
        "torch_version": str(torch.__version__),
    }
    if spec.keep_weights:
        save_checkpoint(path, half=True, model=state, meta=meta, history=trainer.history)
    else:
        save_checkpoint(path, meta=meta, history=trainer.history)
    if partial.exists():
        partial.unlink()
    return meta
