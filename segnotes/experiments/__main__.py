"""Train the checkpoints the chapters load: ``python -m segnotes.experiments {all,fcn,mask_rcnn,lse} --out DIR``.

Runs everything not yet done, resumably: each run checkpoints every few minutes, an interrupted
run resumes where it stopped, and finished runs are skipped. Each training process uses one
torch thread (the result depends on the thread count) and fixed seeds; ``--jobs 2`` trains two
independent runs at once.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..cli import int_at_least
from . import fcn, lse, mask_rcnn
from .runner import run_all

__all__ = ["main", "build_parser"]

# chapter -> (recipe with the defaults make checkpoints trains, its runs, its is_done)
CHAPTERS = {
    "fcn": lambda: (fcn.FCNRecipe(), fcn.fcn_runs, fcn.is_done),
    "mask_rcnn": lambda: (mask_rcnn.MaskRCNNRecipe(), mask_rcnn.mask_rcnn_runs, mask_rcnn.is_done),
    "lse": lambda: (lse.LSERecipe(), lse.lse_runs, lse.is_done),
}


_positive_int = int_at_least(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m segnotes.experiments",
        description="Train the checkpoints the book's chapters load (resumable; finished runs are skipped).",
    )
    parser.add_argument("chapter", choices=("all", *CHAPTERS), help="'all' or one chapter's experiments")
    parser.add_argument("--out", type=Path, default=Path("data/checkpoints"), help="checkpoint root (default data/checkpoints)")
    parser.add_argument("--jobs", type=_positive_int, default=1, help="runs trained at once, one process each (default 1)")
    parser.add_argument("--threads", type=_positive_int, default=1, help="torch threads per process (default 1; results depend on it)")
    parser.add_argument("--device", default="cpu", help="'cpu' (default), 'cuda', 'cuda:1' or 'auto'")
    parser.add_argument("--data-root", type=Path, default=None, help="shapes data set folder (default: segnotes.data.default_root())")
    parser.add_argument("--handles-root", type=Path, default=None,
                        help="shapes-with-handles folder, for lse (default: segnotes.experiments.lse.handles_root())")
    parser.add_argument("--list", action="store_true", help="list the runs and whether they are done, then exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = args.device
    if device == "auto":
        from ..utils import get_device

        device = str(get_device("auto"))
    import torch

    torch.set_num_threads(args.threads)  # for --jobs 1, which trains in this process
    chapters = tuple(CHAPTERS) if args.chapter == "all" else (args.chapter,)
    for chapter in chapters:
        recipe, make_runs, is_done = CHAPTERS[chapter]()
        runs = make_runs(recipe)
        if args.list:
            for spec in runs:
                print(f"{'done' if is_done(args.out, spec.name) else 'todo'}  {spec.name}")
            continue
        start = time.perf_counter()
        log = lambda text: print(f"[{time.strftime('%H:%M:%S')}] {chapter}: {text}", flush=True)
        data_root = args.handles_root if chapter == "lse" else args.data_root
        trained = run_all(runs, recipe, args.out, jobs=args.jobs, data_root=data_root, device=device,
                          threads=args.threads, log=log)
        log(f"{len(trained)} runs trained, {len(runs) - len(trained)} already done, {(time.perf_counter() - start) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
