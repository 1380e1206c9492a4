"""segnotes.engine.distributed: torchrun's environment, and DDP training on 2 CPU processes (gloo).

The 2-process test starts ``python -m torch.distributed.run --nproc_per_node=2`` on a small
script: each process trains its shard with batch 2, and the weights after 4 SGD steps must equal
those of one process with batch 4 on the same data order, to 1e-6 (the all-reduce sums the two
gradients in another order than one process's mean). The same script interrupts a run after 2
steps and resumes it from rank 0's checkpoint: the weights must then equal the uninterrupted
2-process run's exactly.
"""
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from segnotes.engine import TrainConfig, Trainer, distributed, load_checkpoint

ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
       "MASTER_PORT": "29500"}
REPO = Path(__file__).resolve().parents[2]


def test_no_torchrun_variables_means_one_process():
    assert distributed.launch_from_env({}) is None
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main_process()
    assert not distributed.is_distributed()
    assert distributed.init_from_env("cpu") == torch.device("cpu")  # nothing started
    data = list(range(5))
    assert distributed.shard(data) is data and distributed.gather_to_main("x") == ["x"]
    assert distributed.mean_over_processes([1.0, 2.0]) == [1.0, 2.0]


def test_launch_reads_torchrun_variables():
    launch = distributed.launch_from_env({**ENV, "RANK": "1", "LOCAL_RANK": "1"})
    assert launch == distributed.Launch(rank=1, local_rank=1, world_size=2, local_world_size=2)


@pytest.mark.parametrize("change, message", [
    ({"WORLD_SIZE": None, "MASTER_PORT": None}, "RANK, LOCAL_RANK, MASTER_ADDR set but WORLD_SIZE, MASTER_PORT not"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer >= 1, got '0'"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE must be an integer >= 1, got 'two'"),
    ({"RANK": "2"}, "RANK must be below WORLD_SIZE=2, got 2"),
    ({"LOCAL_RANK": "3"}, "LOCAL_RANK=3 and LOCAL_WORLD_SIZE=2 must satisfy"),
])
def test_bad_torchrun_environment_is_named(change, message):
    environ = {k: v for k, v in {**ENV, **change}.items() if v is not None}
    with pytest.raises(ValueError, match=f"torchrun environment: {message}"):
        distributed.launch_from_env(environ)


def test_more_processes_than_cuda_devices_is_refused(monkeypatch):
    for key, value in {**ENV, "LOCAL_WORLD_SIZE": "4", "WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ValueError, match=r"torchrun started 4 processes on this machine but it has 2 CUDA device\(s\): "
                                         r"use --nproc_per_node=2"):
        distributed.init_from_env("cuda")
    with pytest.raises(ValueError, match="several processes need device 'cpu' or 'cuda', got 'mps'"):
        distributed.init_from_env("mps")


def test_a_checkpoint_resumes_only_with_as_many_processes(tmp_path):
    trainer = _trainer(tmp_path / "c.pt", batch_size=4)
    state = trainer.state_dict()
    state["world_size"] = 2
    with pytest.raises(ValueError, match="written by 2 process\\(es\\) and this run has 1; resume it with "
                                         "torchrun --nproc_per_node=2"):
        trainer.load_state_dict(state)


# ------------------------------------------------------------------------------------------------
# The same training in 1 and 2 processes


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 12, 12, generator=g)
    labels = torch.randint(0, 3, (8, 12, 12), generator=g)  # every pixel labelled: equal weights per process
    return TensorDataset(images, labels)


def _trainer(checkpoint_path, batch_size: int) -> Trainer:
    """A small conv net without BatchNorm or dropout (nothing that depends on the batch split)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 1))
    data = _data()
    config = TrainConfig(epochs=2, batch_size=batch_size, optimizer="sgd", lr=0.5, momentum=0.9, weight_decay=0.0,
                         schedule="constant", amp=False, checkpoint_every=1, eval_every=0)
    return Trainer(model, data, config, checkpoint_path=checkpoint_path, sampler_fn=distributed.epoch_order(data, 0),
                   progress=False, num_classes=None)


SCRIPT = textwrap.dedent("""
    import sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_distributed import _trainer
    from segnotes.engine import distributed

    torch.set_num_threads(1)
    distributed.init_from_env("cpu")
    out = sys.argv[1]
    straight = _trainer(out + "/straight.pt", batch_size=2)
    straight.fit()
    cut = _trainer(out + "/cut.pt", batch_size=2)
    cut.fit(stop_at_step=2)  # interrupted: rank 0 wrote the checkpoint
    distributed.barrier()
    resumed = _trainer(out + "/cut.pt", batch_size=2)
    resumed.fit(resume=True)
    assert resumed.step == 4, resumed.step
    print("rank", distributed.rank(), "steps", straight.step, "history", len(straight.history))
    torch.distributed.destroy_process_group()
""")


def test_two_gloo_processes_take_the_steps_of_one_with_twice_the_batch(tmp_path, run_group):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    result = run_group(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(tmp_path)],
        timeout=240, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rank 0 steps 4" in result.stdout and "rank 1 steps 4" in result.stdout
    two = load_checkpoint(tmp_path / "straight.pt")
    assert two["world_size"] == 2 and len(two["rng_ranks"]) == 2 and two["step"] == 4
    # the logged loss is the mean over both processes' batches
    assert [h["kind"] for h in two["history"]] == ["train", "train"]
    with torch.random.fork_rng(devices=[]):
        one = _trainer(None, batch_size=4)
        torch.set_num_threads(1)
        one.fit()
    assert one.step == 4
    for key, value in one.unwrapped_model.state_dict().items():
        torch.testing.assert_close(two["model"][key], value, atol=1e-6, rtol=1e-5, msg=key)
    torch.testing.assert_close(two["history"][-1]["loss"], one.history[-1]["loss"], atol=1e-6, rtol=1e-5)
    # interrupted after 2 steps and resumed by both processes: exactly the uninterrupted run
    resumed = load_checkpoint(tmp_path / "cut.pt")
    for key, value in two["model"].items():
        assert torch.equal(resumed["model"][key], value), key
