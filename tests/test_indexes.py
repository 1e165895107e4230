"""The opt-in index step: missing referencing-column indexes built concurrently, INVALID ones rebuilt."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from runbook_lib import catalog, indexes, steps
from runbook_lib.context import RunContext
from runbook_lib.params import validate
from tests.conftest import sql_file
from tests.factories import fk


def test_index_names_fit_63_bytes_and_do_not_collide() -> None:
    a = fk("t" * 60, "c", "users", ("user_id_a",))
    b = fk("t" * 60, "c", "users", ("user_id_b",))
    assert len(indexes.index_name(a).encode()) <= 63 and indexes.index_name(a) != indexes.index_name(b)
    assert indexes.index_name(fk("vitals", "c", "users")) == "vitals_user_id_fk_idx"


def index_valid(dsn: str, name: str) -> bool | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE c.relname = %s", [name]).fetchone()
    return None if row is None else bool(row[0])


def test_apply_builds_missing_indexes_and_rebuilds_an_invalid_one(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    # An interrupted concurrent build: a unique index that fails on duplicates is left INVALID.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO public.nutrition_goals (user_id) VALUES (1)")
        try:
            conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON public.nutrition_goals (user_id)").format(
                sql.Identifier("nutrition_goals_user_id_fk_idx")))
        except psycopg.errors.UniqueViolation:
            pass
    assert index_valid(dsn, "nutrition_goals_user_id_fk_idx") is False
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False},
                       "create_missing_indexes": True})
    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "r", dsn=dsn)
    ctx.run_dir.mkdir(parents=True)
    snap = steps.inspect(ctx)
    unindexed = {f.key for f in snap.foreign_keys if not f.indexed and f.parent in {("public", "users"),
                 ("public", "nutrition_goals"), ("public", "appointments"), ("public", "chat_sessions"),
                 ("public", "chat_messages")}}
    steps.plan(ctx)
    lines: list[str] = []
    outcome = steps.apply(ctx, progress=lines.append)
    assert not outcome.failed, [r.error for r in outcome.failed]
    by_index = {r.index: r for r in outcome.indexes}
    assert by_index["nutrition_goals_user_id_fk_idx"].status == "rebuilt"
    # Index builds are recorded and reported like the swaps: a journal entry and a progress line each.
    events = [json.loads(line) for line in ctx.path("apply_journal.jsonl").read_text().splitlines()]
    done = {e["index"]: e["status"] for e in events if e["event"] == "index_done"}
    assert done == {r.index: r.status for r in outcome.indexes}
    assert sum(1 for e in events if e["event"] == "index_start") == len(outcome.indexes)
    assert any("nutrition_goals_user_id_fk_idx" in line and "rebuilt" in line for line in lines), lines
    assert by_index["events_user_id_fk_idx"].status == "skipped"  # partitioned: reported, not built
    assert index_valid(dsn, "nutrition_goals_user_id_fk_idx") is True
    with psycopg.connect(dsn, autocommit=True) as conn:
        after = catalog.inspect(conn, "public", "users")
    still = {f.key for f in after.foreign_keys if f.key in unindexed and not f.indexed}
    assert still == {"public.events.events_user_id_fkey"}
    # A second run finds them all and builds nothing.
    again = RunContext(params=params, run_dir=tmp_path / "ev" / "r2", dsn=dsn)
    again.run_dir.mkdir()
    steps.inspect(again)
    second = steps.apply(again)
    assert {r.status for r in second.indexes} <= {"skipped"}
