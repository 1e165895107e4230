"""The policy, decided offline over hand-made snapshots: every rule has a reason a test can pin down."""
from __future__ import annotations

from dataclasses import replace

import pytest

from runbook_lib.catalog import ReferenceColumn
from runbook_lib.errors import PlanError
from runbook_lib.graph import cascade_tree_lines, deletion_set
from runbook_lib.params import validate
from runbook_lib.plan import (ADDED, AMBIGUOUS, CROSS, OWNERSHIP, REFERENCE, SELF_REFERENCE, SHARED, Plan,
                              make_plan)
from tests.factories import fk, snapshot


def plan_for(*fks, rules=None, version=150000, params=None, snap=None, **kw):  # type: ignore[no-untyped-def]
    values = {"parent_table": kw.pop("parent", "users"), "rules": rules or {}, **(params or {})}
    return make_plan(snap or snapshot(*fks, version=version, parent=values["parent_table"], **kw), validate(values))


def item(plan: Plan, table: str, name: str):  # type: ignore[no-untyped-def]
    found = plan.item(f"public.{table}.{name}")
    assert found is not None, [i.fk.key for i in plan.items]
    return found


def test_deletion_set_distances_follow_shortest_paths() -> None:
    fks = [fk("goals", "g_u", "users"), fk("targets", "t_g", "goals"), fk("targets", "t_u", "users"),
           fk("cities", "c_c", "countries")]
    dset = deletion_set(fks, ("public", "users"))
    assert dset == {("public", "users"): 0, ("public", "goals"): 1, ("public", "targets"): 1}


def test_ownership_edges_become_cascade_second_level_included() -> None:
    plan = plan_for(fk("goals", "g_u", "users"), fk("targets", "t_g", "goals", ("goal_id",)))
    assert {(i.fk.name, i.kind, i.planned) for i in plan.items} == {
        ("g_u", OWNERSHIP, "CASCADE"), ("t_g", OWNERSHIP, "CASCADE")}
    assert not plan.decisions


def test_restrict_on_a_path_is_converted_and_flagged() -> None:
    plan = plan_for(fk("appts", "a_u", "users"), fk("rx", "rx_a", "appts", ("appt_id",), on_delete="RESTRICT"))
    rx = item(plan, "rx", "rx_a")
    assert rx.planned == "CASCADE" and any("RESTRICT converted" in f for f in rx.flags)


def test_parent_self_reference_never_cascades() -> None:
    nullable = plan_for(fk("users", "ref", "users", ("referred_by",), not_null=False))
    assert nullable.items[0].kind == SELF_REFERENCE and nullable.items[0].planned == "SET NULL"
    required = plan_for(fk("users", "mgr", "users", ("manager_id",), not_null=True))
    mgr = required.items[0]
    assert mgr.open and not mgr.change and mgr.decision is not None
    assert mgr.decision.rules == ("keep", "ghost")
    with pytest.raises(PlanError, match="self-reference"):
        plan_for(fk("users", "ref", "users", ("referred_by",), not_null=False), rules={"ref": "CASCADE"})


def test_actor_columns_are_references_never_cascades() -> None:
    fks = [fk("posts", "p_up", "users", ("uploader_id",)),
           fk("posts", "p_appr", "users", ("approver_id",), not_null=False),
           fk("topics", "t_upd", "users", ("updater_id",), not_null=False),
           fk("topics", "t_cre", "users", ("creator_id",)),
           fk("bans", "b_banner", "users", ("banner_id",), not_null=False),
           fk("bans", "b_user", "users", ("banned_user_id",))]
    plan = plan_for(*fks)
    assert item(plan, "posts", "p_appr").kind == REFERENCE and item(plan, "posts", "p_appr").planned == "SET NULL"
    assert item(plan, "topics", "t_upd").planned == "SET NULL"
    creator = item(plan, "topics", "t_cre")
    assert creator.kind == REFERENCE and creator.open
    assert creator.decision is not None and creator.decision.rules == ("keep", "ghost", "CASCADE")
    # Several FKs from one table to the parent and none named like the owner: none owns, so the NOT NULL
    # uploader is a decision (a team may want the uploads kept: `posts.uploader_id: ghost`).
    uploader = item(plan, "posts", "p_up")
    assert uploader.kind == REFERENCE and uploader.open and "at most one owns" in uploader.reason
    assert item(plan, "bans", "b_user").open and item(plan, "bans", "b_banner").planned == "SET NULL"
    owned = plan_for(*fks, params={"owner_columns": ["user_id", "*_user_id"]})
    assert item(owned, "bans", "b_user").kind == OWNERSHIP and item(owned, "bans", "b_user").planned == "CASCADE"


def test_several_fks_to_the_parent_at_most_one_owns() -> None:
    fks = [fk("orders", "o_user", "users", ("user_id",)), fk("orders", "o_sales", "users", ("salesperson_id",)),
           fk("transfers", "t_from", "users", ("from_account",)), fk("transfers", "t_to", "users", ("to_account",)),
           fk("messages", "m_s", "users", ("sender_id",)), fk("messages", "m_r", "users", ("recipient_id",))]
    plan = plan_for(*fks)
    assert item(plan, "orders", "o_user").planned == "CASCADE"
    sales = item(plan, "orders", "o_sales")
    assert sales.kind == REFERENCE and sales.open and "owned through user_id" in sales.reason
    for table, name in (("transfers", "t_from"), ("transfers", "t_to"), ("messages", "m_s"), ("messages", "m_r")):
        assert item(plan, table, name).open and item(plan, table, name).kind == REFERENCE
    assert "at most one owns" in item(plan, "transfers", "t_to").reason


def test_comments_of_others_on_a_users_post_are_shared() -> None:
    fks = [fk("posts", "p_author", "users", ("author_id",)), fk("comments", "c_author", "users", ("author_id",)),
           fk("comments", "c_post", "posts", ("post_id",)),
           fk("votes", "v_user", "users"), fk("votes", "v_post", "posts", ("post_id",), not_null=False)]
    plan = plan_for(*fks)
    post = item(plan, "comments", "c_post")
    assert post.kind == SHARED and post.open and post.decision is not None
    assert post.decision.rules == ("keep", "CASCADE")
    assert item(plan, "votes", "v_post").kind == SHARED and item(plan, "votes", "v_post").planned == "SET NULL"
    assert item(plan, "comments", "c_author").planned == "CASCADE"
    line = plan.decision_lines()[0]
    assert "comments.post_id -> public.posts" in line and "{comments.post_id: keep | CASCADE}" in line


def test_a_composite_key_carrying_the_owner_is_the_same_owner() -> None:
    fks = [fk("goals", "g_u", "users"), fk("targets", "t_u", "users"),
           fk("targets", "t_g", "goals", ("user_id", "goal_id"), ("user_id", "id"))]
    plan = plan_for(*fks)
    target = item(plan, "targets", "t_g")
    assert target.kind == OWNERSHIP and target.planned == "CASCADE" and "same owner by construction" in target.reason


def test_two_owner_paths_to_different_tables_are_a_decision() -> None:
    fks = [fk("questions", "q_asker", "users", ("asker_id",)), fk("experts", "e_user", "users"),
           fk("answers", "a_q", "questions", ("question_id",)), fk("answers", "a_e", "experts", ("expert_id",))]
    plan = plan_for(*fks)
    assert item(plan, "questions", "q_asker").planned == "CASCADE"
    for name in ("a_q", "a_e"):
        answer = item(plan, "answers", name)
        assert answer.kind == AMBIGUOUS and answer.open
    closed = plan_for(*fks, rules={"answers.question_id": "CASCADE", "a_e": "CASCADE"})
    assert not closed.decisions and item(closed, "answers", "a_q").planned == "CASCADE"
    assert "decision closed by rules['answers.question_id']" in item(closed, "answers", "a_q").reason


def test_existing_rules_that_keep_rows_are_kept_and_cascades_on_references_are_questioned() -> None:
    fks = [fk("audit", "a_u", "users", on_delete="SET NULL", not_null=False),
           fk("approvals", "ap", "users", ("approver_id",), on_delete="CASCADE", not_null=False)]
    plan = plan_for(*fks)
    audit, approvals = item(plan, "audit", "a_u"), item(plan, "approvals", "ap")
    assert not audit.change and "outlive" in audit.flags[0]
    assert approvals.open and approvals.decision is not None
    assert approvals.decision.rules == ("keep", "ghost", "SET NULL")


def test_tables_no_delete_reaches_are_left_alone() -> None:
    fks = [fk("mod_log", "ml_mod", "users", ("moderator_id",), not_null=False),
           fk("mod_log_details", "mld", "mod_log", ("log_id",))]
    plan = plan_for(*fks)
    details = item(plan, "mod_log_details", "mld")
    assert not details.change and details.reason.startswith("not reached") and not plan.decisions


def test_camel_case_names_are_matched() -> None:
    plan = plan_for(fk("events", "e_u", "users", ("userId",)), fk("events", "e_c", "users", ("createdBy",),
                                                                  not_null=False))
    assert item(plan, "events", "e_u").kind == OWNERSHIP and item(plan, "events", "e_c").kind == REFERENCE


def test_vocabularies_are_parameters() -> None:
    fks = [fk("posts", "p_up", "users", ("uploader_id",)), fk("posts", "p_x", "users", ("poster_id",))]
    assert item(plan_for(*fks), "posts", "p_up").open
    plan = plan_for(*fks, params={"owner_columns": ["uploader_id"], "actor_columns": ["poster_id"]})
    assert item(plan, "posts", "p_up").planned == "CASCADE" and item(plan, "posts", "p_x").open


def test_ghost_reassigns_with_set_default_and_reverts_exactly() -> None:
    snap = replace(snapshot(fk("posts", "p_u", "users", ("author_id",)), fk("posts", "p_c", "users", ("creator_id",))),
                   parent_key=("id",))
    with pytest.raises(PlanError, match="set ghost.key"):
        plan_for(snap=snap, rules={"posts.creator_id": "ghost"})
    plan = plan_for(snap=snap, rules={"posts.creator_id": "ghost"},
                    params={"ghost": {"key": 0, "values": {"email": "ghost@invalid"}}})
    ghost = item(plan, "posts", "p_c")
    assert ghost.planned == "SET DEFAULT" and ghost.ghost_defaults == (("creator_id", 0),) and ghost.change
    forward = ghost.to_dict()["forward"][0]
    assert forward.startswith('ALTER TABLE "public"."posts" ALTER COLUMN "creator_id" SET DEFAULT 0, DROP CONSTRAINT')
    assert forward.endswith("ON DELETE SET DEFAULT NOT VALID")
    assert 'ALTER COLUMN "creator_id" DROP DEFAULT' in ghost.to_dict()["reverse"][0]
    assert plan.ghost_row is not None
    script = plan.forward_script()
    assert ('INSERT INTO "public"."users" ("id", "email") VALUES (0, \'ghost@invalid\') ON CONFLICT ("id") '
            'DO NOTHING;') in script
    assert script.index("INSERT INTO") < script.index('ALTER TABLE "')


def test_ghost_is_refused_where_it_cannot_work() -> None:
    base = [fk("posts", "p_u", "users", ("author_id",)), fk("comments", "c_p", "posts", ("post_id",)),
            fk("comments", "c_u", "users", ("author_id",))]
    with pytest.raises(PlanError, match="references public.posts"):
        plan_for(*base, rules={"comments.post_id": "ghost"}, params={"ghost": {"key": 0}})
    with_default = fk("posts", "p_c", "users", ("creator_id",), column_defaults=("1",))
    with pytest.raises(PlanError, match="already has a default"):
        plan_for(*base, with_default, rules={"p_c": "ghost"}, params={"ghost": {"key": 0}})


def test_opt_in_fk_on_a_reference_column_without_one() -> None:
    legacy = ReferenceColumn("public", "legacy_uploads", "user_id", "bigint", False, True, 500,
                             "named like an owner (user_id)", existing=490, missing=3)
    snap = replace(snapshot(fk("posts", "p_u", "users", ("author_id",)), extra_tables=("legacy_uploads",)),
                   parent_key=("id",), references=(legacy,))
    assert not [i for i in plan_for(snap=snap).items if i.adds]
    plan = plan_for(snap=snap, params={"references": {"legacy_uploads.user_id": "SET NULL"}})
    added = item(plan, "legacy_uploads", "legacy_uploads_user_id_fkey")
    assert added.kind == ADDED and added.change and added.current == "(no FK)" and not added.validate_after
    assert added.to_dict()["forward"] == ['ALTER TABLE "public"."legacy_uploads" ADD CONSTRAINT '
                                          '"legacy_uploads_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES '
                                          '"public"."users" ("id") ON UPDATE NO ACTION ON DELETE SET NULL NOT VALID']
    assert added.to_dict()["reverse"] == ['ALTER TABLE "public"."legacy_uploads" DROP CONSTRAINT IF EXISTS '
                                          '"legacy_uploads_user_id_fkey"']
    clean = replace(snap, references=(replace(legacy, missing=0),))
    assert item(plan_for(snap=clean, params={"references": {"public.legacy_uploads.user_id": "CASCADE"}}),
                "legacy_uploads", "legacy_uploads_user_id_fkey").validate_after
    noted = plan_for(snap=snap, params={"references": {"nowhere.user_id": "CASCADE"}})
    assert any("'nowhere.user_id' skipped" in n for n in noted.notes)


def test_expensive_cascades_are_flagged_with_the_index_that_fixes_them() -> None:
    big = fk("events", "e_u", "users", indexed=False, child_rows=5_000_000)
    flags = plan_for(big).items[0].flags
    assert any(f.startswith("expensive cascade: public.events has ~5,000,000 rows") and
               'CREATE INDEX CONCURRENTLY "events_user_id_fk_idx" ON "public"."events" ("user_id")' in f
               for f in flags)


def test_overrides_win_and_are_shown_in_precedence_order() -> None:
    fks = [fk("billing", "b_u", "users", not_null=False), fk("audit", "a_u", "users", not_null=False)]
    plan = plan_for(*fks, rules={"billing": "SET NULL", "public.audit": "RESTRICT", "a_u": "keep"})
    billing, audit = item(plan, "billing", "b_u"), item(plan, "audit", "a_u")
    assert billing.planned == "SET NULL" and billing.override == "billing"
    # The constraint name is more specific than the table: it wins.
    assert audit.override == "a_u" and not audit.change


def test_set_null_override_on_not_null_column_is_refused() -> None:
    with pytest.raises(PlanError, match="NOT NULL"):
        plan_for(fk("billing", "b_u", "users", not_null=True), rules={"billing": "SET NULL"})


def test_unmatched_rules_are_skipped_with_a_visible_note() -> None:
    plan = plan_for(fk("goals", "g_u", "users"), fk("cities", "c_c", "countries"),
                    rules={"nowhere": "CASCADE", "c_c": "keep"})
    notes = "\n".join(plan.notes)
    assert "'nowhere' skipped: no table, column or constraint" in notes
    assert "'c_c' skipped: the constraint is not on a path" in notes


def test_already_planned_and_outside_fks_are_not_changes() -> None:
    plan = plan_for(fk("devices", "d_u", "users", on_delete="CASCADE"), fk("cities", "c_c", "countries"))
    assert [i.fk.name for i in plan.items] == ["d_u"] and not plan.changes


def test_no_fk_reaching_the_parent_means_nothing_to_change() -> None:
    plan = plan_for(fk("cities", "c_c", "countries"))
    assert not plan.items and not plan.decisions and "nothing to change" in plan.forward_script()


def test_partitioned_swap_validates_under_lock_before_18_only() -> None:
    part = fk("events", "e_u", "users", child_kind="p")
    old = plan_for(part, version=150004).items[0]
    new = plan_for(part, version=180000).items[0]
    assert not old.not_valid_swap and "validates while it holds" in old.lock_cost
    assert "NOT VALID" not in old.to_dict()["forward"][0] and not old.validate_after
    assert new.not_valid_swap and new.validate_after and new.to_dict()["forward"][0].endswith("NOT VALID")


def test_not_valid_fk_stays_not_valid() -> None:
    not_valid = plan_for(fk("notes", "n_u", "users", validated=False)).items[0]
    assert not_valid.change and not not_valid.validate_after and not_valid.to_dict()["forward_validate"] is None


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


def test_open_decisions_are_listed_in_the_script_and_not_applied() -> None:
    plan = plan_for(fk("topics", "t_cre", "users", ("creator_id",)))
    assert not plan.changes and len(plan.decisions) == 1
    assert "-- NOT APPLIED until decided: decision needed: public.topics.creator_id" in plan.forward_script()
    assert CROSS and SHARED  # the classes a plan item can carry are exported
