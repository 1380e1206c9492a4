"""The widgets on a page without a kernel: their state as JSON in HTML, for ``segnotes-widgets.js`` to draw.

A widget's HTML (:meth:`segnotes.widgets.FigureWidget.static_html`) is a ``<div class="sn-widget">`` holding one
``<script type="application/json">``: the controls (each with the list of values it can take) and the data the
page needs to redraw the picture and recompute the numbers for any setting of them. The script
``segnotes/widgets/static/segnotes-widgets.js`` (served by the HTML book) builds the controls and redraws in the
page: MaskComparison recomputes its masks and metrics (too many slider combinations to draw ahead of time),
ModelComparison swaps pictures drawn here for each image and score threshold, APExplorer recomputes the
matches shown and the precision-recall curve from COCO's match table.

Encodings, chosen to stay small and simple to decode:

- pictures: PNG (uint8 RGB), base64;
- binary masks: run lengths over the row-major pixels, alternating 0 and 1 and starting with 0
  (``[2, 3, 1]`` on 6 pixels is ``0 0 1 1 1 0``).
"""
from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

import ipywidgets
import numpy as np

from ._base import png_bytes

__all__ = ["SCRIPT", "control_spec", "finite", "mask_runs", "png_base64", "state_html"]

#: The script that draws the widgets in a page (the HTML book serves it from its ``_static`` folder).
SCRIPT = Path(__file__).with_name("static") / "segnotes-widgets.js"


def png_base64(rgb: np.ndarray) -> str:
    """uint8 RGB [H, W, 3] -> base64 PNG (zlib level 9: stored once, read many times)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"png_base64: expected uint8 [H, W, 3], got {rgb.dtype} of shape {rgb.shape}")
    return base64.b64encode(png_bytes(rgb, compress_level=9)).decode("ascii")


def mask_runs(mask) -> list[int]:
    """bool [H, W] (ndarray or tensor) -> run lengths over its row-major pixels, 0s first (see module doc)."""
    flat = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask, dtype=bool).reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.r_[0, changes, flat.size]
    runs = np.diff(edges).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)  # the first run counts 0s
    return runs


def _label(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def control_spec(name: str, control) -> dict:
    """One ipywidgets control as the page builds it: its kind, label, values (with labels) and current index.

    Sliders become ``range`` inputs over the list of their values (a FloatSlider's values are min, min + step, ...,
    max); Dropdowns ``select``; ToggleButtons ``toggle``.
    """
    label = control.description
    if isinstance(control, (ipywidgets.SelectionSlider, ipywidgets.Dropdown, ipywidgets.ToggleButtons)):
        pairs = [option if isinstance(option, tuple) else (_label(option), option) for option in control.options]
        labels = [str(text) for text, _ in pairs]
        values = [value for _, value in pairs]
        kind = {ipywidgets.Dropdown: "select", ipywidgets.ToggleButtons: "toggle"}.get(type(control), "range")
    elif isinstance(control, ipywidgets.IntSlider):
        values = list(range(control.min, control.max + 1, control.step))
        labels = [str(v) for v in values]
        kind = "range"
    elif isinstance(control, ipywidgets.FloatSlider):
        count = int(math.floor((control.max - control.min) / control.step + 1e-9)) + 1
        values = [round(control.min + i * control.step, 10) for i in range(count)]
        labels = [f"{v:.2f}" for v in values]
        kind = "range"
    else:
        raise TypeError(f"control_spec: no page version of {type(control).__name__} (control {name!r})")
    current = control.value
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in [current, *values]):
        index = int(np.argmin([abs(v - current) for v in values]))  # a FloatSlider's value may be off its grid
    else:
        index = values.index(current)
    return {"name": name, "label": label, "type": kind, "values": values, "labels": labels, "index": index}


def finite(value):
    """NaN and infinities -> None (JSON has no NaN), in nested lists and dicts; numpy scalars -> Python ones."""
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    if isinstance(value, np.ndarray):
        return finite(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def state_html(state: dict, note: str) -> str:
    """The widget's ``<div>``: the state as JSON (``</`` escaped, so no ``</script>`` ends it early) and a note
    shown where the script does not run."""
    payload = json.dumps(finite(state), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
    return (
        f'<div class="sn-widget" data-kind="{html.escape(state["kind"])}">'
        f'<script type="application/json" class="sn-state">{payload}</script>'
        f'<p class="sn-note">{html.escape(note)}</p></div>'
    )
