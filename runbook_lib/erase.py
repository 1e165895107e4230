"""Erasing one real user: heavy tables in short batches by key, then the user in one small transaction.

Each transaction sets ``lock_timeout`` and ``statement_timeout`` locally and reads
``pg_stat_xact_user_tables`` at its start and just before its commit: the difference is exactly what
that transaction deleted, updated and inserted per table (cascades and triggers included), without
reading any table. A batch that touched a table the preview does not name is rolled back; the final
transaction commits only when, together with the batches, every table changed by exactly the preview's
counts. A crash between batches leaves only whole batches done: a rerun previews again and finishes.
A transaction that loses a lock wait (``lock_timeout``) or a deadlock is tried again with backoff
(``lock_retries``, ``retry_backoff``, as apply does); after the last attempt the erasure stops there.
Given a ``HistoryRecord``, the final transaction also inserts the erasure's row into the run history,
after its counts are checked: the row exists exactly when the erasure committed.
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, TypeVar

import psycopg
from psycopg import sql

from . import history, logger
from .errors import RunbookError
from .erase_plan import (ErasePlan, Identity, OrphanRow, Preview, chunks, key_match, orphan_values,
                         TableBatches, orphans_after)
from .model import TableKey, qualname
from .params import Parameters
from .retry import LOCK_WAITS, backoff_delay

BatchHook = Callable[[int], None]
Progress = Callable[[str], None]
T = TypeVar("T")

_STATS = ("SELECT schemaname::text, relname::text, n_tup_ins, n_tup_upd, n_tup_del "
          "FROM pg_catalog.pg_stat_xact_user_tables WHERE n_tup_ins + n_tup_upd + n_tup_del > 0")


class EraseError(RunbookError):
    """An erasure transaction did not do what the preview said; it was rolled back."""


@dataclass
class Transaction:
    kind: str  # batch | final
    table: str
    keys: int
    seconds: float
    deleted: dict[str, int] = field(default_factory=dict)
    updated: dict[str, int] = field(default_factory=dict)
    inserted: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "table": self.table, "keys": self.keys, "seconds": self.seconds,
                "deleted": self.deleted, "updated": self.updated, "inserted": self.inserted}


@dataclass(frozen=True)
class HistoryRecord:
    """The run-history row an erasure's final transaction inserts (no key, no value of the user)."""
    schema: str
    run_id: str
    plan_sha256: str
    snapshot_sha256: str


@dataclass
class Erasure:
    plan: ErasePlan
    transactions: list[Transaction] = field(default_factory=list)
    orphans: list[OrphanRow] = field(default_factory=list)
    orphans_deleted: bool = False
    record: HistoryRecord | None = None
    failure: str | None = None
    seconds: float = 0.0
    # wall clock (epoch seconds) of the first batch's start and the final commit
    started_at: float = 0.0
    finished_at: float = 0.0

    expected: tuple[dict[str, int], dict[str, int]] = field(init=False)
    # rows a SET NULL reaches that the cascade also deletes: updated first or not, by trigger order
    maybe_updated: dict[str, int] = field(init=False)

    def __post_init__(self) -> None:
        # Counted once, outside every transaction (a heavy user's preview holds many rows).
        self.expected = expected_counts(self.plan.preview)
        self.maybe_updated = {qualname(t): n for t, n in self.plan.preview.maybe_updated.items()}

    @property
    def done(self) -> bool:
        return self.failure is None and any(t.kind == "final" for t in self.transactions)

    @property
    def longest(self) -> float:
        return max((t.seconds for t in self.transactions), default=0.0)

    def totals(self, what: str) -> dict[str, int]:
        summed: dict[str, int] = defaultdict(int)
        for t in self.transactions:
            for table, n in getattr(t, what).items():
                summed[table] += n
        return dict(summed)


def _stats(conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int, int]]:
    return {f"{s}.{r}": (int(i), int(u), int(d)) for s, r, i, u, d in conn.execute(_STATS).fetchall()}


def _limit(conn: psycopg.Connection[Any], params: Parameters) -> None:
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true), "
                 "pg_catalog.set_config('statement_timeout', %s, true)",
                 [f"{params.lock_timeout_ms}ms", f"{params.statement_timeout_ms}ms"])


def _record(kind: str, table: str, keys: int, started: float, before: Mapping[str, tuple[int, int, int]],
            after: Mapping[str, tuple[int, int, int]]) -> Transaction:
    # On PostgreSQL 15 the view can still hold an earlier transaction's counts: subtract the start.
    tx = Transaction(kind, table, keys, 0.0)
    for name, (i, u, d) in after.items():
        bi, bu, bd = before.get(name, (0, 0, 0))
        for target, n in ((tx.inserted, i - bi), (tx.updated, u - bu), (tx.deleted, d - bd)):
            if n:
                target[name] = n
    tx.seconds = round(time.perf_counter() - started, 4)
    return tx


def expected_counts(preview: Preview) -> tuple[dict[str, int], dict[str, int]]:
    """Rows the preview says go (deleted) and stay with their key set to NULL/default (updated), per leaf."""
    deleted: dict[str, int] = defaultdict(int)
    for rows in preview.deleted.values():
        for row in rows.values():
            deleted[qualname(row.leaf)] += 1
    updated: dict[str, int] = defaultdict(int)
    for d in preview.detached.values():
        for row in d.rows.values():
            updated[qualname(row.leaf)] += 1
    return dict(deleted), dict(updated)


def _unexpected(tx: Transaction, allowed: set[str]) -> list[str]:
    return sorted(f"{t}: {n} row(s) {what}" for what, counts in (("deleted", tx.deleted), ("updated", tx.updated))
                  for t, n in counts.items() if t not in allowed)


def _delete_keys(conn: psycopg.Connection[Any], preview: Preview, root: TableKey, leaf: TableKey,
                 columns: Sequence[str], keys: Sequence[Identity]) -> None:
    cond, values = key_match(preview, root, None, columns, keys)
    conn.execute(sql.SQL("DELETE FROM ONLY {} WHERE {}").format(sql.Identifier(*leaf), cond), values)


def _with_retries(what: str, params: Parameters, body: Callable[[], T], progress: Progress | None) -> T:
    """``body`` (one transaction), tried again with backoff while it loses a lock wait or a deadlock.

    Each failed attempt was rolled back whole. After ``lock_retries`` attempts the erasure stops with
    an EraseError: the transactions committed before stay done and a rerun finishes the job.
    """
    attempts = params.lock_retries
    for attempt in range(1, attempts + 1):
        try:
            return body()
        except LOCK_WAITS as exc:
            reason = ("chosen as a deadlock's victim" if isinstance(exc, psycopg.errors.DeadlockDetected)
                      else f"lock not available within lock_timeout {params.lock_timeout_ms}ms")
            if attempt == attempts:
                raise EraseError(f"{what}: {reason}, gave up after {attempts} attempt(s) and rolled it back; "
                                 "what committed before stays done: run the erasure again to finish",
                                 sqlstate=exc.sqlstate) from None
            delay = backoff_delay(params.retry_backoff, attempt)
            logger.warning("erase: %s: %s (attempt %d of %d), retrying in %.2fs", what, reason, attempt,
                           attempts, delay)
            _say(progress, f"{what}: {reason} (attempt {attempt} of {attempts}), retrying in {delay:.2f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def _say(progress: Progress | None, line: str) -> None:
    if progress is not None:
        progress(line)


def _batch(conn: psycopg.Connection[Any], erasure: Erasure, params: Parameters, table: TableBatches,
           leaf: TableKey, keys: Sequence[Identity]) -> Transaction:
    preview = erasure.plan.preview
    allowed = set(erasure.expected[0]) | set(erasure.expected[1])
    started = time.perf_counter()
    with conn.transaction():
        _limit(conn, params)
        before = _stats(conn)
        _delete_keys(conn, preview, table.table, leaf, table.key_columns, keys)
        tx = _record("batch", qualname(leaf), len(keys), started, before, _stats(conn))
        wrong = _unexpected(tx, allowed)
        if wrong:
            raise EraseError(f"batch of {qualname(leaf)} rolled back: it changed tables the preview "
                             f"does not name: {'; '.join(wrong)}", table=qualname(leaf))
    tx.seconds = round(time.perf_counter() - started, 4)
    return tx


def run_batches(conn: psycopg.Connection[Any], erasure: Erasure, params: Parameters,
                after_batch: BatchHook | None = None, progress: Progress | None = None) -> None:
    """Delete the heavy tables' rows in batches, deepest tables first, one short transaction each."""
    work = [(table, leaf, keys) for table in erasure.plan.batched
            for leaf, keys in table.batches(erasure.plan.batch_rows)]
    started = time.perf_counter()
    for done, (table, leaf, keys) in enumerate(work, start=1):
        what = f"batch {done} of {len(work)} ({qualname(leaf)})"
        tx = _with_retries(what, params, lambda: _batch(conn, erasure, params, table, leaf, keys), progress)
        erasure.transactions.append(tx)
        logger.info("erase: batch %d of %s: %d key(s) in %.3fs", done, qualname(leaf), len(keys), tx.seconds)
        _say(progress, f"{what}: {sum(tx.deleted.values())} row(s) deleted in {tx.seconds * 1000:.1f} ms, "
                       f"{time.perf_counter() - started:.1f} s elapsed")
        if after_batch is not None:
            after_batch(done)


def settle(conn: psycopg.Connection[Any], erasure: Erasure, params: Parameters) -> int:
    """Look up, through the FK index, the batched tables' rows of the rows the final transaction deletes.

    The batches leave dead index entries behind until vacuum; the final cascade would visit every one
    of them inside its transaction. An index scan in a short read-only transaction of its own visits
    them first and marks them dead, so the final transaction stays small. Returns the live rows found:
    0 unless someone added rows meanwhile (logged here; the final transaction's check then rolls back).
    """
    preview = erasure.plan.preview
    found = 0
    for batched in erasure.plan.batched:
        for fk in preview.foreign_keys:
            if fk.child != batched.table or fk.parent not in preview.deleted:
                continue
            wanted = sorted({tuple(r.values.get(c) for c in fk.ref_columns)
                             for r in preview.deleted[fk.parent].values()}, key=lambda k: tuple(str(v) for v in k))
            for part in chunks([k for k in wanted if all(v is not None for v in k)]):
                cond, values = key_match(preview, fk.child, None, fk.columns, part)
                with conn.transaction():
                    conn.execute("SET TRANSACTION READ ONLY")
                    _limit(conn, params)
                    row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                        sql.Identifier(*fk.child), cond), values).fetchone()
                found += int(row[0]) if row else 0
        _analyze(conn, batched.table, params)
    return found


def _analyze(conn: psycopg.Connection[Any], table: TableKey, params: Parameters) -> None:
    """Fresh statistics, so that the final cascade plans its lookups for the few rows left.

    ANALYZE takes SHARE UPDATE EXCLUSIVE (no reader or writer waits), but waits itself for a VACUUM,
    VALIDATE or index build holding the same lock: it runs under the erasure's lock and statement
    timeouts. A role that may not analyze the table, or a lock not had in time, just leaves the old
    statistics.
    """
    try:
        with conn.transaction():
            _limit(conn, params)
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*table)))
    except (psycopg.errors.InsufficientPrivilege, psycopg.errors.LockNotAvailable,
            psycopg.errors.QueryCanceled) as exc:
        logger.info("erase: ANALYZE %s not done (%s); the final transaction plans with the old statistics",
                    qualname(table), type(exc).__name__)


def _delete_orphans(conn: psycopg.Connection[Any], preview: Preview, found: Sequence[OrphanRow]) -> bool:
    """Delete the orphans in a savepoint: a row someone referenced meanwhile keeps them all, reported."""
    groups: dict[tuple[TableKey, tuple[str, ...]], list[Identity]] = defaultdict(list)
    for row in found:
        groups[(row.table, row.columns)].append(row.key)
    try:
        with conn.transaction():
            for (table, columns), keys in sorted(groups.items()):
                cond, values = key_match(preview, table, None, columns, keys)
                conn.execute(sql.SQL("DELETE FROM ONLY {} WHERE {}").format(sql.Identifier(*table), cond), values)
    except psycopg.errors.IntegrityError as exc:
        logger.warning("erase: orphans kept: %s", exc.diag.message_primary)
        return False
    return True


def _final_orphans(conn: psycopg.Connection[Any], preview: Preview, params: Parameters) -> list[OrphanRow]:
    rows: list[OrphanRow] = []
    names = list(params.erase["orphan_columns"])
    for group in orphans_after(conn, preview):
        keys: list[Identity] = [tuple(k[c] for c in group.columns) for k in group.keys]
        values = orphan_values(conn, preview, group.table, group.columns, keys, names)
        rows.extend(OrphanRow(group.table, group.columns, k, values.get(k, {}), tuple(group.referenced_by))
                    for k in keys)
    return rows


def _compare(erasure: Erasure, final: Transaction, orphan_deletes: Mapping[str, int]) -> list[str]:
    """What, after the final transaction, differs from the preview (empty: exactly as previewed)."""
    want_del, want_upd = dict(erasure.expected[0]), erasure.expected[1]
    for table, n in orphan_deletes.items():
        want_del[table] = want_del.get(table, 0) + n
    problems = []
    for what, want, txs in (("deleted", want_del, "deleted"), ("updated", want_upd, "updated")):
        got = erasure.totals(txs)
        for table, n in getattr(final, txs).items():
            got[table] = got.get(table, 0) + n
        for table in sorted(set(want) | set(got)):
            low = want.get(table, 0)
            high = low + (erasure.maybe_updated.get(table, 0) if what == "updated" else 0)
            if not low <= got.get(table, 0) <= high:
                problems.append(f"{table}: {got.get(table, 0)} row(s) {what}, the preview said {low}"
                                + (f" to {high}" if high != low else ""))
    return problems


def _final_once(conn: psycopg.Connection[Any], erasure: Erasure,
                params: Parameters) -> tuple[Transaction, list[OrphanRow], bool]:
    preview = erasure.plan.preview
    key_cols = tuple(preview.user_key)
    started = time.perf_counter()
    with conn.transaction():
        _limit(conn, params)
        # The cascade's lookups are planned with statistics from before the batches, which still show
        # this user's many rows: the planner would scan the whole child table for the few left.
        conn.execute("SELECT pg_catalog.set_config('enable_seqscan', 'off', true)")
        before = _stats(conn)
        cond, values = key_match(preview, preview.parent, None, key_cols, [tuple(preview.user_key[c] for c in key_cols)])
        conn.execute(sql.SQL("DELETE FROM ONLY {} WHERE {}").format(sql.Identifier(*preview.parent), cond), values)
        found = _final_orphans(conn, preview, params)
        deleted_orphans = bool(found) and params.erase["orphans"] == "delete" and _delete_orphans(conn, preview, found)
        tx = _record("final", qualname(preview.parent), 1, started, before, _stats(conn))
        orphan_deletes: dict[str, int] = defaultdict(int)
        if deleted_orphans:
            for row in found:
                orphan_deletes[qualname(row.table)] += 1
        problems = _compare(erasure, tx, orphan_deletes)
        if problems:
            raise EraseError("final transaction rolled back, it does not match the preview: " + "; ".join(problems)
                             + " (rows changed meanwhile? run the erasure again)", table=qualname(preview.parent))
        if erasure.record is not None:  # after the check: its own insert is not the preview's
            r = erasure.record
            history.record_erasure(conn, r.schema, run_id=r.run_id, parent=qualname(preview.parent),
                                   plan_sha256=r.plan_sha256, snapshot_sha256=r.snapshot_sha256)
    tx.seconds = round(time.perf_counter() - started, 4)
    return tx, found, deleted_orphans


def run_final(conn: psycopg.Connection[Any], erasure: Erasure, params: Parameters,
              progress: Progress | None = None) -> None:
    """The user and its remaining rows in one transaction, committed only when it matches the preview."""
    what = f"final transaction ({qualname(erasure.plan.preview.parent)})"
    tx, found, deleted_orphans = _with_retries(what, params, lambda: _final_once(conn, erasure, params), progress)
    erasure.transactions.append(tx)
    erasure.orphans = found
    erasure.orphans_deleted = deleted_orphans
    _say(progress, f"{what}: {sum(tx.deleted.values())} row(s) deleted, {sum(tx.updated.values())} detached "
                   f"in {tx.seconds * 1000:.1f} ms")


def erase(conn: psycopg.Connection[Any], plan: ErasePlan, params: Parameters, *,
          after_batch: BatchHook | None = None, progress: Progress | None = None,
          record: HistoryRecord | None = None) -> Erasure:
    """Batches, then the final transaction. ``conn`` must be in autocommit mode (each transaction is
    its own). A failure is recorded in ``Erasure.failure``; what committed before it stays done.
    ``progress`` receives one line per transaction as it commits and per lock wait retried. With
    ``record``, the run history is created first when missing, and the final transaction records it."""
    if not conn.autocommit:
        raise RunbookError("erase needs an autocommit connection: every batch commits on its own")
    if plan.blockers:
        raise RunbookError("erasure refused: " + "; ".join(plan.blockers))
    erasure = Erasure(plan, record=record)
    erasure.started_at = time.time()
    started = time.perf_counter()
    try:
        # Only when missing: CREATE SCHEMA IF NOT EXISTS still needs CREATE on the database, which a
        # role that may only delete rows does not have.
        if record is not None and not history.exists(conn, record.schema):
            for statement in history.create_statements(record.schema):
                conn.execute(statement)
        run_batches(conn, erasure, params, after_batch, progress)
        late = settle(conn, erasure, params)
        if late:
            logger.warning("erase: %d row(s) of the deleted rows' children appeared since the preview; the final "
                           "transaction will not match it", late)
        run_final(conn, erasure, params, progress)
    except EraseError as exc:
        erasure.failure = str(exc)
    except psycopg.Error as exc:
        erasure.failure = (f"{type(exc).__name__} [SQLSTATE {exc.sqlstate}]: "
                           f"{exc.diag.message_primary or str(exc).splitlines()[0]}")
    erasure.seconds = round(time.perf_counter() - started, 4)
    erasure.finished_at = time.time()
    if erasure.failure:
        logger.warning("erase: %s", erasure.failure)
    return erasure
