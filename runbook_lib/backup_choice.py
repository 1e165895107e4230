"""Which backup fits the database: its size, the full dump's estimated size and time, the room at the
backup folder, the health of WAL archiving, and the mode recommended from them.

The preflight shows all of it; the backup step records the recommendation beside the mode it took.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from . import backup as backup_mod
from . import restore_point as restore_point_mod
from .errors import RunbookError

# Table bytes (heap + TOAST) a full custom-format dump gets through per second, by bench/backup_modes.py
# on this project's 2-core test machine (PostgreSQL 15): 17.3 to 17.5 MB/s while other work shared the
# cores, 113 MB/s on the quiet machine. The busy figure is kept: a production server dumps while it
# serves, and the estimate is "about" either way.
FULL_DUMP_BYTES_PER_SECOND = 17_000_000
# The compressed dump against its bound (the table bytes): 0.07 to 0.11 measured by the same bench; a
# dump that would exceed the free room even at this larger share is sure not to fit.
FULL_DUMP_SHARE_ASSUMED = 0.25
# Above this, a full dump holds up the change long enough that a cheaper mode is recommended.
FULL_DUMP_MAX_SECONDS = 600.0
# A schema-only dump of even a large catalog stays far below this.
SCHEMA_DUMP_ROOM = 64 * 1024 * 1024

_SIZE_QUERY = """
SELECT pg_database_size(current_database()),
       coalesce((SELECT sum(pg_table_size(c.oid)) FROM pg_class c
                 WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't'), 0)::bigint
"""


@dataclass(frozen=True)
class Recommendation:
    mode: str
    reason: str


@dataclass(frozen=True)
class Assessment:
    database_bytes: int
    table_bytes: int  # heap + TOAST of tables and materialized views: the data a full dump holds
    free_bytes: int
    probe: Path
    archive: restore_point_mod.ArchiveStatus

    @property
    def full_dump_seconds(self) -> float:
        return self.table_bytes / FULL_DUMP_BYTES_PER_SECOND

    @property
    def full_dump_fits(self) -> bool:
        # Uncompressed table bytes bound the compressed dump from above (indexes are not dumped).
        return self.free_bytes >= self.table_bytes

    def full_dump_line(self) -> str:
        return (f"a full dump would be at most {self.table_bytes:,} bytes and take about "
                f"{self.full_dump_seconds:,.0f} s")

    def room(self, mode: str) -> tuple[str, str]:
        """(status, detail) of the free room for a dump of ``mode``: ok when even its bound fits, warn
        when only a dump compressed as usual fits, fail when it would not fit."""
        free = f"{self.free_bytes:,} bytes free at {self.probe}"
        if mode != "full":
            ok = self.free_bytes >= SCHEMA_DUMP_ROOM
            return ("ok" if ok else "fail"), f"{free}, the {mode} dump needs up to {SCHEMA_DUMP_ROOM:,} bytes"
        if self.full_dump_fits:
            return "ok", f"{free}, the full dump needs at most {self.table_bytes:,} bytes"
        usual = int(self.table_bytes * FULL_DUMP_SHARE_ASSUMED)
        if self.free_bytes >= usual:
            return "warn", (f"{free}: less than the full dump's bound ({self.table_bytes:,} bytes), enough if "
                            f"it compresses as usual (under {usual:,} bytes)")
        return "fail", (f"{free}: the full dump would not fit (bound {self.table_bytes:,} bytes, usually "
                        f"over {usual:,}); recommended: backup.mode {self.recommend().mode}")

    def recommend(self) -> Recommendation:
        if self.full_dump_fits and self.full_dump_seconds <= FULL_DUMP_MAX_SECONDS:
            return Recommendation("full", f"{self.full_dump_line()}, and {self.free_bytes:,} bytes are free")
        why = (f"{self.full_dump_line()} with {self.free_bytes:,} bytes free" if not self.full_dump_fits
               else f"{self.full_dump_line()} (over {FULL_DUMP_MAX_SECONDS:.0f} s)")
        problem = self.archive.problem()
        if problem is None:
            return Recommendation("restore_point", f"{why}; WAL archiving is healthy, so a restore point "
                                                   "recovers the data to the moment before the change")
        return Recommendation("schema", f"{why}, and a restore point cannot be made ({problem}); the schema "
                                        "dump holds every definition this runbook changes, the data rely on "
                                        "the database's own backups")


def free_space(folder: Path) -> tuple[Path, int]:
    """The free bytes where ``folder`` is (or will be created)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe, shutil.disk_usage(probe).free


def assess(conn: psycopg.Connection[Any], folder: Path) -> Assessment:
    row = conn.execute(_SIZE_QUERY).fetchone()
    assert row is not None
    probe, free = free_space(folder)
    return Assessment(database_bytes=int(row[0]), table_bytes=int(row[1]), free_bytes=free, probe=probe,
                      archive=restore_point_mod.status(conn))


def why(mode: str, found: Assessment) -> str:
    rec = found.recommend()
    agreed = "as recommended" if rec.mode == mode else f"recommended: {rec.mode}"
    return f"backup.mode {mode} from the parameters ({agreed}: {rec.reason})"


def require_possible(conn: psycopg.Connection[Any], mode: str) -> None:
    """Bad input, before anything runs: a restore point asked of a server that does not archive WAL."""
    if mode == "restore_point":
        restore_point_mod.require_archiving(conn)


def checks(conn: psycopg.Connection[Any], mode: str, folder: Path, server_major: int,
           ) -> list[tuple[str, str, str]]:
    """The preflight's backup lines as (check, status, detail); status is ok, warn, fail or info."""
    found = assess(conn, folder)
    rec = found.recommend()
    lines = [("database size", "info", f"{found.database_bytes:,} bytes; {found.full_dump_line()}"),
             ("backup mode", "ok" if rec.mode == mode else "warn",
              f"{mode} (backup.mode); recommended: {rec.mode}: {rec.reason}")]
    if mode == "restore_point":
        problem = found.archive.problem()
        lines.append(("WAL archiving", "fail" if problem else "ok", problem or found.archive.summary()))
        return lines
    try:
        dump = backup_mod.choose_tool("pg_dump", server_major)
        lines.append(("pg_dump", "ok", f"{dump.version} at {dump.path} can dump PostgreSQL {server_major}"))
    except RunbookError as exc:
        lines.append(("pg_dump", "fail", str(exc)))
    problem = backup_mod.folder_problem(folder)
    lines.append(("backup folder", "fail" if problem else "ok",
                  problem or f"{folder} (private: 0700 folder, 0600 files)"))
    lines.append(("disk room", *found.room(mode)))
    return lines
