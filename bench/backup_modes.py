"""Backup modes: a full dump against a schema-only dump of the same database, time and size.

Builds ``users`` and 12 small children plus ``events`` with the scale's row count, then times
``backup.make_dump`` in mode ``full`` and ``schema`` (each proven readable with pg_restore --list and
hashed, as the backup step does), and sets the preflight's estimate of the full dump beside the figures.

    python -m bench.backup_modes [--scale small|full] [--rows N] [--dsn DSN | --embedded]
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import psycopg
from psycopg import sql

from bench import common
from runbook_lib import backup, backup_choice

SCALES = {"small": 100_000, "full": 10_000_000}
USERS = 50_000
CHILDREN = 12
# A schema-only dump stays in seconds whatever the data: the target for it, and for its share of the full.
SCHEMA_SECONDS_TARGET = 10.0


@dataclass(frozen=True)
class Figures:
    rows: int
    database_bytes: int
    table_bytes: int
    estimate_seconds: float
    full_seconds: float
    full_bytes: int
    schema_seconds: float
    schema_bytes: int
    schema_entries: int


def build(dsn: str, rows: int, batch: int = 1_000_000) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL UNIQUE, "
                     "created_at timestamptz NOT NULL DEFAULT now())")
        conn.execute("INSERT INTO users (id, email) SELECT g, 'user' || g || '@example.com' "
                     "FROM generate_series(1, %s) AS g", [USERS])
        for i in range(CHILDREN):
            table = sql.Identifier(f"child_{i:02d}")
            conn.execute(sql.SQL("CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                                 "user_id bigint NOT NULL REFERENCES users (id), note text)").format(table))
            conn.execute(sql.SQL("INSERT INTO {} (user_id, note) SELECT 1 + g %% %s, 'note ' || g "
                                 "FROM generate_series(1, 5000) AS g").format(table), [USERS])
        conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id), "
                     "kind text NOT NULL, at timestamptz NOT NULL, payload jsonb)")
        for start in range(0, rows, batch):
            conn.execute("INSERT INTO events SELECT g, 1 + g %% %s, (ARRAY['login','view','buy'])[1 + g %% 3], "
                         "timestamptz '2025-01-01' + g * interval '1 second', "
                         "jsonb_build_object('n', g, 'ok', g %% 2 = 0) "
                         "FROM generate_series(%s, %s) AS g", [USERS, start + 1, min(rows, start + batch)])
        conn.execute("CREATE INDEX ON events (user_id)")
        conn.execute("VACUUM ANALYZE")


def measure(dsn: str, rows: int) -> Figures:
    with psycopg.connect(dsn, autocommit=True) as conn:
        major = int(conn.execute("SELECT current_setting('server_version_num')::int / 10000")
                    .fetchone()[0])  # type: ignore[index]
        folder = Path(tempfile.mkdtemp(prefix="bench-backup-")) / "backups"
        found = backup_choice.assess(conn, folder)
    try:
        started = time.perf_counter()
        full = backup.make_dump(dsn, major, folder / "full.dump", mode="full")
        full_seconds = time.perf_counter() - started
        started = time.perf_counter()
        schema = backup.make_dump(dsn, major, folder / "schema.dump", mode="schema")
        schema_seconds = time.perf_counter() - started
    finally:
        shutil.rmtree(folder.parent)
    return Figures(rows=rows, database_bytes=found.database_bytes, table_bytes=found.table_bytes,
                   estimate_seconds=found.full_dump_seconds, full_seconds=full_seconds,
                   full_bytes=full.size or 0, schema_seconds=schema_seconds, schema_bytes=schema.size or 0,
                   schema_entries=schema.toc_entries or 0)


def report(f: Figures) -> common.Targets:
    mib = 1024 * 1024
    common.print_table(f"Backup modes, events of {f.rows:,} rows", ["figure", "full", "schema", "schema / full"], [
        ("seconds (dump + pg_restore --list + sha256)", f"{f.full_seconds:.2f}", f"{f.schema_seconds:.2f}",
         f"{f.schema_seconds / f.full_seconds:.4f}"),
        ("file size (MiB)", f"{f.full_bytes / mib:.1f}", f"{f.schema_bytes / mib:.3f}",
         f"{f.schema_bytes / f.full_bytes:.5f}"),
    ])
    common.print_table("Preflight's estimate of the full dump", ["figure", "value"], [
        ("database size (MiB)", f"{f.database_bytes / mib:.1f}"),
        ("table bytes, the size bound (MiB)", f"{f.table_bytes / mib:.1f}"),
        ("actual full dump / bound", f"{f.full_bytes / max(1, f.table_bytes):.3f}"),
        ("estimated seconds", f"{f.estimate_seconds:.1f}"),
        ("actual seconds", f"{f.full_seconds:.1f}"),
        ("table bytes per second, measured", f"{f.table_bytes / f.full_seconds:,.0f}"),
    ])
    targets = common.Targets()
    targets.check("schema dump in seconds", f.schema_seconds <= SCHEMA_SECONDS_TARGET,
                  f"{f.schema_seconds:.2f} s (target ≤ {SCHEMA_SECONDS_TARGET:.0f} s)")
    targets.check("size bound holds", f.full_bytes <= f.table_bytes,
                  f"full dump {f.full_bytes:,} ≤ table bytes {f.table_bytes:,}")
    return targets


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="rows in events (default: by --scale)")
    args = p.parse_args(argv)
    rows = args.rows or SCALES[args.scale]
    with common.server(args) as admin:
        print(common.machine_line(admin))
        with common.scratch_database(admin, "bench_backup") as dsn:
            started = time.perf_counter()
            build(dsn, rows)
            print(f"built {rows:,} events in {time.perf_counter() - started:.1f} s")
            return report(measure(dsn, rows)).report()


if __name__ == "__main__":
    sys.exit(main())
