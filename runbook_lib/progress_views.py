"""What a long statement is doing, for the heartbeat: PostgreSQL's own progress where it has one.

An index build reports its phase and blocks/tuples from ``pg_stat_progress_create_index``; a
VALIDATE has no progress view, so its backend's wait in ``pg_stat_activity`` (and who blocks it) is
what there is to say; a dump reports how large its file has grown. Each reader opens a short
connection of its own for one query, and a failure only costs that beat its detail: the statement
being watched never depends on it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import psycopg

from . import logger

Connector = Callable[[], psycopg.Connection[Any]]
Detail = Callable[[], "str | None"]
Pid = Callable[[], "int | None"]

_INDEX_PROGRESS = (
    "SELECT p.phase, p.lockers_total, p.lockers_done, p.current_locker_pid, p.blocks_total, p.blocks_done, "
    "p.tuples_total, p.tuples_done FROM pg_stat_progress_create_index p WHERE p.pid = %s")
_ACTIVITY = (
    "SELECT a.state, a.wait_event_type, a.wait_event, pg_blocking_pids(a.pid), "
    "round(extract(epoch FROM clock_timestamp() - a.query_start))::int "
    "FROM pg_stat_activity a WHERE a.pid = %s")


def _query(connect: Connector, query: str, pid: int) -> tuple[Any, ...] | None:
    with connect() as conn:
        return conn.execute(query, [pid]).fetchone()


def _share(done: Any, total: Any) -> str:
    if not total:
        return f"{done or 0:,}"
    return f"{done or 0:,} of {total:,} ({100 * (done or 0) / total:.0f}%)"


def index_phase(row: tuple[Any, ...]) -> str:
    """One phrase from a ``pg_stat_progress_create_index`` row."""
    phase, lockers_total, lockers_done, locker, blocks_total, blocks_done, tuples_total, tuples_done = row
    parts = [f"phase {phase}"]
    if lockers_total:
        parts.append(f"lockers {_share(lockers_done, lockers_total)}"
                     + (f", waiting for pid {locker}" if locker else ""))
    if blocks_total:
        parts.append(f"blocks {_share(blocks_done, blocks_total)}")
    if tuples_total or tuples_done:
        parts.append(f"tuples {_share(tuples_done, tuples_total)}")
    return ", ".join(parts)


def activity_phrase(row: tuple[Any, ...]) -> str | None:
    """What a backend is doing, from its ``pg_stat_activity`` row: said only when it waits or works."""
    state, wait_type, wait_event, blockers, seconds = row
    if state != "active":
        return None
    if wait_type is None:
        return f"statement running for {seconds} s"
    blocked = f", blocked by pid {', '.join(str(p) for p in blockers)}" if blockers else ""
    return f"waiting on {wait_type}/{wait_event}{blocked}"


def _guarded(what: str, read: Detail) -> Detail:
    def detail() -> str | None:
        try:
            return read()
        except (psycopg.Error, OSError) as exc:
            logger.info("progress of %s not available: %s", what,
                        (str(exc).strip().splitlines() or [type(exc).__name__])[0])
            return None
    return detail


def statement(connect: Connector, pid: Pid) -> Detail:
    """The backend ``pid()``'s wait (lock, I/O) or running time: a VALIDATE's only progress."""
    def read() -> str | None:
        backend = pid()
        if backend is None:
            return None
        row = _query(connect, _ACTIVITY, backend)
        return None if row is None else activity_phrase(row)
    return _guarded("a statement", read)


def index_build(connect: Connector, pid: Pid) -> Detail:
    """The phase and blocks/tuples done of the index build running in backend ``pid()``; its wait
    when it has not started yet (a build that waits for its table lock has no progress row)."""
    def read() -> str | None:
        backend = pid()
        if backend is None:
            return None
        row = _query(connect, _INDEX_PROGRESS, backend)
        if row is None:
            activity = _query(connect, _ACTIVITY, backend)
            return None if activity is None else activity_phrase(activity)
        return index_phase(row)
    return _guarded("an index build", read)


def file_size(path: Path, what: str = "dump") -> Detail:
    """How large the file a dump is writing has grown."""
    def read() -> str | None:
        if not path.exists():
            return f"{what} file not created yet"
        return f"{what} file {path.stat().st_size / 1_048_576:,.1f} MiB so far"
    return _guarded(what, read)
