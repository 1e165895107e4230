"""The policy, decided offline over hand-made snapshots: every rule has a reason a test can pin down."""
from __future__ import annotations

import pytest

from runbook_lib.errors import PlanError
from runbook_lib.graph import cascade_tree_lines, deletion_set
from runbook_lib.params import validate
from runbook_lib.plan import CROSS, OWNERSHIP, SELF_REFERENCE, make_plan
from tests.factories import fk, snapshot


def plan_for(*fks, rules=None, version=150000, **kw):  # type: ignore[no-untyped-def]
    params = validate({"parent_table": kw.pop("parent", "users"), "rules": rules or {}})
    return make_plan(snapshot(*fks, version=version, **kw), params)


def test_deletion_set_distances_follow_shortest_paths() -> None:
    fks = [fk("goals", "g_u", "users"), fk("targets", "t_g", "goals"), fk("targets", "t_u", "users"),
           fk("cities", "c_c", "countries")]
    dset = deletion_set(fks, ("public", "users"))
    assert dset == {("public", "users"): 0, ("public", "goals"): 1, ("public", "targets"): 1}


def test_ownership_edges_become_cascade_second_level_included() -> None:
    plan = plan_for(fk("goals", "g_u", "users"), fk("targets", "t_g", "goals", ("goal_id",)))
    assert {(i.fk.name, i.kind, i.planned) for i in plan.items} == {
        ("g_u", OWNERSHIP, "CASCADE"), ("t_g", OWNERSHIP, "CASCADE")}


def test_restrict_on_a_path_is_converted_and_flagged() -> None:
    plan = plan_for(fk("appts", "a_u", "users"), fk("rx", "rx_a", "appts", ("appt_id",), on_delete="RESTRICT"))
    item = plan.item("public.rx.rx_a")
    assert item is not None and item.planned == "CASCADE"
    assert any("policy change" in f for f in item.flags)


def test_parent_self_reference_never_cascades() -> None:
    nullable = plan_for(fk("users", "ref", "users", ("referred_by",), not_null=False))
    assert nullable.items[0].kind == SELF_REFERENCE and nullable.items[0].planned == "SET NULL"
    required = plan_for(fk("users", "mgr", "users", ("manager_id",), not_null=True))
    assert required.items[0].planned == "NO ACTION" and not required.items[0].change
    assert any("left alone" in f for f in required.items[0].flags)
    with pytest.raises(PlanError, match="self-reference"):
        plan_for(fk("users", "ref", "users", ("referred_by",), not_null=False), rules={"ref": "CASCADE"})


def test_cross_edges_get_the_least_surprising_rule() -> None:
    fks = [fk("sessions", "s_u", "users"), fk("messages", "m_s", "sessions", ("session_id",)),
           fk("sessions", "s_last", "messages", ("last_message_id",), not_null=False)]
    item = plan_for(*fks).item("public.sessions.s_last")
    assert item is not None and item.kind == CROSS and item.planned == "SET NULL"
    assert "CASCADE here would" in item.reason
    strict = [*fks[:2], fk("sessions", "s_last", "messages", ("last_message_id",), on_delete="RESTRICT")]
    item = plan_for(*strict).item("public.sessions.s_last")
    assert item is not None and item.planned == "CASCADE" and any("RESTRICT" in f for f in item.flags)
    assert any("another owner" in f for f in item.flags)


def test_overrides_win_and_are_shown_in_precedence_order() -> None:
    fks = [fk("billing", "b_u", "users", not_null=False), fk("audit", "a_u", "users", not_null=False)]
    plan = plan_for(*fks, rules={"billing": "SET NULL", "public.audit": "RESTRICT", "a_u": "keep"})
    billing, audit = plan.item("public.billing.b_u"), plan.item("public.audit.a_u")
    assert billing is not None and billing.planned == "SET NULL" and billing.override == "billing"
    # The constraint name is more specific than the table: it wins.
    assert audit is not None and audit.override == "a_u" and not audit.change


def test_set_null_override_on_not_null_column_is_refused() -> None:
    with pytest.raises(PlanError, match="NOT NULL"):
        plan_for(fk("billing", "b_u", "users", not_null=True), rules={"billing": "SET NULL"})


def test_unmatched_rules_are_skipped_with_a_visible_note() -> None:
    plan = plan_for(fk("goals", "g_u", "users"), fk("cities", "c_c", "countries"),
                    rules={"ghost": "CASCADE", "cities": "CASCADE", "c_c": "keep"})
    notes = "\n".join(plan.notes)
    assert "'ghost' skipped: no table or constraint" in notes
    assert "'cities' skipped: the table has no foreign key into the deletion set" in notes
    assert "'c_c' skipped: the constraint is not on a path" in notes


def test_already_planned_and_outside_fks_are_not_changes() -> None:
    plan = plan_for(fk("devices", "d_u", "users", on_delete="CASCADE"), fk("cities", "c_c", "countries"))
    assert [i.fk.name for i in plan.items] == ["d_u"] and not plan.changes


def test_existing_set_null_on_an_ownership_edge_is_kept_and_flagged() -> None:
    plan = plan_for(fk("audit", "a_u", "users", on_delete="SET NULL", not_null=False))
    assert not plan.changes and "outlive" in plan.items[0].flags[0]


def test_partitioned_swap_validates_under_lock_before_18_only() -> None:
    part = fk("events", "e_u", "users", child_kind="p")
    old = plan_for(part, version=150004).items[0]
    new = plan_for(part, version=180000).items[0]
    assert not old.not_valid_swap and "validates while it holds" in old.lock_cost
    assert "NOT VALID" not in old.to_dict()["forward"][0] and not old.validate_after
    assert new.not_valid_swap and new.validate_after and new.to_dict()["forward"][0].endswith("NOT VALID")


def test_not_valid_fk_stays_not_valid() -> None:
    item = plan_for(fk("notes", "n_u", "users", validated=False)).items[0]
    assert item.change and not item.validate_after and item.to_dict()["forward_validate"] is None


def test_scripts_and_tree() -> None:
    fks = [fk("goals", "g_u", "users"), fk("targets", "t_g", "goals", ("goal_id",))]
    plan = plan_for(*fks)
    script = plan.forward_script()
    assert script.count("BEGIN;") == 2 and "SET LOCAL lock_timeout = '2000ms';" in script
    assert 'ON DELETE CASCADE NOT VALID;' in script and 'VALIDATE CONSTRAINT "g_u";' in script
    assert 'ON DELETE NO ACTION NOT VALID;' in plan.rollback_script()
    lines = cascade_tree_lines(fks, ("public", "users"), {f.key: "CASCADE" for f in fks})
    assert lines == ["public.users", "└── public.goals [user_id] CASCADE",
                     "    └── public.targets [goal_id] CASCADE"]
