"""Indexes for referencing columns: found missing by the inspection, created only when asked.

Each deleted parent row makes PostgreSQL look up the referencing rows of every child; without an index
whose leading columns are the FK's columns, in order, that lookup is a sequential scan. The opt-in
step builds the missing ones with ``CREATE INDEX CONCURRENTLY`` (outside any transaction, so writes go
on); an interrupted build leaves an INVALID index behind, which is found and rebuilt.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from . import logger, progress_views, render
from .heartbeat import heartbeat
from .catalog import ForeignKey

MAX_IDENTIFIER_BYTES = 63


def index_name(fk: ForeignKey) -> str:
    """A name within 63 bytes that cannot collide after truncation: a hash of the full name ends it."""
    full = f"{fk.table}_{'_'.join(fk.columns)}_fk_idx"
    if len(full.encode()) <= MAX_IDENTIFIER_BYTES:
        return full
    digest = hashlib.sha256(f"{fk.schema}.{full}".encode()).hexdigest()[:8]
    head = full.encode()[: MAX_IDENTIFIER_BYTES - 9].decode("utf-8", errors="ignore")
    return f"{head}_{digest}"


@dataclass(frozen=True)
class IndexPlan:
    fk: ForeignKey
    name: str

    @property
    def statement(self) -> sql.Composed:
        return render.create_index_concurrently(self.fk, self.name)

    @property
    def supported(self) -> bool:
        # CREATE INDEX CONCURRENTLY does not work on a partitioned table.
        return not self.fk.partitioned


@dataclass
class IndexResult:
    constraint: str
    index: str
    status: str  # created | rebuilt | exists | skipped | failed
    seconds: float = 0.0
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def missing(fks: Iterable[ForeignKey]) -> list[IndexPlan]:
    """One index per distinct (table, columns) among the unindexed FKs given."""
    seen: set[tuple[str, str, tuple[str, ...]]] = set()
    plans = []
    for fk in fks:
        ident = (fk.schema, fk.table, fk.columns)
        if fk.indexed or ident in seen:
            continue
        seen.add(ident)
        plans.append(IndexPlan(fk=fk, name=index_name(fk)))
    return plans


def _existing(conn: psycopg.Connection[Any], plan: IndexPlan) -> bool | None:
    """None when there is no index of that name; else whether it is valid."""
    row = conn.execute(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        [plan.fk.schema, plan.name]).fetchone()
    return None if row is None else bool(row[0])


def create(connect: Callable[[], psycopg.Connection[Any]], plans: Iterable[IndexPlan], *,
           lock_timeout_ms: int, attempts: int = 3, backoff: float = 0.5,
           sleep: Callable[[float], None] = time.sleep, journal: Callable[..., None] | None = None,
           progress: Callable[[str], None] | None = None) -> list[IndexResult]:
    """Build each index concurrently under ``lock_timeout`` with retries; every build is recorded in
    the run's journal (``journal(event, **fields)``) and reported like a swap."""
    results = []
    plans = list(plans)
    conn = connect()
    conn.autocommit = True  # CREATE INDEX CONCURRENTLY cannot run inside a transaction block
    try:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [f"{lock_timeout_ms}ms"])
        for number, plan in enumerate(plans, 1):
            if journal is not None:
                journal("index_start", constraint=plan.fk.key, index=plan.name)
            with heartbeat(progress, f"[index {number}/{len(plans)}] {plan.name}",
                           detail=progress_views.index_build(connect, lambda: conn.info.backend_pid)):
                result = _build(conn, plan, lock_timeout_ms=lock_timeout_ms, attempts=attempts, backoff=backoff,
                                sleep=sleep)
            results.append(result)
            if journal is not None:
                journal("index_done", constraint=plan.fk.key, index=plan.name, status=result.status,
                        detail=result.detail)
            if progress is not None:
                progress(f"[index {number}/{len(plans)}] {plan.name} on {plan.fk.schema}.{plan.fk.table}: "
                         f"{result.status} ({result.seconds} s)")
    finally:
        conn.close()
    return results


def _build(conn: psycopg.Connection[Any], plan: IndexPlan, *, lock_timeout_ms: int, attempts: int, backoff: float,
           sleep: Callable[[float], None]) -> IndexResult:
    result = IndexResult(constraint=plan.fk.key, index=plan.name, status="failed")
    if not plan.supported:
        result.status = "skipped"
        result.detail = ("partitioned table: CREATE INDEX CONCURRENTLY is not supported; create it on "
                         "each partition, then on the parent with ON ONLY and ATTACH")
        return result
    started = time.perf_counter()
    for attempt in range(1, attempts + 1):
        try:
            state = _existing(conn, plan)
            if state is True:
                result.status = "exists"
                break
            if state is False:
                # Left INVALID by an interrupted concurrent build: it is maintained on every
                # write but never used. Drop it and build again.
                conn.execute(sql.SQL("DROP INDEX CONCURRENTLY {}").format(
                    sql.Identifier(plan.fk.schema, plan.name)))
                result.detail = "an INVALID index of that name was dropped and rebuilt"
            conn.execute(plan.statement)
            result.status = "rebuilt" if state is False else "created"
            break
        except pgerrors.LockNotAvailable:
            result.detail = f"lock not available within {lock_timeout_ms}ms (attempt {attempt})"
            if attempt < attempts:
                sleep(backoff * 2 ** (attempt - 1))
        except psycopg.Error as exc:
            result.detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            break
    result.seconds = round(time.perf_counter() - started, 3)
    logger.info("index %s on %s: %s %s", plan.name, plan.fk.table, result.status, result.detail)
    return result
