"""The HTML page of an executed notebook: offline, sanitized, and as wide as a laptop screen.

nbconvert's own ``sanitize_html`` escapes every tag outside a short list, headings, paragraphs and a
DataFrame's header among them, so a page would show ``<h1>``, ``<th>`` and ``<style>`` as text. The
page is sanitized here instead, before rendering, with the tags a report needs and nothing that runs:
Markdown cells and HTML/Markdown outputs go through bleach; scripts, styles and event attributes are
dropped. Names from the database are escaped at the source besides (``markup.py``).

Tables of a wide schema wrap their long names inside the cells instead of pushing the page sideways;
code cells can be left out for readers who want only the results (the ``.ipynb`` keeps them).
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

_EXTERNAL_TAG = re.compile(
    r"<script[^>]*\bsrc=\"https?://[^\"]*\"[^>]*>\s*</script>|<link[^>]*\bhref=\"https?://[^\"]*\"[^>]*>",
    re.IGNORECASE)
# pandas puts a <style scoped> block before each DataFrame: the page's own rules below replace it.
_STYLE_BLOCK = re.compile(r"<style\b[^>]*>.*?</style>", re.IGNORECASE | re.DOTALL)
# Markdown is sanitized before it becomes HTML, so a link written in Markdown ("[x](javascript:...)")
# only turns into an <a href> afterwards: every link and source of the rendered page is checked again.
_LINK_ATTRIBUTE = re.compile(r"""\b(href|src)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)""", re.IGNORECASE)
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_SAFE_SCHEMES = ("http", "https", "mailto")
_CONTROL = re.compile(r"[\x00-\x20\x7f]+")


def _safe_link(match: re.Match[str]) -> str:
    value = match.group(2).strip("\"'")
    plain = _CONTROL.sub("", html.unescape(value)).lower()
    scheme = _SCHEME.match(plain)
    if scheme is None or scheme.group(1) in _SAFE_SCHEMES or plain.startswith("data:image/"):
        return match.group(0)
    return f'{match.group(1)}="#"'


def safe_links(page: str) -> str:
    """``page`` with every href/src whose scheme is not http(s), mailto or an inline image made "#"."""
    return _LINK_ATTRIBUTE.sub(_safe_link, page)


TAGS = ("a", "abbr", "b", "blockquote", "br", "caption", "code", "del", "div", "em", "h1", "h2", "h3", "h4",
        "h5", "h6", "hr", "i", "li", "ol", "p", "pre", "span", "strong", "sub", "sup", "table", "tbody", "td",
        "tfoot", "th", "thead", "tr", "ul")
ATTRIBUTES = {"*": ["class", "id"], "a": ["href", "title"], "abbr": ["title"], "td": ["colspan", "rowspan"],
              "th": ["colspan", "rowspan"]}
# A plan of a 40-table schema fits 1280 px: cells wrap long names (anywhere, as they have no spaces),
# outputs wrap long lines; a table still too wide scrolls on its own rather than moving the page.
FIT_CSS = (
    "<style>.jp-RenderedHTMLCommon table,table.dataframe{display:block;max-width:100%;overflow-x:auto}"
    ".jp-RenderedHTMLCommon td,.jp-RenderedHTMLCommon th{white-space:normal;overflow-wrap:anywhere;"
    "word-break:break-word;max-width:32em;vertical-align:top}"
    ".jp-OutputArea-output pre{white-space:pre-wrap;overflow-wrap:anywhere}</style>")


def _sanitizer() -> Any:
    from nbconvert.preprocessors.sanitize import SanitizeHTML

    class Sanitizer(SanitizeHTML):
        def sanitize_html_tags(self, html_str: str) -> str:
            return str(super().sanitize_html_tags(_STYLE_BLOCK.sub("", html_str)))

    return Sanitizer(tags=list(TAGS), attributes=ATTRIBUTES, strip=True)


def render(notebook: Path, *, hide_code: bool = False) -> Path:
    """``notebook`` as ``notebook.html`` beside it; ``hide_code`` leaves out code cells' sources."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", sanitize_html=False, exclude_input=hide_code,
                            exclude_input_prompt=hide_code, exclude_output_prompt=hide_code)
    exporter.register_preprocessor(_sanitizer(), enabled=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    target = notebook.with_suffix(".html")
    body = safe_links(_EXTERNAL_TAG.sub("", body)).replace("</head>", FIT_CSS + "</head>", 1)
    target.write_text(body, encoding="utf-8")
    return target
