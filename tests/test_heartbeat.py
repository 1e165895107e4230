"""Long statements report that they are still running, so a release job's log never falls silent."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from runbook_lib import backup, catalog, indexes, progress_views, steps
from runbook_lib import heartbeat as heartbeat_mod
from runbook_lib.heartbeat import heartbeat
from tests.test_db_apply import new_ctx


def test_a_block_longer_than_the_interval_beats_and_stops_when_it_ends() -> None:
    lines: list[str] = []
    with heartbeat(lines.append, "VALIDATE x", every=0.1):
        time.sleep(0.35)
    count = len(lines)
    time.sleep(0.3)
    assert count >= 2 and len(lines) == count, lines  # nothing after the block
    assert all(line.startswith("... VALIDATE x: still running after") for line in lines)


def test_an_apply_waiting_on_a_held_lock_beats_for_its_fk(make_db: Any, tmp_path: Path, monkeypatch: Any) -> None:
    dsn = make_db("CREATE TABLE users (id bigint PRIMARY KEY);"
                  "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL REFERENCES users (id));"
                  "CREATE INDEX ON orders (user_id);")
    monkeypatch.setattr(heartbeat_mod, "SECONDS", 0.2)
    ctx = new_ctx(dsn, tmp_path, lock_timeout="1s", lock_retries=3, retry_backoff=0.5)
    steps.inspect(ctx)
    steps.plan(ctx)
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE orders IN ACCESS SHARE MODE")  # the swap waits, then retries
    holder_pid = holder.info.backend_pid
    release = threading.Timer(1.5, holder.rollback)
    release.start()
    lines: list[str] = []
    try:
        outcome = steps.apply(ctx, progress=lines.append)
    finally:
        release.join()
        holder.close()
    assert not outcome.failed
    assert any(line.startswith("... [1/1] public.orders.orders_user_id_fkey: still running") for line in lines), lines
    # The beat says what the statement waits on, and who holds it up, from pg_stat_activity.
    assert any(f"waiting on Lock/relation, blocked by pid {holder_pid}" in line for line in lines), lines


SCHEMA = ("CREATE TABLE users (id bigint PRIMARY KEY);"
          "CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id));"
          "INSERT INTO users SELECT g FROM generate_series(1, 100) g;"
          "INSERT INTO orders SELECT g, g % 100 + 1 FROM generate_series(1, 1000) g;")


def build_while_a_writer_waits(dsn: str) -> tuple[list[str], list[Any], int]:
    """Build the missing index on orders while another session's write stays open for 1.5 s."""
    with psycopg.connect(dsn) as conn:
        plans = indexes.missing(catalog.inspect(conn, "public", "users").foreign_keys)
    holder = psycopg.connect(dsn)
    holder.execute("INSERT INTO orders VALUES (0, 1)")  # a concurrent build waits for this writer
    writer = int(holder.info.backend_pid)
    release = threading.Timer(1.5, holder.rollback)
    release.start()
    lines: list[str] = []
    try:
        built = indexes.create(lambda: psycopg.connect(dsn), plans, lock_timeout_ms=20_000,
                               progress=lines.append)
    finally:
        release.join()
        holder.close()
    return lines, built, writer


def test_an_index_build_beats_with_its_phase_from_pg_stat_progress_create_index(
        make_db: Any, monkeypatch: Any) -> None:
    dsn = make_db(SCHEMA)
    monkeypatch.setattr(heartbeat_mod, "SECONDS", 0.2)
    lines, built, writer = build_while_a_writer_waits(dsn)
    assert [r.status for r in built] == ["created"]
    waiting = [line for line in lines if "phase waiting for writers before build" in line]
    assert waiting, lines
    assert f"waiting for pid {writer}" in waiting[0] and "lockers 0 of 1" in waiting[0], waiting[0]
    assert waiting[0].startswith("... [index 1/1] orders_user_id_fk_idx: still running after")


def test_a_progress_view_that_cannot_be_read_costs_only_the_detail() -> None:
    def unreachable() -> psycopg.Connection[Any]:
        return psycopg.connect("host=127.0.0.1 port=1 dbname=none connect_timeout=2")

    detail = progress_views.index_build(unreachable, lambda: 1)
    assert detail() is None  # the refused connection is logged, not raised
    lines = []
    with heartbeat(lines.append, "x", every=0.1, detail=lambda: 1 // 0 and None):
        time.sleep(0.25)
    assert lines and all(line.startswith("... x: still running after") for line in lines), lines


def test_a_dump_beats_with_the_size_of_its_file(make_db: Any, tmp_path: Path, monkeypatch: Any) -> None:
    dsn = make_db("CREATE TABLE blob (id bigint, body text);"
                  "INSERT INTO blob SELECT g, md5(g::text) || repeat('x', 200) FROM generate_series(1, 200000) g;")
    monkeypatch.setattr(heartbeat_mod, "SECONDS", 0.05)
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000").fetchone()
    lines: list[str] = []
    record = backup.make_dump(dsn, int(row[0]), tmp_path / "b" / "x.dump", progress=lines.append)
    assert record.verified
    sizes = [line for line in lines if line.startswith("... pg_dump (full): still running after")
             and ("MiB so far" in line or "not created yet" in line)]
    assert sizes and len(sizes) == len(lines), lines
