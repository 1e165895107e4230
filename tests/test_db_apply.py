"""Applying, verifying and rolling back plans on a real PostgreSQL (the suite runs once per server).

The state of every foreign key is read straight from ``pg_constraint`` here (not through the library),
so that what the library reports is checked against what the server holds. Deletes that prove a rule
run inside a transaction that is rolled back, so the module's shared applied database stays as it was.
"""
from __future__ import annotations

import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runbook_lib import evidence, execute, steps
from runbook_lib import params as params_mod
from runbook_lib.context import RunContext
from runbook_lib.errors import ApplyError, PreflightFailed
from runbook_lib.plan import Plan
from tests.conftest import create_database, drop_database, sql_file
from tests.edge_keys import (LONG_TABLE, LONG_CONSTRAINT, MEMBERSHIPS, LEGACY, EVENTS, EVENT_CLONES, AUDIT, LONG, EMAIL, GOALS, TARGETS, APPOINTMENTS, PRESCRIPTIONS, SELF, CROSS_EDGE, DEVICES, BILLING, CITIES, MEDICATION)  # noqa: F401


EDGE_RULES = {"billing": "SET NULL", "no_such_table": "CASCADE"}


class FkRow(NamedTuple):
    oid: int
    definition: str
    comment: str | None
    validated: bool
    is_clone: bool
    delete_rule: str


_STATE_SQL = """
SELECT n.nspname::text || '.' || t.relname::text || '.' || c.conname::text, c.oid::int8,
       pg_get_constraintdef(c.oid), obj_description(c.oid, 'pg_constraint'), c.convalidated,
       c.conparentid <> 0, c.confdeltype::text
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE c.contype = 'f'
"""


def fk_state(dsn: str) -> dict[str, FkRow]:
    """Every foreign key of the database (partition clones included), read from pg_constraint."""
    with psycopg.connect(dsn) as conn:
        # An empty search_path makes pg_get_constraintdef qualify every name: the text is exact.
        conn.execute("SET LOCAL search_path = ''")
        rows = conn.execute(_STATE_SQL).fetchall()
        conn.rollback()
    return {r[0]: FkRow(*r[1:]) for r in rows}


def make_params(**values: Any) -> params_mod.Parameters:
    raw: dict[str, Any] = {"parent_table": "users", "dry_run": False, "backup": {"enabled": False}}
    raw.update(values)
    return params_mod.validate(raw)


def new_ctx(dsn: str, run_dir: Path, **values: Any) -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(params=make_params(**values), run_dir=run_dir, dsn=dsn)


@contextmanager
def rolled_back(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection whose one transaction is always rolled back at the end."""
    conn = psycopg.connect(dsn)
    try:
        yield conn
    finally:
        if not conn.closed:
            conn.rollback()
            conn.close()


def scalar(conn: psycopg.Connection[Any], query: str, *args: Any) -> Any:
    row = conn.execute(query, list(args) or None).fetchone()
    assert row is not None
    return row[0]


def delete_user_error(dsn: str, table: str = "users", key: int = 1) -> psycopg.errors.ForeignKeyViolation:
    with rolled_back(dsn) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation) as caught:
            conn.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(sql.Identifier("public", table)), [key])
    return caught.value


def without_delete_clause(definition: str, rule: str) -> str:
    clause = f" ON DELETE {rule}"
    assert definition.count(clause) == 1, definition
    return definition.replace(clause, "")


@dataclass
class AppliedRun:
    dsn: str
    before: dict[str, FkRow]
    after: dict[str, FkRow]
    ctx: RunContext
    plan: Plan
    outcome: steps.ApplyOutcome
    verify: steps.VerifyOutcome

    def result(self, key: str) -> execute.StepResult:
        found = [r for r in self.outcome.results if r.constraint == key]
        assert len(found) == 1, f"{key}: {len(found)} results"
        return found[0]


def full_run(dsn: str, run_dir: Path, **values: Any) -> AppliedRun:
    before = fk_state(dsn)
    ctx = new_ctx(dsn, run_dir, **values)
    steps.inspect(ctx)
    the_plan = steps.plan(ctx)
    outcome = steps.apply(ctx)
    verified = steps.verify(ctx)
    return AppliedRun(dsn=dsn, before=before, after=fk_state(dsn), ctx=ctx, plan=the_plan, outcome=outcome,
                      verify=verified)


@pytest.fixture(scope="module")
def applied(server_dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppliedRun]:
    """The edge-case database after one full run (inspect, plan, apply, verify); shared, never changed."""
    dsn = create_database(server_dsn, sql_file("edge_cases.sql"))
    try:
        yield full_run(dsn, tmp_path_factory.mktemp("applied"), rules=EDGE_RULES)
    finally:
        drop_database(server_dsn, dsn)


# ---------------------------------------------------------------- the run as a whole
def test_every_planned_change_is_applied_and_the_other_fks_keep_their_oid(applied: AppliedRun) -> None:
    changed = {i.fk.key for i in applied.plan.changes}
    assert {r.constraint for r in applied.outcome.results} == changed
    assert all(r.status == "applied" and r.error is None for r in applied.outcome.results)
    for key, row in applied.before.items():
        if key in changed or key in EVENT_CLONES:
            assert applied.after[key].oid != row.oid, key
        else:
            assert applied.after[key] == row, key
    assert set(applied.after) == set(applied.before)


# ---------------------------------------------------------------- 1. composite keys
def test_composite_fk_keeps_column_order_match_update_rule_deferral_name_and_comment(applied: AppliedRun) -> None:
    before, after = applied.before[MEMBERSHIPS], applied.after[MEMBERSHIPS]
    assert before.definition == ("FOREIGN KEY (tenant, user_id) REFERENCES public.users(tenant, id) MATCH FULL "
                                 "ON UPDATE CASCADE DEFERRABLE INITIALLY DEFERRED")
    assert after.definition == ("FOREIGN KEY (tenant, user_id) REFERENCES public.users(tenant, id) MATCH FULL "
                                "ON UPDATE CASCADE ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED")
    assert without_delete_clause(after.definition, "CASCADE") == before.definition
    assert after.comment == before.comment == "the owner's memberships"
    assert after.validated is True
    assert after.oid != before.oid  # it was swapped, under the same name


# ---------------------------------------------------------------- 2. NOT VALID
def test_not_valid_fk_stays_not_valid_after_apply(applied: AppliedRun) -> None:
    before, after = applied.before[LEGACY], applied.after[LEGACY]
    assert before.validated is False and after.validated is False
    assert after.definition == "FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE NOT VALID"
    assert without_delete_clause(after.definition, "CASCADE") == before.definition
    result = applied.result(LEGACY)
    assert (result.status, result.validated) == ("applied", None)
    with rolled_back(applied.dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM public.legacy_notes WHERE user_id IN (998, 999)") == 2


# ---------------------------------------------------------------- 3. partitioned child
def test_partitioned_fk_is_changed_once_on_the_parent_and_the_partitions_follow(
        applied: AppliedRun, server_version: int) -> None:
    event_results = [r for r in applied.outcome.results if "events" in r.constraint]
    assert [r.constraint for r in event_results] == [EVENTS]
    assert sorted(k for k, row in applied.before.items() if row.is_clone) == sorted(EVENT_CLONES)
    for key in (EVENTS, *EVENT_CLONES):
        after = applied.after[key]
        assert after.definition == "FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE", key
        assert (after.delete_rule, after.validated) == ("c", True), key
        assert after.is_clone == (key != EVENTS)
    events = applied.plan.item(EVENTS)
    assert events is not None
    if server_version >= 180000:
        assert events.not_valid_swap is True
        assert event_results[0].validated is True  # swapped NOT VALID, then validated on its own
    else:
        # Each partition's copy was validated on its own before the swap took them over (their
        # names are the FK's again: the clones above kept their keys).
        assert events.not_valid_swap is False and events.prevalidate is True
        assert event_results[0].validated is None and event_results[0].validate_ms > 0


# ---------------------------------------------------------------- 4. names
def test_other_schema_quoted_names_and_63_byte_names_apply(applied: AppliedRun) -> None:
    for key in (AUDIT, LONG):
        assert applied.result(key).status == "applied"
        assert applied.after[key].delete_rule == "c"
    assert applied.after[AUDIT].definition == \
        'FOREIGN KEY ("User Id") REFERENCES public.users(id) ON DELETE CASCADE'


def test_parent_table_named_user_plans_applies_verifies_and_cascades(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_reserved_parent.sql"))
    run = full_run(dsn, tmp_path, parent_table="user")
    assert len(run.outcome.results) == 3
    assert all(r.status == "applied" for r in run.outcome.results)
    assert run.verify.ok, run.verify.problems
    assert not run.verify.replan.changes
    for key in ("public.group.group.user → user", "Order Data.Line Item.Line Item_User ID_fkey",
                "public.select.select_group_fkey"):
        assert run.after[key].delete_rule == "c", key
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute('DELETE FROM public."user" WHERE id = 1')
        assert scalar(conn, 'SELECT array_agg(id ORDER BY id) FROM public."group"') == [20]
        assert scalar(conn, 'SELECT array_agg(id ORDER BY id) FROM "Order Data"."Line Item"') == [200]
        assert scalar(conn, 'SELECT array_agg(id ORDER BY id) FROM public."select"') == [2000]


# ---------------------------------------------------------------- 5. unique non-PK target
def test_fk_to_unique_non_primary_key_column_is_changed(applied: AppliedRun) -> None:
    assert applied.result(EMAIL).status == "applied"
    assert applied.after[EMAIL].definition == \
        "FOREIGN KEY (email) REFERENCES public.users(email) ON DELETE CASCADE"
    with rolled_back(applied.dsn) as conn:
        conn.execute("INSERT INTO public.email_prefs (email) VALUES ('a@example.com'), ('b@example.com')")
        conn.execute("DELETE FROM public.users WHERE id = 1")
        assert scalar(conn, "SELECT array_agg(email) FROM public.email_prefs") == ["b@example.com"]


# ---------------------------------------------------------------- 6. second level
def test_deleting_a_user_after_apply_removes_second_level_rows(applied: AppliedRun) -> None:
    assert applied.after[TARGETS].delete_rule == "c"
    assert applied.after[PRESCRIPTIONS].definition == \
        "FOREIGN KEY (appointment_id) REFERENCES public.appointments(id) ON DELETE CASCADE"
    prescriptions = applied.plan.item(PRESCRIPTIONS)
    assert prescriptions is not None and any(f.startswith("policy change") for f in prescriptions.flags)
    with rolled_back(applied.dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM public.nutrition_goal_targets") == 3
        assert scalar(conn, "SELECT count(*) FROM public.prescriptions") == 1
        conn.execute("DELETE FROM public.users WHERE id = 1")
        assert scalar(conn, "SELECT array_agg(goal_id) FROM public.nutrition_goal_targets") == [2]
        assert scalar(conn, "SELECT count(*) FROM public.prescriptions") == 0
        assert scalar(conn, "SELECT count(*) FROM public.appointments") == 0
        assert scalar(conn, "SELECT count(*) FROM public.chat_messages") == 0
        assert scalar(conn, "SELECT count(*) FROM public.events") == 1


# ---------------------------------------------------------------- 7. self-reference and cross edge
def test_nullable_self_reference_becomes_set_null_and_keeps_the_other_user(applied: AppliedRun) -> None:
    assert applied.after[SELF].definition == "FOREIGN KEY (referred_by) REFERENCES public.users(id) ON DELETE SET NULL"
    assert applied.after[CROSS_EDGE].delete_rule == "n"
    with rolled_back(applied.dsn) as conn:
        conn.execute("DELETE FROM public.users WHERE id = 1")
        assert conn.execute("SELECT id, referred_by FROM public.users").fetchall() == [(2, None)]


def test_an_open_decision_refuses_apply_and_a_kept_self_reference_is_not_touched(make_db: Any,
                                                                                  tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_self_ref_not_null.sql"))
    before = fk_state(dsn)
    with pytest.raises(ApplyError, match=r"apply refused: 1 open decision\(s\).*nodes.root_id: keep \| ghost"):
        full_run(dsn, tmp_path / "open", parent_table="nodes")
    assert fk_state(dsn) == before
    run = full_run(dsn, tmp_path / "kept", parent_table="nodes", rules={"nodes.root_id": "keep"})
    root = "public.nodes.nodes_root_fk"
    assert [r.constraint for r in run.outcome.results] == ["public.node_tags.node_tags_node_id_fkey"]
    assert run.after[root] == run.before[root]
    assert run.verify.ok, run.verify.problems
    item = run.plan.item(root)
    assert item is not None and item.override == "nodes.root_id" and not item.change


# ---------------------------------------------------------------- 8. untouched objects
def test_already_cascade_and_out_of_scope_fks_keep_their_oid_and_the_view_stays(applied: AppliedRun) -> None:
    for key in (DEVICES, CITIES, MEDICATION):
        assert applied.after[key].oid == applied.before[key].oid, key
        assert applied.after[key] == applied.before[key], key
        assert key not in {r.constraint for r in applied.outcome.results}
    with rolled_back(applied.dsn) as conn:
        assert scalar(conn, "SELECT to_regclass('public.active_users') IS NOT NULL") is True
        assert scalar(conn, "SELECT count(*) FROM public.active_users") == 2


# ---------------------------------------------------------------- 9. rules naming nothing
def test_rule_for_a_missing_table_is_a_skipped_note_and_the_run_goes_on(applied: AppliedRun) -> None:
    notes = [n for n in applied.plan.notes if "no_such_table" in n]
    assert len(notes) == 1 and "skipped" in notes[0]
    saved = applied.ctx.load_json("plan.json")
    assert saved["notes"] == list(applied.plan.notes)
    assert applied.outcome.results and not applied.outcome.failed
    assert applied.verify.ok


# ---------------------------------------------------------------- 10. overrides
def test_rules_override_set_null_keeps_the_billing_row(applied: AppliedRun) -> None:
    billing = applied.plan.item(BILLING)
    assert billing is not None and billing.override == "billing" and billing.planned == "SET NULL"
    assert applied.after[BILLING].definition == "FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE SET NULL"
    with rolled_back(applied.dsn) as conn:
        conn.execute("DELETE FROM public.users WHERE id = 1")
        assert conn.execute("SELECT id, user_id FROM public.billing").fetchall() == [(1, None)]


# ---------------------------------------------------------------- 11. verify and idempotence
def test_verify_passes_after_apply_and_replanning_finds_nothing(applied: AppliedRun) -> None:
    assert applied.verify.ok, applied.verify.problems
    assert applied.verify.replan.changes == ()
    statuses = {row["constraint"]: row["status"] for row in applied.verify.comparison.rows}
    assert statuses[MEMBERSHIPS] == "changed as planned"
    assert statuses[DEVICES] == "unchanged"
    assert applied.ctx.load_json("verify.json")["ok"] is True


def test_second_full_run_changes_nothing(applied: AppliedRun, tmp_path: Path) -> None:
    again = full_run(applied.dsn, tmp_path, rules=EDGE_RULES)
    assert again.plan.changes == ()
    assert again.outcome.results == []
    assert again.after == applied.after
    assert again.verify.ok, again.verify.problems


def test_apply_again_from_the_old_snapshot_finds_everything_already_done(applied: AppliedRun,
                                                                         tmp_path: Path) -> None:
    ctx = new_ctx(applied.dsn, tmp_path, rules=EDGE_RULES)
    ctx.save_text(steps.SNAPSHOT_BEFORE, applied.ctx.path(steps.SNAPSHOT_BEFORE).read_text())
    outcome = steps.apply(ctx)
    assert {r.constraint for r in outcome.results} == {i.fk.key for i in applied.plan.changes}
    assert {r.status for r in outcome.results} == {"already"}
    assert fk_state(applied.dsn) == applied.after


def test_dry_run_changes_nothing_and_verifies(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    run = full_run(dsn, tmp_path, rules=EDGE_RULES, dry_run=True)
    assert run.outcome.dry_run is True and run.outcome.results == []
    assert any("memberships_owner_fk" in s["sql"] for s in run.outcome.statements)
    assert run.after == run.before
    assert run.verify.ok, run.verify.problems
    assert run.verify.replan.changes  # still to do


# ---------------------------------------------------------------- 12. rollback
def test_rollback_restores_every_definition_and_comment_and_the_delete_fails_again(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    error_before = delete_user_error(dsn)
    run = full_run(dsn, tmp_path / "run", rules=EDGE_RULES)
    assert run.verify.ok
    with rolled_back(dsn) as conn:
        conn.execute("DELETE FROM public.users WHERE id = 1")  # the change did let it through
    evidence.write_manifest(run.ctx.run_dir, {"run_id": "t"})

    ctx2 = new_ctx(dsn, tmp_path / "rollback", rules=EDGE_RULES)
    outcome = steps.rollback(ctx2, run.ctx.run_dir)
    assert outcome.ok, (outcome.comparison.problems, [r.error for r in outcome.results])
    changed = {i.fk.key for i in run.plan.changes}
    assert {r.constraint for r in outcome.results} == changed
    assert all(r.status == "applied" for r in outcome.results)

    restored = fk_state(dsn)
    assert set(restored) == set(run.before)
    for key, original in run.before.items():
        now = restored[key]
        assert (now.definition, now.comment, now.validated) == \
            (original.definition, original.comment, original.validated), key
        if key not in changed and key not in EVENT_CLONES:
            assert now.oid == original.oid, key
    assert restored[MEMBERSHIPS].comment == "the owner's memberships"
    assert restored[LEGACY].definition.endswith(" NOT VALID")

    error_after = delete_user_error(dsn)
    assert type(error_after) is type(error_before)
    assert error_after.sqlstate == error_before.sqlstate == "23503"
    assert str(error_after).split(" violates ")[0] == str(error_before).split(" violates ")[0] == \
        'update or delete on table "users"'
    # PostgreSQL fires the RI triggers in trigger-name (oid) order, so the swapped-back constraints may
    # be met in another order: whichever one it names is restored and blocks as it did before.
    for error in (error_before, error_after):
        blocker = next(k for k in run.before if k.endswith("." + str(error.diag.constraint_name)))
        assert restored[blocker].definition == run.before[blocker].definition
        assert run.before[blocker].delete_rule in ("a", "r")


# ---------------------------------------------------------------- 13. lock contention
def test_fks_on_a_locked_table_fail_within_lock_timeout_unchanged_and_a_second_apply_completes_them(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = fk_state(dsn)
    ctx = new_ctx(dsn, tmp_path, rules=EDGE_RULES, lock_timeout="200ms", lock_retries=2, retry_backoff=0.05)
    steps.inspect(ctx)
    the_plan = steps.plan(ctx)

    stop = threading.Event()
    latencies: list[float] = []
    reader_errors: list[BaseException] = []

    def read_users() -> None:
        try:
            with psycopg.connect(dsn, autocommit=True) as reader:
                reader.execute("SET statement_timeout = '10s'")
                while not stop.is_set():
                    started = time.perf_counter()
                    reader.execute("SELECT count(*) FROM public.users").fetchone()
                    latencies.append(time.perf_counter() - started)
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            reader_errors.append(exc)

    blocker = psycopg.connect(dsn)
    reader = threading.Thread(target=read_users)
    try:
        blocker.execute("LOCK TABLE public.appointments IN ACCESS SHARE MODE")
        reader.start()
        started = time.perf_counter()
        outcome = steps.apply(ctx)
        elapsed = time.perf_counter() - started
    finally:
        stop.set()
        reader.join(timeout=30)
        blocker.rollback()
        blocker.close()

    assert not reader_errors, reader_errors
    assert len(latencies) > 10
    assert max(latencies) < 1.0, f"a read of users waited {max(latencies):.2f}s"
    # Swapping an FK takes ACCESS EXCLUSIVE on its table and on the table it references (the plan's
    # lock_cost says so): both FKs touching appointments wait for the blocker; nothing else does.
    touching = {i.fk.key for i in the_plan.changes if ("public", "appointments") in (i.fk.child, i.fk.parent)}
    assert touching == {APPOINTMENTS, PRESCRIPTIONS}
    failed = {r.constraint: r for r in outcome.failed}
    assert set(failed) == touching, {k: r.error for k, r in failed.items()}
    # The first gives up after its attempts; the blocker is then known, and the second FK that needs
    # the same table is reported at once instead of stalling the traffic on it again.
    first = failed[APPOINTMENTS]
    assert first.error is not None and "lock_timeout" in first.error, first.error
    assert (first.attempts, first.lock_waits, first.sqlstate) == (2, 2, "55P03")
    assert first.swap_ms >= 2 * 200 * 0.9  # the time spent waiting is recorded
    second = failed[PRESCRIPTIONS]
    assert second.error is not None and "public.appointments is held by backend pid" in second.error, second.error
    assert second.attempts == 0
    assert elapsed < 10
    middle = fk_state(dsn)
    for key in touching:
        assert middle[key] == before[key], key  # same oid, same definition, same comment
    others = {i.fk.key for i in the_plan.changes} - touching
    assert {r.constraint for r in outcome.results if r.status == "applied"} == others
    for key in others:
        assert middle[key].oid != before[key].oid, key
        assert middle[key].delete_rule != before[key].delete_rule, key
    journal = ctx.path("apply_journal.jsonl").read_text()
    assert journal.count('"event": "lock_timeout"') == 2 and journal.count('"event": "skipped"') == 1

    second = steps.apply(ctx)
    assert {r.constraint: r.status for r in second.results if r.status != "already"} == \
        {key: "applied" for key in touching}
    assert not second.failed
    final = fk_state(dsn)
    assert final[APPOINTMENTS].definition == "FOREIGN KEY (user_id) REFERENCES public.users(id) ON DELETE CASCADE"
    assert final[PRESCRIPTIONS].definition == \
        "FOREIGN KEY (appointment_id) REFERENCES public.appointments(id) ON DELETE CASCADE"
    for key in others:
        assert final[key] == middle[key], key  # the second apply did not touch the ones already done
    assert steps.verify(ctx).ok


# ---------------------------------------------------------------- 14. advisory lock
def test_apply_refuses_while_another_run_holds_the_advisory_lock(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = fk_state(dsn)
    ctx = new_ctx(dsn, tmp_path, rules=EDGE_RULES)
    steps.inspect(ctx)
    steps.plan(ctx)
    with psycopg.connect(dsn, autocommit=True) as holder:
        with execute.run_lock(holder):
            with pytest.raises(PreflightFailed, match="another runbook run"):
                steps.apply(ctx)
            checks = {c.check: c for c in steps.preflight(ctx).checks}
            assert checks["advisory lock"].status == "fail"
    assert fk_state(dsn) == before
    assert not ctx.path("apply_journal.jsonl").exists()


# ---------------------------------------------------------------- 15. backup required
def test_apply_refuses_without_a_backup_record_when_backup_is_enabled(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = fk_state(dsn)
    ctx = new_ctx(dsn, tmp_path / "run", rules=EDGE_RULES,
                  backup={"enabled": True, "dir": str(tmp_path / "backups")})
    steps.inspect(ctx)
    steps.plan(ctx)
    assert not ctx.path("backup.json").exists()
    with pytest.raises(ApplyError, match="backup"):
        steps.apply(ctx)
    assert fk_state(dsn) == before


# ---------------------------------------------------------------- 16. privileges
@contextmanager
def weak_role(server_dsn: str) -> Iterator[str]:
    role = f"rb_weak_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        yield role
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_preflight_fails_privileges_for_a_role_that_owns_nothing(
        make_db: Any, server_dsn: str, tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_reserved_parent.sql"))
    before = fk_state(dsn)
    with weak_role(server_dsn) as role:
        ctx = new_ctx(make_conninfo(dsn, user=role), tmp_path, parent_table="user")
        result = steps.preflight(ctx)
    checks = {c.check: c for c in result.checks}
    assert checks["role"].detail == role
    privileges = checks["privileges"]
    assert privileges.status == "fail"
    assert not result.ok
    for table in ('public.user', 'public.group', 'Order Data.Line Item', 'public.select'):
        assert table in privileges.detail, privileges.detail
    assert fk_state(dsn) == before


def test_preflight_reports_privileges_for_a_weak_role_on_a_database_with_not_valid_fks(
        make_db: Any, server_dsn: str, tmp_path: Path) -> None:
    """The edge-case schema has a NOT VALID FK, whose orphans inspect counts with a SELECT."""
    dsn = make_db(sql_file("edge_cases.sql"))
    with weak_role(server_dsn) as role:
        ctx = new_ctx(make_conninfo(dsn, user=role), tmp_path, rules=EDGE_RULES)
        result = steps.preflight(ctx)
    privileges = {c.check: c for c in result.checks}["privileges"]
    assert privileges.status == "fail"
    assert "public.memberships" in privileges.detail


# ---------------------------------------------------------------- 17. injection
def test_table_named_like_an_injection_plans_applies_and_verifies(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_injection.sql"))
    run = full_run(dsn, tmp_path)
    key = 'public.x"; DROP TABLE users; --.fk"; DROP TABLE users; --'
    assert [(r.constraint, r.status) for r in run.outcome.results] == [(key, "applied")]
    assert run.verify.ok, run.verify.problems
    assert run.after[key].definition == \
        'FOREIGN KEY ("user_id""); DROP TABLE users; --") REFERENCES public.users(id) ON DELETE CASCADE'
    assert run.after[key].comment == "it's'; DROP TABLE users; --"
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert scalar(conn, "SELECT to_regclass('public.users') IS NOT NULL") is True
        conn.execute("DELETE FROM public.users WHERE id = 1")
        assert scalar(conn, 'SELECT array_agg(id) FROM public."x""; DROP TABLE users; --"') == [2]
