"""Training on several processes: ``torchrun`` + DistributedDataParallel.

``torchrun --nproc_per_node=N -m segnotes train ...`` starts N copies of the program and tells
each, in environment variables, who it is: ``RANK`` (0..N-1 over all machines), ``LOCAL_RANK``
(on this machine), ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
(where rank 0 listens). :func:`init_from_env` checks them and joins the process group: gloo on
the CPU, NCCL on CUDA (one GPU per process). Then

* each process trains on its own shard of every epoch (:func:`epoch_order`, a
  ``DistributedSampler``) and DDP averages the gradients, so N processes with batch B take the
  steps of one process with batch N * B (exactly so when the loss is a mean over images of equal
  weight and the model has no batch statistics: BatchNorm normalises each process's batch);
* evaluation splits the val set (:func:`shard`) and sums confusion matrices
  (``ConfusionMatrix.all_reduce``) or gathers detections to rank 0 (:func:`gather_to_main`);
* only rank 0 writes files (:func:`is_main_process`).

Without torchrun (none of the variables set) every function here is the one-process case, so
library code calls them unconditionally. Only the command line calls :func:`init_from_env`.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, Subset

__all__ = [
    "Launch",
    "launch_from_env",
    "init_from_env",
    "is_distributed",
    "rank",
    "world_size",
    "is_main_process",
    "barrier",
    "epoch_order",
    "shard",
    "gather_to_main",
    "all_gather",
    "mean_over_processes",
]

_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class Launch:
    """What torchrun told this process: its ``rank`` and ``local_rank``, the ``world_size`` and
    the number of processes on this machine, ``local_world_size``."""

    rank: int
    local_rank: int
    world_size: int
    local_world_size: int


def _int_variable(environ: Mapping, name: str, minimum: int) -> int:
    text = environ[name]
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < minimum:
        raise ValueError(f"torchrun environment: {name} must be an integer >= {minimum}, got {text!r}")
    return value


def launch_from_env(environ: Mapping | None = None) -> Launch | None:
    """Read and check torchrun's variables; None when the process was not started by torchrun.

    Args:
        environ: the environment (default ``os.environ``).

    Raises:
        ValueError: some variables are set and others not, or a value is not a valid integer, or
            ``RANK`` / ``LOCAL_RANK`` is not below ``WORLD_SIZE`` / ``LOCAL_WORLD_SIZE``.
    """
    environ = os.environ if environ is None else environ
    present = [name for name in _VARIABLES if environ.get(name)]
    if not present:
        return None
    missing = [name for name in _VARIABLES if not environ.get(name)]
    if missing:
        raise ValueError(
            f"torchrun environment: {', '.join(present)} set but {', '.join(missing)} not; start several processes "
            "with `torchrun --nproc_per_node=N -m segnotes train ...`, or unset these variables for one process"
        )
    world = _int_variable(environ, "WORLD_SIZE", 1)
    rank_ = _int_variable(environ, "RANK", 0)
    local_rank = _int_variable(environ, "LOCAL_RANK", 0)
    local_world = _int_variable(environ, "LOCAL_WORLD_SIZE", 1) if environ.get("LOCAL_WORLD_SIZE") else world
    if rank_ >= world:
        raise ValueError(f"torchrun environment: RANK must be below WORLD_SIZE={world}, got {rank_}")
    if local_world > world or local_rank >= local_world:
        raise ValueError(f"torchrun environment: LOCAL_RANK={local_rank} and LOCAL_WORLD_SIZE={local_world} must "
                         f"satisfy LOCAL_RANK < LOCAL_WORLD_SIZE <= WORLD_SIZE={world}")
    return Launch(rank_, local_rank, world, local_world)


def init_from_env(device: torch.device | str, *, timeout_s: float = 1800.0) -> torch.device:
    """Join the process group torchrun set up, and return this process's device.

    Without torchrun this returns ``device`` and starts nothing. On CUDA each process takes the
    GPU ``LOCAL_RANK`` and NCCL; on the CPU gloo.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (already resolved from ``"auto"``).
        timeout_s (float): how long a collective waits for the other processes.

    Raises:
        ValueError: torchrun's variables are inconsistent (:func:`launch_from_env`), or more
            processes on this machine than CUDA devices, or a device that is neither.
    """
    device = torch.device(device)
    launch = launch_from_env()
    if launch is None or dist.is_initialized():
        return device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if launch.local_world_size > count:
            raise ValueError(
                f"torchrun started {launch.local_world_size} processes on this machine but it has {count} CUDA "
                f"device(s): use --nproc_per_node={count} (one GPU per process), or --device cpu"
            )
        device = torch.device("cuda", launch.local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise ValueError(f"init_from_env: several processes need device 'cpu' or 'cuda', got {str(device)!r}")
    dist.init_process_group(backend, rank=launch.rank, world_size=launch.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return device


def is_distributed() -> bool:
    """Whether a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without torchrun)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without torchrun)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """Whether this process writes files and logs (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if is_distributed():
        dist.barrier()


def epoch_order(dataset: Dataset, seed: int):
    """``order(epoch) -> list of indices``: this process's shard of a shuffled epoch.

    A ``DistributedSampler`` (shuffled with ``seed + epoch``, padded so every process gets as many
    samples): process r takes items r, r + N, r + 2N, ... of one permutation, so the first batch
    of all N processes together is the first N * B items, as one process with batch N * B would
    take them. Use as :class:`~segnotes.engine.Trainer`'s ``sampler_fn``.
    """
    def order(epoch: int) -> list[int]:
        sampler = DistributedSampler(dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    return order


def shard(dataset: Dataset) -> Dataset:
    """This process's part of ``dataset`` for evaluation: items r, r + N, ... (the whole set in one process)."""
    if not is_distributed():
        return dataset
    return Subset(dataset, range(rank(), len(dataset), world_size()))


def all_gather(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def gather_to_main(obj) -> list | None:
    """``[obj of rank 0, obj of rank 1, ...]`` on rank 0, None on the others (``[obj]`` in one process)."""
    if not is_distributed():
        return [obj]
    gathered = [None] * world_size() if is_main_process() else None
    dist.gather_object(obj, gathered, dst=0)
    return gathered


def mean_over_processes(values: list[float]) -> list[float]:
    """The mean of each value over the processes (``values`` as they are in one process)."""
    if not is_distributed() or not values:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return (tensor / world_size()).tolist()
