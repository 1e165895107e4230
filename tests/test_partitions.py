"""A partitioned referencing table before PostgreSQL 18: copies validated per partition, then taken over."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from runbook_lib import render, steps
from runbook_lib.context import RunContext
from runbook_lib.params import validate
from tests.conftest import sql_file

EVENTS = "public.events.events_user_id_fkey"


def fk_rows(dsn: str) -> dict[str, tuple[str, bool, str]]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path = ''")
        rows = conn.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated, oid::text "
            "FROM pg_constraint WHERE contype = 'f' AND conrelid::regclass::text LIKE 'public.events%'").fetchall()
    return {f"{t}.{n}": (d, v, o) for t, n, d, v, o in rows}


def context(dsn: str, run_dir: Path, **values: Any) -> RunContext:
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False}, **values})
    run_dir.mkdir(parents=True)
    return RunContext(params=params, run_dir=run_dir, dsn=dsn)


def test_swap_that_cannot_lock_the_partitioned_table_leaves_no_copy_behind(
        make_db: Any, tmp_path: Path, server_version: int) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = fk_rows(dsn)
    ctx = context(dsn, tmp_path / "ev" / "r", lock_timeout="150ms", lock_retries=2, retry_backoff=0.05)
    steps.inspect(ctx)
    plan = steps.plan(ctx)
    item = plan.item(EVENTS)
    assert item is not None and item.prevalidate == (server_version < 180000)
    blocker = psycopg.connect(dsn)
    try:
        # Only the partitioned table itself: its partitions stay free, so the copies can be made.
        blocker.execute("LOCK TABLE ONLY public.events IN ACCESS SHARE MODE")
        outcome = steps.apply(ctx)
    finally:
        blocker.close()
    failed = {r.constraint: r for r in outcome.failed}
    assert set(failed) == {EVENTS}
    assert "left behind" not in (failed[EVENTS].error or "")
    assert fk_rows(dsn) == before  # same constraints, same oids: and no copy is left on any partition
    second = context(dsn, tmp_path / "ev" / "r2")
    steps.inspect(second)
    steps.plan(second)
    assert not steps.apply(second).failed
    assert steps.verify(second).ok
    after = fk_rows(dsn)
    assert set(after) == set(before)
    assert all(d.endswith("ON DELETE CASCADE") and v for d, v, _ in after.values())


@pytest.mark.server_from(180000)
def test_from_postgresql_18_a_partitioned_fk_needs_no_copies(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    ctx = context(dsn, tmp_path / "ev" / "r")
    steps.inspect(ctx)
    item = steps.plan(ctx).item(EVENTS)
    assert item is not None
    assert not item.forward_pre()  # NOT VALID works on partitioned tables from 18: no copies


@pytest.mark.server_below(180000)
def test_copies_left_by_a_killed_run_are_taken_over_by_the_next(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = fk_rows(dsn)
    ctx = context(dsn, tmp_path / "ev" / "r")
    steps.inspect(ctx)
    item = steps.plan(ctx).item(EVENTS)
    assert item is not None
    # The killed run had made and validated the copy on the first partition only.
    leaf, add, check = item.forward_pre()[0]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(add)
        conn.execute(check)
    assert f"public.events_2025.{render.temporary_name(item.fk)}" in fk_rows(dsn)
    outcome = steps.apply(ctx)
    assert not outcome.failed, [r.error for r in outcome.failed]
    assert steps.verify(ctx).ok
    after = fk_rows(dsn)
    assert set(after) == set(before)  # the copies carry the FK's name again; none is left over
