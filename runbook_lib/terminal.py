"""Command-line output that fits a terminal of ``WIDTH`` columns: frames abbreviate long cells and wrap
their columns into blocks that each repeat the row's name, text wraps.

SQL and code wrap only at spaces outside quotes, so that a quoted name with a space in it is never
split across lines and a wrapped statement still runs when pasted.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any, Iterable

WIDTH = 100
# How wide a frame's cell may grow, widest first: the first width at which the whole frame fits is
# taken. A frame that fits at none is cut into blocks of columns, each led by the first column (the
# row's name, cut in the middle to ``KEY`` so that both ends stay), the other cells cut to the last.
CELLS = (80, 60, 50, 40)
KEY = WIDTH - CELLS[-1] - 2  # a block of the key and one cut column always fits


def _cut(value: Any, width: int) -> str:
    text = str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _cut_middle(value: Any, width: int) -> str:
    text = str(value)
    if len(text) <= width:
        return text
    head = (width - 3) // 2
    return text[:head] + "..." + text[len(text) - (width - 3 - head):]


def _text(frame: Any) -> list[str]:
    return str(frame.to_string(index=False)).splitlines()


def _widest(lines: list[str]) -> int:
    return max((len(line) for line in lines), default=0)


def frame_lines(frame: Any) -> list[str]:
    """A pandas DataFrame as lines of at most ``WIDTH`` characters."""
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.max_colwidth", None):
        for cell in CELLS:
            lines = str(frame.to_string(index=False, max_colwidth=cell)).splitlines()
            if _widest(lines) <= WIDTH:
                return lines
        cut = frame.copy()
        key, rest = cut.columns[0], list(cut.columns[1:])
        cut[key] = cut[key].map(lambda v: _cut_middle(v, KEY))
        for column in rest:
            cut[column] = cut[column].map(lambda v: _cut(v, CELLS[-1]))
        blocks: list[list[Any]] = [[]]
        for column in rest:
            if blocks[-1] and _widest(_text(cut[[key, *blocks[-1], column]])) > WIDTH:
                blocks.append([])
            blocks[-1].append(column)
        lines = []
        for number, columns in enumerate(blocks):
            lines += ([""] if number else []) + _text(cut[[key, *columns]])
        return lines


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


def shown_path(path: str | Path) -> str:
    """``path`` named from the working folder when it lies inside it (shorter, and as the person typed it)."""
    text = str(path)
    if os.path.isabs(text):
        relative = os.path.relpath(text)
        if not relative.startswith(".."):
            return relative
    return text
