"""The published book as a reader sees it: every page of the built HTML in headless Chromium, offline.

Reads the book built by ``make site`` (``_build/html``, or ``$SEGNOTES_SITE``), served from 127.0.0.1 as GitHub
Pages would serve it. For every page of ``_toc.yml`` plus the index and search pages, each test checks one thing
(:mod:`sitecheck` does the looking): Markdown shown as text, errors while loading, requests that leave the book,
broken links and anchors, references to figures and tables that carry no number, page weight, widgets whose
controls change nothing. A full-page screenshot of each page goes to ``_build/screenshots/`` (or
``$SEGNOTES_SCREENSHOTS``) with ``weights.json``, the bytes each page loads.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import sitecheck
from toc_notebooks import toc_entries  # the Makefile's reader of _toc.yml

pytestmark = pytest.mark.browser

TOP = Path(__file__).resolve().parents[2]
SITE = Path(os.environ.get("SEGNOTES_SITE", TOP / "_build" / "html"))
SCREENSHOTS = Path(os.environ.get("SEGNOTES_SCREENSHOTS", TOP / "_build" / "screenshots"))
#: A chapter's page and its own files (images); the book's shared _static files are counted apart.
MAX_PAGE_BYTES = 15 * 2**20


PAGES = [*toc_entries(TOP), "genindex", "search"]


@pytest.fixture(scope="session")
def base(browser, skip_or_fail_browser):
    """The book served on 127.0.0.1 (its root URL)."""
    if not (SITE / "index.html").is_file():
        skip_or_fail_browser(f"no HTML book in {SITE}: build it with `make site`")
    with sitecheck.Server(SITE) as url:
        yield url


@pytest.fixture(scope="session")
def visits(browser, base):
    """page name or URL -> its Visit, each page loaded once per session (with its screenshot)."""
    cache: dict[str, sitecheck.Visit] = {}

    def get(page: str) -> sitecheck.Visit:
        url = page if page.startswith("http") else f"{base}{page}.html"
        if url not in cache:
            name = url[len(base):].removesuffix(".html").replace("/", "-")
            cache[url] = sitecheck.visit(browser, url, base, screenshot=SCREENSHOTS / f"{name}.png")
        return cache[url]

    yield get
    weights = {url[len(base):]: sitecheck.page_weight(found) for url, found in cache.items()}
    sitecheck.write_json(SCREENSHOTS / "weights.json", weights)


@pytest.mark.parametrize("page", PAGES)
def test_markdown_is_rendered(visits, page):
    assert sitecheck.markdown_problems(visits(page)) == []


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors(visits, page):
    assert sitecheck.loading_problems(visits(page)) == []


@pytest.mark.parametrize("page", PAGES)
def test_page_works_offline(visits, page):
    assert sitecheck.offline_problems(visits(page)) == []


@pytest.mark.parametrize("page", PAGES)
def test_links_and_anchors(visits, base, page):
    def ids_of(path: Path) -> set:
        return set(visits(base + path.relative_to(SITE).as_posix()).dom["ids"])

    assert sitecheck.link_problems(visits(page), base, SITE, ids_of) == []


@pytest.mark.parametrize("page", PAGES)
def test_referenced_figures_and_tables_are_numbered(visits, page):
    assert sitecheck.numbering_problems(visits(page), lambda url: visits(url).dom["numbered"]) == []


@pytest.mark.parametrize("page", PAGES)
def test_page_weight(visits, page):
    weight = sitecheck.page_weight(visits(page))
    assert weight["own"] < MAX_PAGE_BYTES, f"{page}: {weight['own'] / 2**20:.1f} MB of its own"


@pytest.mark.parametrize("page", PAGES)
def test_screenshot(visits, page):
    shot = visits(page).screenshot
    assert shot is not None and shot.stat().st_size > 10_000


@pytest.mark.parametrize("page", [p for p in PAGES if p.startswith("book/")])
def test_widgets_respond_to_every_control(browser, base, page):
    problems, _ = sitecheck.widget_problems(browser, f"{base}{page}.html", base)
    assert problems == []
