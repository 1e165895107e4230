"""The ownership policy on a realistic schema (demo/image_board.sql): nobody else's rows are deleted.

Users upload, approve, comment on, vote on and moderate each other's content. The default plan must
stop at every edge the catalog cannot judge; the demo's parameters close each decision; after the
apply, deleting the most active user removes only rows it owned (others' rows are kept, detached or
reassigned to the ghost account), and a rollback restores every definition and column default.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from runbook_lib import params as params_mod
from runbook_lib import evidence, steps
from runbook_lib.demo import ROOT
from runbook_lib.errors import ApplyError
from tests.test_cli import runbook
from tests.test_db_apply import fk_state, full_run, new_ctx, rolled_back, scalar

BOARD = (ROOT / "demo" / "image_board.sql").read_text(encoding="utf-8")
BOARD_RULES = params_mod.read_file(ROOT / "parameters" / "demo_board.yaml")

DECISIONS = {
    "bans.banner_id", "comments.creator_id", "comments.post_id", "comment_votes.comment_id", "dmails.from_id",
    "dmails.to_id", "favorites.post_id", "forum_posts.creator_id", "forum_posts.topic_id",
    "forum_topics.creator_id", "forum_topics.updater_id", "post_versions.post_id", "post_versions.updater_id",
    "post_votes.post_id", "posts.uploader_id", "upgrades.purchaser_id", "upgrades.recipient_id"}


def board_values(**extra: Any) -> dict[str, Any]:
    return {"rules": BOARD_RULES["rules"], "ghost": BOARD_RULES["ghost"],
            "references": BOARD_RULES["references"], **extra}


OTHERS = {
    "posts": "SELECT id FROM posts WHERE uploader_id <> 1",
    "comments": "SELECT id FROM comments WHERE creator_id <> 1",
    "post_votes": "SELECT id FROM post_votes WHERE user_id <> 1",
    "favorites": "SELECT post_id * 1000 + user_id FROM favorites WHERE user_id <> 1",
    "forum_topics": "SELECT id FROM forum_topics WHERE creator_id <> 1",
    "forum_posts": "SELECT id FROM forum_posts WHERE creator_id <> 1",
    "bans": "SELECT id FROM bans WHERE user_id <> 1",
    "upgrades": "SELECT id FROM upgrades WHERE recipient_id <> 1",
    "payments": "SELECT id FROM payments WHERE user_id <> 1",
    "dmails": "SELECT id FROM dmails WHERE owner_id <> 1",
    "post_versions": "SELECT id FROM post_versions",
    "comment_votes": "SELECT id FROM comment_votes WHERE user_id <> 1",
}


def others_rows(conn: psycopg.Connection[Any]) -> dict[str, set[int]]:
    """The rows user 1 does not own, per table, by key: what its deletion must leave in place."""
    return {table: {int(r[0]) for r in conn.execute(query).fetchall()} for table, query in OTHERS.items()}


def missing_rows(before: dict[str, set[int]], after: dict[str, set[int]]) -> dict[str, int]:
    return {table: len(before[table] - after[table]) for table in before if before[table] - after[table]}


def test_the_default_plan_stops_at_every_edge_it_cannot_judge(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    before = fk_state(dsn)
    ctx = new_ctx(dsn, tmp_path)
    steps.inspect(ctx)
    plan = steps.plan(ctx)
    asked = {line.split(": ", 1)[1].split(" -> ")[0].removeprefix("public.") for line in plan.decision_lines()}
    assert asked == DECISIONS
    # Nothing that cascades reaches a row the user does not own: only ownership edges cascade.
    cascading = {i.fk.key for i in plan.items if i.planned == "CASCADE" and not i.open}
    assert all(plan.classes[key].kind == "ownership" for key in cascading), cascading
    assert plan.item("public.posts.posts_approver_id_fkey").planned == "SET NULL"  # type: ignore[union-attr]
    with pytest.raises(ApplyError, match="open decision"):
        steps.apply(ctx)
    assert fk_state(dsn) == before


def test_closed_decisions_delete_no_other_users_rows(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    run = full_run(dsn, tmp_path, **board_values())
    assert not run.plan.decisions and not run.outcome.failed and run.verify.ok, run.verify.problems
    with rolled_back(dsn) as conn:
        kept = others_rows(conn)
        mine = {"posts": scalar(conn, "SELECT count(*) FROM posts WHERE uploader_id = 1"),
                "gifts": scalar(conn, "SELECT count(*) FROM upgrades WHERE purchaser_id = 1 AND recipient_id <> 1")}
        conn.execute("DELETE FROM users WHERE id = 1")
        assert missing_rows(kept, others_rows(conn)) == {}
        # The uploads, history, discussion, bans and gifts the user made stay, now the ghost account's.
        assert scalar(conn, "SELECT count(*) FROM posts WHERE uploader_id = 0") == mine["posts"]
        assert scalar(conn, "SELECT count(*) FROM upgrades WHERE purchaser_id = 0") == mine["gifts"]
        assert scalar(conn, "SELECT count(*) FROM posts WHERE approver_id = 1") == 0
        assert scalar(conn, "SELECT count(*) FROM bans WHERE banner_id = 0") > 0
        assert scalar(conn, "SELECT name FROM users WHERE id = 0") == "deleted user"
        # What the user owned is gone.
        for table in ("user_profiles", "saved_searches", "post_votes", "favorites", "payments", "bans", "audit_log"):
            assert scalar(conn, f"SELECT count(*) FROM ONLY {table} WHERE user_id = 1") == 0, table
        assert scalar(conn, "SELECT count(*) FROM dmails WHERE owner_id = 1") == 0


def test_ghost_and_added_fks_roll_back_exactly(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    original = fk_state(dsn)
    run = full_run(dsn, tmp_path / "run", **board_values())
    assert run.verify.ok, run.verify.problems
    with rolled_back(dsn) as conn:
        assert scalar(conn, "SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef d JOIN pg_attribute a "
                            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
                            "WHERE d.adrelid = 'public.posts'::regclass AND a.attname = 'uploader_id'") is not None
        validated = dict(conn.execute("SELECT conname::text, convalidated FROM pg_constraint WHERE conname IN "
                                      "('api_keys_user_id_fkey', 'user_events_user_id_fkey')").fetchall())
    # 20 api keys and 145 events point at users that do not exist: the new FKs stay NOT VALID.
    assert validated == {"api_keys_user_id_fkey": False, "user_events_user_id_fkey": False}
    evidence.write_manifest(run.ctx.run_dir, {"run_id": "board"})
    # Rolled back under other rules (today's parameters): the run's recorded plan is what is reversed.
    values = board_values()
    values["rules"] = {**values["rules"], "posts.uploader_id": "CASCADE", "bans.banner_id": "keep"}
    ctx = new_ctx(dsn, tmp_path / "rollback", **values)
    outcome = steps.rollback(ctx, run.ctx.run_dir)
    assert outcome.ok, outcome.comparison.problems

    def definitions(state: dict[str, Any]) -> dict[str, Any]:
        return {key: row._replace(oid=0) for key, row in state.items()}  # a swap makes a new constraint

    assert definitions(fk_state(dsn)) == definitions(original)
    with rolled_back(dsn) as conn:
        assert scalar(conn, "SELECT count(*) FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid "
                            "AND a.attnum = d.adnum WHERE a.attname IN ('uploader_id', 'creator_id', 'updater_id', "
                            "'banner_id', 'from_id', 'to_id', 'purchaser_id')") == 0
        # The ghost row stays: rows a delete reassigned to it may reference it.
        assert scalar(conn, "SELECT count(*) FROM users WHERE id = 0") == 1


def test_references_without_fks_are_found_with_counts(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    snap = steps.inspect(new_ctx(dsn, tmp_path))
    found = {r.key: (r.existing, r.missing, r.sampled) for r in snap.references}
    assert found == {
        "public.api_keys.user_id": (300, 20, False), "public.user_events.user_id": (4400, 145, False),
        "public.ip_bans.creator_id": (60, 0, False),
        # FKs are not inherited: the rows in audit_log's children are protected by nothing.
        "public.audit_log_2023.user_id": (300, 0, False), "public.audit_log_2024.user_id": (300, 0, False)}
    capped = steps.inspect(new_ctx(dsn, tmp_path / "capped", exact_count_rows=1000))
    events = next(r for r in capped.references if r.key == "public.user_events.user_id")
    assert events.rows is None and events.sampled and events.existing + events.missing <= 1000  # never analyzed
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE user_events")
    sampled = steps.inspect(new_ctx(dsn, tmp_path / "sampled", exact_count_rows=1000))
    events = next(r for r in sampled.references if r.key == "public.user_events.user_id")
    assert events.sampled and events.existing is not None and events.missing is not None


def test_decisions_carry_the_facts_of_a_bounded_sample(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    snap = steps.inspect(new_ctx(dsn, tmp_path))
    assert snap.facts["public.bans.bans_banner_id_fkey"] == (
        "in a sample of 50 public.bans rows, 50 (100.0%) point at a public.users row of a user other than the "
        "row's owner",)


NO_FK = """
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL);
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint NOT NULL, total numeric NOT NULL);
INSERT INTO users SELECT i, 'u' || i FROM generate_series(1, 10) AS i;
INSERT INTO orders SELECT i, 1 + i % 12, i FROM generate_series(1, 50) AS i;
"""


def test_a_schema_without_any_fk_to_the_parent_has_nothing_to_change(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(NO_FK)
    run = full_run(dsn, tmp_path)
    assert not run.plan.items and not run.plan.decisions and not run.outcome.results and run.verify.ok
    assert "nothing to change" in run.plan.forward_script()
    snap = steps.inspect(new_ctx(dsn, tmp_path / "again"))
    assert [(r.key, r.existing, r.missing) for r in snap.references] == [("public.orders.user_id", 42, 8)]


def test_big_tables_are_sampled_not_read_whole(make_db: Any, tmp_path: Path, monkeypatch: Any) -> None:
    from runbook_lib import samples

    dsn = make_db(BOARD)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
    monkeypatch.setattr(samples, "SAMPLE_ROWS", 200)  # dmails (1,000 rows) is now a big table
    snap = steps.inspect(new_ctx(dsn, tmp_path))
    fact = snap.facts["public.dmails.dmails_from_id_fkey"][0]
    assert "public.dmails" in fact
    seen = int(fact.split("sample of ")[1].split(" ")[0].replace(",", "")) if "sample of" in fact else 0
    assert seen <= 200


def test_a_real_users_preview_lists_rows_no_fk_reaches(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(BOARD)
    with psycopg.connect(dsn) as conn:
        expected = {f"public.{t}.{c}": int(scalar(conn, f"SELECT count(*) FROM {t} WHERE {c} = 7"))
                    for t, c in (("api_keys", "user_id"), ("user_events", "user_id"), ("ip_bans", "creator_id"),
                                 ("audit_log_2023", "user_id"), ("audit_log_2024", "user_id"))}
    found = steps.preview_unprotected(new_ctx(dsn, tmp_path), 7)
    counted = {f"{r.column.key}": r.rows for r in found}
    assert counted == {k: v for k, v in expected.items() if v}
    assert all(r.note == "not reached by any foreign key" for r in found)
    # A big unindexed table is not read whole: it is named with the index that makes the lookup cheap.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE user_events")
    capped = steps.preview_unprotected(new_ctx(dsn, tmp_path / "capped", exact_count_rows=100), 7)
    events = next(r for r in capped if r.column.key == "public.user_events.user_id")
    assert events.rows is None and "CREATE INDEX CONCURRENTLY" in events.note
    api = next(r for r in capped if r.column.key == "public.api_keys.user_id")
    assert api.rows == expected["public.api_keys.user_id"]  # indexed: looked up whatever the size
    params = tmp_path / "params.json"
    params.write_text('{"parent_table": "users"}')
    shown = runbook("preview", "--params", str(params), "--user-id", "7", dsn=dsn, cwd=tmp_path)
    tail = shown.stdout.split("not reached by any foreign key", 1)[1]
    line = next(ln for ln in tail.splitlines() if "public.user_events" in ln)
    assert line.split()[2] == str(expected["public.user_events.user_id"]), shown.stdout


def test_a_real_users_preview_shows_other_users_rows_it_would_remove(make_db: Any, tmp_path: Path) -> None:
    from runbook_lib import collateral, deletion

    dsn = make_db(BOARD)
    params = new_ctx(dsn, tmp_path / "params").params
    with psycopg.connect(dsn, autocommit=True) as conn:
        others_comments = scalar(conn, "SELECT count(*) FROM comments c JOIN posts p ON p.id = c.post_id "
                                       "WHERE p.uploader_id = 1 AND c.creator_id <> 1")
        everything = {fk.key: "CASCADE" for fk in deletion.preview(conn, ("public", "users"), 1).foreign_keys}
        # The old default, every edge CASCADE: others' comments on user 1's posts go with the posts.
        old_preview = deletion.preview(conn, ("public", "users"), 1, rules=everything)
        old = collateral.of_preview(old_preview, params)
        ids = [int(key[0]) for key in old_preview.deleted[("public", "comments")]]
        others_deleted = scalar(conn, "SELECT count(*) FROM comments WHERE id = ANY(%s) AND creator_id <> 1", ids)
        # Under the closed decisions of the demo parameters: nothing of anyone else's is deleted.
        full_run(dsn, tmp_path / "run", **board_values())
        new = collateral.of_preview(deletion.preview(conn, ("public", "users"), 1), params)
    comments = [c for c in old if c.table == ("public", "comments") and c.effect == "deleted"]
    assert sum(c.rows for c in comments) == others_deleted >= others_comments > 0
    assert not [c for c in new if c.effect == "deleted"], [c.text for c in new]
    assert any(c.effect.startswith("detached") for c in new)


def test_a_rehearsal_refuses_while_another_run_holds_the_lock(make_db: Any, tmp_path: Path) -> None:
    from runbook_lib import execute
    from runbook_lib.errors import PreflightFailed

    dsn = make_db(BOARD)
    ctx = new_ctx(dsn, tmp_path, **board_values(dry_run=True, test_user={"rehearse": True}))
    steps.inspect(ctx)
    before = fk_state(dsn)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [execute.ADVISORY_LOCK_KEY])
        with pytest.raises(PreflightFailed, match="another runbook run is changing this database"):
            steps.test_user(ctx)
    outcome = steps.test_user(ctx)  # the lock released: the rehearsal runs, and rolls back
    assert outcome.rehearsal and outcome.ok, outcome.message
    assert fk_state(dsn) == before
