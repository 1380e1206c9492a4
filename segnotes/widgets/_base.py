"""What every segnotes widget shares: a Figure drawn once, redrawn fast, shown as a PNG in an ``ipywidgets.Image``.

Why a PNG and not an interactive matplotlib canvas: an ``ipywidgets.Image`` keeps its bytes in the notebook's
widget state, so the static HTML book shows the first picture without a kernel, and no matplotlib backend
(ipympl, inline) is needed.

Why blitting: drawing a whole figure costs tens of milliseconds, most of it in text (tick labels, titles,
legends) that never changes. So the figure is drawn once without the *animated* artists (those an update
changes), that background is kept, and each update restores it and draws only the animated artists on top,
as matplotlib's own animation module does. The figure's layout is frozen after the first draw.
"""
from __future__ import annotations

import struct
import time
import zlib
from collections.abc import Callable, Sequence

import ipywidgets
import numpy as np
from matplotlib.artist import Artist
from matplotlib.figure import Figure

from .._checks import describe
from ..utils import num_threads

__all__ = ["BlitRenderer", "FigureWidget", "png_bytes"]


class BlitRenderer:
    """Render a Figure to PNG bytes, redrawing only its animated artists after the first time.

    Args:
        figure: a Figure with an Agg canvas (``FigureCanvasAgg(figure)``).
        animated: returns the artists that updates change (images, lines, texts, bars); the rest is background.
    """

    def __init__(self, figure: Figure, animated: Callable[[], Sequence[Artist]]):
        self.figure = figure
        self._animated = animated
        self._background = None

    def render(self, compress_level: int = 1) -> bytes:
        """PNG bytes of the figure as it stands now.

        Args:
            compress_level: zlib level; 1 is fast (a few ms) and ~25% bigger than 6. Use 6 or more for a
                picture that is stored, e.g. a widget's first one, saved in the notebook.
        """
        canvas = self.figure.canvas
        artists = list(self._animated())
        if self._background is None:
            canvas.draw()  # a full draw, so that the layout engine places everything once
            self.figure.set_layout_engine("none")
            for artist in artists:
                artist.set_animated(True)
            canvas.draw()  # everything but the animated artists
            self._background = canvas.copy_from_bbox(self.figure.bbox)
        canvas.restore_region(self._background)
        for artist in artists:
            self.figure.draw_artist(artist)
        return png_bytes(np.asarray(canvas.buffer_rgba()), compress_level)


def png_bytes(rgb: np.ndarray, compress_level: int = 1) -> bytes:
    """Encode uint8 RGB [H, W, 3] (or RGBA [H, W, 4], alpha dropped) as PNG: one IDAT chunk, no row filter.

    Twice as fast as Pillow at level 1 on our figures (Pillow tries row filters, which pay off little on
    flat-coloured plots); any PNG reader decodes it.
    """
    height, width, _ = rgb.shape
    rows = np.zeros((height, 1 + 3 * width), dtype=np.uint8)  # each row: filter type 0, then RGB bytes
    rows[:, 1:].reshape(height, width, 3)[...] = rgb[..., :3]  # one copy, straight into place

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    data = zlib.compress(rows.tobytes(), compress_level)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


class FigureWidget:
    """Base class of the widgets: controls above a picture; moving a control redraws the picture.

    Subclasses build their plot and their controls (a dict name -> ipywidgets value widget), then call
    :meth:`_start`. They implement :meth:`_draw` (``**values`` of the controls -> a dict of results) and
    :meth:`_animated` (the artists ``_draw`` changes).

    Attributes:
        widget (ipywidgets.VBox): the whole widget, to place in a notebook or a larger layout.
        image (ipywidgets.Image): the picture.
        controls (dict): name -> control widget.
        result (dict): what the last redraw computed (scores etc.).
        last_redraw_seconds (float): wall time of the last redraw (draw + PNG), for the benchmark.
    """

    figure: Figure
    controls: dict
    #: Resolution of the picture. Lower than matplotlib's 100: a redraw's cost grows with the pixel count.
    dpi: float = 90

    def _start(self, rows: Sequence[Sequence[str]] | None = None) -> None:
        self.figure.set_dpi(self.dpi)
        self._renderer = BlitRenderer(self.figure, self._animated)
        self._holding = False
        with num_threads(1):  # as in _redraw
            self.result = self._draw(**self.values)
            first = self._renderer.render(compress_level=6)
        self.image = ipywidgets.Image(value=first, format="png")
        self.image.layout.max_width = "100%"
        self.last_redraw_seconds = float("nan")
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        rows = rows if rows is not None else [list(self.controls)]
        self._rows = [list(row) for row in rows]
        boxes = [ipywidgets.HBox([self.controls[name] for name in row]) for row in rows]
        self.widget = ipywidgets.VBox([*boxes, self.image])

    @property
    def values(self) -> dict:
        """The controls' current values, name -> value."""
        return {name: control.value for name, control in self.controls.items()}

    def update(self, **values) -> dict:
        """Set some controls (by name) and redraw once; returns :attr:`result`.

        Raises:
            ValueError: for an unknown control name, or a value the control does not accept.
        """
        unknown = sorted(set(values) - set(self.controls))
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.update: unknown control {unknown[0]!r}, expected one of {list(self.controls)}"
            )
        for name, value in values.items():  # check all before setting any: a refused update changes nothing
            self._check_value(name, value)
        self._holding = True  # one redraw for all the values, not one per value
        try:
            for name, value in values.items():
                self.controls[name].value = value
        finally:
            self._holding = False
        self._redraw()
        return self.result

    def _check_value(self, name: str, value) -> None:
        control = self.controls[name]
        options = getattr(control, "options", None)
        if options is not None:
            allowed = [option[1] if isinstance(option, tuple) else option for option in options]
            if value not in allowed:
                raise ValueError(f"{type(self).__name__}.update: {name} must be one of {allowed}, got {value!r}")
        elif hasattr(control, "min") and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise TypeError(f"{type(self).__name__}.update: {name} must be a number, got {describe(value)}")
        elif hasattr(control, "min") and not (control.min <= value <= control.max):
            raise ValueError(
                f"{type(self).__name__}.update: {name} must be in [{control.min}, {control.max}], got {value!r}"
            )

    def _on_change(self, change) -> None:
        if not self._holding:
            self._redraw()

    def _redraw(self) -> None:
        start = time.perf_counter()
        # The tensors here are small (one image): torch's intra-op threads would cost more in synchronisation
        # than they save, many times more when the cores are busy (measured: 60 ms instead of 18 ms per redraw
        # on 2 shared cores). One thread for the redraw; the previous count is restored.
        with num_threads(1):
            self.result = self._draw(**self.values)
            self.image.value = self._renderer.render()
        self.last_redraw_seconds = time.perf_counter() - start

    def render(self) -> bytes:
        """PNG bytes of the current picture (the same bytes the widget shows)."""
        return bytes(self.image.value)

    def static_html(self) -> str:
        """This widget as HTML that works in a page without a kernel, e.g. the HTML book.

        The page gets the controls (each with every value it can take) and the data it needs to redraw the
        picture and recompute the numbers for any setting of them, as JSON; the book's script
        ``segnotes-widgets.js`` builds the controls and redraws when one moves. See :mod:`segnotes.widgets._static`
        for the format.

        Returns:
            str: one ``<div class="sn-widget">``.
        """
        from ._static import control_spec, state_html  # _static imports png_bytes from here

        state = {
            "kind": self._static_kind,
            "controls": [control_spec(name, control) for name, control in self.controls.items()],
            "rows": self._rows,
            "data": self._static_data(),
        }
        return state_html(state, note=f"{type(self).__name__}: an interactive figure; it needs JavaScript here, "
                                      "or run the notebook.")

    # Displaying the object itself displays the widget. The plain-text fallback is a short, fixed line (not
    # the container's repr, which holds model ids and PNG bytes) so that stored notebooks stay small and stable.
    # text/html is the same widget for a page without a kernel (the HTML book prefers it to the widget view,
    # which needs a kernel to redraw); Jupyter and Colab show the live widget view.
    def _repr_mimebundle_(self, **kwargs):
        bundle = _widget_bundle(self.widget, **kwargs)
        bundle["text/plain"] = f"{type(self).__name__} (an interactive widget: run the notebook to use it)"
        bundle["text/html"] = self.static_html()
        return bundle

    def _ipython_display_(self):
        from IPython.display import display

        display(self._repr_mimebundle_(), raw=True)

    # Subclass hooks.
    #: How segnotes-widgets.js draws this widget's page version.
    _static_kind: str

    def _static_data(self) -> dict:  # pragma: no cover - abstract
        """What the page version needs besides the controls (JSON-ready)."""
        raise NotImplementedError

    def _draw(self, **values) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _animated(self) -> Sequence[Artist]:  # pragma: no cover - abstract
        raise NotImplementedError


def _widget_bundle(widget, **kwargs) -> dict:
    """The mime bundle that displays ``widget``, with ipywidgets 8 (its ``_repr_mimebundle_``) or 7 (Colab's)."""
    if hasattr(widget, "_repr_mimebundle_"):
        return dict(widget._repr_mimebundle_(**kwargs))
    # ipywidgets 7 displays through _ipython_display_; this is the bundle it sends (protocol 2.0).
    view = {"version_major": 2, "version_minor": 0, "model_id": widget._model_id}
    return {"text/plain": repr(widget), "application/vnd.jupyter.widget-view+json": view}
