"""The manifest finds any changed, removed or added file, and an edited manifest."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook_lib.evidence import verify_evidence, write_manifest


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "run"
    (d / "verdicts").mkdir(parents=True)
    (d / "plan.sql").write_text("-- plan\n")
    (d / "verdicts" / "plan.json").write_text("{}")
    write_manifest(d, {"run_id": "r1", "steps": []})
    return d


def test_untouched_folder_verifies(run_dir: Path) -> None:
    assert verify_evidence(run_dir) == []
    files = json.loads((run_dir / "manifest.json").read_text())["files"]
    assert set(files) == {"plan.sql", "verdicts/plan.json"} and len(files["plan.sql"]["sha256"]) == 64


def test_changed_removed_and_added_files_are_named(run_dir: Path) -> None:
    (run_dir / "plan.sql").write_text("-- edited\n")
    (run_dir / "verdicts" / "plan.json").unlink()
    (run_dir / "extra.txt").write_text("x")
    assert verify_evidence(run_dir) == [
        "verdicts/plan.json: removed", "extra.txt: added after the manifest was written",
        "plan.sql: changed (sha256 differs)"]


def test_an_edited_manifest_is_found(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["steps"] = [{"step": "apply", "status": "passed"}]
    (run_dir / "manifest.json").write_text(json.dumps(manifest))
    assert verify_evidence(run_dir) == ["manifest.json: edited (its content does not match its own sha256)"]


def test_hmac_signature(run_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNBOOK_EVIDENCE_KEY", "k1")
    signed = tmp_path / "signed"
    signed.mkdir()
    (signed / "a.txt").write_text("a")
    write_manifest(signed, {"run_id": "r2"})
    assert verify_evidence(signed) == []
    monkeypatch.setenv("RUNBOOK_EVIDENCE_KEY", "other")
    assert any("HMAC" in p for p in verify_evidence(signed))
    # An unsigned manifest does not pass when a key is set.
    assert any("HMAC" in p for p in verify_evidence(run_dir))
