"""Fixtures shared by every test folder."""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import segnotes

# Property tests (tests/*/test_properties.py): the same examples on every run (derandomize, no
# example database), each example bounded in time (deadline) and each test in examples; a test
# that may hang in C runs its examples in a child process with a timeout (run_isolated).
# hypothesis comes with the test extra; `make anywhere` runs tests/widgets without it.
try:
    from hypothesis import HealthCheck, settings
except ImportError:
    settings = None
if settings is not None:
    settings.register_profile(
        "segnotes",
        derandomize=True,
        database=None,
        deadline=2000,  # ms per example: generous for a loaded 2-core CI machine, short of a hang
        max_examples=40,
        print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    settings.load_profile("segnotes")

# The checkout whose segnotes the tests import: a child process must import the same one.
_SOURCE_ROOT = str(Path(segnotes.__file__).resolve().parents[1])


@pytest.fixture
def child_env():
    """The environment for a child Python process: it imports the same segnotes as the tests."""
    path = os.pathsep.join(filter(None, [_SOURCE_ROOT, os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


@pytest.fixture
def run_isolated(child_env):
    """``run(code, timeout)``: run a Python snippet in a fresh process, failing the test if it hangs.

    For calls that could hang in C (pycocotools' loops ignore signals, so a SIGALRM cannot stop
    them): the child is killed after ``timeout`` seconds and the test fails, instead of CI
    waiting forever. Returns the ``subprocess.CompletedProcess`` (text ``stdout`` and ``stderr``).
    """

    def run(code: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        try:
            return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                                  timeout=timeout, env=child_env, **kwargs)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the call hung: it did not finish within {timeout} s")

    return run
