"""One training path for every chapter, and for ``segnotes train``.

A chapter declares what differs from the others in a :class:`Chapter`: its recipe (settings
shared by its runs), its runs, how to build a run's model, how to load its data, how to make its
:class:`~segnotes.engine.Trainer` and how to score a finished model. Everything else is here,
written once:

* :class:`RunFiles`: where a run's files live (``<out>/<chapter>/<name>.pt`` when finished,
  ``<name>.partial.pt`` while it trains);
* :func:`train_run`: train one run (or resume it, or skip it when finished) and write its
  checkpoint; under ``torchrun`` every process trains its shard and only rank 0 writes;
* :meth:`Chapter.load_run_model`: the trained model of a finished run;
* :func:`run_all`: many runs of one chapter, parents first, in parallel processes;
* :func:`checkpoint_root`: where the book's checkpoints live.

The book's chapters are listed in :data:`segnotes.experiments.chapters.CHAPTERS`; adding one
means a recipe, a runs function, a builder (and its data and trainer) and one line there.
"""
from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .. import hub
from .._checks import check_int, describe

__all__ = [
    "Chapter",
    "RunFiles",
    "train_run",
    "run_all",
    "finish_run",
    "checkpoint_root",
    "REPOSITORY_CHECKPOINTS",
]

REPOSITORY_CHECKPOINTS = Path(__file__).resolve().parents[2] / "data" / "checkpoints"  # the committed ones


def checkpoint_root() -> Path:
    """Where the book's checkpoints live: ``$SEGNOTES_CHECKPOINTS`` if set; else ``<repo>/data/checkpoints``
    in a source checkout (``make checkpoints`` writes there); else the download cache
    (``~/.cache/segnotes/checkpoints``, see :mod:`segnotes.hub`), into which ``load_run`` fetches
    each checkpoint on first use.
    """
    if os.environ.get("SEGNOTES_CHECKPOINTS"):
        return Path(os.environ["SEGNOTES_CHECKPOINTS"]).expanduser()
    if hub.checkout_data() is not None:
        return REPOSITORY_CHECKPOINTS
    return download_root()


# ----------------------------------------------------------------------------------------------
# One run's files


class RunFiles:
    """Where one chapter's runs are stored under a checkpoint root ``out``.

    A finished run is ``<out>/<chapter>/<name>.pt``; while it trains, ``<name>.partial.pt`` holds
    what resuming needs (optimizer, scheduler and RNG states) and is deleted when it finishes.
    ``chapter=""`` keeps the files in ``out`` itself (``segnotes train --out DIR``).
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


# ----------------------------------------------------------------------------------------------
# The chapter protocol


@dataclass(frozen=True)
class Chapter(RunFiles):
    """What one chapter's experiments declare; :func:`train_run` does the rest.

    A run spec is a frozen dataclass with at least ``name`` (its file stem), ``seed``, ``parent``
    (None, or the run whose trained model starts this one) and ``keep_weights`` (store the
    weights in the finished file); ``stop_epoch`` (stop early in a longer schedule) is optional.

    Attributes:
        name: the chapter's folder under the checkpoint root (``""``: the root itself).
        recipe: the recipe dataclass; its defaults are what ``make checkpoints`` trains.
        spec: the run spec dataclass.
        runs: ``runs(recipe) -> list of spec``, parents before children.
        build: ``build(spec, recipe, parent) -> nn.Module``, the run's initial model; ``parent``
            is the parent run's trained model (train mode) or None, in which case the call is
            seeded with ``spec.seed``.
        rebuild: ``rebuild(meta) -> nn.Module``, the untrained model of a finished run from its
            stored ``meta``, to load its weights into.
        data: ``data(spec, recipe, data_root) -> (train, val)`` data sets.
        trainer: ``trainer(model, train, val, spec, recipe, checkpoint_path=, device=, progress=)
            -> Trainer``: the chapter's optimiser, schedule, step and monitoring.
        evaluate: ``evaluate(model, val, recipe) -> dict``, the final scores on the whole val set.
        data_set: which data set ``data_root`` means by default, for the command line:
            ``"shapes"``, ``"shapes_handles"``, ``"shapes_attributes"`` or ``"own"`` (given by the user).
        half: store the finished weights in float16 (the book's checkpoints, committed to git),
            scoring the float16 weights; False stores float32 and scores them once.
    """

    name: str
    recipe: type
    spec: type
    runs: Callable
    build: Callable
    rebuild: Callable
    data: Callable
    trainer: Callable
    evaluate: Callable
    data_set: str = "shapes"
    half: bool = True

    @property
    def chapter(self) -> str:  # RunFiles' folder
        return self.name

    def __repr__(self) -> str:
        return f"Chapter({self.name!r}, recipe={self.recipe.__name__}, spec={self.spec.__name__})"

    def load_run_model(self, out: str | Path, name: str, device: torch.device | str = "cpu") -> nn.Module:
        """The trained model of a finished run, in eval mode.

        Raises:
            ValueError: the run was saved without weights (``keep_weights=False``).
        """
        state = self.load_run(out, name)
        if state["model"] is None:
            raise ValueError(f"load_run_model: run {name!r} was saved without weights (keep_weights=False)")
        model = self.rebuild(state["meta"])
        model.load_state_dict(state["model"])
        return model.to(device).eval()


def chapter_of(fn: str, recipe) -> Chapter:
    """The chapter whose recipe ``recipe`` is, or a TypeError naming the known recipes."""
    from .chapters import all_chapters  # the list imports the chapters, which import this module

    for chapter in all_chapters():
        if type(recipe) is chapter.recipe:
            return chapter
    names = ", ".join(c.recipe.__name__ for c in all_chapters())
    raise TypeError(f"{fn}: recipe must be a chapter's recipe ({names}), got {describe(recipe)}")


# ----------------------------------------------------------------------------------------------
# Training one run


def train_run(
    spec,
    recipe,
    out: str | Path,
    *,
    data_root=None,
    data: tuple | None = None,
    device: torch.device | str = "cpu",
    progress: bool = False,
    stop_at_step: int | None = None,
) -> dict | None:
    """Train one run (or resume it, or skip it when finished) and write its checkpoint.

    The chapter is the one whose recipe ``recipe`` is (:class:`Chapter`). The model starts from
    the chapter's ``build``, seeded with ``spec.seed`` (without touching the caller's global
    generator), or from the parent run's trained weights. Under ``torchrun`` (a process group
    with more than one process) every process trains its shard of the data, and only rank 0
    writes files.

    Args:
        spec: the run (the chapter's run spec).
        recipe: the chapter's shared settings.
        out: checkpoint root; files go to ``<out>/<chapter>/``.
        data_root: the data set's folder (default: the chapter's).
        data: ``(train, val)`` data sets instead of the chapter's (tests).
        device: where to train.
        progress (bool): tqdm bars.
        stop_at_step (int): interrupt after this many steps (tests); the partial checkpoint stays.

    Returns:
        dict: the finished run's ``meta``; None when interrupted by ``stop_at_step``.
    """
    fn = "train_run"
    chapter = chapter_of(fn, recipe)
    if not isinstance(spec, chapter.spec):
        raise TypeError(f"{fn}: spec must be {chapter.spec.__name__} (the run spec of {type(recipe).__name__}), "
                        f"got {describe(spec)}")
    if chapter.is_done(out, spec.name):
        return chapter.load_run(out, spec.name)["meta"]
    train_set, val_set = data if data is not None else chapter.data(spec, recipe, data_root)
    model = _initial_model(chapter, spec, recipe, out)
    trainer = chapter.trainer(model, train_set, val_set, spec, recipe,
                              checkpoint_path=chapter.partial_path(out, spec.name), device=device, progress=progress)
    end = trainer.config.epochs * trainer.steps_per_epoch
    if getattr(spec, "stop_epoch", None) is not None:
        end = min(end, spec.stop_epoch * trainer.steps_per_epoch)
    # Pass a stop only when there is one: stopping exactly at the end of the schedule is the same run.
    stop = end if end < trainer.config.epochs * trainer.steps_per_epoch else None
    if stop_at_step is not None:
        stop = stop_at_step if stop is None else min(stop, stop_at_step)
    trainer.fit(resume=True, stop_at_step=stop)
    if trainer.step < end:
        return None
    evaluate = lambda model: chapter.evaluate(model, val_set, recipe)  # noqa: E731
    return finish_run(trainer, spec, recipe, chapter.run_path(out, spec.name), chapter.partial_path(out, spec.name),
                      evaluate, half=chapter.half)


def _initial_model(chapter: Chapter, spec, recipe, out) -> nn.Module:
    """The run's first model: the chapter's seeded build, or built from its parent's trained model."""
    if spec.parent is None:
        # Seed the initialisation without touching the caller's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            return chapter.build(spec, recipe, None)
    if not chapter.is_done(out, spec.parent):
        raise RuntimeError(f"train_run: run {spec.name!r} needs its parent {spec.parent!r}, which has not finished")
    parent = chapter.load_run_model(out, spec.parent)
    parent.train()
    return chapter.build(spec, recipe, parent)


def finish_run(trainer, spec, recipe, path: Path, partial: Path, evaluate: Callable, *, half: bool = True) -> dict:
    """Score the trained weights, write the finished checkpoint, drop the partial one.

    With ``half`` (the book's checkpoints) the weights are stored in float16: the scores kept in
    ``meta["scores"]`` are those of the float16 weights the file holds (so a loaded checkpoint
    reproduces them) and ``meta["scores_float32"]`` those of the trained weights. Without it the
    float32 weights are stored and scored once.

    Under torchrun every process evaluates its shard (``evaluate`` gathers the results) and only
    rank 0 writes; the others return the same ``meta`` without writing.

    Args:
        trainer (Trainer): the finished trainer (with ``half``, its model is left holding the
            float16-rounded weights).
        spec, recipe: dataclasses recorded in ``meta``; ``spec.keep_weights`` decides whether the
            weights are stored.
        path (Path): the finished checkpoint to write (atomically).
        partial (Path): the resumable checkpoint to delete afterwards.
        evaluate: ``evaluate(model) -> dict`` of scores on the whole val set (None on the
            processes that do not hold the result).
        half (bool): store and score float16 weights.

    Returns:
        dict: the run's ``meta``.
    """
    from ..engine import distributed, save_checkpoint

    model = trainer.unwrapped_model  # every process scores its own shard: no DDP wrapper needed
    start = time.perf_counter()
    scores_float32 = evaluate(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    scores = scores_float32
    if half:
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
    }
    if half:
        meta["scores_float32"] = scores_float32
    if distributed.is_distributed():
        meta["processes"] = distributed.world_size()
    meta["torch_version"] = str(torch.__version__)
    if distributed.is_main_process():
        weights = {"model": state} if spec.keep_weights else {}
        save_checkpoint(path, half=half and spec.keep_weights, meta=meta, history=trainer.history, **weights)
        if partial.exists():
            partial.unlink()
    distributed.barrier()  # no process returns before the finished file exists
    return meta


# ----------------------------------------------------------------------------------------------
# Many runs


def _worker(spec, recipe, out: str, data_root, device: str, threads: int) -> tuple[str, float]:
    # One thread per process: the order of float reductions, and so the result, depends on it.
    torch.set_num_threads(threads)
    start = time.perf_counter()
    train_run(spec, recipe, out, data_root=data_root, device=device)
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
        recipe: the chapter's settings (``FCNRecipe``, ``MaskRCNNRecipe``, ``LSERecipe``).
        out: checkpoint root.
        jobs (int): runs trained at once.
        data_root: the data set's folder.
        device (str): where to train.
        threads (int): torch threads per worker process.
        log: called with one line per started and finished run.

    Returns:
        list of str: the names of the runs trained now (finished ones are skipped).
    """
    import concurrent.futures as cf
    import multiprocessing as mp

    check_int("run_all", "jobs", jobs, minimum=1)
    chapter = chapter_of("run_all", recipe)
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
            train_run(spec, recipe, out, data_root=data_root, device=device)
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
