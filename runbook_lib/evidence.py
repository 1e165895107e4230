"""Evidence: the run folder's manifest, the hashes that make it tamper-evident, and their check.

``manifest.json`` lists every other file of the run folder with its sha256 and carries a sha256 of its
own canonical content (and an HMAC of it when ``RUNBOOK_EVIDENCE_KEY`` is set), so an edit to any file,
a removed or an added file, or an edited manifest is found by ``verify_evidence``.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from .backup import sha256_file
from .errors import EvidenceError

MANIFEST = "manifest.json"
KEY_ENV = "RUNBOOK_EVIDENCE_KEY"


def new_run_id(suffix: str = "") -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{stamp}-{uuid.uuid4().hex[:6]}{suffix}"


def canonical(manifest: dict[str, Any]) -> bytes:
    body = {k: v for k, v in manifest.items() if k not in ("manifest_sha256", "manifest_hmac")}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()


def file_hashes(run_dir: Path) -> dict[str, dict[str, Any]]:
    files = {}
    for path in sorted(run_dir.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            rel = path.relative_to(run_dir).as_posix()
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def write_manifest(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    manifest = dict(fields)
    manifest["files"] = file_hashes(run_dir)
    manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest)).hexdigest()
    key = os.environ.get(KEY_ENV)
    if key:
        manifest["manifest_hmac"] = hmac.new(key.encode(), canonical(manifest), hashlib.sha256).hexdigest()
    (run_dir / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n",
                                    encoding="utf-8")
    return manifest


def verify_evidence(run_dir: Path) -> list[str]:
    """Every problem with the run folder, one line each; an empty list means it verifies."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return [f"{path}: no manifest"]
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return [f"{path}: manifest is not valid JSON"]
    problems = []
    if hashlib.sha256(canonical(manifest)).hexdigest() != manifest.get("manifest_sha256"):
        problems.append(f"{MANIFEST}: edited (its content does not match its own sha256)")
    key = os.environ.get(KEY_ENV)
    if key:
        expected = hmac.new(key.encode(), canonical(manifest), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, str(manifest.get("manifest_hmac", ""))):
            problems.append(f"{MANIFEST}: HMAC signature missing or wrong for the key in {KEY_ENV}")
    recorded: dict[str, Any] = manifest.get("files", {})
    actual = file_hashes(Path(run_dir))
    for name in sorted(set(recorded) - set(actual)):
        problems.append(f"{name}: removed")
    for name in sorted(set(actual) - set(recorded)):
        problems.append(f"{name}: added after the manifest was written")
    for name in sorted(set(recorded) & set(actual)):
        if recorded[name]["sha256"] != actual[name]["sha256"]:
            problems.append(f"{name}: changed (sha256 differs)")
    return problems


def require_valid(run_dir: Path) -> None:
    problems = verify_evidence(run_dir)
    if problems:
        raise EvidenceError(f"evidence in {run_dir} does not verify: {problems[0]}")
