"""The ``segnotes`` command line.

Examples::

    segnotes data shapes --root data/shapes --num-train 2000 --num-val 500 --seed 0
    segnotes data checksums --root data/shapes --output data/shapes.sha256
    segnotes data verify --root data/shapes --checksums data/shapes.sha256
    segnotes data stats --root data/shapes
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._args import int_at_least

__all__ = ["main", "build_parser"]


_nonnegative_int = int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segnotes", description="segnotes: the book's companion package.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = commands.add_parser("data", help="make, check and describe data sets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    shapes = data_commands.add_parser(
        "shapes",
        help="generate the procedural shapes data set",
        description="Generate the procedural shapes data set (images, COCO instances JSON, semantic label PNGs). "
        "Same arguments give byte-identical files; an existing complete set made with the same arguments is kept.",
    )
    shapes.add_argument("--root", type=Path, required=True, help="output folder (e.g. data/shapes)")
    shapes.add_argument("--num-train", type=_nonnegative_int, default=2000, help="training images (default 2000)")
    shapes.add_argument("--num-val", type=_nonnegative_int, default=500, help="validation images (default 500)")
    shapes.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (default 0)")
    shapes.add_argument("--image-size", type=_nonnegative_int, default=128, help="image side in pixels (default 128)")
    shapes.add_argument("--workers", type=_nonnegative_int, default=None, help="processes (default: CPU count)")
    shapes.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    shapes.add_argument(
        "--handles", action="store_true",
        help="the variant with handles (the LSE chapter's data): the mask includes an object's handle for some categories only",
    )

    checksums = data_commands.add_parser("checksums", help="write SHA-256 checksums of a data set")
    checksums.add_argument("--root", type=Path, required=True, help="data set folder")
    checksums.add_argument("--output", type=Path, required=True, help="checksum file to write (sha256sum format)")

    verify = data_commands.add_parser("verify", help="check a data set against its SHA-256 checksums")
    verify.add_argument("--root", type=Path, required=True, help="data set folder")
    verify.add_argument("--checksums", type=Path, required=True, help="checksum file (sha256sum format)")

    stats = data_commands.add_parser("stats", help="print a data set's statistics as JSON")
    stats.add_argument("--root", type=Path, required=True, help="data set folder")
    return parser


def _run_data(args: argparse.Namespace) -> int:
    from .data import shapes

    if args.data_command == "shapes":
        root = shapes.generate(
            args.root,
            num_train=args.num_train,
            num_val=args.num_val,
            seed=args.seed,
            image_size=args.image_size,
            workers=args.workers,
            progress=not args.no_progress,
            handles=args.handles,
        )
        print(f"shapes data set ready in {root}")
    elif args.data_command == "checksums":
        shapes.write_checksums(args.root, args.output)
        print(f"checksums of {args.root} written to {args.output}")
    elif args.data_command == "verify":
        shapes.verify(args.root, args.checksums)
        print(f"{args.root} matches {args.checksums}")
    elif args.data_command == "stats":
        print(json.dumps(shapes.statistics(args.root), indent=2, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``segnotes`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "data":
            return _run_data(args)
    except (ValueError, TypeError, FileNotFoundError, PermissionError, NotADirectoryError) as error:
        # Bad input is reported as one clear line, not a traceback.
        print(f"segnotes: error: {error}", file=sys.stderr)
        return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
