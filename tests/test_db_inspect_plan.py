"""Inspection and planning against a real PostgreSQL (the suite runs once per server version).

Nothing here changes a foreign key: the edge-case database is inspected once per module and every
test reads the snapshot or the plan made from it. Changes are tested in ``test_db_apply.py``.
"""
from __future__ import annotations

from typing import Any, Iterator

import psycopg
import pytest

from runbook_lib import catalog, render
from runbook_lib import params as params_mod
from runbook_lib import plan as plan_mod
from runbook_lib.catalog import ForeignKey, Snapshot
from runbook_lib.errors import CatalogError, PlanError
from runbook_lib.plan import OWNERSHIP, REFERENCE, SELF_REFERENCE, Plan, PlanItem
from tests.conftest import create_database, drop_database, sql_file
from tests.edge_keys import (LONG_TABLE, LONG_CONSTRAINT, MEMBERSHIPS, LEGACY, EVENTS, AUDIT, LONG, EMAIL, GOALS, TARGETS, APPOINTMENTS, PRESCRIPTIONS, SELF, CROSS_EDGE, DEVICES, BILLING, CITIES, MEDICATION)  # noqa: F401



def make_params(**values: Any) -> params_mod.Parameters:
    raw: dict[str, Any] = {"parent_table": "users", "dry_run": False, "backup": {"enabled": False}}
    raw.update(values)
    return params_mod.validate(raw)


def inspect_db(dsn: str, table: str = "users", schema: str = "public") -> Snapshot:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return catalog.inspect(conn, schema, table)


def item(the_plan: Plan, key: str) -> PlanItem:
    found = the_plan.item(key)
    assert found is not None, f"{key} is not a plan item; items: {[i.fk.key for i in the_plan.items]}"
    return found


def fk_of(snap: Snapshot, key: str) -> ForeignKey:
    found = snap.fk(key)
    assert found is not None, f"{key} not in the snapshot"
    return found


@pytest.fixture(scope="module")
def edge_dsn(server_dsn: str) -> Iterator[str]:
    dsn = create_database(server_dsn, sql_file("edge_cases.sql"))
    yield dsn
    drop_database(server_dsn, dsn)


@pytest.fixture(scope="module")
def edge_snapshot(edge_dsn: str) -> Snapshot:
    return inspect_db(edge_dsn)


@pytest.fixture(scope="module")
def edge_plan(edge_snapshot: Snapshot) -> Plan:
    return plan_mod.make_plan(edge_snapshot, make_params(rules={"billing": "SET NULL"}))


# ---------------------------------------------------------------- 1. composite keys
def test_composite_fk_is_read_in_constraint_column_order_with_all_its_properties(edge_snapshot: Snapshot) -> None:
    fk = fk_of(edge_snapshot, MEMBERSHIPS)
    # The table declares (user_id, tenant); the constraint says (tenant, user_id): its order wins.
    assert fk.columns == ("tenant", "user_id")
    assert fk.ref_columns == ("tenant", "id")
    assert (fk.match, fk.on_update, fk.deferrable, fk.deferred) == ("FULL", "CASCADE", True, True)
    assert fk.comment == "the owner's memberships"


def test_composite_fk_forward_sql_keeps_every_property_but_the_delete_rule(edge_plan: Plan) -> None:
    forward = item(edge_plan, MEMBERSHIPS).to_dict()["forward"]
    assert forward[0] == (
        'ALTER TABLE "public"."memberships" DROP CONSTRAINT "memberships_owner_fk", '
        'ADD CONSTRAINT "memberships_owner_fk" FOREIGN KEY ("tenant", "user_id") '
        'REFERENCES "public"."users" ("tenant", "id") MATCH FULL ON UPDATE CASCADE ON DELETE CASCADE '
        "DEFERRABLE INITIALLY DEFERRED NOT VALID")
    assert forward[1] == ('COMMENT ON CONSTRAINT "memberships_owner_fk" ON "public"."memberships" '
                          "IS 'the owner''s memberships'")


# ---------------------------------------------------------------- 2. NOT VALID
def test_not_valid_fk_orphans_are_counted_in_the_snapshot_and_flagged(edge_snapshot: Snapshot,
                                                                     edge_plan: Plan) -> None:
    assert fk_of(edge_snapshot, LEGACY).validated is False
    assert edge_snapshot.orphans == {LEGACY: 2}
    legacy = item(edge_plan, LEGACY)
    assert "NOT VALID, stays not valid (2 orphan rows)" in legacy.flags
    assert legacy.validate_after is False
    assert legacy.forward_validate() is None
    assert legacy.to_dict()["forward"][0].endswith(" NOT VALID")


# ---------------------------------------------------------------- 3. partitioned child
def test_partitioned_fk_is_one_plan_item_on_the_partitioned_table(edge_dsn: str, edge_snapshot: Snapshot,
                                                                 edge_plan: Plan) -> None:
    with psycopg.connect(edge_dsn, autocommit=True) as conn:
        clones = conn.execute(
            "SELECT conrelid::regclass::text FROM pg_constraint WHERE contype = 'f' AND conparentid <> 0 "
            "ORDER BY 1").fetchall()
    assert [c[0] for c in clones] == ["events_2025", "events_rest"]  # the catalog does hold the clones
    event_items = [i for i in edge_plan.items if i.fk.table.startswith("events")]
    assert [i.fk.key for i in event_items] == [EVENTS]
    assert not [fk for fk in edge_snapshot.foreign_keys if fk.table in ("events_2025", "events_rest")]
    assert event_items[0].fk.partitioned and event_items[0].change


def test_partitioned_fk_swap_is_not_valid_only_from_postgresql_18(edge_plan: Plan, server_version: int) -> None:
    events = item(edge_plan, EVENTS)
    described = events.to_dict()
    if server_version >= 180000:
        assert events.not_valid_swap is True
        assert events.validate_after is True
        assert described["forward"][0].endswith(" NOT VALID")
        assert described["forward_validate"] == 'ALTER TABLE "public"."events" VALIDATE CONSTRAINT "events_user_id_fkey"'
        assert "VALIDATE scans" in events.lock_cost
        assert not any("before PostgreSQL 18" in f for f in events.flags)
    else:
        # Before 18 the partitioned table cannot take NOT VALID: each partition gets a NOT VALID copy,
        # validated on its own, which the swap (validated, no NOT VALID) takes over with no scan.
        assert events.not_valid_swap is False and events.prevalidate is True
        assert events.validate_after is False
        assert described["forward_validate"] is None
        assert described["prevalidate_partitions"] == [["public", "events_2025"], ["public", "events_rest"]]
        assert [text for text in described["forward"]] == [
            'ALTER TABLE "public"."events" DROP CONSTRAINT "events_user_id_fkey"',
            'ALTER TABLE "public"."events_2025" RENAME CONSTRAINT "events_user_id_fkey_rbtmp_'
            + render.temporary_name(events.fk).rsplit("_", 1)[1] + '" TO "events_user_id_fkey"',
            'ALTER TABLE "public"."events_rest" RENAME CONSTRAINT "' + render.temporary_name(events.fk)
            + '" TO "events_user_id_fkey"',
            'ALTER TABLE "public"."events" ADD CONSTRAINT "events_user_id_fkey" FOREIGN KEY ("user_id") '
            'REFERENCES "public"."users" ("id") ON UPDATE NO ACTION ON DELETE CASCADE']
        pre = [(leaf, render.text(add), render.text(check)) for leaf, add, check in events.forward_pre()]
        assert pre[0][1].endswith(" NOT VALID") and "VALIDATE CONSTRAINT" in pre[0][2]
        assert "takes the copies over with no scan" in events.lock_cost
        assert any("pre-validated copy" in f for f in events.flags)


# ---------------------------------------------------------------- 4. names
def test_other_schema_mixed_case_and_63_byte_names_are_planned(edge_plan: Plan) -> None:
    audit = item(edge_plan, AUDIT)
    assert (audit.fk.schema, audit.fk.table, audit.fk.name) == ("Other Schema", "Audit Trail", "Audit Trail → User")
    assert audit.fk.columns == ("User Id",)
    assert (audit.kind, audit.planned) == (OWNERSHIP, "CASCADE")
    assert audit.to_dict()["forward"][0].startswith(
        'ALTER TABLE "Other Schema"."Audit Trail" DROP CONSTRAINT "Audit Trail → User", '
        'ADD CONSTRAINT "Audit Trail → User" FOREIGN KEY ("User Id")')
    long = item(edge_plan, LONG)
    assert len(long.fk.table.encode()) == 63 and len(long.fk.name.encode()) == 63
    assert long.planned == "CASCADE"


def test_parent_named_by_a_reserved_word_is_inspected_and_planned(make_db: Any) -> None:
    dsn = make_db(sql_file("db_reserved_parent.sql"))
    snap = inspect_db(dsn, "user")
    the_plan = plan_mod.make_plan(snap, make_params(parent_table="user"))
    assert the_plan.parent == ("public", "user")
    assert dict(the_plan.deletion_set) == {
        ("public", "user"): 0, ("public", "group"): 1, ("Order Data", "Line Item"): 1, ("public", "select"): 2}
    assert sorted(i.fk.key for i in the_plan.changes) == sorted([
        "public.group.group.user → user", "Order Data.Line Item.Line Item_User ID_fkey",
        "public.select.select_group_fkey"])
    assert all(i.planned == "CASCADE" and i.kind == OWNERSHIP for i in the_plan.items)


# ---------------------------------------------------------------- 5. unique non-PK target
def test_fk_to_a_unique_non_primary_key_column_is_found_and_planned(edge_plan: Plan) -> None:
    email = item(edge_plan, EMAIL)
    assert (email.fk.columns, email.fk.ref_columns) == (("email",), ("email",))
    assert (email.kind, email.current, email.planned) == (OWNERSHIP, "NO ACTION", "CASCADE")


# ---------------------------------------------------------------- 6. second level
def test_second_level_fks_are_ownership_edges_and_explicit_restrict_is_flagged(edge_plan: Plan) -> None:
    assert edge_plan.deletion_set[("public", "nutrition_goal_targets")] == 2
    assert edge_plan.deletion_set[("public", "prescriptions")] == 2
    targets = item(edge_plan, TARGETS)
    assert (targets.kind, targets.planned) == (OWNERSHIP, "CASCADE")
    prescriptions = item(edge_plan, PRESCRIPTIONS)
    assert (prescriptions.current, prescriptions.planned) == ("RESTRICT", "CASCADE")
    assert any(f.startswith("policy change") for f in prescriptions.flags)
    assert not any(f.startswith("policy change") for f in targets.flags)


# ---------------------------------------------------------------- 7. self-references and cross edges
def test_nullable_self_reference_of_the_parent_is_planned_set_null(edge_plan: Plan) -> None:
    self_ref = item(edge_plan, SELF)
    assert (self_ref.kind, self_ref.current, self_ref.planned) == (SELF_REFERENCE, "NO ACTION", "SET NULL")


def test_not_null_self_reference_is_a_decision_until_a_rule_closes_it(make_db: Any) -> None:
    dsn = make_db(sql_file("db_self_ref_not_null.sql"))
    the_plan = plan_mod.make_plan(inspect_db(dsn, "nodes"), make_params(parent_table="nodes"))
    root = item(the_plan, "public.nodes.nodes_root_fk")
    assert root.kind == SELF_REFERENCE
    assert (root.current, root.planned, root.change, root.open) == ("NO ACTION", "NO ACTION", False, True)
    assert root.decision is not None and root.decision.rules == ("keep", "ghost")
    assert the_plan.decision_lines() == [
        "decision needed: public.nodes.root_id -> public.nodes (nodes_root_fk): the parent's self-reference "
        "nodes_root_fk (root_id) is NOT NULL: other public.nodes rows point at the one deleted; close it with "
        "rules: {nodes.root_id: keep | ghost}"]
    assert [i.fk.key for i in the_plan.changes] == ["public.node_tags.node_tags_node_id_fkey"]
    kept = plan_mod.make_plan(inspect_db(dsn, "nodes"), make_params(parent_table="nodes",
                                                                     rules={"nodes.root_id": "keep"}))
    assert not kept.decisions and not item(kept, "public.nodes.nodes_root_fk").change


def test_a_pointer_to_the_last_message_is_a_reference_set_to_null(edge_plan: Plan) -> None:
    cross = item(edge_plan, CROSS_EDGE)
    assert cross.kind == REFERENCE and "named like an actor" in cross.reason
    assert cross.planned == "SET NULL"  # nullable last_message_id: the rows are kept
    assert item(edge_plan, "public.chat_messages.chat_messages_session_id_fkey").kind == OWNERSHIP


@pytest.mark.parametrize("rule_key", ["users", "public.users", "users_referred_by_fkey"])
def test_cascade_override_on_the_parent_self_reference_is_refused(edge_snapshot: Snapshot, rule_key: str) -> None:
    with pytest.raises(PlanError, match="self-reference"):
        plan_mod.make_plan(edge_snapshot, make_params(rules={rule_key: "CASCADE"}))


# ---------------------------------------------------------------- 8. untouched FKs
def test_already_cascade_and_out_of_scope_fks_are_not_changes(edge_plan: Plan) -> None:
    devices = item(edge_plan, DEVICES)
    assert (devices.current, devices.planned, devices.change) == ("CASCADE", "CASCADE", False)
    assert devices.lock_cost == "none: not touched"
    planned_keys = {i.fk.key for i in edge_plan.items}
    assert CITIES not in planned_keys
    assert MEDICATION not in planned_keys
    assert ("public", "countries") not in edge_plan.deletion_set
    assert ("public", "medication_catalog") not in edge_plan.deletion_set


# ---------------------------------------------------------------- 9. rules naming nothing
def test_rule_for_a_missing_table_is_noted_as_skipped(edge_snapshot: Snapshot) -> None:
    the_plan = plan_mod.make_plan(edge_snapshot, make_params(rules={"no_such_table": "CASCADE",
                                                                    "billing": "SET NULL"}))
    assert any("no_such_table" in n and "skipped" in n for n in the_plan.notes)
    assert item(the_plan, BILLING).planned == "SET NULL"  # the rest of the rules still apply


def test_rule_for_a_table_outside_the_deletion_set_is_noted_as_skipped(edge_snapshot: Snapshot) -> None:
    the_plan = plan_mod.make_plan(edge_snapshot, make_params(rules={"cities": "CASCADE"}))
    assert [n for n in the_plan.notes if "cities" in n and "skipped" in n]
    assert item(the_plan, APPOINTMENTS).planned == "CASCADE"


# ---------------------------------------------------------------- 10. overrides
def test_rules_override_wins_and_is_named_on_the_item(edge_plan: Plan) -> None:
    billing = item(edge_plan, BILLING)
    assert billing.override == "billing"
    assert (billing.current, billing.planned) == ("NO ACTION", "SET NULL")
    assert "override: policy said CASCADE" in billing.flags


# ---------------------------------------------------------------- 17. injection
def test_parent_table_parameter_with_sql_injection_is_a_catalog_error(edge_dsn: str) -> None:
    evil = 'x"; DROP TABLE users; --'
    with psycopg.connect(edge_dsn, autocommit=True) as conn:
        with pytest.raises(CatalogError, match="does not exist"):
            catalog.inspect(conn, "public", evil)
        with pytest.raises(CatalogError):
            catalog.inspect(conn, evil, "users")
        assert conn.execute("SELECT to_regclass('public.users') IS NOT NULL").fetchone() == (True,)
        assert conn.execute("SELECT count(*) FROM public.users").fetchone() == (2,)


def test_view_as_parent_is_a_catalog_error(edge_dsn: str) -> None:
    with psycopg.connect(edge_dsn, autocommit=True) as conn:
        with pytest.raises(CatalogError, match="not a table"):
            catalog.inspect(conn, "public", "active_users")
