"""A headless Chromium for the tests marked ``browser`` (the HTML book, the widgets' page versions).

Debian's ``chromium`` (``apt-get install chromium``) driven by the ``playwright`` package, which is told where the
browser is (its own browser download is never used). Without either, the browser tests are skipped with the reason
in pytest's summary; under CI (``CI=true``) they fail instead, so CI never passes without running them.
"""
from __future__ import annotations

import os
import shutil

import pytest


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
