import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from segnotes.engine.checkpoint import (
    CheckpointError,
    get_rng_state,
    load_checkpoint,
    save_checkpoint,
    seeded_rng_state,
    set_rng_state,
)


def tiny_state():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 5, 5)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": 7,
        "meta": {"variant": "fcn8s", "num_classes": 10},
        "history": [{"kind": "train", "loss": 0.5, "iu": [0.1, float("nan")]}],
        "config": {"milestones": (3, 5), "grad_clip": None},
        "rng": get_rng_state(),
    }


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b) and a.dtype == b.dtype
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b  # NaN
    else:
        assert a == b


def test_round_trip(tmp_path):
    state = tiny_state()
    path = save_checkpoint(tmp_path / "sub" / "ckpt.pt", **state)
    assert path == tmp_path / "sub" / "ckpt.pt"
    assert_same(load_checkpoint(path), state)
    assert os.listdir(tmp_path / "sub") == ["ckpt.pt"]  # no temporary file left


def test_half_precision_model_weights(tmp_path):
    state = tiny_state()
    save_checkpoint(tmp_path / "full.pt", **state)
    save_checkpoint(tmp_path / "half.pt", half=True, **state)
    raw = torch.load(tmp_path / "half.pt", weights_only=True)
    assert raw["model"]["0.weight"].dtype == torch.float16
    assert raw["model"]["1.num_batches_tracked"].dtype == torch.int64  # integers untouched
    loaded = load_checkpoint(tmp_path / "half.pt")
    assert "half_precision" not in loaded
    for key, value in state["model"].items():
        assert loaded["model"][key].dtype == value.dtype
        torch.testing.assert_close(loaded["model"][key], value, rtol=1e-3, atol=1e-4)
    assert_same(loaded["optimizer"], state["optimizer"])  # only the model entry is halved
    with pytest.raises(ValueError, match=r"save_checkpoint: half=True needs a model state dict under the key 'model', got keys \['step'\]"):
        save_checkpoint(tmp_path / "x.pt", half=True, step=1)


@pytest.mark.parametrize("crash", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, step=1, meta={"variant": "fcn32s"})
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")  # some bytes reach the temporary file...
        raise crash  # ... then the process "dies"

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(type(crash)):
        save_checkpoint(path, step=2, meta={"variant": "fcn32s"})
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["step"] == 1
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"load_checkpoint: no checkpoint at {tmp_path}"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_and_corrupt_files(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, **tiny_state())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"load_checkpoint: cannot read the checkpoint {path} \(truncated or corrupt\?\)"):
        load_checkpoint(path)
    path.write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8)))
    with pytest.raises(CheckpointError, match=r"cannot read the checkpoint"):
        load_checkpoint(path)
    torch.save([1, 2, 3], path)
    with pytest.raises(CheckpointError, match=rf"{path} holds a list, not a checkpoint dict"):
        load_checkpoint(path)


def test_meta_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt.pt", **tiny_state())
    assert load_checkpoint(path, expect={"variant": "fcn8s", "num_classes": 10})["step"] == 7
    with pytest.raises(ValueError, match=r"checkpoint .* has meta\['variant'\] = 'fcn8s', expected 'fcn16s'"):
        load_checkpoint(path, expect={"variant": "fcn16s"})
    with pytest.raises(ValueError, match=r"checkpoint .* has no meta\['backbone'\] \(expected 'vgg16'\)"):
        load_checkpoint(path, expect={"backbone": "vgg16"})


def test_bad_path_type():
    with pytest.raises(TypeError, match=r"save_checkpoint: path must be a str or os.PathLike, got int 3"):
        save_checkpoint(3, step=1)


def draw_all():
    return torch.rand(3), np.random.rand(3), [random.random() for _ in range(3)]


def test_rng_state_round_trip_through_a_file(tmp_path):
    with torch.random.fork_rng():
        saved_np, saved_py = np.random.get_state(), random.getstate()
        try:
            state = get_rng_state()
            first = draw_all()
            save_checkpoint(tmp_path / "rng.pt", rng=state)
            set_rng_state(load_checkpoint(tmp_path / "rng.pt")["rng"])
            second = draw_all()
        finally:
            np.random.set_state(saved_np)
            random.setstate(saved_py)
    assert torch.equal(first[0], second[0]) and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_seeded_rng_state_matches_global_seeding():
    with torch.random.fork_rng():
        saved_np, saved_py = np.random.get_state(), random.getstate()
        try:
            torch.manual_seed(123)
            np.random.seed(123)
            random.seed(123)
            expected = draw_all()
            set_rng_state(seeded_rng_state(123))
            got = draw_all()
        finally:
            np.random.set_state(saved_np)
            random.setstate(saved_py)
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_saved_checkpoint_has_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "perm.pt", model={"w": torch.zeros(1)})
    finally:
        os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == 0o644


# ---------------------------------------------------------------------------------------------
# Issue 22, findings 10-12


def test_a_state_that_could_not_be_loaded_is_refused_when_saving(tmp_path):
    # A Path in meta was written (8.9 MB) and then could not be loaded: "truncated or corrupt?".
    path = save_checkpoint(tmp_path / "ckpt.pt", step=1, meta={"variant": "fcn32s"})
    state = tiny_state()
    state["meta"]["data_root"] = tmp_path / "shapes"
    with pytest.raises(TypeError, match=r"save_checkpoint: state\['meta'\]\['data_root'\] is a pathlib\.\w*Path, "
                                        r"which load_checkpoint could not read back .* \(e\.g\. a path as str\)\. "
                                        r"Nothing was written\."):
        save_checkpoint(path, **state)
    assert load_checkpoint(path)["step"] == 1  # the older checkpoint is kept
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # and no temporary file is left
    state["meta"]["data_root"] = str(tmp_path / "shapes")
    assert load_checkpoint(save_checkpoint(path, **state))["meta"]["data_root"] == str(tmp_path / "shapes")


def _flip_inside(path, pattern: bytes, count=64):
    data = bytearray(path.read_bytes())
    start = data.find(pattern)
    assert start >= 0
    data[start : start + count] = bytes(b ^ 0xFF for b in data[start : start + count])
    path.write_bytes(bytes(data))


def test_bytes_changed_on_disk_are_an_error_not_other_weights(tmp_path):
    # Flipping 64 bytes inside a tensor loaded silently with changed weights.
    weights = torch.arange(64, dtype=torch.float32) + 0.5
    path = save_checkpoint(tmp_path / "ckpt.pt", model={"w": weights}, step=3)
    _flip_inside(path, weights.numpy().tobytes()[:64])
    with pytest.raises(CheckpointError, match=rf"load_checkpoint: the checkpoint {path} does not match the SHA-256 "
                                              r"of its contents stored when it was saved"):
        load_checkpoint(path)


def test_the_hash_covers_half_precision_weights_and_is_not_returned(tmp_path):
    from segnotes.engine.checkpoint import state_sha256

    state = tiny_state()
    path = save_checkpoint(tmp_path / "half.pt", half=True, **state)
    loaded = load_checkpoint(path)
    assert "state_sha256" not in loaded and "half_precision" not in loaded
    assert_same(loaded["optimizer"], state["optimizer"])
    raw = torch.load(path, weights_only=True)
    assert raw["state_sha256"] == state_sha256({k: v for k, v in raw.items() if k != "state_sha256"})


def test_committed_checkpoints_without_a_hash_still_load(tmp_path):
    committed = sorted(Path(__file__).resolve().parents[2].glob("data/checkpoints/*/*.pt"))
    assert committed, "the repository's checkpoints are missing"
    for path in committed[:3]:
        raw = torch.load(path, weights_only=True)
        assert "state_sha256" not in raw  # written before the hash existed
        state = load_checkpoint(path)
        assert state["meta"]["done"] is True


_KILLED_SAVE = """
import os, sys, time
import torch
from segnotes.engine import checkpoint

def stuck(fd):  # the process is killed while its temporary file is being written
    print("writing", flush=True)
    time.sleep(600)

checkpoint.os.fsync = stuck
checkpoint.save_checkpoint(sys.argv[1], model={"w": torch.zeros(1000)}, step=2)
"""


def test_the_next_save_removes_the_temporary_files_of_killed_saves(tmp_path, child_env):
    import signal
    import subprocess
    import sys

    path = save_checkpoint(tmp_path / "ckpt.pt", step=1)
    child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVE, str(path)], env=child_env, stdout=subprocess.PIPE,
                             text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
    orphans = [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    assert len(orphans) == 1 and orphans[0].startswith(".ckpt.pt.")
    live = tmp_path / f".ckpt.pt.{os.getpid()}.abcd1234.tmp"  # a save of a running process: kept
    live.write_bytes(b"in progress")
    save_checkpoint(path, step=3)
    assert sorted(os.listdir(tmp_path)) == sorted(["ckpt.pt", live.name])
    assert load_checkpoint(path)["step"] == 3
