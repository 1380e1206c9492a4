"""The widgets' page versions (FigureWidget.static_html + segnotes-widgets.js) against the Python widgets.

Each test opens a page holding one widget's HTML and the script in headless Chromium, moves the page's controls
as a reader would (input and change events, button clicks), and compares the numbers the page computed
(its ``data-result``) with what the Python widget's :meth:`update` returns for the same values; for
MaskComparison also the panels, pixel for pixel.
"""
import json
import math

import numpy as np
import pytest
import torch

from segnotes.viz import perturb_mask
from segnotes.widgets import APExplorer, MaskComparison, ModelComparison
from segnotes.widgets._static import SCRIPT, control_spec, mask_runs

pytestmark = pytest.mark.browser

SET_CONTROL = """([name, index]) => {
  const root = document.querySelector('.sn-widget');
  const node = root.querySelector('[data-name="' + name + '"]');
  if (node.tagName === 'INPUT') { node.value = String(index); node.dispatchEvent(new Event('input')); }
  else if (node.tagName === 'SELECT') { node.value = String(index); node.dispatchEvent(new Event('change')); }
  else node.querySelectorAll('button')[index].click();
  return root.dataset.result;
}"""

CANVAS_PIXELS = """(index) => {
  const canvas = document.querySelectorAll('.sn-widget canvas')[index];
  return Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data);
}"""


@pytest.fixture
def open_widget(browser):
    pages = []

    def load(widget):
        page = browser.new_page()
        pages.append(page)
        errors = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.set_content(f"<html><body>{widget.static_html()}<script>{SCRIPT.read_text()}</script></body></html>")
        page.wait_for_selector(".sn-widget[data-ready=yes]", timeout=20000)
        assert not errors, errors
        return page

    yield load
    for page in pages:
        page.close()


def move(page, widget, **values):
    """Set the page's controls to ``values`` one by one; returns the page's numbers after the last."""
    for name, value in values.items():
        spec = control_spec(name, widget.controls[name])
        page.evaluate(SET_CONTROL, [name, spec["values"].index(value)])
    return json.loads(page.eval_on_selector(".sn-widget", "root => root.dataset.result"))


def assert_same(page_value, python_value, where=""):
    if isinstance(python_value, dict):
        for key, value in python_value.items():
            assert_same(page_value[key], value, f"{where}.{key}")
    elif isinstance(python_value, (list, tuple)):
        assert len(page_value) == len(python_value), where
        for i, (a, b) in enumerate(zip(page_value, python_value)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(python_value, float) and math.isnan(python_value):
        assert page_value is None, f"{where}: page {page_value}, Python NaN"
    elif isinstance(python_value, (float, np.floating)):
        assert page_value == pytest.approx(float(python_value), abs=1e-12), where
    else:
        assert page_value == python_value, where


def ring(size=128):
    yy, xx = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    radius = ((yy - size * 0.45) ** 2 + (xx - size * 0.55) ** 2).sqrt()
    return (radius < size * 0.3) & (radius > size * 0.14)


def test_mask_runs_round_trip():
    mask = ring(16)
    runs = mask_runs(mask)
    flat = np.repeat(np.arange(len(runs)) % 2, runs).astype(bool)
    assert flat.sum() == mask.sum() and (flat.reshape(16, 16) == mask.numpy()).all()
    assert mask_runs(torch.ones(2, 2, dtype=torch.bool)) == [0, 4]  # starts with the (empty) run of 0s


SETTINGS = [
    {},
    {"shift_y": 5, "shift_x": -9},
    {"dilate": 3},
    {"dilate": -4},
    {"shift_y": 0, "shift_x": 0, "dilate": 0, "coarsen": 8},
    {"coarsen": 16, "upsample": "nearest"},
    {"coarsen": 32, "upsample": "bilinear"},
    {"coarsen": 4, "dilate": -2, "shift_x": 16, "shift_y": -16},
    {"coarsen": 2, "upsample": "nearest", "dilate": 8},
    {"coarsen": 32, "upsample": "nearest", "dilate": -8, "shift_x": 0, "shift_y": 0},
]


def test_mask_comparison_page_matches_python(open_widget):
    target = ring()
    ignore = perturb_mask(target, dilate=1) & ~perturb_mask(target, dilate=-1)
    image = torch.rand(3, 128, 128, generator=torch.Generator().manual_seed(0))
    widget = MaskComparison(target, prediction=perturb_mask(target, shift=(2, 1)), image=image, ignore=ignore)
    page = open_widget(widget)
    for values in SETTINGS:
        on_page = move(page, widget, **values)
        in_python = widget.update(**values)
        assert_same(on_page, in_python, str(values))
        # The prediction and outcome panels, pixel for pixel (RGBA) with the figure's.
        for canvas, artist in ((1, widget._plot._pred_image), (2, widget._plot._outcome_image)):
            pixels = np.asarray(page.evaluate(CANVAS_PIXELS, canvas), dtype=np.uint8).reshape(128, 128, 4)
            assert (pixels == np.asarray(artist.get_array())).all(), (values, canvas)


def test_mask_comparison_page_without_image_or_ignore(open_widget):
    target = torch.zeros(40, 50, dtype=torch.bool)  # sizes that are not multiples of the strides
    target[7:31, 9:44] = True
    widget = MaskComparison(target)
    page = open_widget(widget)
    for values in ({"coarsen": 16}, {"coarsen": 32, "upsample": "nearest"}, {"dilate": -8, "coarsen": 1}):
        assert_same(move(page, widget, **values), widget.update(**values), str(values))


def label_maps(count, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 3, (size, size), generator=generator) for _ in range(count)]


def test_model_comparison_semantic_page(open_widget):
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    targets = label_maps(4, seed=1)
    widget = ModelComparison(images, targets, label_maps(4, seed=2), targets[:2] + label_maps(2, seed=3),
                             names=("coarse", "fine"), num_classes=3)
    page = open_widget(widget)
    for index in (3, 1, 0, 2):
        assert_same(move(page, widget, image=index), widget.update(image=index), f"image {index}")


def detections(count, size=32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    boxes = torch.rand(count, 2, generator=generator) * (size - 10)
    boxes = torch.cat([boxes, boxes + 8], 1)
    masks = torch.zeros(count, 1, size, size)
    for i, (x1, y1, x2, y2) in enumerate(boxes.round().long().tolist()):
        masks[i, 0, y1:y2, x1:x2] = 0.9
    return {"boxes": boxes, "labels": torch.ones(count, dtype=torch.int64), "masks": masks,
            "scores": torch.rand(count, generator=generator)}


def test_model_comparison_instance_page(open_widget):
    images = [torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    targets = []
    for i in range(3):
        target = detections(2, seed=10 + i)
        targets.append({"boxes": target["boxes"], "labels": target["labels"], "masks": target["masks"][:, 0] > 0.5})
    widget = ModelComparison(images, targets, [detections(4, seed=i) for i in range(3)],
                             [detections(6, seed=5 + i) for i in range(3)], names=("pool", "align"))
    page = open_widget(widget)
    for values in ({"image": 1}, {"score_threshold": 0.2}, {"score_threshold": 0.85}, {"image": 2},
                   {"score_threshold": 0.0}, {"image": 0}):
        on_page = move(page, widget, **values)
        assert_same(on_page, widget.update(**values), str(values))
    assert "shown" in on_page


def test_ap_explorer_page_matches_python(open_widget, ap_case):
    widget = APExplorer(ap_case["images"], ap_case["targets"], ap_case["detections"], ap_case["result"],
                        category_names={1: "one", 2: "two"}, image_ids=[1, 2])
    page = open_widget(widget)
    for values in ({"iou_threshold": 0.7}, {"category": 2}, {"score_threshold": 0.75}, {"image": 1},
                   {"category": 1}, {"iou_threshold": 0.5, "score_threshold": 0.0}, {"category": 0},
                   {"score_threshold": 0.95}, {"image": 0, "iou_threshold": 0.95, "score_threshold": 0.55}):
        on_page = move(page, widget, **values)
        in_python = widget.update(**values)
        assert_same(on_page["counts"], in_python["counts"], str(values))
        assert on_page["ap"] == pytest.approx(in_python["ap"], abs=1e-12), values
        curve = in_python["curve"]
        if "operating_point" in curve:  # one category
            assert_same(on_page["operating_point"], curve["operating_point"] and list(curve["operating_point"]))
        else:
            assert_same(on_page["operating_points"], [list(p) for p in curve["operating_points"]], str(values))
