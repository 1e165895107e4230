"""The run history in the database: what vouches for a run folder, as migration tools keep one.

Like Flyway's ``flyway_schema_history`` with its checksums, each apply that changes the database
records its run id, the sha256 of the run folder's ``plan.json`` and ``snapshot_before.json`` and the
foreign keys it changed, in ``<history_schema>.history``. A rollback reads a run folder; the folder
is trusted only when its files hash to what the database recorded (``vouch.py``), so an edited
snapshot cannot make a rollback set rules nobody planned. Resume trusts only journals of runs listed
here.

An erasure (``runbook erase --confirm``) is recorded too, as kind ``erase`` with status ``erased``, by
the same transaction that deletes the user, so the row exists exactly when the erasure committed. Its
``plan_sha256`` and ``snapshot_sha256`` are those of the receipt's per-table counts and per-table key
digests (``receipt_hashes``), and ``manifest_sha256`` that of the sealed evidence folder; the
row holds no key and no column value of the user. Only applies are ever rolled back.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from . import render
from .backup import sha256_file

TABLE = "history"
HASHED = ("plan.json", "snapshot_before.json")


def create_statements(schema: str) -> list[sql.Composed]:
    """Idempotent: the first statements of an apply, shown in its ``plan.sql``."""
    name = sql.Identifier(schema, TABLE)
    return [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (run_id text PRIMARY KEY, kind text NOT NULL, status text NOT NULL, "
            "started timestamptz NOT NULL DEFAULT now(), finished timestamptz, operator text NOT NULL, "
            "db_role text NOT NULL DEFAULT current_user, parent_table text NOT NULL, "
            "plan_sha256 text NOT NULL, snapshot_sha256 text NOT NULL, manifest_sha256 text, "
            "changed jsonb NOT NULL DEFAULT '[]', source_run text)").format(name),
    ]


def script_lines(schema: str) -> list[str]:
    return ["-- the run history that vouches for this run's evidence (created when missing)",
            *(render.text(s) + ";" for s in create_statements(schema)), ""]


def folder_hashes(run_dir: Path) -> dict[str, str | None]:
    """sha256 of the files a rollback reads, or None for one that is missing."""
    return {name: sha256_file(run_dir / name) if (run_dir / name).is_file() else None for name in HASHED}


def _json_sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def receipt_hashes(receipt: Any) -> tuple[str, str]:
    """What the history records of an erasure receipt (``receipt.json``'s content): the sha256 of its
    per-table counts and of its per-table key digests, neither of which holds a value of the user."""
    return _json_sha256(receipt["tables"]), _json_sha256(receipt["deleted_keys"]["tables"])


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@dataclass(frozen=True)
class Entry:
    run_id: str
    kind: str
    status: str
    plan_sha256: str
    snapshot_sha256: str
    changed: tuple[str, ...]
    parent_table: str
    manifest_sha256: str | None = None


def exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute("SELECT to_regclass(format('%%I.%%I', %s::text, %s::text)) IS NOT NULL",
                       [schema, TABLE]).fetchone()
    return bool(row and row[0])


def cannot_record(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """Why this role could not record a run in the history (None: it can), asked before anything changes."""
    if exists(conn, schema):
        row = conn.execute("SELECT has_table_privilege(format('%%I.%%I', %s::text, %s::text), 'INSERT')",
                           [schema, TABLE]).fetchone()
        return None if row and row[0] else f"{current_role(conn)} may not INSERT into {schema}.{TABLE}"
    row = conn.execute("SELECT has_database_privilege(current_database(), 'CREATE')").fetchone()
    return None if row and row[0] else (f"{schema}.{TABLE} does not exist and {current_role(conn)} may not "
                                        "create it (no CREATE on the database)")


def current_role(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SELECT current_user::text").fetchone()
    return f"role {row[0] if row else '?'}"


def record_start(conn: psycopg.Connection[Any], schema: str, *, run_id: str, kind: str, parent: str,
                 hashes: dict[str, str | None], source_run: str | None = None) -> None:
    """Record a run before it changes anything (so that a run killed half-way is still known)."""
    for statement in create_statements(schema):
        conn.execute(statement)
    conn.execute(sql.SQL(
        "INSERT INTO {} (run_id, kind, status, operator, parent_table, plan_sha256, snapshot_sha256, source_run) "
        "VALUES (%s, %s, 'running', %s, %s, %s, %s, %s) ON CONFLICT (run_id) DO UPDATE SET status = 'running', "
        "plan_sha256 = EXCLUDED.plan_sha256, snapshot_sha256 = EXCLUDED.snapshot_sha256, started = now()"
    ).format(sql.Identifier(schema, TABLE)),
        [run_id, kind, operator(), parent, hashes.get("plan.json") or "", hashes.get("snapshot_before.json") or "",
         source_run])


def record_erasure(conn: psycopg.Connection[Any], schema: str, *, run_id: str, parent: str,
                   plan_sha256: str, snapshot_sha256: str) -> None:
    """Inside the erasure's final transaction: the row commits with the erasure or not at all."""
    conn.execute(sql.SQL(
        "INSERT INTO {} (run_id, kind, status, finished, operator, parent_table, plan_sha256, snapshot_sha256) "
        "VALUES (%s, 'erase', 'erased', now(), %s, %s, %s, %s)").format(sql.Identifier(schema, TABLE)),
        [run_id, operator(), parent, plan_sha256, snapshot_sha256])


def record_end(conn: psycopg.Connection[Any], schema: str, run_id: str, *, status: str,
               changed: Sequence[str]) -> None:
    conn.execute(sql.SQL("UPDATE {} SET status = %s, changed = %s, finished = now() WHERE run_id = %s").format(
        sql.Identifier(schema, TABLE)), [status, Jsonb(list(changed)), run_id])


def record_manifest(conn: psycopg.Connection[Any], schema: str, run_id: str, manifest_sha256: str) -> None:
    if exists(conn, schema):
        conn.execute(sql.SQL("UPDATE {} SET manifest_sha256 = %s WHERE run_id = %s").format(
            sql.Identifier(schema, TABLE)), [manifest_sha256, run_id])


def find(conn: psycopg.Connection[Any], schema: str, run_id: str) -> Entry | None:
    if not exists(conn, schema):
        return None
    row = conn.execute(sql.SQL(
        "SELECT run_id, kind, status, plan_sha256, snapshot_sha256, changed, parent_table, manifest_sha256 FROM {} "
        "WHERE run_id = %s").format(sql.Identifier(schema, TABLE)), [run_id]).fetchone()
    if row is None:
        return None
    return Entry(run_id=row[0], kind=row[1], status=row[2], plan_sha256=row[3], snapshot_sha256=row[4],
                 changed=tuple(row[5] or ()), parent_table=row[6], manifest_sha256=row[7])


def known_runs(conn: psycopg.Connection[Any], schema: str) -> set[str]:
    """The ids of every apply the history records (none when there is no history yet)."""
    if not exists(conn, schema):
        return set()
    rows = conn.execute(sql.SQL("SELECT run_id FROM {} WHERE kind = 'apply'").format(
        sql.Identifier(schema, TABLE))).fetchall()
    return {str(r[0]) for r in rows}


def record_rollback(conn: psycopg.Connection[Any], schema: str, *, run_id: str, source: str, parent: str,
                    hashes: dict[str, str | None], restored: Sequence[str]) -> None:
    """A rollback is a run of its own; the run it reversed is marked rolled back."""
    record_start(conn, schema, run_id=run_id, kind="rollback", parent=parent, hashes=hashes, source_run=source)
    record_end(conn, schema, run_id, status="rolled back" if restored else "nothing restored", changed=restored)
    conn.execute(sql.SQL("UPDATE {} SET status = 'rolled back' WHERE run_id = %s AND kind = 'apply'").format(
        sql.Identifier(schema, TABLE)), [source])
