import numpy as np
import pytest
import torch

import segnotes
from segnotes.utils import deterministic, get_device, manual_seed, num_threads


def test_get_device_auto_and_cpu():
    assert get_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert get_device("auto").type == "cuda"
    assert get_device(torch.device("cpu")).type == "cpu"


def test_get_device_errors():
    with pytest.raises(ValueError, match=r"get_device: preference must be one of .*got 'tpu'"):
        get_device("tpu")
    with pytest.raises(TypeError, match=r"get_device: preference must be a str"):
        get_device(3)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"'cuda' asked for, but torch.cuda.is_available\(\) is False"):
            get_device("cuda")


def test_manual_seed_repeats_all_generators():
    g1 = manual_seed(7)
    a = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g1).item())
    g2 = manual_seed(7)
    b = (np.random.rand(), torch.rand(1).item(), torch.rand(1, generator=g2).item())
    assert a == b


def test_deterministic_restores_flags():
    before = torch.are_deterministic_algorithms_enabled()
    with deterministic():
        assert torch.are_deterministic_algorithms_enabled()
    assert torch.are_deterministic_algorithms_enabled() == before


def test_num_threads_restores():
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_top_level_exports():
    assert segnotes.get_device is get_device
    assert isinstance(segnotes.__version__, str)
