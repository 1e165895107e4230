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

import nbformat
import pytest

from runbook_lib import demo, embedded

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
sys.path.insert(0, str(ROOT / "scripts"))

from canonical_run import CHECKED, DRY, REAL, apply_for_real, injected, with_injection  # noqa: E402


@pytest.fixture(scope="module")
def demo_server() -> Iterator[str]:
    """The canonical server of the stored outputs is the embedded PostgreSQL 18, whatever the suite's."""
    with embedded.server() as srv:
        yield srv.get_uri()


@pytest.fixture
def demo_dsn(demo_server: str) -> str:
    """A fresh demo database (same name, so the same outputs) for each test."""
    database, schema_file, _ = demo.SCHEMAS["health"]
    return demo.load_schema(demo_server, database, schema_file)


def checked_copies(sources: dict[str, Path], dsn: str, tmp_path: Path) -> list[Path]:
    """06, 08 and 07 as nbval runs them: the stored notebook with the values of a real run injected
    after the parameter cell (the apply they follow is made here first)."""
    evidence = tmp_path / "ev"
    apply_for_real(dsn, evidence)
    folder = tmp_path / "checked"
    folder.mkdir()
    shutil.copy(NOTEBOOKS / "nbval_sanitize.cfg", folder)
    copies = []
    for name in REAL:
        nb = with_injection(nbformat.read(sources[name], as_version=4), injected(name, evidence))
        nbformat.write(nb, folder / f"{name}.ipynb")
        copies.append(folder / f"{name}.ipynb")
    return copies


def nbval(paths: list[Path], dsn: str, run_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, RUNBOOK_DSN=dsn, RUNBOOK_RUN_DIR=str(run_dir))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
         "--nbval-sanitize-with", str(NOTEBOOKS / "nbval_sanitize.cfg"), "--rootdir", str(paths[0].parent),
         *map(str, paths)],
        capture_output=True, text=True, env=env, cwd=paths[0].parent, timeout=900)


@pytest.mark.slow
def test_stored_outputs_match_a_fresh_run(demo_dsn: str, tmp_path: Path) -> None:
    result = nbval([NOTEBOOKS / f"{n}.ipynb" for n in DRY], demo_dsn, tmp_path / "run")
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.splitlines()[-1]
    # 06, 08 and 07 on their real paths: a test user deleted on the changed database, a real user
    # erased, the change rolled back.
    real = checked_copies({n: NOTEBOOKS / f"{n}.ipynb" for n in REAL}, demo_dsn, tmp_path)
    result = nbval(real, demo_dsn, tmp_path / "run")
    assert result.returncode == 0, result.stdout[-6000:]
    assert " passed" in result.stdout and "failed" not in result.stdout.splitlines()[-1]


def changed_copy(name: str, old: str, new: str, folder: Path) -> tuple[Path, int]:
    """A copy of the stored notebook whose outputs say ``new`` for ``old``; how many cells changed."""
    folder.mkdir(exist_ok=True)
    shutil.copy(NOTEBOOKS / "nbval_sanitize.cfg", folder)
    nb = json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())
    changed = 0
    for cell in nb["cells"]:
        changed += any(old in str(output) for output in cell.get("outputs", []))
        for output in cell.get("outputs", []):
            for key, value in [("text", output.get("text")), *output.get("data", {}).items()]:
                text = "".join(value) if isinstance(value, list) else value
                if isinstance(text, str) and old in text:
                    if key == "text":
                        output["text"] = text.replace(old, new)
                    else:
                        output["data"][key] = text.replace(old, new)
    assert changed, (name, old)
    (folder / f"{name}.ipynb").write_text(json.dumps(nb))
    return folder / f"{name}.ipynb", changed


@pytest.mark.slow
def test_nbval_catches_a_changed_plan(demo_dsn: str, tmp_path: Path) -> None:
    copy, _ = changed_copy("03_plan", "change(s) planned", "change(s) plannedX", tmp_path / "nb")
    result = nbval([copy], demo_dsn, tmp_path / "run")
    assert result.returncode != 0 and "change(s) planned" in result.stdout


@pytest.mark.slow
def test_nbval_catches_a_changed_test_user_deletion_erasure_and_rollback(demo_dsn: str, tmp_path: Path) -> None:
    deletion, in_06 = changed_copy("06_test_user_deletion", "none left", "1 left", tmp_path / "nb")
    erasure, in_08 = changed_copy("08_erase_user", "row(s) deleted in 1 transaction(s)",
                                  "row(s) deleted in 2 transaction(s)", tmp_path / "nb")
    rollback, in_07 = changed_copy("07_rollback", "restored to their original definitions",
                                   "restored to other definitions", tmp_path / "nb")
    real = checked_copies({"06_test_user_deletion": deletion, "08_erase_user": erasure, "07_rollback": rollback},
                          demo_dsn, tmp_path)
    result = nbval(real, demo_dsn, tmp_path / "run")
    assert result.returncode != 0
    # Exactly the changed cells fail: everything else in 06, 08 and 07 still matches its stored output.
    assert f"{in_06 + in_08 + in_07} failed" in result.stdout.splitlines()[-1], result.stdout[-3000:]
    for name in ("06_test_user_deletion", "08_erase_user", "07_rollback"):
        assert f"FAILED {name}.ipynb::Cell" in result.stdout


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
