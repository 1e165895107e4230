"""Command-line output that fits a terminal of ``WIDTH`` columns: frames abbreviate long cells and wrap
their columns, text wraps; the evidence files keep every value whole.

SQL and code wrap only at spaces outside quotes, so that a quoted name with a space in it is never
split across lines and a wrapped statement still runs when pasted.
"""
from __future__ import annotations

import textwrap
from typing import Any, Iterable

WIDTH = 100
# How wide a frame's cell may grow, widest first: the first width at which the whole frame fits is
# taken; a frame that fits at none has its cells cut at the last and its columns wrapped.
CELLS = (80, 60, 50, 40)


def frame_lines(frame: Any) -> list[str]:
    """A pandas DataFrame as lines of at most ``WIDTH`` characters."""
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.max_colwidth", None):
        for cell in CELLS:
            lines = str(frame.to_string(index=False, max_colwidth=cell)).splitlines()
            if max((len(line) for line in lines), default=0) <= WIDTH:
                return lines
        return str(frame.to_string(index=False, line_width=WIDTH, max_colwidth=CELLS[-1])).splitlines()


def text_lines(text: str, indent: str = "", *, first: str = "") -> list[str]:
    """Prose wrapped to ``WIDTH``, starting with ``first``; lines after the first take ``indent``."""
    return textwrap.wrap(text, WIDTH, initial_indent=first, subsequent_indent=indent,
                         break_on_hyphens=False) or [first.rstrip()]


def _words(code: str) -> Iterable[str]:
    """``code`` split at the spaces that stand outside single and double quotes."""
    word: list[str] = []
    quote: str | None = None
    for char in code:
        if char == " " and quote is None:
            if word:
                yield "".join(word)
            word = []
            continue
        if quote is None and char in "\"'":
            quote = char
        elif char == quote:
            quote = None
        word.append(char)
    if word:
        yield "".join(word)


def code_lines(code: str, indent: str = "", *, first: str = "") -> list[str]:
    """SQL or code wrapped to ``WIDTH`` at spaces outside quotes (a longer word stands alone), starting
    with ``first``; lines after the first take ``indent``."""
    lines: list[str] = []
    line = first
    bare = True
    for word in _words(code):
        if not bare and len(line) + 1 + len(word) > WIDTH:
            lines.append(line)
            line, bare = indent, True
        line = line + word if bare else f"{line} {word}"
        bare = False
    lines.append(line)
    return lines
