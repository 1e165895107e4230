"""A person's view of the evidence: headless Chromium renders the index page and a notebook page."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

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
