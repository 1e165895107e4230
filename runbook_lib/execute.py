"""Executing a plan: the one place that changes the database.

The recipe: one FK per transaction; inside it ``lock_timeout`` and a single atomic
``ALTER TABLE … DROP CONSTRAINT fk, ADD CONSTRAINT fk … NOT VALID`` (plus the comment the drop would
lose); on SQLSTATE 55P03 roll back, back off and retry; then ``VALIDATE CONSTRAINT`` in a transaction of
its own. An FK that cannot be changed is left exactly as it was and reported; the others go on.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Iterator, Sequence

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql

from . import logger, progress_views, render
from .catalog import ForeignKey, read_one
from .errors import ApplyError, PreflightFailed
from .heartbeat import heartbeat
from .retry import backoff_delay
from .plan import GhostRow, Plan, PlanItem

# Two runs of the runbook against one database must never overlap: one advisory lock key for all.
ADVISORY_LOCK_KEY = 0x6361736361646501

Connector = Callable[[], psycopg.Connection[Any]]
# What a constraint's current state means for a change: todo | done | changed | missing.
Expect = Callable[[ForeignKey | None], str]


@dataclass
class StepResult:
    constraint: str
    direction: str
    status: str  # applied | already | failed
    attempts: int = 0
    lock_waits: int = 0
    swap_ms: float = 0.0
    validate_ms: float = 0.0
    validated: bool | None = None
    error: str | None = None
    sqlstate: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lock_holder(conn: psycopg.Connection[Any]) -> int | None:
    row = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = %s AND objid = %s AND objsubid = 1 AND database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1",
        [(ADVISORY_LOCK_KEY >> 32) & 0xFFFFFFFF, ADVISORY_LOCK_KEY & 0xFFFFFFFF],
    ).fetchone()
    return int(row[0]) if row else None


@contextmanager
def run_lock(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the runbook's session advisory lock on ``conn`` (autocommit) for the block."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_LOCK_KEY]).fetchone()
    if not row or not row[0]:
        holder = lock_holder(conn)
        raise PreflightFailed(
            f"another runbook run is changing this database (advisory lock held by backend pid {holder})"
        )
    try:
        yield
    finally:
        try:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_LOCK_KEY])
        except psycopg.OperationalError:
            pass  # the session is gone, and its lock with it


def lock_guard(conn: psycopg.Connection[Any]) -> Callable[[], str | None]:
    """A check, before each FK, that the run still holds its advisory lock (its session is alive)."""
    def check() -> str | None:
        try:
            row = conn.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid() "
                "AND classid = %s AND objid = %s AND objsubid = 1",
                [(ADVISORY_LOCK_KEY >> 32) & 0xFFFFFFFF, ADVISORY_LOCK_KEY & 0xFFFFFFFF]).fetchone()
        except psycopg.Error as exc:
            return f"the session holding the runbook's advisory lock was lost ({_first_line(exc)})"
        return None if row and row[0] else "the runbook's advisory lock is no longer held"
    return check


def check_run_lock_free(conn: psycopg.Connection[Any]) -> None:
    with run_lock(conn):
        pass


class Journal:
    """An append-only record, flushed to disk per event, of what the executor did."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        record = {"time": time.time(), "event": event, **fields}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def _set_local(conn: psycopg.Connection[Any], name: str, value: str) -> None:
    conn.execute("SELECT set_config(%s, %s, true)", [name, value])


def _swap_body(original: ForeignKey, version_num: int, expect: Expect,
               statements: list[sql.Composed]) -> Callable[[psycopg.Connection[Any]], str]:
    """The swap's transaction body: re-read the FK under the lock, then change it only if it is as planned."""

    def swap(conn: psycopg.Connection[Any]) -> str:
        current = read_one(conn, version_num, original.schema, original.table, original.name)
        state = expect(current)
        if state == "done":
            return "already"
        if current is None and state != "todo":
            raise ApplyError(f"{original.key}: the constraint no longer exists; nothing done",
                             constraint=original.key)
        if state != "todo":
            what = current.definition if current is not None else "missing"
            raise ApplyError(f"{original.key}: changed since it was inspected ({what}); left as it is",
                             constraint=original.key)
        for statement in statements:
            conn.execute(statement)
        return "applied"

    return swap


class Executor:
    def __init__(self, connect: Connector, *, lock_timeout_ms: int, attempts: int, backoff: float,
                 journal: Journal | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        self._connect = connect
        self._conn: psycopg.Connection[Any] | None = None
        self.lock_timeout_ms = lock_timeout_ms
        self.attempts = attempts
        self.backoff = backoff
        self.journal = journal or Journal(None)
        self.sleep = sleep
        # Tables some other session keeps locked (found when an FK gave up): later FKs that need them
        # are reported as not done at once instead of stalling the traffic on them again.
        self.blocked: dict[str, str] = {}

    @property
    def conn(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
            self._conn.autocommit = True
        return self._conn

    def backend_pid(self) -> int | None:
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def activity(self) -> progress_views.Detail:
        """What this executor's statement is waiting on, read from a connection of its own."""
        return progress_views.statement(self._connect, self.backend_pid)

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()

    def _in_transaction(self, result: StepResult, what: str,
                        body: Callable[[psycopg.Connection[Any]], str | None],
                        statement_timeout: str | None = None) -> str | None:
        """Run ``body`` in one transaction under lock_timeout, retrying lock waits with backoff.

        Returns what ``body`` returns; raises ApplyError after the last attempt or on any other error,
        always with the transaction rolled back (so the FK is as it was).
        """
        for attempt in range(1, self.attempts + 1):
            result.attempts += 1
            try:
                conn = self.conn
                with conn.transaction():
                    _set_local(conn, "lock_timeout", f"{self.lock_timeout_ms}ms")
                    if statement_timeout is not None:
                        _set_local(conn, "statement_timeout", statement_timeout)
                    return body(conn)
            except pgerrors.LockNotAvailable as exc:
                result.lock_waits += 1
                self.journal.write("lock_timeout", constraint=result.constraint, step=what, attempt=attempt)
                if attempt == self.attempts:
                    raise ApplyError(
                        f"{result.constraint}: {what} gave up after {attempt} attempts: lock not available "
                        f"within lock_timeout {self.lock_timeout_ms}ms; left unchanged",
                        constraint=result.constraint, sqlstate=exc.sqlstate) from None
                delay = backoff_delay(self.backoff, attempt)
                logger.info("%s: %s waited %sms for locks (attempt %d), retrying in %.2fs",
                            result.constraint, what, self.lock_timeout_ms, attempt, delay)
                self.sleep(delay)
            except psycopg.OperationalError as exc:
                # The connection is gone (server restart, terminated backend): the transaction did not
                # commit, so the FK is as it was; a later FK gets a new connection.
                if self._conn is not None and not self._conn.closed:
                    self._conn.close()
                raise ApplyError(f"{result.constraint}: {what} failed, connection lost: "
                                 f"{_first_line(exc)}", constraint=result.constraint,
                                 sqlstate=getattr(exc, "sqlstate", None)) from None
            except psycopg.Error as exc:
                raise ApplyError(f"{result.constraint}: {what} failed: {_first_line(exc)}",
                                 constraint=result.constraint, sqlstate=exc.sqlstate) from None
        raise AssertionError("unreachable")

    def run_change(self, original: ForeignKey, *, expect: Expect,
                   statements: list[sql.Composed], validate: sql.Composed | None,
                   direction: str, version_num: int,
                   pre: Sequence[tuple[tuple[str, str], sql.Composed, sql.Composed]] = (),
                   cleanup: Sequence[sql.Composed] = ()) -> StepResult:
        """One FK: check it is as planned, swap it atomically, then validate it separately.

        ``pre`` (a partitioned table before PostgreSQL 18): per partition, a NOT VALID copy and its
        VALIDATE, each in a transaction of its own, before the swap takes them over; ``cleanup`` drops
        the copies again when the swap cannot be done.
        """
        result = StepResult(constraint=original.key, direction=direction, status="failed")
        held = [f"{t[0]}.{t[1]}" for t in (original.child, original.parent) if f"{t[0]}.{t[1]}" in self.blocked]
        if held:
            result.error = (f"{original.key}: not attempted, left unchanged: "
                            + "; ".join(self.blocked[name] for name in held))
            self.journal.write("skipped", constraint=original.key, error=result.error)
            return result
        # Written before the swap: if the process dies after the commit, the next run still knows
        # that this FK may be left NOT VALID and validates it.
        self.journal.write("start", constraint=original.key, direction=direction,
                           validate_pending=validate is not None)

        swap = _swap_body(original, version_num, expect, statements)
        started = time.perf_counter()
        try:
            if pre:
                self._prevalidate(result, original, version_num, expect, pre)
            outcome = self._in_transaction(result, "swap", swap)
            result.swap_ms = round((time.perf_counter() - started) * 1000, 2)
            result.status = outcome or "applied"
            self.journal.write("swapped" if result.status == "applied" else "already", constraint=original.key)
            if validate is not None:
                self._validate(result, original, version_num, validate)
        except ApplyError as exc:
            if result.status == "failed":
                result.swap_ms = round((time.perf_counter() - started) * 1000, 2)
            result.error = str(exc)
            result.sqlstate = exc.sqlstate
            result.status = "failed"
            self.journal.write("failed", constraint=original.key, error=str(exc))
            logger.warning("%s", exc)
            if exc.sqlstate == "55P03":
                self._note_blockers(original)
            if cleanup:
                self._cleanup(result, cleanup)
        return result

    def _validate(self, result: StepResult, original: ForeignKey, version_num: int,
                  validate: sql.Composed) -> None:
        started = time.perf_counter()

        def run_validate(conn: psycopg.Connection[Any]) -> None:
            current = read_one(conn, version_num, original.schema, original.table, original.name)
            if current is not None and not current.validated:
                conn.execute(validate)
            return None

        # VALIDATE blocks neither reads nor writes; a statement_timeout would only abort it.
        self._in_transaction(result, "validate", run_validate, statement_timeout="0")
        result.validate_ms = round((time.perf_counter() - started) * 1000, 2)
        result.validated = True
        self.journal.write("validated", constraint=original.key)

    def _prevalidate(self, result: StepResult, original: ForeignKey, version_num: int,
                     expect: Expect,
                     pre: Sequence[tuple[tuple[str, str], sql.Composed, sql.Composed]]) -> None:
        current = read_one(self.conn, version_num, original.schema, original.table, original.name)
        if expect(current) != "todo":
            return  # the swap's own check reports it
        tmp = render.temporary_name(original)

        def state(conn: psycopg.Connection[Any], leaf: tuple[str, str]) -> bool | None:
            row = conn.execute(
                "SELECT c.convalidated FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                "JOIN pg_namespace n ON n.oid = t.relnamespace "
                "WHERE n.nspname = %s AND t.relname = %s AND c.conname = %s", [leaf[0], leaf[1], tmp]).fetchone()
            return None if row is None else bool(row[0])

        for leaf, add, check in pre:
            def add_copy(conn: psycopg.Connection[Any], leaf: tuple[str, str] = leaf,
                         add: sql.Composed = add) -> None:
                if state(conn, leaf) is None:  # a rerun after a crash finds its copy already there
                    conn.execute(add)

            def validate_copy(conn: psycopg.Connection[Any], leaf: tuple[str, str] = leaf,
                              check: sql.Composed = check) -> None:
                if state(conn, leaf) is False:
                    conn.execute(check)

            self._in_transaction(result, f"copy on {leaf[0]}.{leaf[1]}", add_copy)
            started = time.perf_counter()
            self._in_transaction(result, f"validate copy on {leaf[0]}.{leaf[1]}", validate_copy,
                                 statement_timeout="0")
            result.validate_ms = round(result.validate_ms + (time.perf_counter() - started) * 1000, 2)
        self.journal.write("prevalidated", constraint=original.key, partitions=len(pre))

    def _cleanup(self, result: StepResult, cleanup: Sequence[sql.Composed]) -> None:
        for statement in cleanup:
            def drop(conn: psycopg.Connection[Any], statement: sql.Composed = statement) -> None:
                conn.execute(statement)

            try:
                self._in_transaction(StepResult(constraint=result.constraint, direction="cleanup",
                                                status="failed"), "drop copy", drop)
            except ApplyError as exc:
                # The FK itself is unchanged; a rerun takes the copy over or drops it.
                result.error = f"{result.error}; a pre-validated copy was left behind: {exc}"

    def ensure_ghost(self, ghost: "GhostRow") -> StepResult:
        """The ghost row, inserted under lock_timeout unless it exists; then proven to exist."""
        where = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Literal(v))
                                      for c, v in ghost.key.items())
        exists = sql.SQL("SELECT count(*) FROM {} WHERE {}").format(sql.Identifier(*ghost.parent), where)
        label = f"{ghost.parent[0]}.{ghost.parent[1]} ghost row"
        result = StepResult(constraint=label, direction="ghost", status="failed")

        def insert(conn: psycopg.Connection[Any]) -> str:
            conn.execute(ghost.statement())
            row = conn.execute(exists).fetchone()
            if not row or not row[0]:
                raise ApplyError(f"{label}: not there after the insert", constraint=label)
            return "applied"

        self.journal.write("ghost", constraint=label, key={k: str(v) for k, v in ghost.key.items()})
        try:
            result.status = self._in_transaction(result, "ghost row", insert) or "applied"
        except ApplyError as exc:
            result.error, result.sqlstate = str(exc), exc.sqlstate
            logger.warning("%s", exc)
        return result

    def _note_blockers(self, fk: ForeignKey) -> None:
        """Which of the FK's two tables another session has held for longer than lock_timeout."""
        try:
            rows = self.conn.execute(
                "SELECT DISTINCT n.nspname::text, c.relname::text, a.pid, "
                "round(extract(epoch FROM now() - a.xact_start))::int FROM pg_locks l "
                "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
                "JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.granted AND l.pid <> pg_backend_pid() AND a.xact_start < now() - %s * interval '1 ms' "
                "AND ((n.nspname = %s AND c.relname = %s) OR (n.nspname = %s AND c.relname = %s))",
                [self.lock_timeout_ms, fk.schema, fk.table, fk.ref_schema, fk.ref_table]).fetchall()
        except psycopg.Error:
            return
        for schema, table, pid, seconds in rows:
            name = f"{schema}.{table}"
            self.blocked.setdefault(name, f"{name} is held by backend pid {pid} (transaction open {seconds} s)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _expect_forward(item: PlanItem) -> Expect:
    def check(current: ForeignKey | None) -> str:
        if current is None:
            return "todo" if item.adds else "missing"
        if current.on_delete == item.planned and current.same_shape(item.fk):
            return "done"
        if not item.adds and current.definition == item.fk.definition and current.comment == item.fk.comment:
            return "todo"
        return "changed"
    return check


def _expect_reverse(item: PlanItem) -> Expect:
    def check(current: ForeignKey | None) -> str:
        if current is None:
            return "done" if item.adds else "missing"
        # Validity is left out on purpose: a swap back whose VALIDATE did not run yet is done but for it.
        if (not item.adds and current.on_delete == item.fk.on_delete and current.same_shape(item.fk)
                and current.delete_set_columns == item.fk.delete_set_columns):
            return "done"
        if current.on_delete == item.planned and current.same_shape(item.fk):
            return "todo"
        return "changed"
    return check


def pending_validations(evidence_root: Path, exclude: Path | None = None,
                        only: Collection[str] | None = None) -> set[str]:
    """FKs that some earlier run started to swap with a VALIDATE to follow, which never ran.

    ``only``: the run ids whose journals are trusted (those the database's run history records); a
    journal dropped into the evidence folder by anyone else is ignored.
    """
    pending: set[str] = set()
    journals = sorted((p for p in evidence_root.glob("*/apply_journal.jsonl")
                       if p.parent != exclude and (only is None or p.parent.name in only)
                       and p.is_file() and not p.is_symlink() and not p.parent.is_symlink()),
                      key=lambda p: p.stat().st_mtime)
    for journal in journals:
        for line in journal.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            key = event.get("constraint")
            if event.get("event") == "start" and event.get("validate_pending"):
                pending.add(key)
            elif event.get("event") == "validated":
                pending.discard(key)
    return pending


Progress = Callable[[str], None]


def _report(progress: Progress | None, index: int, total: int, result: StepResult) -> None:
    if progress is not None:
        progress(f"[{index}/{total}] {result.constraint}: {result.status} "
                 f"(swap {result.swap_ms} ms, validate {result.validate_ms} ms, {result.lock_waits} lock wait(s))")


Guard = Callable[[], "str | None"]


def apply_plan(executor: Executor, plan: Plan, progress: Progress | None = None,
               guard: Guard | None = None) -> list[StepResult]:
    results: list[StepResult] = []
    if plan.decisions:
        raise ApplyError("apply refused: the plan has open decisions: " + "; ".join(plan.decision_lines()))
    if plan.ghost_row is not None and any(i.ghost_defaults for i in plan.actions):
        ghost = executor.ensure_ghost(plan.ghost_row)
        if ghost.status == "failed":
            return [ghost] + [StepResult(constraint=i.fk.key, direction="forward", status="failed",
                                         error=f"{i.fk.key}: not attempted: the ghost row could not be made")
                              for i in plan.actions]
        results.append(ghost)
    for n, item in enumerate(plan.actions, 1):
        problem = guard() if guard is not None else None
        if problem is not None:
            # Without the lock another run could start: stop, and say what was not done.
            results.extend(StepResult(constraint=i.fk.key, direction="forward", status="failed",
                                      error=f"{i.fk.key}: not attempted: {problem}")
                           for i in plan.actions[n - 1:])
            break
        with heartbeat(progress, f"[{n}/{len(plan.actions)}] {item.fk.key}", detail=executor.activity()):
            results.append(executor.run_change(
                item.fk, expect=_expect_forward(item), statements=[] if item.pending_validation else item.forward(),
                validate=item.forward_validate(), direction="forward", version_num=plan.server_version_num,
                pre=item.forward_pre(), cleanup=item.cleanup()))
        _report(progress, n, len(plan.actions), results[-1])
    return results


def rollback_plan(executor: Executor, plan: Plan, progress: Progress | None = None,
                  guard: Guard | None = None) -> list[StepResult]:
    results: list[StepResult] = []
    items = list(reversed(plan.changes))
    for n, item in enumerate(items, 1):
        problem = guard() if guard is not None else None
        if problem is not None:
            results.extend(StepResult(constraint=i.fk.key, direction="reverse", status="failed",
                                      error=f"{i.fk.key}: not attempted: {problem}") for i in items[n - 1:])
            break
        with heartbeat(progress, f"[{n}/{len(plan.changes)}] {item.fk.key}", detail=executor.activity()):
            results.append(executor.run_change(
                item.fk, expect=_expect_reverse(item), statements=item.reverse(),
                validate=item.reverse_validate(), direction="reverse", version_num=plan.server_version_num,
                pre=item.reverse_pre(), cleanup=item.cleanup()))
        _report(progress, n, len(plan.changes), results[-1])
    return results


def dry_run_statements(plan: Plan) -> list[dict[str, Any]]:
    """What apply would execute, statement by statement, without executing anything."""
    rows = []
    for item in plan.actions:
        for _leaf, add, check in item.forward_pre():
            rows.append({"constraint": item.fk.key, "transaction": "partition copy", "sql": render.text(add)})
            rows.append({"constraint": item.fk.key, "transaction": "validate copy", "sql": render.text(check)})
        for statement in ([] if item.pending_validation else item.forward()):
            rows.append({"constraint": item.fk.key, "transaction": "swap", "sql": render.text(statement)})
        validate = item.forward_validate()
        if validate is not None:
            rows.append({"constraint": item.fk.key, "transaction": "validate", "sql": render.text(validate)})
    return rows
