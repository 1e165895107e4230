"""Long statements report that they are still running, so a release job's log never falls silent."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from runbook_lib import heartbeat as heartbeat_mod
from runbook_lib import steps
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
