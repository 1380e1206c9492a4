"""Data generation speed: shapes images per second, against the target rate (2500 images in 60 s on 2 cores)."""
from __future__ import annotations

import os
import shutil
import tempfile
import time

from segnotes.data import shapes

TARGET_IMAGES_PER_SECOND = 2500 / 60


def run(quick: bool = False) -> list[dict]:
    num_train, num_val = (40, 10) if quick else (400, 100)
    workers = os.cpu_count() or 1
    root = tempfile.mkdtemp(prefix="segnotes-bench-")
    try:
        start = time.perf_counter()
        shapes.generate(f"{root}/shapes", num_train, num_val, seed=0, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rate = (num_train + num_val) / seconds
    return [
        {
            "case": f"shapes generation, 128 px, {num_train + num_val} images, {workers} workers",
            "ours": rate,
            "reference": TARGET_IMAGES_PER_SECOND,
            "reference_name": "target: 2500 images in 60 s",
            "ratio": rate / TARGET_IMAGES_PER_SECOND,
            "unit": "img/s",
            "note": "includes PNG encoding, RLE and JSON writing",
        }
    ]
