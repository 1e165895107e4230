"""Proof cost: the test-user step on a small and on a large table, same schema.

The proof reads this transaction's own row counters and looks rows up by key, so its cost follows the
test user's rows and the catalog, not the tables' sizes. Two fresh databases with the same schema
(users, posts, comments, and an ``events`` table with an indexed FK to users) differ only in the size
of ``events``: 2,000 rows (the baseline) and 200,000 (``--scale full``; 20,000 with ``--scale small``).
On each, ``deletion.run_test_user`` (synthesize, preview, DELETE, proof, orphans; rolled back) runs
``--repeat`` times; figures: the median time, the statements it sent, and the rows it read from user
tables and from ``events`` (pg_stat_user_tables: sequential plus index fetches, flushed with
pg_stat_force_next_flush).

    .venv/bin/python -m bench.proof_cost [--embedded] [--scale small]
"""
from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import psycopg

from bench import common
from runbook_lib import catalog, deletion

SCHEMA = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE, name text NOT NULL);
CREATE TABLE posts (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
                    body text NOT NULL);
CREATE INDEX ON posts (user_id);
CREATE TABLE comments (id bigserial PRIMARY KEY, post_id bigint NOT NULL REFERENCES posts ON DELETE CASCADE,
                       user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE, body text NOT NULL);
CREATE INDEX ON comments (post_id);
CREATE INDEX ON comments (user_id);
CREATE TABLE events (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
                     kind text NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE INDEX ON events (user_id);
INSERT INTO users (email, name) SELECT 'u' || g || '@example.com', 'user ' || g FROM generate_series(1, 1000) g;
INSERT INTO posts (user_id, body) SELECT 1 + g % 1000, 'post' FROM generate_series(1, 5000) g;
INSERT INTO comments (post_id, user_id, body) SELECT 1 + g % 5000, 1 + g % 997, 'c' FROM generate_series(1, 10000) g;
"""

READ = """
SELECT COALESCE(sum(COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)), 0)::int8,
       COALESCE(sum(COALESCE(seq_tup_read, 0) + COALESCE(idx_tup_fetch, 0)) FILTER (WHERE relname = 'events'), 0)::int8
FROM pg_catalog.pg_stat_user_tables
"""


class CountingConnection(psycopg.Connection[Any]):
    """Counts the statements the library sends (every one goes through ``execute``)."""
    statements = 0

    def execute(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        CountingConnection.statements += 1
        return super().execute(*args, **kwargs)


def reads(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    conn.execute("SELECT pg_catalog.pg_stat_force_next_flush()")
    conn.execute("SELECT pg_catalog.pg_stat_clear_snapshot()")
    row = conn.execute(READ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def measure(dsn: str, events: int, repeat: int) -> dict[str, Any]:
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(SCHEMA)
        setup.execute("INSERT INTO events (user_id, kind) SELECT 1 + g %% 1000, 'view' "
                      "FROM generate_series(1, %s) g", [events])
        setup.execute("VACUUM ANALYZE")
    times, statements, rows_read, events_read = [], [], [], []
    with CountingConnection.connect(dsn, autocommit=True) as conn:
        snap = catalog.inspect(conn, "public", "users")
        deletion.run_test_user(conn, snap)  # warm-up: catalog caches, plans
        for _ in range(repeat):
            with psycopg.connect(dsn, autocommit=True) as observer:
                read0, seq0 = reads(observer)
                CountingConnection.statements = 0
                started = time.perf_counter()
                run = deletion.run_test_user(conn, snap, timeouts=deletion.Timeouts("30s", "2s"))
                times.append(time.perf_counter() - started)
                statements.append(CountingConnection.statements)
                # the step's backend reports its figures when idle: wait for them to arrive
                conn.execute("SELECT pg_catalog.pg_stat_force_next_flush()")
                read1, seq1 = reads(observer)
            if not run.ok:
                raise SystemExit(f"the proof failed: {run.message}")
            rows_read.append(read1 - read0)
            events_read.append(seq1 - seq0)
    return {"events": events, "seconds": statistics.median(times), "statements": max(statements),
            "rows read": max(rows_read), "events rows read": max(events_read)}


def main(argv: list[str] | None = None) -> int:
    p = common.parser(__doc__ or "")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    big = 200_000 if args.scale == "full" else 20_000
    with common.server(args) as admin:
        print(common.machine_line(admin))
        results = []
        for events in (2_000, big):
            with common.scratch_database(admin, "bench_proof") as dsn:
                results.append(measure(dsn, events, args.repeat))
    base, large = results
    common.print_table("Test-user step (synthesize, preview, DELETE, proof, orphans; rolled back)",
                       ["events rows", "median time", "statements", "rows read (all tables)",
                        "rows read from events"],
                       [(f"{r['events']:,}", common.fmt_s(r["seconds"]), r["statements"], r["rows read"],
                         r["events rows read"]) for r in results])
    targets = common.Targets()
    ratio = large["seconds"] / base["seconds"]
    targets.check("time near the baseline's", ratio < 2.0,
                  f"{common.fmt_s(large['seconds'])} vs {common.fmt_s(base['seconds'])}: {common.fmt_ratio(large['seconds'], base['seconds'])}")
    targets.check("same statements", large["statements"] == base["statements"],
                  f"{large['statements']} vs {base['statements']}")
    targets.check("rows read do not grow with the table", large["rows read"] <= 2 * base["rows read"] + 50,
                  f"{large['rows read']} vs {base['rows read']}: {common.fmt_ratio(large['rows read'], base['rows read'])}")
    # a bounded probe (EXISTS, LIMIT 1) may read a row or two; a scan would read them all
    targets.check("rows read from events bounded", large["events rows read"] <= base["events rows read"] + 5,
                  f"{large['events rows read']} vs {base['events rows read']}")
    return targets.report()


if __name__ == "__main__":
    sys.exit(main())
