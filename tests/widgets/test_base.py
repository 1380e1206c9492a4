import io

import ipywidgets
import numpy as np
import pytest
import torch
from PIL import Image

from segnotes.widgets import MaskComparison
from segnotes.widgets._base import png_bytes


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_png_bytes_round_trips_through_pillow():
    rgba = np.random.default_rng(0).integers(0, 256, size=(9, 13, 4), dtype=np.uint8)
    for level in (1, 6):
        np.testing.assert_array_equal(decode(png_bytes(rgba, level)), rgba[..., :3])
    np.testing.assert_array_equal(decode(png_bytes(rgba[..., :3])), rgba[..., :3])


def _square():
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:24, 6:20] = True
    return mask


def test_blitted_update_equals_a_full_redraw():
    """Redrawing only the animated artists over the kept background gives the picture a full draw gives."""
    widget = MaskComparison(_square(), image=torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)))
    blitted = decode(bytes(widget.update(coarsen=8, shift_x=3) and widget.render()))
    for artist in widget._animated():
        artist.set_animated(False)
    widget.figure.canvas.draw()
    full = np.asarray(widget.figure.canvas.buffer_rgba())[..., :3]
    assert blitted.shape == full.shape
    different = np.any(blitted != full, axis=-1).mean()
    # Only stacking order may differ (animated artists are drawn last), e.g. where a bar meets its axis line.
    assert different < 0.002


def test_widget_displays_as_its_ipywidget():
    widget = MaskComparison(_square())
    assert isinstance(widget.widget, ipywidgets.VBox)
    assert isinstance(widget.image, ipywidgets.Image) and widget.image.format == "png"
    bundle = widget._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == widget.widget.model_id
    assert bundle["text/plain"] == "MaskComparison (an interactive widget: run the notebook to use it)"
    assert decode(widget.render()).shape[2] == 3


def test_update_redraws_once_and_reports(monkeypatch):
    widget = MaskComparison(_square())
    calls = []
    original = widget._draw
    monkeypatch.setattr(widget, "_draw", lambda **values: calls.append(values) or original(**values))
    before = widget.render()
    widget.update(shift_y=2, dilate=-1, coarsen=4)
    assert len(calls) == 1 and calls[0]["shift_y"] == 2 and calls[0]["coarsen"] == 4
    assert widget.render() != before
    assert widget.last_redraw_seconds > 0
    widget.controls["dilate"].value = 3  # a slider moved by hand redraws too
    assert len(calls) == 2


def test_update_bad_input():
    widget = MaskComparison(_square())
    with pytest.raises(ValueError, match=r"MaskComparison.update: unknown control 'zoom', expected one of "
                                         r"\['shift_y', 'shift_x', 'dilate', 'coarsen', 'upsample'\]"):
        widget.update(zoom=2)
    with pytest.raises(ValueError, match=r"MaskComparison.update: coarsen must be one of \[1, 2, 4, 8, 16, 32\], got 3"):
        widget.update(coarsen=3)
    with pytest.raises(TypeError, match=r"MaskComparison.update: dilate must be a number, got str '2'"):
        widget.update(dilate="2")
    with pytest.raises(ValueError, match=r"MaskComparison.update: shift_x must be in \[-16, 16\], got 40"):
        widget.update(shift_x=40)
    with pytest.raises(ValueError, match=r"coarsen must be one of"):
        widget.update(shift_x=2, coarsen=3)
    assert widget.values["shift_x"] == 0 and widget.values["coarsen"] == 1  # a refused update changes nothing
