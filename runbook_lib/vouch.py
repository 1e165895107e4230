"""Whether a run folder may be trusted: signed with the evidence key, or vouched for by the database.

A manifest's own sha256 proves nothing against someone who edits a file and recomputes it. Two things
do: an HMAC under ``RUNBOOK_EVIDENCE_KEY`` (which the editor does not hold), and the run history in
the database (``history.py``), which recorded the sha256 of the files a rollback reads when the run
changed the database, or, for an erasure, the sha256 of its sealed manifest and of its receipt's
counts and key digests. ``require_trusted`` refuses a folder that has neither, and every erasure folder.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg

from . import history, render
from .catalog import Snapshot
from .context import RunContext
from .errors import EvidenceError, VerificationFailed
from .evidence import KEY_ENV, MANIFEST, canonical, signature_valid, verify_evidence
from .plan import Plan, make_plan


@dataclass(frozen=True)
class Trust:
    signed: bool | None  # None: no key in the environment to check a signature with
    vouched: bool | None  # None: the database was not asked
    detail: str

    @property
    def trusted(self) -> bool:
        return bool(self.signed) or bool(self.vouched)

    def lines(self) -> list[str]:
        signed = {True: "signed: yes (HMAC verifies with the key in " + KEY_ENV + ")",
                  False: "signed: no (no HMAC, or one that does not verify with the key in " + KEY_ENV + ")",
                  None: f"signed: not checked ({KEY_ENV} is not set)"}[self.signed]
        vouched = {True: "vouched by the database's run history: yes",
                   False: "vouched by the database's run history: no",
                   None: "vouched by the database's run history: not checked"}[self.vouched]
        return [signed, f"{vouched} ({self.detail})" if self.detail else vouched]


def signed(run_dir: Path) -> bool | None:
    if not os.environ.get(KEY_ENV):
        return None
    try:
        manifest = json.loads((run_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(manifest, dict) and signature_valid(manifest))


def _erasure_vouched(entry: history.Entry, schema: str, run_dir: Path) -> tuple[bool, str]:
    """An erasure's folder: its sealed manifest and its receipt hash to what its transaction recorded."""
    where = f"{schema}.{history.TABLE}"
    manifest, data = _load(run_dir, MANIFEST), _load(run_dir, "receipt.json")
    if entry.manifest_sha256 is None:
        return False, f"the erasure {run_dir.name} is recorded in {where} without its manifest's sha256"
    if not isinstance(manifest, dict) or hashlib.sha256(canonical(manifest)).hexdigest() != entry.manifest_sha256:
        return False, f"{MANIFEST} of erasure {run_dir.name} differs from the sha256 recorded in {where}"
    try:
        hashes = history.receipt_hashes(data)
    except (TypeError, KeyError):
        hashes = ("", "")
    if hashes != (entry.plan_sha256, entry.snapshot_sha256):
        return False, f"receipt.json of erasure {run_dir.name} differs from the sha256 recorded in {where}"
    return True, f"recorded in {where}, status {entry.status}"


def vouched(conn: psycopg.Connection[Any], schema: str, run_dir: Path) -> tuple[bool, str]:
    entry = history.find(conn, schema, run_dir.name)
    if entry is not None and entry.kind == "erase":
        return _erasure_vouched(entry, schema, run_dir)
    if entry is None or entry.kind != "apply":
        return False, f"no apply of run {run_dir.name} is recorded in {schema}.{history.TABLE}"
    hashes = history.folder_hashes(run_dir)
    for name, recorded in (("plan.json", entry.plan_sha256), ("snapshot_before.json", entry.snapshot_sha256)):
        if hashes[name] != recorded:
            return False, f"{name} of run {run_dir.name} differs from the sha256 recorded in {schema}.{history.TABLE}"
    return True, f"recorded in {schema}.{history.TABLE}, status {entry.status}"


def assess(run_dir: Path, conn: psycopg.Connection[Any] | None, schema: str) -> Trust:
    if conn is None:
        return Trust(signed=signed(run_dir), vouched=None, detail="no connection")
    ok, detail = vouched(conn, schema, run_dir)
    return Trust(signed=signed(run_dir), vouched=ok, detail=detail)


def require_trusted(run_dir: Path, conn: psycopg.Connection[Any], schema: str) -> Trust:
    """Refuse, in one line, a folder that neither the key nor the database vouches for."""
    entry = history.find(conn, schema, run_dir.name)
    manifest = _load(run_dir, MANIFEST)
    kind = str(manifest.get("kind")) if isinstance(manifest, dict) else ""
    if (entry is not None and entry.kind == "erase") or kind.startswith("erase"):
        raise EvidenceError(f"rollback refused: {run_dir.name} is an erasure; only an apply is rolled back")
    trust = assess(run_dir, conn, schema)
    if not trust.trusted:
        raise EvidenceError(f"rollback refused: {trust.detail}, and the folder carries no valid {KEY_ENV} "
                            "signature; only a run the database recorded (or a signed one) is rolled back")
    return trust


def rollback_plan(ctx: RunContext, source_run: str | Path) -> Plan:
    """The plan that reverses what ``source_run`` changed, from a folder that verifies and is trusted.

    The foreign keys to restore are those the database's history says the run changed (the folder's
    ``apply_result.json`` only for a folder trusted by its signature), and the reverse DDL computed from
    the vouched snapshot must be exactly the DDL the run's recorded ``plan.json`` holds.
    """
    source = Path(source_run).resolve()
    problems = verify_evidence(source)
    if problems:
        raise VerificationFailed(f"the evidence of {source} does not verify: {problems[0]}")
    with ctx.connect() as conn:
        trust = require_trusted(source, conn, ctx.params.history_schema)
        entry = history.find(conn, ctx.params.history_schema, source.name) if trust.vouched else None
    snapshot = _load(source, "snapshot_before.json")
    if snapshot is None:
        raise VerificationFailed(f"{source} holds no snapshot from before its change")
    if entry is not None:
        changed = set(entry.changed)
    else:
        results = (_load(source, "apply_result.json") or {}).get("results", [])
        changed = {r["constraint"] for r in results if r.get("status") in ("applied", "already")}
    recorded = {i["constraint"]: i for i in (_load(source, "plan.json") or {}).get("items", [])}
    # The run's own rules, whatever today's parameters or policy say: each changed FK is planned as the
    # run recorded it, so that its reverse is the recorded one.
    rules = dict(ctx.params.rules)
    for key in changed:
        if key in recorded:
            rules[recorded[key]["name"]] = "ghost" if recorded[key].get("ghost_defaults") else recorded[key]["planned"]
    the_plan = make_plan(Snapshot.from_dict(snapshot), replace(ctx.params, rules=rules))
    items = tuple(i for i in the_plan.changes if i.fk.key in changed)
    for item in items:
        reverse = recorded.get(item.fk.key, {}).get("reverse")
        if reverse != [render.text(s) for s in item.reverse()]:
            raise VerificationFailed(f"rollback refused: the rollback of {item.fk.key} computed from the snapshot "
                                     f"differs from the one recorded in {source.name}/plan.json")
    return replace(the_plan, items=items)


def _load(run_dir: Path, name: str) -> Any:
    path = run_dir / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
