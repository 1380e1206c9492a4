"""What the book's notebooks need beyond the package, with nothing book-only to install.

:func:`glue` records a value for the HTML book's ``{glue}`` roles, like ``myst_nb.glue``, and
also shows it in Jupyter and Colab, where those roles stay raw text. :func:`table` shows a result
table with a caption: numbered in the HTML book (a MyST ``table`` directive that ``{numref}`` can
point at), an HTML table with its caption in Jupyter and Colab.
"""
from __future__ import annotations

import html
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["glue", "table", "Table", "GLUE_PREFIX"]

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


class Table:
    """A table with a caption; see :func:`table`. Shows as MyST in the book, as HTML in Jupyter and Colab."""

    def __init__(self, header: Sequence[str], rows: Sequence[Sequence], caption: str, name: str | None,
                 align: Sequence[str]):
        self.header = [str(cell) for cell in header]
        self.rows = [[str(cell) for cell in row] for row in rows]
        self.caption, self.name, self.align = caption, name, list(align)

    def markdown(self) -> str:
        """The pipe table alone (GitHub-flavoured Markdown)."""
        rule = {"left": ":---", "right": "---:", "center": ":---:", "": "---"}
        lines = ["| " + " | ".join(self.header) + " |", "|" + "|".join(rule[a] for a in self.align) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in self.rows])

    # myst-nb renders text/markdown outputs as MyST (nb_render_markdown_format: myst) and the book ranks it
    # above text/html (nb_mime_priority_overrides), so the book numbers the table; Jupyter and Colab rank
    # text/html first and show the captioned HTML table, where a MyST directive would show as raw text.
    def _repr_markdown_(self) -> str:
        options = f":name: {self.name}\n" if self.name else ""
        return f":::{{table}} {self.caption}\n{options}\n{self.markdown()}\n:::\n"

    def _repr_html_(self) -> str:
        style = {"left": "left", "right": "right", "center": "center", "": "left"}

        def cells(tag, row):
            return "".join(f'<{tag} style="text-align:{style[a]}">{_inline_html(c)}</{tag}>'
                           for a, c in zip(self.align, row))

        body = "".join(f"<tr>{cells('td', row)}</tr>" for row in self.rows)
        return (f"<table><caption>{_inline_html(self.caption)}</caption>"
                f"<thead><tr>{cells('th', self.header)}</tr></thead><tbody>{body}</tbody></table>")

    def __repr__(self) -> str:
        return f"{self.caption}\n{self.markdown()}"


def table(header: Sequence[str] | str, rows: Sequence[Sequence] | None = None, *, caption: str,
          name: str | None = None, align: Sequence[str] | None = None) -> Table:
    """A result table with a caption, numbered in the HTML book; the value a chapter's cell ends with.

    Args:
        header (list of str, or str): the column names; or a whole Markdown pipe table (header row,
            alignment row, rows), as the chapters build them, when ``rows`` is None.
        rows (list of lists): the cells, already formatted (str() is applied).
        caption (str): one sentence or two; MyST inline markup ($math$, **bold**, roles) works in the book.
        name (str, optional): the label ``{numref}`tbl-...``` points at.
        align (list of str, optional): "left", "right", "center" or "" per column (default: "" each).

    Returns:
        Table: displays as a MyST ``table`` directive (text/markdown) and as an HTML table (text/html).

    Raises:
        ValueError: a row with another number of cells than the header, or a Markdown string that is
            not a pipe table.
    """
    if not isinstance(caption, str) or not caption.strip():
        raise TypeError(f"table: caption must be a non-empty str, got {caption!r}")
    if rows is None:
        if not isinstance(header, str):
            raise TypeError(f"table: without rows, header must be a Markdown pipe table (str), got {type(header).__name__}")
        header, align, rows = _parse_pipe_table(header)
    else:
        header = list(header)
        align = list(align) if align is not None else [""] * len(header)
    if len(align) != len(header):
        raise ValueError(f"table: align must have one entry per column ({len(header)}), got {len(align)}")
    for i, row in enumerate(rows):
        if len(row) != len(header):
            raise ValueError(f"table: row {i} has {len(row)} cells, the header {len(header)}")
    return Table(header, rows, caption, name, align)


def _split_row(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _parse_pipe_table(text: str) -> tuple[list[str], list[str], list[list[str]]]:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if len(lines) < 2 or not re.fullmatch(r"\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?", lines[1].strip()):
        raise ValueError(f"table: expected a Markdown pipe table (a header row, then a row of dashes), got {text[:80]!r}")
    header = _split_row(lines[0])

    def side(rule: str) -> str:
        return {(True, True): "center", (False, True): "right", (True, False): "left"}.get(
            (rule.startswith(":"), rule.endswith(":")), "")

    align = [side(rule) for rule in _split_row(lines[1])]
    return header, align, [_split_row(line) for line in lines[2:]]


def _inline_html(text: str) -> str:
    """Escape, then the little inline Markdown the tables use: **bold**, `code`."""
    out = html.escape(text, quote=False)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", out)

