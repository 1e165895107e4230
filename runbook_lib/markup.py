"""Names and values from the database, made safe for Markdown and HTML: shown as text, never as markup.

A table may be called ``t<img src=x onerror=alert(1)>`` and a constraint's comment may hold a
``<script>``; a notebook page renders Markdown, which passes raw HTML through. Everything from the
database that reaches a Markdown cell goes through ``md_text`` (or is shown as plain text), and the
HTML pages are rendered with the sanitizer on besides (``runner.render_html``).
"""
from __future__ import annotations

import html
from typing import Any

# CommonMark's backslash-escapable punctuation, less the three HTML turns into entities below.
_MARKDOWN_SPECIALS = frozenset("\\`*_{}[]()#+-.!|~\"'=:$^")


def md_text(value: Any) -> str:
    """``value`` as literal text inside Markdown: no emphasis, link, code span, or HTML tag survives."""
    text = "" if value is None else str(value)
    escaped = "".join("\\" + ch if ch in _MARKDOWN_SPECIALS else ch for ch in text)
    # Entities rather than backslashes for &, < and >: some Markdown renderers pass "\<" through as a tag.
    escaped = escaped.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    # A line break inside a name must not start a heading, list or block of HTML on the next line.
    return escaped.replace("\r", " ").replace("\n", " ")


def md_bold(value: Any) -> str:
    return f"**{md_text(value)}**"


def html_text(value: Any) -> str:
    """``value`` as text inside HTML (element content or a quoted attribute)."""
    return html.escape("" if value is None else str(value), quote=True)


def safe_name(value: Any, *, limit: int = 80) -> str:
    """A file-name component made from a database name: no separator, no ``..``, no control character.

    Letters, digits, ``-``, ``_`` and ``.`` are kept; anything else becomes ``_``. A leading dot is
    replaced too, so the result is never ``.``, ``..`` or a hidden file.
    """
    text = "" if value is None else str(value)
    cleaned = "".join(ch if (ch.isascii() and (ch.isalnum() or ch in "-_.")) else "_" for ch in text)
    cleaned = cleaned[:limit]
    if not cleaned or cleaned[0] == ".":
        cleaned = "_" + cleaned[1:] if cleaned else "_"
    return cleaned
