"""Open pages of the HTML book in headless Chromium, offline, and record what a reader would run into.

:func:`visit` loads one page from a local HTTP server (as GitHub Pages serves it), blocks and records every
request that leaves the server, collects console errors, page errors and failed loads, waits for MathJax and the
widgets, and reads the rendered page (:data:`ANALYSE`): the text of the prose (code, formulas and widgets left
out), images that did not load, links, anchors, numbered figures and tables, widgets. The ``*_problems``
functions turn a :class:`Visit` into a list of readable problems (empty when the page is fine). The tests in
``test_site.py`` run them on every page of the book, and ``test_sitecheck.py`` on small pages made to fail,
which proves each check can fail.
"""
from __future__ import annotations

import functools
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

# Run in the page after it loaded. Prose = text of the block elements of the page's article, without code,
# formulas (MathJax's output), the widgets and the navigation.
ANALYSE = r"""() => {
  const main = document.querySelector('main') || document.body;
  const skip = 'pre, code, script, style, mjx-container, .MathJax, .highlight, kbd, svg, canvas, .sn-widget, '
             + 'nav, .headerlink, .caption-number, .sn-note';
  const blocks = main.querySelectorAll('p, li, dt, dd, td, th, h1, h2, h3, h4, h5, h6, figcaption, caption, '
             + '.admonition-title, .cell_output .output');
  const prose = [];
  for (const block of blocks) {
    if (block.closest(skip)) continue;
    const copy = block.cloneNode(true);
    copy.querySelectorAll(skip + ', p, li, table, ul, ol, dl, figure, div').forEach(n => n.remove());
    const text = copy.textContent.replace(/\s+/g, ' ').trim();
    if (text) prose.push({tag: block.tagName.toLowerCase(), text: text, inLink: false});
  }
  // typed references to the book's own figures and tables ("Figure 3", "Table 2" in prose outside links and
  // captions); a paper's ("the paper's Table 2", "its Table 1") are not the book's to number
  const typed = [];
  const reference = /(?<!(?:paper['’]s|its|their)\s)\b(Fig\.|Figure|Table)\s+\d+/;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  while (walker.nextNode()) {
    const node = walker.currentNode;
    const parent = node.parentElement;
    if (!parent || parent.closest(skip + ', a, figcaption, caption, .sn-widget')) continue;
    const text = node.textContent.replace(/\s+/g, ' ');
    const match = text.match(reference);
    if (match) typed.push(match[0] + ' in "' + text.slice(Math.max(0, match.index - 50), match.index + 40) + '"');
  }
  const images = Array.from(document.images).map(i => ({src: i.currentSrc || i.src, ok: i.complete && i.naturalWidth > 0}));
  const links = Array.from(document.querySelectorAll('a[href]')).map(a => ({
    href: a.href, text: a.textContent.replace(/\s+/g, ' ').trim(), cls: a.className}));
  const ids = Array.from(document.querySelectorAll('[id]')).map(e => e.id)
    .concat(Array.from(document.querySelectorAll('a[name]')).map(e => e.getAttribute('name')));
  // numbered things: figures and tables with a caption number; numref links point at them
  const numbered = {};
  document.querySelectorAll('figure[id], table[id], div.exercise[id]').forEach(e => {
    const number = e.querySelector('figcaption .caption-number, caption .caption-number, .admonition-title .caption-number');
    numbered[e.id] = number ? number.textContent.trim() : null;
  });
  const numrefs = Array.from(main.querySelectorAll('a.reference.internal')).filter(
      a => /^(Fig\.|Figure|Table)\s*\d/.test(a.textContent.trim()) || a.querySelector('.std-numref'))
    .map(a => ({href: a.href, text: a.textContent.trim()}));
  const widgets = Array.from(document.querySelectorAll('.sn-widget')).map(w => ({
    kind: w.dataset.kind, ready: w.dataset.ready || 'no'}));
  const deadWidgets = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]').length;
  const math = document.querySelectorAll('mjx-container').length;
  const mathErrors = Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]')).map(e => e.textContent);
  return {prose, typed, images, links, ids, numbered, numrefs, widgets, deadWidgets, math, mathErrors};
}"""

# Wait for MathJax (if the page loads it), the widgets, and every image (lazy ones made eager).
SETTLE = r"""async () => {
  document.querySelectorAll('img[loading=lazy]').forEach(i => { i.loading = 'eager'; });
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await Promise.all(Array.from(document.images).map(i => i.complete ? null :
    new Promise(resolve => { i.addEventListener('load', resolve); i.addEventListener('error', resolve); })));
  const deadline = Date.now() + 30000;
  while (Date.now() < deadline &&
         Array.from(document.querySelectorAll('.sn-widget')).some(w => !['yes', 'failed'].includes(w.dataset.ready)))
    await new Promise(resolve => setTimeout(resolve, 50));
}"""

WEIGHT = r"""() => {
  const entries = performance.getEntriesByType('navigation').concat(performance.getEntriesByType('resource'));
  return entries.map(e => ({url: e.name, bytes: e.decodedBodySize || e.transferSize || 0}));
}"""


class Server:
    """An HTTP server on 127.0.0.1 serving ``root`` in a thread (``with Server(root) as base_url``)."""

    def __init__(self, root: Path):
        handler = functools.partial(_QuietHandler, directory=str(root))
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/"

    def __enter__(self) -> str:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self.url

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest's output for the findings
        pass


@dataclass
class Visit:
    """What one page did and showed."""

    url: str
    console_errors: list = field(default_factory=list)
    page_errors: list = field(default_factory=list)
    external_requests: list = field(default_factory=list)
    failed_requests: list = field(default_factory=list)
    dom: dict = field(default_factory=dict)
    weights: list = field(default_factory=list)
    screenshot: Path | None = None


def visit(browser, url: str, base: str, screenshot: Path | None = None, width: int = 1280) -> Visit:
    """Load ``url`` (under ``base``, the server's root) offline in a fresh browser context and read the page."""
    found = Visit(url=url)
    context = browser.new_context(viewport={"width": width, "height": 900})

    def route(route_):
        request_url = route_.request.url
        if request_url.startswith(base) or request_url.startswith(("data:", "blob:")):
            route_.continue_()
        else:  # the book must work offline: nothing may leave the server
            found.external_requests.append(request_url)
            route_.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: found.console_errors.append(f"{message.text} ({message.location.get('url', '')})")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: found.page_errors.append(str(error)))
    page.on("requestfailed", lambda request: found.failed_requests.append(
        f"{request.url}: {request.failure}") if request.url.startswith(base) else None)
    page.on("response", lambda response: found.failed_requests.append(f"{response.url}: HTTP {response.status}")
            if response.status >= 400 else None)
    try:
        page.goto(url, wait_until="load")
        page.evaluate(SETTLE)
        found.dom = page.evaluate(ANALYSE)
        found.weights = page.evaluate(WEIGHT)
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(screenshot), full_page=True)
            found.screenshot = screenshot
    finally:
        context.close()
    return found


# ----------------------------------------------------------------------------------------------- checks

RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\||(?:\|[^|]*){4,}\|")  # a separator row, or a row of 4+ cells
ROLE = re.compile(r"\{(?:glue(?::\w+)?|ref|numref|term|doc|eq|cite(?::\w+)?|math|download|abbr|index)\}")
DIRECTIVE = re.compile(r"(?:```|:::)\s*\{[\w:-]+\}")
DOLLAR_MATH = re.compile(r"\$\$|\$[^$\s][^$]*\$|\\\(|\\\[")


def markdown_problems(found: Visit) -> list[str]:
    """Markdown shown as text: raw table rows, unrendered roles or directives, math left in dollars."""
    problems = []
    for block in found.dom["prose"]:
        text = block["text"]
        for name, pattern in (("raw Markdown table", RAW_TABLE), ("unrendered role", ROLE),
                              ("unrendered directive", DIRECTIVE), ("math left as text", DOLLAR_MATH)):
            match = pattern.search(text)
            if match:
                problems.append(f"{name} in <{block['tag']}>: {match.group(0)!r} in {text[:160]!r}")
    problems += [f"math error: {error}" for error in found.dom["mathErrors"]]
    return problems


def loading_problems(found: Visit) -> list[str]:
    """Console errors, uncaught page errors, failed requests, images that did not load, widgets that did not start."""
    problems = [f"console error: {e}" for e in found.console_errors]
    problems += [f"page error: {e}" for e in found.page_errors]
    problems += [f"failed request: {e}" for e in found.failed_requests]
    problems += [f"image did not load: {image['src'][:120]}" for image in found.dom["images"] if not image["ok"]]
    problems += [f"widget {w['kind']} did not start ({w['ready']})" for w in found.dom["widgets"] if w["ready"] != "yes"]
    if found.dom["deadWidgets"]:
        problems.append(f"{found.dom['deadWidgets']} widget view(s) without a page version: the stored output predates "
                        "FigureWidget.static_html (re-execute the notebook), or a widget that is not a segnotes one")
    return problems


def offline_problems(found: Visit) -> list[str]:
    return [f"request leaves the book: {url}" for url in found.external_requests]


def link_problems(found: Visit, base: str, site: Path, ids_of) -> list[str]:
    """Internal links whose file is missing, or whose #anchor is not an id of the target page.

    ``ids_of(path)`` returns the ids of a page of the site (a visit's ``dom["ids"]``)."""
    problems = []
    for link in found.dom["links"]:
        href = link["href"]
        if not href.startswith(base):
            continue  # external links (Colab, GitHub) are not followed offline
        address, fragment = urldefrag(href)
        path = site / unquote(urlsplit(address).path[len(urlsplit(base).path):])
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(f"broken link {link['text']!r} -> {href} (no file {path.relative_to(site)})")
        elif fragment and path.suffix == ".html" and fragment not in ids_of(path):
            problems.append(f"broken anchor {link['text']!r} -> {href} (no id {fragment!r} there)")
    return problems


def numbering_problems(found: Visit, numbered_of) -> list[str]:
    """References to figures, tables (or exercises) that are not numbered and captioned; figure and table
    references typed as text.

    ``numbered_of(url)`` returns the ``dom["numbered"]`` of the page at url (id -> caption number or None)."""
    problems = [f"typed reference (use {{numref}}): {text}" for text in found.dom["typed"]]
    for ref in found.dom["numrefs"]:
        address, fragment = urldefrag(ref["href"])
        number = numbered_of(address).get(fragment, "missing")
        if number == "missing":
            problems.append(f"{ref['text']!r} points at #{fragment}, which is no figure, table or exercise")
        elif not number:
            problems.append(f"{ref['text']!r} points at #{fragment}, which has no caption number")
    return problems


def page_weight(found: Visit) -> dict:
    """Bytes this page loaded: ``own`` (the page and its own files) and ``shared`` (the book's _static files)."""
    own = shared = 0
    for entry in found.weights:
        if "/_static/" in entry["url"]:
            shared += entry["bytes"]
        else:
            own += entry["bytes"]
    return {"own": own, "shared": shared, "total": own + shared}


def write_json(path: Path, data) -> None:
    """Atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True))
    partial.replace(path)


# ---------------------------------------------------------------------------------------------- widgets

CONTROL_STATE = r"""(node) => node.tagName === 'INPUT' ? {kind: 'range', value: +node.value, max: +node.max}
  : node.tagName === 'SELECT' ? {kind: 'select', value: node.selectedIndex, max: node.options.length - 1}
  : {kind: 'toggle', value: Array.from(node.querySelectorAll('button')).findIndex(b => b.getAttribute('aria-pressed') === 'true'),
     max: node.querySelectorAll('button').length - 1}"""


def _steps(state: dict) -> list:
    """How to move a control over its other values: a slider by arrow keys up to its end, then back down to its
    start; a list or buttons by choosing each other option (nearest first)."""
    value, top = state["value"], state["max"]
    if state["kind"] == "range":
        return ["ArrowRight"] * (top - value) + ["ArrowLeft"] * top
    return list(range(value + 1, top + 1)) + list(range(value - 1, -1, -1))


def widget_problems(browser, url: str, base: str) -> tuple[list[str], int]:
    """Move every control of every widget on the page as a reader would (arrow keys on sliders, choosing an
    option, pressing a button), value after value until the picture and the numbers both changed.

    Returns the problems (a control after which neither the picture's pixels nor the widget's numbers ever
    differ from before it moved) and the number of controls moved."""
    problems, moved = [], 0
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
    page = context.new_page()
    try:
        page.goto(url, wait_until="load")
        page.evaluate(SETTLE)
        widgets = page.locator(".sn-widget")
        for w in range(widgets.count()):
            root = widgets.nth(w)
            kind = root.get_attribute("data-kind")
            picture = root.locator(".sn-picture")
            controls = root.locator("[data-name]")
            for c in range(controls.count()):
                control = controls.nth(c)
                name = control.get_attribute("data-name")
                before = (picture.screenshot(), root.get_attribute("data-result"))
                picture_changed = numbers_changed = False
                state = control.evaluate(CONTROL_STATE)
                for step in _steps(state):
                    if state["kind"] == "range":  # the keyboard, as a reader without a mouse
                        control.focus()
                        page.keyboard.press(step)
                    elif state["kind"] == "select":
                        control.select_option(index=step)
                    else:
                        control.locator("button").nth(step).click()
                    picture_changed |= picture.screenshot() != before[0]
                    numbers_changed |= root.get_attribute("data-result") != before[1]
                    if picture_changed and numbers_changed:
                        break
                moved += 1
                what = [part for part, changed in (("picture", picture_changed), ("numbers", numbers_changed))
                        if not changed]
                if what:
                    problems.append(f"widget {w} ({kind}): moving {name!r} over all its values never changed its "
                                    + " or ".join(what))
    finally:
        context.close()
    return problems, moved
