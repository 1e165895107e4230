"""A person's view of the evidence: headless Chromium renders the index page and a notebook page."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests import wide_schema
from tests.conftest import sql_file
from tests.test_cli import only_run, runbook

# Screenshots for a person to look at; scripts/test.sh gives each server's run a folder of its own.
ARTIFACTS = Path(os.environ.get("RUNBOOK_TEST_ARTIFACTS")
                 or Path(__file__).resolve().parent.parent / "test-artifacts")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is not installed: scripts/test.sh installs it with apt-get"
    return found


def browse(url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_index_and_notebook_pages_of_a_real_run_render_offline(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\n")
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                     "inspect,plan", dsn=dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    run_dir = only_run(tmp_path / "ev")
    index, page = run_dir / "index.html", run_dir / "03_plan.html"
    for html in (index, page):
        for line in html.read_text().splitlines():
            assert not ("<script" in line and "src=\"http" in line), line
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for html, expected in ((index, "ALL STEPS PASSED"), (page, "PASS: plan: 16 change(s) planned")):
        dom = browse(html.as_uri(), "--dump-dom")
        assert dom.returncode == 0, dom.stderr[-2000:]
        assert expected in dom.stdout
        assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
        shot = ARTIFACTS / f"{html.stem}.png"
        shot.unlink(missing_ok=True)
        taken = browse(html.as_uri(), f"--screenshot={shot}", "--window-size=1280,1600")
        assert taken.returncode == 0 and shot.stat().st_size > 5000, taken.stderr[-2000:]


LAPTOP = 1280
# Run at the end of the page: the laid-out widths, written into the DOM that --dump-dom prints.
_MEASURE = """<script>(function () {
  var root = document.documentElement, tables = [].slice.call(document.querySelectorAll("table"));
  var widths = {page: root.scrollWidth, viewport: root.clientWidth, tables: tables.length,
    right: Math.max.apply(null, [0].concat(tables.map(function (t) { return t.getBoundingClientRect().right; }))),
    scrolling: tables.filter(function (t) { return t.scrollWidth > t.clientWidth + 1; }).length,
    widest: Math.max.apply(null, [0].concat(tables.map(function (t) { return t.scrollWidth; })))};
  var out = document.createElement("pre"); out.id = "measured-widths"; out.textContent = JSON.stringify(widths);
  document.body.appendChild(out);
})();</script>"""


def measure(page: Path, width: int = LAPTOP) -> dict[str, float]:
    """The page's laid-out widths in a ``width`` px window: the document's, and its tables'."""
    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / page.name
        copy.write_text(page.read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"), encoding="utf-8")
        dom = browse(copy.as_uri(), "--dump-dom", f"--window-size={width},900")
    assert dom.returncode == 0, dom.stderr[-2000:]
    found = re.search(r'<pre id="measured-widths">(.*?)</pre>', dom.stdout)
    assert found, dom.stdout[-2000:]
    return dict(json.loads(found.group(1).replace("&quot;", '"')))


@pytest.mark.slow
def test_pages_of_a_40_table_schema_fit_a_laptop_screen(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(wide_schema.schema_sql())
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\n")
    for hidden in ("false", "true"):
        evidence = tmp_path / f"ev-{hidden}"
        result = runbook("run", "--params", str(params), "--evidence-dir", str(evidence), "--steps", "inspect,plan",
                         "-p", f"evidence_hide_code={hidden}", dsn=dsn, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        run_dir = only_run(evidence)
        for name in ("index.html", "02_inspect.html", "03_plan.html"):
            widths = measure(run_dir / name)
            assert widths["tables"] >= 1, (name, widths)
            # Nothing scrolls sideways: not the page, and not one of its tables inside it.
            assert widths["page"] <= widths["viewport"] <= LAPTOP, (name, hidden, widths)
            assert widths["right"] <= widths["viewport"] and widths["scrolling"] == 0, (name, hidden, widths)
        plan_page = (run_dir / "03_plan.html").read_text(encoding="utf-8")
        # Headings and a DataFrame's header are markup, not text showing their tags.
        assert "&lt;h1" not in plan_page and "&lt;th&gt;" not in plan_page and "<th>constraint</th>" in plan_page
        assert "warehouse_inventory_reservation_history_entries_user_id_fkey" in plan_page
        shows_code = re.search(r"class=\"[^\"]*jp-InputArea-editor", plan_page) is not None
        assert shows_code is (hidden == "false"), hidden
        assert "steps.plan(ctx)" in (run_dir / "03_plan.ipynb").read_text(encoding="utf-8")  # the notebook keeps it
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "03_plan_40_tables.png"
    shot.unlink(missing_ok=True)
    taken = browse((run_dir / "03_plan.html").as_uri(), f"--screenshot={shot}", f"--window-size={LAPTOP},1600")
    assert taken.returncode == 0 and shot.stat().st_size > 5000, taken.stderr[-2000:]
