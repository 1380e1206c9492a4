"""What the book's notebooks need beyond the package, with nothing book-only to install.

:func:`glue` records a value for the HTML book's ``{glue}`` roles, like ``myst_nb.glue``, and
also shows it in Jupyter and Colab, where those roles stay raw text.
"""
from __future__ import annotations

from typing import Any

__all__ = ["glue", "GLUE_PREFIX"]

# The mime prefix myst-nb reads for a value glued with display=False (myst_nb.ext.glue.GLUE_PREFIX).
GLUE_PREFIX = "application/papermill.record/"


def glue(name: str, variable: Any, display: bool = True) -> None:
    """Glue ``variable`` under ``name`` for the HTML book, and show it in the notebook.

    Writes the same output as ``myst_nb.glue`` (so ``{glue:text}`name``` and ``{glue:figure}`
    work in the book) without importing myst-nb. With ``display=False`` that output also carries
    an ordinary representation, ``name = value`` for text and the image for a figure: Jupyter and
    Colab show it, while myst-nb drops the whole output from the page, where the prose shows the
    value instead.

    Args:
        name (str): the key the book's roles and directives use.
        variable: any object IPython can display (a number, a string, a matplotlib figure).
        display (bool): show the object in the page too, as an ordinary output.
    """
    from IPython.core.formatters import format_display_data
    from IPython.display import display as ipy_display

    if not isinstance(name, str) or not name:
        raise TypeError(f"glue: name must be a non-empty str, got {name!r}")
    bundle, metadata = format_display_data(variable)
    metadata = dict(metadata, scrapbook={"name": name, "mime_prefix": "" if display else GLUE_PREFIX})
    if display:
        ipy_display(bundle, raw=True, metadata=metadata)
        return
    data = {GLUE_PREFIX + mime: value for mime, value in bundle.items()}
    data.update(_visible(name, bundle))
    ipy_display(data, raw=True, metadata=metadata)


def _visible(name: str, bundle: dict) -> dict:
    """The representation Jupyter shows: a figure's image, or ``name = value``."""
    images = {mime: bundle[mime] for mime in ("image/png", "image/svg+xml", "image/jpeg") if mime in bundle}
    if images:
        return {**images, "text/plain": f"[figure {name}]"}
    return {"text/plain": f"{name} = {bundle.get('text/plain', '')}"}
