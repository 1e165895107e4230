"""verify-evidence sees every file at any depth, refuses links and special files; evidence is private."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Iterator

import pytest

from runbook_lib.context import RunContext
from runbook_lib.evidence import private_dir, verify_evidence, write_manifest
from tests.test_evidence import run_dir  # noqa: F401 - the same fixture: a sealed run folder


@pytest.fixture
def loose_umask() -> Iterator[None]:
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_a_manifest_below_the_top_level_is_an_added_file(run_dir: Path) -> None:
    (run_dir / "verdicts" / "manifest.json").write_text("{}")
    (run_dir / "deep" / "er").mkdir(parents=True)
    (run_dir / "deep" / "er" / "manifest.json").write_text("{}")
    assert verify_evidence(run_dir) == ["deep/er/manifest.json: added after the manifest was written",
                                        "verdicts/manifest.json: added after the manifest was written"]


def test_a_nested_manifest_written_before_is_hashed_like_any_file(tmp_path: Path) -> None:
    d = tmp_path / "run"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "manifest.json").write_text('{"a": 1}')
    write_manifest(d, {"run_id": "r"})
    assert verify_evidence(d) == []
    (d / "sub" / "manifest.json").write_text('{"a": 2}')
    assert verify_evidence(d) == ["sub/manifest.json: changed (sha256 differs)"]


def test_symbolic_links_and_special_files_are_refused(run_dir: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "hidden.txt").write_text("added through a link")
    (run_dir / "linked_dir").symlink_to(outside, target_is_directory=True)
    (run_dir / "verdicts" / "link.json").symlink_to(run_dir / "plan.sql")
    os.mkfifo(run_dir / "pipe")
    problems = verify_evidence(run_dir)
    assert "linked_dir: a symbolic link (refused: evidence holds only regular files)" in problems
    assert "verdicts/link.json: a symbolic link (refused: evidence holds only regular files)" in problems
    assert "pipe: not a regular file (refused)" in problems
    assert len(problems) == 3


def test_a_symlinked_manifest_is_refused(tmp_path: Path, run_dir: Path) -> None:
    elsewhere = tmp_path / "m.json"
    (run_dir / "manifest.json").rename(elsewhere)
    (run_dir / "manifest.json").symlink_to(elsewhere)
    assert verify_evidence(run_dir) == ["manifest.json: a symbolic link (refused)"]


def test_evidence_is_private_whatever_the_umask(tmp_path: Path, loose_umask: None) -> None:
    run = private_dir(tmp_path / "evidence" / "r1", exist_ok=False)
    (run / "verdicts").mkdir()
    (run / "plan.sql").write_text("x")
    (run / "verdicts" / "a.json").write_text("{}")
    write_manifest(run, {"run_id": "r1"})
    modes = {p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
             for p in [tmp_path / "evidence", *(tmp_path / "evidence").rglob("*")]}
    assert modes == {"evidence": 0o700, "evidence/r1": 0o700, "evidence/r1/verdicts": 0o700,
                     "evidence/r1/plan.sql": 0o600, "evidence/r1/verdicts/a.json": 0o600,
                     "evidence/r1/manifest.json": 0o600}


def test_a_notebook_opened_by_hand_gets_a_private_folder(dsn: str, tmp_path: Path, loose_umask: None,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_DSN", dsn)
    monkeypatch.setenv("RUNBOOK_EVIDENCE_DIR", str(tmp_path / "ev"))
    monkeypatch.delenv("RUNBOOK_RUN_DIR", raising=False)
    ctx = RunContext.open(parent_table="users")
    assert stat.S_IMODE(ctx.run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "ev").stat().st_mode) == 0o700
