"""No HTML from the database, ever: every name, comment and message reaches a page as text."""
from __future__ import annotations

import json
import re
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from nbconvert.filters import markdown2html

from runbook_lib.markup import html_text, md_bold, safe_name
from tests.conftest import create_database, drop_database, sql_file
from tests.test_cli import runbook

PAYLOADS = ["t<img src=x onerror=alert(1)>", "<script>alert(1)</script>", "a **b** [l](javascript:alert(1))",
            "`code` <b onmouseover=alert(1)>x</b>", "line\n# heading\n<svg onload=alert(1)>", "&lt;img&gt;"]


class LiveMarkup(HTMLParser):
    """Every element an attacker would want: event handlers, scripts with a payload, javascript: URLs."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name.lower().startswith("on"):
                self.found.append(f"<{tag} {name}={value!r}>")
            if name.lower() in ("href", "src", "action") and (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}={value!r}>")
        if tag in ("iframe", "object", "embed") or (tag == "img" and dict(attrs).get("src") in ("x", "y")):
            self.found.append(f"<{tag}>")
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        # The page template's own scripts are fine; one that carries a payload is not.
        if self._in_script and "alert(" in data:
            self.found.append(f"<script>{data[:60]}")


class LinkValues(HTMLParser):
    """Every href and src of a page, as the browser reads them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.values: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.values += [re.sub(r"[\x00-\x20\x7f]+", "", v or "") for k, v in attrs if k in ("href", "src")]


def live_markup(html: str) -> list[str]:
    parser = LiveMarkup()
    parser.feed(html)
    return parser.found


@pytest.mark.parametrize("payload", PAYLOADS)
def test_md_text_renders_as_the_same_text_and_nothing_else(payload: str) -> None:
    rendered = markdown2html(f"Table {md_bold(payload)} here")
    assert live_markup(rendered) == []
    assert "<img" not in rendered and "<script" not in rendered and "<svg" not in rendered
    assert "<a " not in rendered and "<code" not in rendered and "<h1" not in rendered
    # The reader sees the name itself (line breaks become spaces).
    text = LiveText.of(rendered)
    assert payload.replace("\n", " ") in text


class LiveText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    @classmethod
    def of(cls, html: str) -> str:
        parser = cls()
        parser.feed(html)
        return "".join(parser.parts)


def test_html_text_and_safe_name() -> None:
    assert html_text('<a href="x">') == "&lt;a href=&quot;x&quot;&gt;"
    for hostile in ("../../etc/passwd", "/tmp/x", "..", ".", "", "a/../b", "d\x00b", "t<img src=x>"):
        name = safe_name(hostile)
        assert name and "/" not in name and "\x00" not in name and not name.startswith(".")
        assert name not in (".", "..")
    assert safe_name("app_db-2.prod") == "app_db-2.prod"


@pytest.mark.slow
def test_no_page_of_a_run_carries_live_markup_from_the_database(server_dsn: str, tmp_path: Path) -> None:
    # Unique: two runs of the suite may share one server.
    name = f"d<img src=x onerror=alert(11)>{uuid.uuid4().hex[:8]}"
    dsn = create_database(server_dsn, sql_file("markup_payloads.sql"), name=name)
    try:
        params = tmp_path / "params.yaml"
        params.write_text(json.dumps({
            "parent_table": "users", "dry_run": False,
            "rules": {"fk<img src=y onerror=alert(5)>": "CASCADE"},
            "backup": {"enabled": True, "dir": str(tmp_path / "backups")}}))
        evidence = tmp_path / "evidence"
        run = runbook("run", "--params", str(params), "--evidence-dir", str(evidence), dsn=dsn, cwd=tmp_path)
        run_dir = next(p for p in evidence.iterdir() if p.is_dir())
        manifest = json.loads((run_dir / "manifest.json").read_text())
        # Every step ran (the test user fails on the payload tables, which is what puts their errors
        # on the page); only the test-user step may fail.
        statuses = {s["step"]: s["status"] for s in manifest["steps"]}
        assert all(v == "passed" for k, v in statuses.items() if k != "test_user"), (statuses, run.stderr)
        back = runbook("rollback", str(run_dir), dsn=dsn, cwd=tmp_path)
        assert back.returncode == 0, back.stderr
        pages = sorted(evidence.rglob("*.html"))
        assert {p.name for p in pages} >= {"00_preflight.html", "02_inspect.html", "03_plan.html", "04_apply.html",
                                           "05_verify.html", "06_test_user_deletion.html", "07_rollback.html",
                                           "index.html"}
        found = {p.name: live_markup(p.read_text(encoding="utf-8")) for p in pages}
        assert {k: v for k, v in found.items() if v} == {}
        # The payloads did reach the pages, as text: the check above is not vacuous.
        plan_page = LiveText.of((run_dir / "03_plan.html").read_text(encoding="utf-8"))
        assert "t<img src=x onerror=alert(3)>" in plan_page
        test_page = LiveText.of((run_dir / "06_test_user_deletion.html").read_text(encoding="utf-8"))
        assert "alert(7)" in test_page
    finally:
        drop_database(server_dsn, dsn)




def test_a_page_keeps_no_link_that_runs_code_even_when_written_in_markdown(tmp_path: Path) -> None:
    """Markdown is sanitized before it becomes HTML: its links are checked again on the rendered page."""
    import nbformat

    from runbook_lib import html_page

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("[a](javascript:alert(1)) [b](JaVa%0aScript:alert(2)) [c](java\tscript:alert(3))"
                                      " [d](https://example.org/x) [e](03_plan.html#Decisions)"),
        nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output(
            "display_data", data={"text/markdown": "[f](vbscript:msgbox(4)) [g](javascript&colon;alert(5))",
                                  "text/html": '<a href="jAvAsCrIpT:alert(6)">h</a>'})]),
    ]
    path = tmp_path / "page.ipynb"
    nbformat.write(nb, path)
    page = html_page.render(path).read_text(encoding="utf-8")
    assert live_markup(page) == []
    links = LinkValues()
    links.feed(page)
    # Every link of the page, read as a browser does (entities decoded, controls dropped), is harmless.
    assert [v for v in links.values if re.match(r"(?i)[a-z][a-z0-9+.-]*:", v)
            and not re.match(r"(?i)(https?|mailto):|data:image/", v)] == []
    assert {"https://example.org/x", "03_plan.html#Decisions"} <= set(links.values)
    assert html_page.safe_links('<a href=" java&#x09;script:x">') == '<a href="#">'
