"""Run every benchmark case in benchmarks/bench_*.py and write a Markdown table.

Each module exposes ``run(quick: bool = False) -> list[dict]``; a row has the keys ``case``, ``ours``,
``reference``, ``reference_name``, ``ratio`` and ``note`` (``unit`` optional, default seconds). Ratios are measured
in one run against the reference on the same inputs and device, so they compare like with like on any machine;
tests never assert times.

Usage: python benchmarks/run.py [--quick] [--only NAME[,NAME...]] [--devices cpu,cuda] [--output benchmarks/results/table.md]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the bench modules share benchmarks/timing.py

from timing import bench_devices  # noqa: E402


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    if unit == "s":
        return f"{value * 1e3:.2f} ms" if value < 1 else f"{value:.2f} s"
    return f"{value:.1f} {unit}"


def environment() -> str:
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{datetime.date.today()} · Python {platform.python_version()} · torch {torch.__version__} · "
        f"{platform.processor() or platform.machine()} · {torch.get_num_threads()} torch threads · {device}"
    )


def table(rows: list[dict]) -> str:
    lines = [
        "| case | ours | reference | ratio | note |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        unit = row.get("unit", "s")
        ref = f"{_fmt(row.get('reference'), unit)} ({row.get('reference_name', '')})"
        ratio = row.get("ratio")
        lines.append(
            f"| {row['case']} | {_fmt(row.get('ours'), unit)} | {ref} | "
            f"{'–' if ratio is None else f'{ratio:.2f}x'} | {row.get('note', '')} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke test, not a measurement")
    parser.add_argument("--only", default=None, help="run only benchmarks/bench_<ONLY>.py (comma-separated names)")
    parser.add_argument("--devices", default=None,
                        help="comma-separated devices to time on, e.g. 'cuda' (default: cpu, and cuda when there is one)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "table.md")
    args = parser.parse_args(argv)

    paths = sorted(HERE.glob("bench_*.py"))
    if args.only:
        wanted = {f"bench_{name.strip()}" for name in args.only.split(",")}
        unknown = wanted - {path.stem for path in paths}
        if unknown:
            parser.error(f"--only: no benchmarks/{sorted(unknown)[0]}.py; choose from "
                         f"{', '.join(path.stem[len('bench_'):] for path in paths)}")
        paths = [path for path in paths if path.stem in wanted]
    if args.devices:
        os.environ["SEGNOTES_BENCH_DEVICES"] = args.devices  # read by timing.bench_devices()
        try:
            bench_devices()
        except RuntimeError as error:
            parser.error(f"--devices: {error}")
    rows = []
    args.output.parent.mkdir(parents=True, exist_ok=True)
    for path in paths:
        print(f"running {path.name} ...", flush=True)
        rows.extend(_load(path).run(quick=args.quick))
        # written after each module, so a run cut short keeps the rows measured so far
        text = (
            "# segnotes benchmarks\n\n"
            f"{environment()}\n\n"
            "ratio = reference time / our time (or our rate / reference rate): above 1 means we are faster.\n\n"
            f"{table(rows)}\n"
        )
        args.output.write_text(text)
    print(text)
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
