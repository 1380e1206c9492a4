"""Fixtures shared by every test folder.

Besides the child-process helpers, a headless Chromium for the tests marked ``browser`` (the HTML book, the
widgets' page versions): Debian's ``chromium`` (``apt-get install chromium``) driven by the ``playwright``
package, which is told where the browser is (its own browser download is never used). Without either, the
browser tests are skipped with the reason in pytest's summary; under CI (``CI=true``) they fail instead, so CI
never passes without running them.
"""
import os
import shutil
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


# ------------------------------------------------------------------------------------- the browser


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: needs headless Chromium (apt-get install chromium) and playwright")


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def chromium_path() -> str | None:
    """Debian's chromium; Ubuntu's name for it; Google Chrome where that is what there is (GitHub's runners)."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if chromium_path() is None:
        return "no Chromium on this machine (install it: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -c constraints.txt -e '.[test]')"
    return None


def skip_or_fail(reason: str) -> None:
    if on_ci():
        pytest.fail(f"browser tests cannot run, and CI must run them: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def skip_or_fail_browser():
    """skip_or_fail, for tests that find out late that they cannot run (e.g. no built book)."""
    return skip_or_fail


@pytest.fixture(scope="session")
def browser():
    """A headless Chromium for the session (playwright Browser)."""
    reason = browser_missing()
    if reason:
        skip_or_fail(reason)
    from playwright.sync_api import sync_playwright

    # No sandbox: Chromium's refuses to start as root (CI, containers) and under Ubuntu 24.04's restriction of
    # user namespaces (GitHub's runners); the browser only ever opens the book's own pages on 127.0.0.1.
    args = ["--no-sandbox"]
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), args=args)
        yield chromium
        chromium.close()
