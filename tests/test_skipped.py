"""A step that did not do its work is reported as skipped, never as passed; progress is live."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import index_page
from tests.conftest import sql_file
from tests.test_cli import runbook


def test_headline_counts_skips_apart() -> None:
    assert index_page.headline(["passed", "passed"]) == "ALL STEPS PASSED"
    assert index_page.headline(["passed", "skipped"]) == "ALL RUN STEPS PASSED, 1 SKIPPED"
    assert index_page.headline(["passed", "failed", "not run"]) == "RUN FAILED"


@pytest.mark.slow
def test_a_dry_run_reports_the_test_user_as_skipped(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\nrules: {billing: SET NULL}\nbackup: {enabled: false}\n")
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                     "inspect,plan,test_user", dsn=dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    [run_dir] = [p for p in (tmp_path / "ev").iterdir() if p.is_dir()]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [(s["step"], s["status"]) for s in manifest["steps"]] == [
        ("inspect", "passed"), ("plan", "passed"), ("test_user", "skipped")]
    verdict = json.loads((run_dir / "verdicts" / "test_user.json").read_text())
    assert verdict["status"] == "skipped" and verdict["message"].startswith("dry run: nothing was applied")
    page = (run_dir / "index.html").read_text()
    assert "ALL RUN STEPS PASSED, 1 SKIPPED" in page and "ALL STEPS PASSED" not in page
    assert "SKIPPED: dry run: nothing was applied" in page
    assert "PASS: PASS" not in page and "skipped: skipped" not in page
    notebook = (run_dir / "06_test_user_deletion.ipynb").read_text()
    assert "SKIPPED: test_user: dry run: nothing was applied" in notebook
    assert "all run steps passed, 1 skipped; evidence in" in result.stdout
    assert "test_user  skipped" in result.stdout
    # Live progress: each step's start and end, and what the notebooks print, as timestamped lines.
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
    assert re.search(stamp + r"step inspect: started \(02_inspect\)", result.stderr), result.stderr[-2000:]
    assert re.search(stamp + r"step plan: passed after \d+\.\ds", result.stderr)
    assert re.search(stamp + r"step test_user: skipped after", result.stderr)
    assert re.search(stamp + r".*PASS: plan: ", result.stderr)
