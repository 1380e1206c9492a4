"""Train the checkpoints the chapters load: ``python -m segnotes.experiments {all,fcn,mask_rcnn,lse,lse_curve} --out DIR``.

Runs everything not yet done, resumably: each run checkpoints every few minutes, an interrupted
run resumes where it stopped, and finished runs are skipped. Each training process uses one
torch thread (the result depends on the thread count) and fixed seeds; ``--jobs 2`` trains two
independent runs at once.

``--set FIELD=VALUE`` changes a field of the chapter's recipe (e.g. ``--set epochs=12`` trains the
LSE runs three times as long). The runs keep their names, so such runs go to another ``--out``
than the book's ``data/checkpoints``. Outside the book's folder the recipe is recorded in
``<out>/<chapter>/recipe.json``, and a later call with other values is refused: an interrupted
run resumes only with the recipe it started with.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from pathlib import Path

from .._args import int_at_least
from .chapters import CHAPTERS
from .runner import REPOSITORY_CHECKPOINTS, Chapter, run_all

__all__ = ["main", "build_parser", "override_recipe"]

_positive_int = int_at_least(1)
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_value(text: str, kind) -> object:
    """``text`` as a value of the annotation ``kind`` (bool, int, float, str, tuples, ``X | None``)."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else ()
    if options:
        if text.lower() == "none" and type(None) in options:
            return None
        (kind,) = [option for option in options if option is not type(None)]
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        return tuple(_parse_value(part.strip(), item) for part in text.split(",") if part.strip())
    if kind is bool:
        if text.lower() not in _BOOLEANS:
            raise ValueError(f"expected true or false, got {text!r}")
        return _BOOLEANS[text.lower()]
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    return text


def override_recipe(recipe, assignments: list[str]):
    """``recipe`` with fields replaced from ``"field=value"`` texts (the CLI's ``--set``).

    Values are read by the field's type: ``epochs=12``, ``lr=0.01``, ``flip=false``,
    ``seeds=0,1,2`` (a tuple; ``seeds=`` is empty), ``crop=none`` where None is allowed. The
    recipe's own checks then apply (e.g. ``seeds`` must not be empty).

    Raises:
        ValueError: an assignment without ``=``, an unknown field, or a value of the wrong kind,
            each naming the field and the recipe.
    """
    name = type(recipe).__name__
    kinds = typing.get_type_hints(type(recipe))
    fields = [field.name for field in dataclasses.fields(recipe)]
    changes = {}
    for text in assignments:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep:
            raise ValueError(f"--set expects FIELD=VALUE, got {text!r}")
        if key not in fields:
            raise ValueError(f"--set {text}: {name} has no field {key!r}; its fields: {', '.join(fields)}")
        try:
            changes[key] = _parse_value(value.strip(), kinds[key])
        except ValueError as error:
            raise ValueError(f"--set {text}: {name}.{key}: {error}") from None
    return dataclasses.replace(recipe, **changes)


def _plain(value):
    """``value`` as JSON gives it back (tuples as lists): how a recorded recipe compares with a live one."""
    return json.loads(json.dumps(value))


def _recipe_record(chapter: str, recipe, out: Path, write: bool) -> None:
    """Check ``<out>/<chapter>/recipe.json`` against ``recipe``, or write it (``write``) when absent.

    An interrupted run resumes from its partial checkpoint, which does not hold the recipe: the
    record makes a second call with other ``--set`` values fail instead of mixing two recipes.
    """
    path = Path(out) / chapter / "recipe.json"
    current = _plain(dataclasses.asdict(recipe))
    if path.is_file():
        stored = json.loads(path.read_text())
        differ = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        if differ:
            pairs = ", ".join(f"{k}={stored.get(k)!r} there, {current.get(k)!r} now" for k in differ)
            raise ValueError(f"the runs in {path.parent} were started with another recipe ({pairs}); "
                             "repeat their --set values or train into another --out")
    elif write:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(current, indent=1) + "\n")
        temporary.replace(path)


def _check_finished_runs(chapter: Chapter, recipe, runs, out: Path, changed: list[str]) -> None:
    """Refuse finished runs in ``out`` that were trained with other values of the ``--set`` fields."""
    if not changed:  # nothing to compare: do not read every checkpoint
        return
    for spec in runs:
        if not chapter.is_done(out, spec.name):
            continue
        stored = chapter.load_run(out, spec.name)["meta"].get("recipe", {})
        for field in changed:
            want = getattr(recipe, field)
            have = stored.get(field)
            if _plain(want) != _plain(have):
                raise ValueError(
                    f"--set {field}={want!r}: the finished run {spec.name} in {out} was trained with "
                    f"{field}={have!r} and would be kept as it is; train into another --out"
                )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segnotes.experiments",
        description="Train the checkpoints the book's chapters load (resumable; finished runs are skipped).",
    )
    parser.add_argument("chapter", choices=("all", *(c.name for c in CHAPTERS)), help="'all' or one chapter's experiments")
    parser.add_argument("--out", type=Path, default=Path("data/checkpoints"), help="checkpoint root (default data/checkpoints)")
    parser.add_argument("--jobs", type=_positive_int, default=1, help="runs trained at once, one process each (default 1)")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch threads per process (default 1; results depend on it)")
    parser.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda', 'cuda:1' or 'auto'")
    parser.add_argument("--data-root", type=Path, default=None, help="shapes data set folder (default: segnotes.data.default_root())")
    parser.add_argument("--handles-root", type=Path, default=None,
                        help="shapes-with-handles folder, for lse (default: segnotes.experiments.lse.handles_root())")
    parser.add_argument("--attributes-root", type=Path, default=None,
                        help="attributes variant's folder, for lse_curve (default: segnotes.experiments.lse_curve.attributes_root())")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                        help="change a field of the chapter's recipe, e.g. --set epochs=12 --set seeds=0,1 "
                             "(repeatable; the runs keep their names: use another --out than data/checkpoints)")
    parser.add_argument("--list", action="store_true", help="list the runs and whether they are done, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # The committed checkpoints (a folder named by $SEGNOTES_CHECKPOINTS may hold variants: that is what it is for).
    book_root = args.out.resolve() in {parser.get_default("out").resolve(), REPOSITORY_CHECKPOINTS}
    if args.overrides and book_root:
        parser.error("--set changes the recipe but the runs keep their names: give another --out than "
                     "data/checkpoints, which holds the book's checkpoints")
    device = args.device
    if device == "auto":
        from ..utils import get_device

        device = str(get_device("auto"))
    import torch

    torch.set_num_threads(args.threads)  # for --jobs 1, which trains in this process
    chapters = [c for c in CHAPTERS if args.chapter in ("all", c.name)]
    changed = [text.partition("=")[0].strip() for text in args.overrides]
    plans = []  # every chapter's recipe and runs, checked before any training starts
    for chapter in chapters:
        try:
            recipe = override_recipe(chapter.recipe(), args.overrides)
            runs = chapter.runs(recipe)
            _check_finished_runs(chapter, recipe, runs, args.out, changed)
            if not book_root:
                _recipe_record(chapter.name, recipe, args.out, write=not args.list)
        except (TypeError, ValueError) as error:
            parser.error(f"{chapter.name}: {error}")
        plans.append((chapter, recipe, runs))
    for chapter, recipe, runs in plans:
        if args.list:
            for spec in runs:
                print(f"{'done' if chapter.is_done(args.out, spec.name) else 'todo'}  {spec.name}")
            continue
        start = time.perf_counter()
        log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {chapter.name}: {text}", flush=True)
        data_root = {"shapes": args.data_root, "shapes_handles": args.handles_root,
                     "shapes_attributes": args.attributes_root}[chapter.data_set]
        trained = run_all(runs, recipe, args.out, jobs=args.jobs, data_root=data_root, device=device,
                          threads=args.threads, log=log)
        log(f"{len(trained)} runs trained, {len(runs) - len(trained)} already done, {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
