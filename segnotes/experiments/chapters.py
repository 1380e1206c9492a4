"""The book's chapters whose checkpoints ``make checkpoints`` trains: one line each.

Each entry is a :class:`~segnotes.experiments.runner.Chapter` declared at the end of its module
(``segnotes/experiments/fcn.py`` ...). To add a chapter: write its recipe, runs function, model
builder, data and trainer in a new module, declare its ``CHAPTER``, and list it here.
"""
from __future__ import annotations

from . import fcn, lse, lse_curve, mask_rcnn
from .runner import Chapter

__all__ = ["CHAPTERS", "all_chapters", "chapter_named"]

CHAPTERS: tuple[Chapter, ...] = (
    fcn.CHAPTER,
    mask_rcnn.CHAPTER,
    lse.CHAPTER,
    lse_curve.CHAPTER,
)


def all_chapters() -> tuple[Chapter, ...]:
    """Every chapter :func:`~segnotes.experiments.train_run` can train: the book's, then the
    command line's own-data runs (``segnotes train``), which have nothing for ``make checkpoints``."""
    from . import own_data

    return (*CHAPTERS, own_data.CHAPTER)


def chapter_named(name: str) -> Chapter:
    """The book's chapter called ``name`` (``"fcn"``, ``"mask_rcnn"``, ``"lse"``, ``"lse_curve"``)."""
    for chapter in CHAPTERS:
        if chapter.name == name:
            return chapter
    raise ValueError(f"chapter_named: name must be one of {[c.name for c in CHAPTERS]}, got {name!r}")
