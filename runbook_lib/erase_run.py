"""One erasure from start to end, as ``runbook erase`` and notebook 08 run it.

preflight (the plan's check is empty) -> preview (rows per table, detached rows, blockers, unindexed
FKs, orphans to be) -> only with ``confirm``: batches and the final transaction -> proof -> receipt.
Without ``confirm`` nothing is changed and nothing is written. ``runbook erase`` runs these through
notebook 08 (``preview_user`` then ``carry_out``), which writes the receipt into its own run folder.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import psycopg

from . import catalog, history, receipt
from .connect import connect
from .erase import BatchHook, Erasure, HistoryRecord, Progress, erase
from .erase_plan import (ErasePlan, OrphanRow, Preview, Timeouts, make_erase_plan, plan_check, predict_orphans,
                         take_preview)
from .erase_proof import EraseProof, prove
from .errors import ParameterError, RunbookError
from .model import TableKey, qualname
from .params import Parameters


# ``runbook erase`` hands the notebook a user's key here when ``erase.hash_keys`` is set: a notebook
# parameter would be written into the executed notebook, and the evidence must not hold the key.
USER_ID_ENV = "RUNBOOK_ERASE_USER_ID"


@dataclass
class EraseOutcome:
    user_id: str
    preflight: list[str]
    plan: ErasePlan | None = None
    predicted_orphans: list[OrphanRow] = field(default_factory=list)
    erasure: Erasure | None = None
    proof: EraseProof | None = None
    evidence: Path | None = None
    hide_key: bool = False  # erase.hash_keys: no message names the key

    @property
    def blocked(self) -> list[str]:
        return self.preflight + (self.plan.blockers if self.plan else [])

    @property
    def ok(self) -> bool:
        if self.blocked:
            return False
        return self.erasure is None or (self.proof is not None and self.proof.ok)

    @property
    def who(self) -> str:
        return "the user (key hashed)" if self.hide_key else f"user {self.user_id}"

    @property
    def result(self) -> str:
        """The outcome in one line, without naming the user."""
        if self.preflight:
            return "refused, the foreign keys are not as the policy wants"
        if self.plan and self.plan.blockers:
            return "refused: " + "; ".join(self.plan.blockers)
        if self.proof is not None:
            return self.proof.message
        assert self.plan is not None
        preview = self.plan.preview
        deleted, detached = preview.deleted_counts(), sum(preview.detached_counts().values())
        return (f"preview only, nothing changed: {sum(deleted.values())} row(s) to delete in {len(deleted)} "
                f"table(s), {detached} to detach (SET NULL/DEFAULT)")

    @property
    def message(self) -> str:
        # The proof's status word leads the line ("PASS: user 7: ..."), so a verdict built on it
        # does not repeat it in the middle.
        word, sep, rest = self.result.partition(": ")
        if sep and word in ("PASS", "FAIL"):
            return f"{word}: {self.who}: {rest}"
        return f"{self.who}: {self.result}"


def given_user_id(value: object) -> str | None:
    """The notebook's ``erase_user_id``, else the one ``runbook erase`` put in the environment."""
    if value is not None:
        return str(value)
    return os.environ.get(USER_ID_ENV) or None


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


def checked_preview(conn: psycopg.Connection[Any], params: Parameters, user_id: str, *,
                    hide_key: bool = False) -> Preview:
    """The preview, or a one-line error for an id that is malformed or names no user. ``hide_key``:
    the error does not name the key (it would land in the notebook, with ``erase.hash_keys``); the
    command line names it, on the operator's own terminal."""
    shown = "the user (key hidden: erase.hash_keys)" if hide_key else f"user id {user_id!r}"
    try:
        found = take_preview(conn, _parent(params), user_id,
                             timeouts=Timeouts(statement=params.statement_timeout, lock=params.lock_timeout))
    except (psycopg.errors.DataError, psycopg.errors.UndefinedTable) as exc:
        # The server's message quotes the value: not when the key is to stay hidden.
        why = "the key does not fit the parent's key columns" if hide_key else exc.diag.message_primary
        raise ParameterError(f"{shown}: {why}") from None
    if not found.found:
        raise ParameterError(f"{shown}: no row of {qualname(_parent(params))} has this key")
    return found


def validate_ids(conn: psycopg.Connection[Any], params: Parameters, ids: Sequence[str]) -> None:
    """Every id names a user, before anything is changed (a bad one stops the whole queue)."""
    for user_id in ids:
        checked_preview(conn, params, user_id)


def preview_user(conn: psycopg.Connection[Any], params: Parameters, user_id: str) -> EraseOutcome:
    """Preflight, preview and the orphans to be: reads only."""
    outcome = EraseOutcome(user_id, plan_check(conn, params), hide_key=bool(params.erase["hash_keys"]))
    found = checked_preview(conn, params, user_id, hide_key=bool(params.erase["hash_keys"]))
    outcome.plan = make_erase_plan(found, params)
    problem = history.cannot_record(conn, params.history_schema)
    if problem:
        # Found now, not in the final transaction after every batch has committed.
        outcome.plan.refused.append(f"the erasure could not be recorded in the run history: {problem}")
    elif not history.exists(conn, params.history_schema):
        outcome.plan.notes.append(f"the run history {params.history_schema}.{history.TABLE} does not exist yet: "
                                  "the erasure creates it (CREATE SCHEMA/TABLE IF NOT EXISTS) before its "
                                  "first batch, to record this erasure")
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        outcome.predicted_orphans = predict_orphans(conn, found, list(params.erase["orphan_columns"]))
    return outcome


def folder_taken(conn: psycopg.Connection[Any], params: Parameters, folder: Path) -> str | None:
    """Why ``folder`` cannot take this erasure's receipt: one erasure per folder, and the history knows
    each run by its folder's name (a folder opened by hand may already hold an apply or an erasure)."""
    if (folder / receipt.RECEIPT).exists() or history.find(conn, params.history_schema, folder.name) is not None:
        return (f"run folder {folder.name} already holds a run recorded in the history or an erasure's receipt: "
                "erase in a new run folder (set run_dir; `runbook erase` makes one per user)")
    return None


def carry_out(conn: psycopg.Connection[Any], params: Parameters, outcome: EraseOutcome, *,
              run_dir: str | Path | None = None, evidence_dir: str | Path = "evidence",
              after_batch: BatchHook | None = None, progress: Progress | None = None) -> EraseOutcome:
    """Erase as ``outcome``'s preview says (unless blocked), prove it and write the receipt: into
    ``run_dir`` when given (the notebook's run folder, sealed by the runner), else into a new sealed
    folder under ``evidence_dir``."""
    if run_dir is not None and outcome.plan is not None:
        taken = folder_taken(conn, params, Path(run_dir))
        if taken:
            outcome.plan.refused.append(taken)
    if outcome.blocked or outcome.plan is None:
        return outcome
    started = time.time()
    folder = Path(run_dir) if run_dir is not None else receipt.new_folder(evidence_dir)
    keyed = receipt.KeyedPlan(outcome.plan, params)
    record = HistoryRecord(params.history_schema, folder.name, *keyed.hashes)
    outcome.erasure = erase(conn, outcome.plan, params, after_batch=after_batch, progress=progress, record=record)
    outcome.proof = prove(conn, outcome.erasure)
    server = catalog.server_identity(conn)
    if run_dir is not None:
        receipt.write(folder, outcome.erasure, outcome.proof, params, server, started, keyed)
    else:
        manifest = receipt.write_sealed(folder, outcome.erasure, outcome.proof, params, server, started, keyed)
        history.record_manifest(conn, params.history_schema, folder.name, str(manifest["manifest_sha256"]))
    outcome.evidence = folder
    return outcome


def erase_user(conn: psycopg.Connection[Any], params: Parameters, user_id: str, *, confirm: bool,
               evidence_dir: str | Path = "evidence", run_dir: str | Path | None = None,
               after_batch: BatchHook | None = None, progress: Progress | None = None) -> EraseOutcome:
    """Preflight and preview; with ``confirm``, erase, prove and write the receipt."""
    outcome = preview_user(conn, params, user_id)
    if not confirm:
        return outcome
    return carry_out(conn, params, outcome, run_dir=run_dir, evidence_dir=evidence_dir, after_batch=after_batch,
                     progress=progress)


def open_connection(dsn: str) -> psycopg.Connection[Any]:
    return connect(dsn, autocommit=True)


# ---------------------------------------------------------------- what a person reads


PREVIEW_COLUMNS = ["table", "rows deleted", "rows detached", "batches", "unindexed FK fix"]


def preview_rows(plan: ErasePlan) -> list[dict[str, Any]]:
    preview = plan.preview
    deleted, detached = preview.deleted_counts(), preview.detached_counts()
    batched = {b.table: len(b.batches(plan.batch_rows)) for b in plan.batched}
    fixes: dict[TableKey, list[str]] = {}
    for fk, _rows, fix in plan.unindexed:
        fixes.setdefault(fk.child, []).append(fix)
    return [{"table": qualname(t), "rows deleted": deleted.get(t, 0), "rows detached": detached.get(t, 0),
             "batches": batched.get(t, 0), "unindexed FK fix": "; ".join(fixes.get(t, []))}
            for t in sorted(set(deleted) | set(detached) | set(fixes))]


def preview_frame(plan: ErasePlan) -> pd.DataFrame:
    return pd.DataFrame(preview_rows(plan), columns=PREVIEW_COLUMNS)


def orphans_frame(rows: Sequence[OrphanRow]) -> pd.DataFrame:
    return pd.DataFrame([{"table": qualname(o.table), "key": ", ".join(f"{c}={v}" for c, v in zip(o.columns, o.key)),
                          **o.values, "referenced by": ", ".join(o.referenced_by)} for o in rows])


def transactions_frame(erasure: Erasure) -> pd.DataFrame:
    return pd.DataFrame([{"kind": t.kind, "table": t.table, "keys": t.keys, "ms": f"{t.seconds * 1000:.1f} ms",
                          "rows deleted": sum(t.deleted.values()), "rows detached": sum(t.updated.values()),
                          "rows inserted": sum(t.inserted.values())} for t in erasure.transactions])


def proof_frame(proof: EraseProof) -> pd.DataFrame:
    return pd.DataFrame(proof.rows)


def refusal_lines(outcome: EraseOutcome) -> list[str]:
    return [f"preflight: {line}" for line in outcome.preflight] + (
        [f"blocked: {b}" for b in outcome.plan.blockers] if outcome.plan else [])


def verdict_details(outcome: EraseOutcome) -> dict[str, Any]:
    """What ``runbook erase`` reads back from the notebook's verdict: counts and lines, no key."""
    return {"result": outcome.result, "erased": outcome.erasure is not None,
            "refusals": refusal_lines(outcome), "preview": preview_rows(outcome.plan) if outcome.plan else [],
            "orphans": len(outcome.predicted_orphans), "notes": list(outcome.plan.notes) if outcome.plan else [],
            "transactions": len(outcome.erasure.transactions) if outcome.erasure else 0,
            "longest_transaction_seconds": outcome.erasure.longest if outcome.erasure else 0.0}


__all__ = ["EraseOutcome", "RunbookError", "carry_out", "erase_user", "open_connection", "preview_user",
           "read_ids", "validate_ids"]
