"""Shared fixtures: one tiny shapes data set per test session (6 train / 4 val images)."""
import pytest

from segnotes.data import generate

# Seed 1 puts a crowd region in train image 2 and val image 2, so crowd handling is exercised.
_TINY = dict(num_train=6, num_val=4, seed=1)


@pytest.fixture(scope="session")
def tiny():
    """The tiny data set's generate() arguments (a fresh dict)."""
    return dict(_TINY)


@pytest.fixture(scope="session")
def shapes_root(tmp_path_factory):
    """A complete tiny data set, made in this process (workers=1). Tests must not modify it."""
    return generate(tmp_path_factory.mktemp("tiny") / "shapes", **_TINY, workers=1, progress=False)
