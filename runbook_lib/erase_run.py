"""One erasure from start to end, as ``runbook erase`` and notebook 08 run it.

preflight (the plan's check is empty) -> preview (rows per table, detached rows, blockers, unindexed
FKs, orphans to be) -> only with ``confirm``: batches and the final transaction -> proof -> receipt.
Without ``confirm`` nothing is changed and nothing is written.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import psycopg

from . import catalog, receipt, terminal
from .connect import connect
from .erase import BatchHook, Erasure, erase
from .erase_plan import (ErasePlan, OrphanRow, Preview, Timeouts, make_erase_plan, plan_check, predict_orphans,
                         take_preview)
from .erase_proof import EraseProof, prove
from .errors import ParameterError, RunbookError
from .model import TableKey, qualname
from .params import Parameters


@dataclass
class EraseOutcome:
    user_id: str
    preflight: list[str]
    plan: ErasePlan | None = None
    predicted_orphans: list[OrphanRow] = field(default_factory=list)
    erasure: Erasure | None = None
    proof: EraseProof | None = None
    evidence: Path | None = None

    @property
    def blocked(self) -> list[str]:
        return self.preflight + (self.plan.blockers if self.plan else [])

    @property
    def ok(self) -> bool:
        if self.blocked:
            return False
        return self.erasure is None or (self.proof is not None and self.proof.ok)

    @property
    def message(self) -> str:
        if self.preflight:
            return f"user {self.user_id}: refused, the foreign keys are not as the policy wants"
        if self.plan and self.plan.blockers:
            return f"user {self.user_id}: refused: " + "; ".join(self.plan.blockers)
        if self.proof is not None:
            return f"user {self.user_id}: {self.proof.message}"
        assert self.plan is not None
        return f"user {self.user_id} (preview only, nothing changed): {self.plan.preview.message}"


def _parent(params: Parameters) -> TableKey:
    return (params.parent_schema, params.parent_table)


def read_ids(user_id: str | None, ids_file: str | None) -> list[str]:
    """The ids to erase, in order: ``--user-id`` first, then the file's (one per line, # comments)."""
    ids = [user_id] if user_id else []
    if ids_file:
        path = Path(ids_file)
        if not path.is_file():
            raise ParameterError(f"user ids file not found: {path}")
        for line in path.read_text(encoding="utf-8").splitlines():
            text = line.split("#", 1)[0].strip()
            if text:
                ids.append(text)
    if not ids:
        raise ParameterError("no user id given: use --user-id or --user-ids-file")
    return ids


def checked_preview(conn: psycopg.Connection[Any], params: Parameters, user_id: str) -> Preview:
    """The preview, or a one-line error for an id that is malformed or names no user."""
    try:
        found = take_preview(conn, _parent(params), user_id,
                             timeouts=Timeouts(statement=params.statement_timeout, lock=params.lock_timeout))
    except (psycopg.errors.DataError, psycopg.errors.UndefinedTable) as exc:
        raise ParameterError(f"user id {user_id!r}: {exc.diag.message_primary}") from None
    if not found.found:
        raise ParameterError(f"user id {user_id!r}: no row of {qualname(_parent(params))} has this key")
    return found


def validate_ids(conn: psycopg.Connection[Any], params: Parameters, ids: Sequence[str]) -> None:
    """Every id names a user, before anything is changed (a bad one stops the whole queue)."""
    for user_id in ids:
        checked_preview(conn, params, user_id)


def erase_user(conn: psycopg.Connection[Any], params: Parameters, user_id: str, *, confirm: bool,
               evidence_dir: str | Path = "evidence", after_batch: BatchHook | None = None) -> EraseOutcome:
    """Preflight and preview; with ``confirm``, erase, prove and write the receipt."""
    outcome = EraseOutcome(user_id, plan_check(conn, params))
    found = checked_preview(conn, params, user_id)
    outcome.plan = make_erase_plan(found, params)
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        outcome.predicted_orphans = predict_orphans(conn, found, list(params.erase["orphan_columns"]))
    if not confirm or outcome.blocked:
        return outcome
    started = time.time()
    outcome.erasure = erase(conn, outcome.plan, params, after_batch=after_batch)
    outcome.proof = prove(conn, outcome.erasure)
    outcome.evidence = receipt.write(evidence_dir, outcome.erasure, outcome.proof, params,
                                     catalog.server_identity(conn), started)
    return outcome


def open_connection(dsn: str) -> psycopg.Connection[Any]:
    return connect(dsn, autocommit=True)


# ---------------------------------------------------------------- what a person reads


def preview_frame(plan: ErasePlan) -> pd.DataFrame:
    preview = plan.preview
    deleted, detached = preview.deleted_counts(), preview.detached_counts()
    batched = {b.table: len(b.batches(plan.batch_rows)) for b in plan.batched}
    fixes: dict[TableKey, list[str]] = {}
    for fk, _rows, fix in plan.unindexed:
        fixes.setdefault(fk.child, []).append(fix)
    rows = [{"table": qualname(t), "rows deleted": deleted.get(t, 0), "rows detached": detached.get(t, 0),
             "batches": batched.get(t, 0), "unindexed FK fix": "; ".join(fixes.get(t, []))}
            for t in sorted(set(deleted) | set(detached) | set(fixes))]
    return pd.DataFrame(rows, columns=["table", "rows deleted", "rows detached", "batches", "unindexed FK fix"])


def orphans_frame(rows: Sequence[OrphanRow]) -> pd.DataFrame:
    return pd.DataFrame([{"table": qualname(o.table), "key": ", ".join(f"{c}={v}" for c, v in zip(o.columns, o.key)),
                          **o.values, "referenced by": ", ".join(o.referenced_by)} for o in rows])


def transactions_frame(erasure: Erasure) -> pd.DataFrame:
    return pd.DataFrame([{"kind": t.kind, "table": t.table, "keys": t.keys, "seconds": t.seconds,
                          "rows deleted": sum(t.deleted.values()), "rows detached": sum(t.updated.values()),
                          "rows inserted": sum(t.inserted.values())} for t in erasure.transactions])


def proof_frame(proof: EraseProof) -> pd.DataFrame:
    return pd.DataFrame(proof.rows)


def report_lines(outcome: EraseOutcome) -> list[str]:
    """The outcome as text lines for the command line, none wider than ``terminal.WIDTH``: the index
    each unindexed FK needs is listed whole below the table, not squeezed into a cell."""
    lines: list[str] = []
    if outcome.plan is not None:
        frame = preview_frame(outcome.plan)
        fixes = [fix for fix in frame.pop("unindexed FK fix") if fix]
        lines += terminal.frame_lines(frame)
        if fixes:
            lines += ["", "unindexed foreign keys (each deletion scans its table); index them with:"]
            for fix in fixes:
                lines += terminal.code_lines(fix, "    ", first="  ")
        if outcome.predicted_orphans:
            lines += ["", "orphans (referenced only by this user's rows):",
                      *terminal.frame_lines(orphans_frame(outcome.predicted_orphans))]
        if outcome.erasure is not None:
            lines += ["", *terminal.frame_lines(transactions_frame(outcome.erasure))]
        for note in outcome.plan.notes:
            lines += terminal.text_lines(note, "      ", first="note: ")
    if outcome.evidence is not None:
        lines.append(f"evidence: {outcome.evidence}")
    return lines


def refusal_lines(outcome: EraseOutcome) -> list[str]:
    return [f"preflight: {line}" for line in outcome.preflight] + (
        [f"blocked: {b}" for b in outcome.plan.blockers] if outcome.plan else [])


__all__ = ["EraseOutcome", "RunbookError", "erase_user", "open_connection", "read_ids", "validate_ids"]
