"""The notebooks: nbval re-executes them against a fresh demo database and compares what they show."""
from __future__ import annotations

import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from runbook_lib import demo, embedded

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHECKED = ["00_preflight", "01_backup", "02_inspect", "03_plan", "04_apply", "05_verify", "06_test_user_deletion"]


@pytest.fixture(scope="module")
def demo_dsn() -> Iterator[str]:
    """The canonical server of the stored outputs is the embedded PostgreSQL 18, whatever the suite's."""
    with embedded.server() as srv:
        database, schema_file, _ = demo.SCHEMAS["health"]
        yield demo.load_schema(srv.get_uri(), database, schema_file)


def nbval(paths: list[Path], dsn: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNBOOK_DSN=dsn, RUNBOOK_RUN_DIR=str(run_dir))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", str(NOTEBOOKS / "nbval_sanitize.cfg"), "--rootdir", str(paths[0].parent),
         *map(str, paths)],
        capture_output=True, text=True, env=env, cwd=paths[0].parent, timeout=900)


@pytest.mark.slow
def test_stored_outputs_match_a_fresh_run(demo_dsn: str, tmp_path: Path) -> None:
    result = nbval([NOTEBOOKS / f"{n}.ipynb" for n in CHECKED], demo_dsn, tmp_path / "run")
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.splitlines()[-1]


@pytest.mark.slow
def test_nbval_catches_a_changed_plan(demo_dsn: str, tmp_path: Path) -> None:
    copy = tmp_path / "nb"
    copy.mkdir()
    shutil.copy(NOTEBOOKS / "nbval_sanitize.cfg", copy)
    nb = json.loads((NOTEBOOKS / "03_plan.ipynb").read_text())
    changed = False
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text")
            if isinstance(text, list):
                text = "".join(text)
            if text and "change(s) planned" in text:
                output["text"] = text.replace("change(s) planned", "change(s) plannedX")
                changed = True
    assert changed
    (copy / "03_plan.ipynb").write_text(json.dumps(nb))
    result = nbval([copy / "03_plan.ipynb"], demo_dsn, tmp_path / "run")
    assert result.returncode != 0 and "change(s) planned" in result.stdout


def test_stored_outputs_hold_no_paths_or_secrets() -> None:
    for name in CHECKED:
        text = (NOTEBOOKS / f"{name}.ipynb").read_text()
        nb = json.loads(text)
        assert any(cell.get("outputs") for cell in nb["cells"]), f"{name} has no stored outputs"
        for marker in ("/tmp/", "/root/", "/home/", "/work/", "PGPASSWORD", "RUNBOOK_DSN="):
            assert marker not in text, (name, marker)
        assert not re.search(r"postgres(ql)?://[^@\s\"]*:[^@\s\"]+@", text), name


def test_papermill_help_documents_every_parameter() -> None:
    result = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(NOTEBOOKS / "04_apply.ipynb")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for key in ("parent_table", "parent_schema", "rules", "dry_run", "lock_timeout", "lock_retries",
                "retry_backoff", "backup", "test_user", "run_dir"):
        line = next((ln for ln in result.stdout.splitlines() if ln.strip().startswith(key + ":")), "")
        assert "#" not in line and len(line.split("(")[-1]) > 10 or "default" in line, (key, result.stdout)
