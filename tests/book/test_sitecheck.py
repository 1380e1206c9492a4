"""The site checks fail where they should: small pages made to fail, each caught by its check.

Proves that test_site.py can fail: a Markdown table rendered as text, an unrendered role, math left in
dollars, a console error, a request leaving the book, a broken image, link and anchor, a reference to an
unnumbered figure, a widget whose control changes nothing; and that a clean page passes every check.
"""
from __future__ import annotations

import pytest
import torch

import sitecheck
from segnotes.widgets import ModelComparison
from segnotes.widgets._static import SCRIPT

pytestmark = pytest.mark.browser

CLEAN = """<html><head><title>clean</title></head><body><main>
<h1 id="top">A clean page</h1>
<p>Prose with a <a class="reference internal" href="#fig-one"><span class="std std-numref">Fig. 1</span></a> and
<a href="other.html#there">a link</a>.</p>
<figure id="fig-one"><img src="pixel.png"><figcaption><p><span class="caption-number">Fig. 1 </span>A caption.</p>
</figcaption></figure>
<table class="table"><tr><th>class</th><th>IoU</th></tr><tr><td>0</td><td>0.857</td></tr></table>
</main></body></html>"""

# 1x1 transparent PNG
PIXEL = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                      "1f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4c00000000049454e44ae426082")


@pytest.fixture
def served(tmp_path, browser):
    (tmp_path / "pixel.png").write_bytes(PIXEL)
    (tmp_path / "other.html").write_text('<html><body><main><p id="there">There.</p></main></body></html>')

    def serve(body: str, name: str = "page"):
        (tmp_path / f"{name}.html").write_text(body)
        return tmp_path

    with sitecheck.Server(tmp_path) as base:
        yield serve, base


def check(browser, served, body):
    serve, base = served
    site = serve(body)
    found = sitecheck.visit(browser, f"{base}page.html", base)

    def ids_of(path):
        return set(sitecheck.visit(browser, base + path.relative_to(site).as_posix(), base).dom["ids"])

    return {
        "markdown": sitecheck.markdown_problems(found),
        "loading": sitecheck.loading_problems(found),
        "offline": sitecheck.offline_problems(found),
        "links": sitecheck.link_problems(found, base, site, ids_of),
        "numbering": sitecheck.numbering_problems(found, lambda url: found.dom["numbered"]),
    }


def test_clean_page_passes_every_check(browser, served):
    assert check(browser, served, CLEAN) == {"markdown": [], "loading": [], "offline": [], "links": [],
                                             "numbering": []}


def test_raw_markdown_table_fails(browser, served):
    raw = CLEAN.replace("</main>", "<p>| class | accuracy | IU | | --- | --- | --- | | 0 | 0.857 | 0.75 |</p></main>")
    problems = check(browser, served, raw)["markdown"]
    assert len(problems) == 1 and problems[0].startswith("raw Markdown table in <p>")


@pytest.mark.parametrize("text, kind", [
    ("The score is {glue:text}<code>fcn8s_mean_iu:.3f</code>.", "unrendered role"),
    ("See {numref}<code>fig-one</code>.", "unrendered role"),
    ("A {term}<code>mean IU</code> link.", "unrendered role"),
    ("The weight $w_{seg}^c$ as text.", "math left as text"),
])
def test_unrendered_markdown_fails(browser, served, text, kind):
    problems = check(browser, served, CLEAN.replace("</main>", f"<p>{text}</p></main>"))["markdown"]
    assert [p.split(" in <")[0] for p in problems] == [kind]


def test_errors_and_external_requests_fail(browser, served):
    body = CLEAN.replace("</main>", '<img src="missing.png"><script>console.error("boom"); undefinedCall();</script>'
                                    '<script src="https://cdn.example.org/lib.js"></script></main>')
    problems = check(browser, served, body)
    assert any("console error: boom" in p for p in problems["loading"])
    assert any(p.startswith("page error:") and "undefinedCall" in p for p in problems["loading"])
    assert any("image did not load" in p and "missing.png" in p for p in problems["loading"])
    assert problems["offline"] == ["request leaves the book: https://cdn.example.org/lib.js"]


def test_broken_links_and_anchors_fail(browser, served):
    body = CLEAN.replace("</main>", '<p><a href="nowhere.html">gone</a> <a href="other.html#nothere">moved</a> '
                                    '<a href="#nope">here</a></p></main>')
    problems = check(browser, served, body)["links"]
    assert len(problems) == 3
    assert problems[0].startswith("broken link 'gone'") and "broken anchor 'moved'" in problems[1]
    assert "no id 'nope'" in problems[2]


def test_unnumbered_or_typed_references_fail(browser, served):
    body = CLEAN.replace('<span class="caption-number">Fig. 1 </span>', "").replace(
        "</main>", "<p>As Figure 2 shows.</p></main>")
    problems = check(browser, served, body)["numbering"]
    assert problems == ["typed reference (use {numref}): Figure 2 in \"As Figure 2 shows.\"",
                        "'Fig. 1' points at #fig-one, which has no caption number"]


def test_widget_whose_control_changes_nothing_fails(browser, served):
    image = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(16, 16, dtype=torch.int64)
    labels[4:9, 4:9] = 1
    widget = ModelComparison([image, image.flip(1)], [labels, labels.flip(0)], [labels, labels],
                             [labels, labels.flip(0)], num_classes=2)
    page = f"<html><body>{widget.static_html()}<script>{SCRIPT.read_text()}</script></body></html>"
    # The slider moves but nothing listens, like ipywidgets' embedded state without a kernel.
    deaf = page.replace("<body>", "<body><script>document.addEventListener('input', "
                                  "e => e.stopImmediatePropagation(), true);</script>")
    serve, base = served
    results = {}
    for name, html in (("alive", page), ("deaf", deaf)):
        serve(html)
        results[name] = sitecheck.widget_problems(browser, f"{base}page.html", base)
    assert results["alive"] == ([], 1)
    assert results["deaf"] == (["widget 0 (model-comparison): moving 'image' over all its values never changed its "
                                "picture or numbers"], 1)
