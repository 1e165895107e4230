"""A named WAL restore point: a backup that costs nothing, when the server archives its WAL.

A restore point only helps if the WAL holding it reaches the archive, so the mode is refused unless
archiving is configured and the archiver is not failing (``pg_stat_archiver``), and the restore point
counts as verified only once the WAL file that holds it has been archived.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import errors as pg_errors

from . import logger
from .errors import BackupError

NAME_PREFIX = "cascade-runbook-"
# The server keeps restore point names in a MAXFNAMELEN (64) buffer.
MAX_NAME = 63
ARCHIVE_WAIT_SECONDS = 60.0
_WAL_FILE = re.compile(r"^[0-9A-F]{24}")
_UNSET = ("", "(disabled)")

_STATUS_QUERY = """
SELECT current_setting('archive_mode'), current_setting('archive_command'),
       coalesce(current_setting('archive_library', true), ''), current_setting('wal_level'),
       pg_is_in_recovery(), has_function_privilege('pg_create_restore_point(text)', 'EXECUTE'),
       a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time
FROM pg_stat_archiver a
"""


@dataclass(frozen=True)
class ArchiveStatus:
    archive_mode: str
    archive_command: str
    archive_library: str
    wal_level: str
    in_recovery: bool
    may_create: bool
    archived_count: int
    last_archived_wal: str | None
    last_archived_time: Any
    failed_count: int
    last_failed_wal: str | None
    last_failed_time: Any

    @property
    def configured(self) -> bool:
        return self.archive_mode in ("on", "always") and (
            self.archive_command not in _UNSET or self.archive_library not in _UNSET)

    @property
    def failing(self) -> bool:
        """The archiver's latest attempt failed (a success since then clears it)."""
        if self.last_failed_time is None:
            return False
        return self.last_archived_time is None or self.last_failed_time >= self.last_archived_time

    def problem(self) -> str | None:
        """Why a restore point of this server would not protect the data (None when it would)."""
        if self.in_recovery:
            return "the server is a standby; restore points are made on the primary"
        if self.archive_mode not in ("on", "always"):
            return (f"WAL archiving is off (archive_mode = {self.archive_mode}); backup.mode restore_point "
                    "needs it: use backup.mode full or schema")
        if not self.configured:
            return ("archive_mode is on but neither archive_command nor archive_library is set: no WAL is "
                    "archived; use backup.mode full or schema")
        if self.failing:
            return (f"the WAL archiver is failing (pg_stat_archiver: {self.failed_count} failure(s), last "
                    f"{self.last_failed_wal} at {self.last_failed_time}, last success "
                    f"{self.last_archived_wal or 'never'}); fix archiving or use backup.mode full or schema")
        if not self.may_create:
            return ("the connected role may not run pg_create_restore_point (superuser, or GRANT EXECUTE "
                    "ON FUNCTION pg_create_restore_point(text)); use backup.mode full or schema")
        return None

    def summary(self) -> str:
        setting = (f"archive_library = {self.archive_library}" if self.archive_library not in _UNSET
                   else f"archive_command = {self.archive_command}")
        return (f"archive_mode = {self.archive_mode}, {setting}; {self.archived_count} file(s) archived, "
                f"last {self.last_archived_wal or 'none'}; {self.failed_count} failure(s)")

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if v is not None and k.endswith("_time") else v) for k, v in asdict(self).items()}


def status(conn: psycopg.Connection[Any]) -> ArchiveStatus:
    row = conn.execute(_STATUS_QUERY).fetchone()
    assert row is not None
    return ArchiveStatus(*row)


def require_archiving(conn: psycopg.Connection[Any]) -> ArchiveStatus:
    found = status(conn)
    problem = found.problem()
    if problem is not None:
        raise BackupError(f"backup.mode restore_point refused: {problem}")
    return found


def point_name(run_id: str) -> str:
    return (NAME_PREFIX + run_id)[:MAX_NAME]


@dataclass(frozen=True)
class RestorePoint:
    name: str
    lsn: str
    timeline: int
    wal_file: str
    created_at: str
    archived: bool
    archive: dict[str, Any]


def _archived_through(conn: psycopg.Connection[Any]) -> str | None:
    row = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()
    match = _WAL_FILE.match(row[0] or "") if row else None
    return match.group(0) if match else None


def _switch_wal(conn: psycopg.Connection[Any]) -> None:
    """Close the current WAL file so that the archiver takes the restore point now, not when it fills."""
    try:
        conn.execute("SELECT pg_switch_wal()")
    except pg_errors.InsufficientPrivilege:
        # Without the privilege the file is archived when it fills or at archive_timeout.
        conn.rollback()
        logger.info("may not run pg_switch_wal(); waiting for the archiver as it is")


def create(conn: psycopg.Connection[Any], run_id: str, *, wait_seconds: float = ARCHIVE_WAIT_SECONDS,
           ) -> RestorePoint:
    """``pg_create_restore_point`` for this run, then wait until the WAL file holding it is archived.

    ``conn`` must be in autocommit mode: the restore point is written to WAL at once, not at commit.
    """
    before = require_archiving(conn)
    name = point_name(run_id)
    row = conn.execute("SELECT lsn::text, pg_walfile_name(lsn), clock_timestamp()::text "
                       "FROM pg_create_restore_point(%s) AS lsn", [name]).fetchone()
    assert row is not None
    lsn, wal_file, created_at = str(row[0]), str(row[1]), str(row[2])
    logger.info("restore point %s at %s in %s", name, lsn, wal_file)
    _switch_wal(conn)
    deadline = time.monotonic() + wait_seconds
    archived = False
    while True:
        through = _archived_through(conn)
        archived = through is not None and through >= wal_file
        if archived or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    after = status(conn)
    return RestorePoint(name=name, lsn=lsn, timeline=int(wal_file[:8], 16), wal_file=wal_file,
                        created_at=created_at, archived=archived,
                        archive={"before": before.to_dict(), "after": after.to_dict()})
