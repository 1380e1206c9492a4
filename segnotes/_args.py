"""argparse helpers shared by the command lines (``segnotes`` and ``python -m segnotes.experiments``)."""
from __future__ import annotations

import argparse

__all__ = ["int_at_least"]


def int_at_least(minimum: int):
    """An argparse ``type`` that accepts integers >= ``minimum`` (0 or 1) and names the rule when it fails."""
    kind = {0: "non-negative", 1: "positive"}[minimum]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {kind} integer, got {value}")
        return value

    parse.__name__ = f"{kind} integer"  # argparse shows this name in its own messages
    return parse
