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
import stat
import time
import uuid
from pathlib import Path
from typing import Any

from . import logger
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


def _walk(run_dir: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every regular file at any depth (except the top-level manifest), and what is not one.

    Symbolic links are never followed: one could point the check at files outside the folder, or
    hide files added there; links and special files are reported instead.
    """
    files: dict[str, dict[str, Any]] = {}
    strange: list[str] = []
    for root, dirs, names in os.walk(run_dir, followlinks=False):
        base = Path(root)
        for name in sorted(dirs + names):
            path = base / name
            rel = path.relative_to(run_dir).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                strange.append(f"{rel}: a symbolic link (refused: evidence holds only regular files)")
            elif stat.S_ISREG(mode):
                if rel != MANIFEST:
                    files[rel] = {"sha256": sha256_file(path), "size": path.lstat().st_size}
            elif not stat.S_ISDIR(mode):
                strange.append(f"{rel}: not a regular file (refused)")
    return dict(sorted(files.items())), strange


def file_hashes(run_dir: Path) -> dict[str, dict[str, Any]]:
    return _walk(run_dir)[0]


def signature_valid(manifest: dict[str, Any]) -> bool | None:
    """Whether ``manifest`` carries a valid HMAC under ``RUNBOOK_EVIDENCE_KEY`` (None: no key is set)."""
    key = os.environ.get(KEY_ENV)
    if not key:
        return None
    expected = hmac.new(key.encode(), canonical(manifest), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, str(manifest.get("manifest_hmac", "")))


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON, written whole or not at all (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


def private_dir(path: Path, *, exist_ok: bool = True) -> Path:
    """Make ``path`` (and missing parents) readable by its owner only, whatever the umask says."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=0o700, parents=True, exist_ok=exist_ok)
    for made in missing:
        os.chmod(made, 0o700)
    if not missing:
        try:
            os.chmod(path, 0o700)
        except PermissionError:  # a folder someone else owns: it is theirs to protect
            logger.warning("cannot make %s private (owned by another user)", path)
    return path


def seal_permissions(run_dir: Path) -> None:
    """Folders 0700, files 0600: the evidence names the database's tables, people and rules."""
    for root, dirs, names in os.walk(run_dir, followlinks=False):
        os.chmod(root, 0o700)
        for name in names:
            path = Path(root) / name
            if stat.S_ISREG(path.lstat().st_mode):
                os.chmod(path, 0o600)


def write_manifest(run_dir: Path, fields: dict[str, Any]) -> dict[str, Any]:
    seal_permissions(run_dir)
    manifest = dict(fields)
    manifest["files"], strange = _walk(run_dir)
    for line in strange:
        logger.warning("evidence %s: %s", run_dir, line)
    manifest["manifest_sha256"] = hashlib.sha256(canonical(manifest)).hexdigest()
    key = os.environ.get(KEY_ENV)
    if key:
        manifest["manifest_hmac"] = hmac.new(key.encode(), canonical(manifest), hashlib.sha256).hexdigest()
    target = run_dir / MANIFEST
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    os.chmod(target, 0o600)
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
    if signature_valid(manifest) is False:
        problems.append(f"{MANIFEST}: HMAC signature missing or wrong for the key in {KEY_ENV}")
    if path.is_symlink():
        return [f"{MANIFEST}: a symbolic link (refused)"]
    recorded: dict[str, Any] = manifest.get("files", {})
    actual, strange = _walk(Path(run_dir))
    problems.extend(strange)
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
