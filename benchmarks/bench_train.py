"""Training throughput of ``segnotes train`` in 1 and 2 processes (torchrun + DDP).

Each case runs the command line as a user would (``python -m segnotes train ...``, or under
``python -m torch.distributed.run --standalone --nproc_per_node=2``) on a small shapes data set
generated for the purpose, and reads the training images per second the Trainer logged in its
history (optimizer steps only: data loading included, the per-epoch evaluation left out), from the
last epoch so that start-up costs are left out too. On the CPU, two processes with cores / 2
threads each (gloo) against one process with every core's thread (what a user gets by default) and
one process with one thread, at the same batch per process (two processes train on twice as many
images per step).
On CUDA, one process on one GPU, and two processes when there are two GPUs (NCCL).
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from timing import bench_devices

from segnotes.data import generate
from segnotes.engine import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# model -> batch per process (the defaults of segnotes train)
MODELS = {"fcn8s": 8, "mask-rcnn": 4}


def _images_per_second(model: str, data: Path, out: Path, processes: int, threads: int, device: str,
                       epochs: int) -> float:
    """Training images/s (all processes together) of the last epoch of a ``segnotes train`` run."""
    command = [sys.executable, "-m", "segnotes", "train"]
    if processes > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "segnotes", "train"]
    command += [model, "--data", f"shapes:{data}", "--out", str(out), "--epochs", str(epochs), "--batch-size",
                str(MODELS[model]), "--device", device, "--checkpoint-every", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    # A session of its own: if anything fails, no worker torchrun started is left running.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=3600)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    if process.returncode != 0:
        raise RuntimeError(f"bench_train: {' '.join(command)} failed:\n{stdout}\n{stderr}")
    history = load_checkpoint(out / "model.pt")["history"]
    last = [entry for entry in history if entry["kind"] == "train" and entry["epoch"] == epochs - 1]
    return last[-1]["images_per_s"]


def _rows(device: torch.device, data: Path, work: Path, quick: bool) -> list[dict]:
    cores = os.cpu_count() or 1
    epochs = 2
    if device.type == "cuda":
        two = torch.cuda.device_count() >= 2
        # (processes, threads): one process on one GPU, and one per GPU
        setups = {"one": (1, cores), "two": (2, max(1, cores // 2))} if two else {"one": (1, cores)}
    else:
        # one process with every core's thread (what a user gets by default), one with a single thread,
        # and two processes splitting the cores
        setups = {"one": (1, cores), "one_thread": (1, 1), "two": (2, max(1, cores // 2))} if cores >= 2 else {"one": (1, 1)}
    rows = []
    for model, batch in MODELS.items():
        rates = {name: _images_per_second(model, data, work / f"{model}_{device.type}_{name}", processes, threads,
                                          device.type, epochs)
                 for name, (processes, threads) in setups.items()}
        suffix = "; quick" if quick else ""
        if "two" not in rates:
            rows.append({
                "case": f"segnotes train {model}, {device.type}, 1 process, batch {batch}",
                "ours": rates["one"], "reference": None, "reference_name": "2 processes need 2 devices", "ratio": None,
                "unit": "img/s", "note": ("one GPU" if device.type == "cuda" else "one core") + suffix,
            })
            continue
        references = [("one", f"1 process x {setups['one'][1]} threads" if device.type == "cpu" else "1 process, 1 GPU")]
        if "one_thread" in rates:
            references.append(("one_thread", "1 process x 1 thread"))
        for key, name in references:
            rows.append({
                "case": f"segnotes train {model}, {device.type}, 2 processes (DDP), batch {batch} per process",
                "ours": rates["two"],
                "reference": rates[key],
                "reference_name": name,
                "ratio": rates["two"] / rates[key],
                "unit": "img/s",
                "note": (f"2 x {setups['two'][1]} threads, gloo, {cores} cores" if device.type == "cpu"
                         else "2 GPUs, NCCL") + suffix,
            })
    return rows


def run(quick: bool = False) -> list[dict]:
    work = Path(tempfile.mkdtemp(prefix="segnotes-bench-train-"))
    try:
        # 128 px images, as the book's; a multiple of 2 processes x 8 images per batch
        data = generate(work / "shapes", num_train=32 if quick else 96, num_val=4, seed=0, workers=1, progress=False)
        rows = []
        for device in bench_devices():
            rows += _rows(device, data, work, quick)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import table

    print(table(run(quick="--quick" in sys.argv)))
