"""A run killed between a swap and its VALIDATE: the next run finds it in the journal and completes it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg

from runbook_lib import catalog, history, steps
from runbook_lib.context import RunContext
from runbook_lib.catalog import Snapshot
from runbook_lib.params import Parameters, validate
from runbook_lib.plan import make_plan
from runbook_lib.plan_items import PlanItem
from tests.conftest import sql_file

KEY = "public.nutrition_goals.nutrition_goals_user_id_fkey"


def swap_to_validate(dsn: str) -> tuple[Parameters, Snapshot, PlanItem]:
    """The parameters, the catalog and the plan item of an FK whose swap is followed by a VALIDATE."""
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False},
                       "rules": {"billing": "SET NULL"}})
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = catalog.inspect(conn, "public", "users")
    item = make_plan(before, params).item(KEY)
    assert item is not None and item.validate_after
    return params, before, item


def test_a_swap_left_not_valid_by_a_killed_run_is_validated_by_the_next(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params, before, item = swap_to_validate(dsn)
    # What the killed run did: its journal says it started, the swap committed, VALIDATE never ran.
    killed = tmp_path / "ev" / "run-1"
    killed.mkdir(parents=True)
    (killed / "apply_journal.jsonl").write_text(
        json.dumps({"event": "start", "constraint": KEY, "validate_pending": True}) + "\n"
        + '{"event": "swapped", "constr')  # the last line was cut short by the kill
    with psycopg.connect(dsn, autocommit=True) as conn:
        # The killed run had recorded itself in the run history before its first change.
        history.record_start(conn, params.history_schema, run_id=killed.name, kind="apply",
                             parent="public.users", hashes={})
        for statement in item.forward():
            conn.execute(statement)
    with psycopg.connect(dsn, autocommit=True) as conn:
        left = catalog.read_one(conn, before.server_version_num, "public", "nutrition_goals",
                                "nutrition_goals_user_id_fkey")
    assert left is not None and left.on_delete == "CASCADE" and not left.validated

    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "run-2", dsn=dsn)
    ctx.run_dir.mkdir()
    steps.inspect(ctx)
    the_plan = steps.plan(ctx)
    resumed = the_plan.item(KEY)
    assert resumed is not None and resumed.pending_validation and not resumed.change
    assert 'VALIDATE CONSTRAINT "nutrition_goals_user_id_fkey"' in the_plan.forward_script()
    outcome = steps.apply(ctx)
    assert not outcome.failed and len(outcome.results) == 16
    verified = steps.verify(ctx)
    assert verified.ok, verified.problems
    with psycopg.connect(dsn, autocommit=True) as conn:
        done = catalog.read_one(conn, before.server_version_num, "public", "nutrition_goals",
                                "nutrition_goals_user_id_fkey")
    assert done is not None and done.validated

    # A third run has nothing left to do: the journal of run-2 recorded the validation.
    third = RunContext(params=params, run_dir=tmp_path / "ev" / "run-3", dsn=dsn)
    third.run_dir.mkdir()
    steps.inspect(third)
    assert not steps.plan(third).actions


def test_a_deliberately_not_valid_fk_is_never_validated(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False}})
    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "r", dsn=dsn)
    ctx.run_dir.mkdir(parents=True)
    steps.inspect(ctx)
    steps.plan(ctx)
    steps.apply(ctx)
    again = RunContext(params=params, run_dir=tmp_path / "ev" / "r2", dsn=dsn)
    again.run_dir.mkdir()
    snap = steps.inspect(again)
    legacy = snap.fk("public.legacy_notes.legacy_notes_user_fk")
    assert legacy is not None and not legacy.validated and legacy.on_delete == "CASCADE"
    assert not steps.plan(again).actions


def test_losing_the_advisory_lock_session_stops_the_run_and_says_what_was_not_done(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False}})
    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "r", dsn=dsn)
    ctx.run_dir.mkdir(parents=True)
    steps.inspect(ctx)
    total = len(steps.plan(ctx).actions)
    lines: list[str] = []

    def kill_lock_holder_after_two(line: str) -> None:
        lines.append(line)
        if len(lines) == 2:
            with psycopg.connect(dsn, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' "
                              "AND granted AND pid <> pg_backend_pid()")

    outcome = steps.apply(ctx, progress=kill_lock_holder_after_two)
    done = [r for r in outcome.results if r.status == "applied"]
    stopped = [r for r in outcome.results if r.status == "failed"]
    assert len(done) == 2 and len(stopped) == total - 2
    assert all("advisory lock was lost" in (r.error or "") and r.attempts == 0 for r in stopped)
    saved = json.loads((ctx.run_dir / "apply_result.json").read_text())
    assert len(saved["results"]) == total
