"""Proof of deletion against a real PostgreSQL: the test user, the preview, the proof, orphans and the
ordered delete script. Every database is made by ``make_db`` and everything runs in rolled-back
transactions unless a test says otherwise.
"""
from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg import sql

from runbook_lib import catalog, render
from runbook_lib import params as params_mod
from runbook_lib import plan as plan_mod
from runbook_lib import deletion as tu
from runbook_lib.catalog import Snapshot
from runbook_lib.errors import RunbookError
from tests.conftest import ROOT, sql_file

DEMO = (ROOT / "demo" / "health_app.sql").read_text(encoding="utf-8")


def connect(dsn: str) -> psycopg.Connection[Any]:
    return psycopg.connect(dsn, autocommit=True)


@pytest.fixture
def db(make_db: Any) -> Iterator[Any]:
    """``db(sql_text)`` -> an autocommit connection to a fresh database holding that schema."""
    conns: list[psycopg.Connection[Any]] = []

    def open_db(schema_sql: str) -> psycopg.Connection[Any]:
        conn = connect(make_db(schema_sql))
        conns.append(conn)
        return conn

    yield open_db
    for conn in conns:
        conn.close()


def inspect(conn: psycopg.Connection[Any], table: str = "users", schema: str = "public") -> Snapshot:
    return catalog.inspect(conn, schema, table)


def plan_ddl(snap: Snapshot) -> list[sql.Composed]:
    the_plan = plan_mod.make_plan(snap, params_mod.validate(
        {"parent_table": snap.parent[1], "parent_schema": snap.parent[0]}))
    return [s for item in the_plan.changes for s in item.rehearsal()]


def count(conn: psycopg.Connection[Any], query: str, *args: Any) -> int:
    row = conn.execute(query, list(args)).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


def full_cycle(conn: psycopg.Connection[Any], snap: Snapshot,
               **kwargs: Any) -> tuple[tu.Synthesis, tu.Preview, tu.Proof]:
    """Synthesize, preview and delete inside the caller's (rolled-back) transaction."""
    synthesis = tu.synthesize(conn, snap, marker=tu.new_marker(), values=kwargs.pop("values", None))
    preview = tu.preview(conn, snap.parent, synthesis.user_key)
    proof = tu.delete_and_prove(conn, snap, synthesis, preview, **kwargs)
    return synthesis, preview, proof


# ---------------------------------------------------------------- synthesis


def test_every_column_type_is_filled_and_an_impossible_check_is_named(db: Any) -> None:
    conn = db(sql_file("tu_types.sql"))
    snap = inspect(conn, "accounts")
    with conn.transaction(force_rollback=True):
        synthesis, preview, proof = full_cycle(conn, snap)
        rows = synthesis.rows
        assert set(rows) == {("public", t) for t in ("accounts", "everything", "day_notes", "day_note_tags")}
        [failure] = synthesis.failures
        assert failure.table == ("public", "impossible")
        assert failure.constraint == "secret_is_magic"
        assert 'violates check constraint "secret_is_magic"' in failure.reason
        assert "public.impossible" in synthesis.message and "secret_is_magic" in synthesis.message
        frame = tu.synthesis_frame(synthesis)
        assert frame.loc[frame["table"] == "public.impossible", "status"].item() == "FAILED"

        account = rows[("public", "accounts")].values
        assert account["email"] == f"{synthesis.marker}@example.invalid"
        row = rows[("public", "everything")].values
        assert row["account_id"] == account["id"]
        assert 3 <= int(row["s"] or 0) <= 7
        assert row["m"] in ("sad", "ok", "happy")
        assert row["period"] in ("day", "week", "month")
        assert re.fullmatch(r"[A-Z]+", row["code"] or "")
        assert int(row["pi"] or 0) > 0
        assert len(row["vc"] or "") <= 5 and len(row["bits"] or "") == 4
        assert row["ta"] not in (None, "{}")
        assert int(row["twice"] or 0) == 2 * int(row["i"] or 0)
        assert row["serialcol"] is not None and row["id"] is not None
        note, tag = rows[("public", "day_notes")].values, rows[("public", "day_note_tags")].values
        assert (tag["account_id"], tag["day"], tag["code"]) == (note["account_id"], note["day"], note["code"])
        assert row["t"] == synthesis.marker

        assert preview.deleted_counts() == {t: 1 for t in rows}
        assert count(conn, "SELECT count(*) FROM everything") == 0
        assert proof.ok, proof.message
    assert count(conn, "SELECT count(*) FROM accounts") == 1  # rolled back


def test_parameters_supply_what_it_cannot_guess(db: Any) -> None:
    conn = db(sql_file("tu_types.sql"))
    snap = inspect(conn, "accounts")
    secret = hashlib.md5(b"magic").hexdigest()
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker="rbtest-values",
                                  values={"public.impossible": {"secret": secret}, "accounts": {"name": "Ann"}})
        assert synthesis.ok, synthesis.message
        assert synthesis.rows[("public", "impossible")].values["secret"] == secret
        assert synthesis.rows[("public", "accounts")].values["name"] == "Ann"


def test_synthesize_refuses_to_run_outside_a_transaction(db: Any) -> None:
    conn = db(sql_file("tu_cycle.sql"))
    with pytest.raises(RunbookError, match="inside a transaction"):
        tu.synthesize(conn, inspect(conn), marker="rbtest-x")
    assert count(conn, "SELECT count(*) FROM users") == 2


def test_cycle_is_closed_by_an_update_after_both_rows_exist(db: Any) -> None:
    conn = db(sql_file("tu_cycle.sql"))
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        synthesis, preview, proof = full_cycle(conn, snap)
        assert synthesis.ok, synthesis.message
        session = synthesis.rows[("public", "sessions")].values
        message = synthesis.rows[("public", "messages")].values
        assert session["last_message_id"] == message["id"] is not None
        assert synthesis.deferred_updates == ["public.sessions.last_message_id -> public.messages "
                                              "(sessions_last_message_fk)"]
        # the session is deleted by the cascade, so it is not "detached" by the SET NULL edge
        assert preview.deleted_counts() == {("public", t): 1 for t in ("users", "sessions", "messages")}
        assert preview.detached == {}
        assert proof.ok, proof.message
        assert count(conn, "SELECT count(*) FROM sessions WHERE last_message_id IS NOT NULL") == 2


def test_partitioned_tables_get_a_row_in_a_partition_and_are_counted_per_partition(db: Any) -> None:
    conn = db(sql_file("tu_partitioned.sql"))
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        synthesis, preview, proof = full_cycle(conn, snap)
        assert synthesis.ok, synthesis.message
        reading = synthesis.rows[("public", "readings")]
        assert reading.leaf in {("public", "readings_2024_h1"), ("public", "readings_2024_h2")}
        assert float(reading.values["value"] or 0) > 50
        # empty list-partitioned table: the value comes from the partition bounds
        assert synthesis.rows[("public", "events")].leaf == ("public", "events_eu")
        note = synthesis.rows[("public", "reading_notes")].values
        assert (note["reading_id"], note["recorded_at"]) == (reading.values["id"], reading.values["recorded_at"])
        assert proof.ok, proof.message
        tables = {c["table"]: c for c in proof.counts}
        assert "public.readings" not in tables and "public.events" not in tables  # no double count
        assert tables[catalog.qualname(reading.leaf)]["deleted"] == 1
        assert tables["public.events_eu"]["deleted"] == 1 and "public.events_us" not in tables


def test_parent_table_named_user_with_quoted_names(db: Any) -> None:
    conn = db(sql_file("tu_user_parent.sql"))
    snap = inspect(conn, "user")
    with conn.transaction(force_rollback=True):
        synthesis, preview, proof = full_cycle(conn, snap)
        assert synthesis.ok, synthesis.message
        item = synthesis.rows[("Order Data", "Line Item")].values
        assert item["User ID"] == synthesis.rows[("public", "user")].values["id"]
        assert item["Group"] == synthesis.rows[("public", "group")].values["id"]
        assert int(item['Qty "x"'] or 0) > 0
        assert proof.ok, proof.message
        assert count(conn, 'SELECT count(*) FROM "Order Data"."Line Item"') == 0
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker="rbtest-script")
        script_proof = tu.prove_ordered_delete(conn, snap, synthesis)
        assert script_proof.ok, script_proof.message


# ---------------------------------------------------------------- proof, side effects, orphans


def test_orphans_are_listed_and_never_deleted(db: Any) -> None:
    conn = db(sql_file("tu_orphans.sql"))
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker="rbtest-orphans")
        assert synthesis.ok, synthesis.message
        # the synthesizer reuses the one existing asset, shared with another user's question
        assert synthesis.rows[("public", "question_attachment")].values["media_asset_id"] == "1"
        row = conn.execute("INSERT INTO media_asset (url) VALUES ('s3://private.png') RETURNING id").fetchone()
        assert row is not None
        private = row[0]
        conn.execute("UPDATE question SET media_asset_id = %s WHERE id = %s",
                     [private, int(synthesis.rows[("public", "question")].values["id"] or 0)])
        preview = tu.preview(conn, snap.parent, synthesis.user_key)
        proof = tu.delete_and_prove(conn, snap, synthesis, preview)
        assert proof.ok, proof.message
        found = tu.orphans(conn, preview)
        assert [(o.table, o.count, o.keys) for o in found] == [
            (("public", "media_asset"), 1, [{"id": str(private)}])]
        assert found[0].referenced_by == ["public.question.question_media_asset_id_fkey"]
        assert count(conn, "SELECT count(*) FROM media_asset") == 2  # reported, not deleted
        assert list(tu.orphans_frame(found)["count"]) == [1]


def test_a_triggers_side_table_is_shown_not_hidden(db: Any) -> None:
    conn = db(sql_file("tu_trigger.sql"))
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        _, _, proof = full_cycle(conn, snap)
        # the trigger's unqualified INSERT works: reading the catalog did not leave search_path empty
        assert proof.failure is None, proof.message
        assert proof.ok, proof.message
        assert proof.side_effects == {("public", "audit_log"): 1}
        assert "public.audit_log +1" in proof.message
        frame = tu.proof_frame(proof)
        assert frame.loc[frame["table"] == "public.audit_log", "status"].item() == "side effect"
    with conn.transaction(force_rollback=True):
        _, _, strict = full_cycle(conn, snap, strict_other_tables=True)
        assert not strict.ok and "public.audit_log +1" in strict.message


def test_a_no_action_edge_on_the_path_blocks_and_the_proof_names_it(db: Any) -> None:
    conn = db(sql_file("tu_blockers.sql"))
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker="rbtest-blocked")
        assert synthesis.ok, synthesis.message
        preview = tu.preview(conn, snap.parent, synthesis.user_key)
        assert not preview.ok
        [blocker] = preview.blockers
        assert (blocker.constraint, blocker.table, blocker.rule, blocker.rows, blocker.certain) == (
            "public.order_items.order_items_order_fk", ("public", "order_items"), "NO ACTION", 1, True)
        assert "order_items_order_fk" in preview.message
        assert list(tu.blockers_frame(preview)["constraint"]) == ["public.order_items.order_items_order_fk"]
        proof = tu.delete_and_prove(conn, snap, synthesis, preview)
        assert not proof.ok and proof.failure is not None
        assert proof.failure.table == ("public", "order_items")
        assert proof.failure.constraint == "order_items_order_fk"
        assert proof.failure.sqlstate == "23503"
        assert "order_items_order_fk" in proof.message and "public.order_items" in proof.message
        # the failed DELETE was confined to its savepoint: the transaction and the user are still there
        assert count(conn, "SELECT count(*) FROM users WHERE id = %s::int", synthesis.user_key["id"]) == 1


@pytest.mark.parametrize("rule", ["NO ACTION", "RESTRICT"])
@pytest.mark.parametrize("owner_first", [True, False])
def test_a_referencing_row_deleted_by_the_same_cascade_may_block(db: Any, rule: str, owner_first: bool) -> None:
    """PostgreSQL checks NO ACTION and RESTRICT at the end of the query that deleted the referenced row:
    whether the referencing row is gone by then depends on the cascade's trigger order."""
    fks = ["ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;",
           "ALTER TABLE carts ADD FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE;"]
    if not owner_first:
        fks.reverse()
    # shipments belong to the user through carts (two hops) and also point at the user's order
    conn = db(f"""
        CREATE TABLE users (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, email text NOT NULL UNIQUE);
        CREATE TABLE orders (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int NOT NULL);
        CREATE TABLE carts (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, user_id int NOT NULL);
        CREATE TABLE shipments (id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            cart_id int NOT NULL REFERENCES carts ON DELETE CASCADE,
            order_id int NOT NULL CONSTRAINT shipments_order_fk REFERENCES orders ON DELETE {rule});
        {fks[0]} {fks[1]}""")
    snap = inspect(conn)
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker="rbtest-order")
        assert synthesis.ok, synthesis.message
        preview = tu.preview(conn, snap.parent, synthesis.user_key)
        [blocker] = preview.blockers
        assert (blocker.name, blocker.rule, blocker.certain) == ("shipments_order_fk", rule, False)
        assert preview.ok  # a possible blocker, not a certain one
        proof = tu.delete_and_prove(conn, snap, synthesis, preview)
        if owner_first:
            assert proof.failure is not None and proof.failure.constraint == "shipments_order_fk"
            assert proof.failure.sqlstate in ("23503", "23001")  # RESTRICT: 23503 on PostgreSQL 15, 23001 on 18
        else:
            assert proof.ok, proof.message


# ---------------------------------------------------------------- preview of a real user


def test_preview_of_a_real_user_in_a_read_only_transaction(db: Any) -> None:
    conn = db(DEMO)
    snap = inspect(conn)
    planned = {i.fk.key: i.planned for i in plan_mod.make_plan(
        snap, params_mod.validate({"parent_table": "users"})).items}
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        now = tu.preview(conn, snap.parent, 42)
        after_plan = tu.preview(conn, snap.parent, 42, rules=planned)
        assert conn.execute("SHOW transaction_read_only").fetchone() == ("on",)
    # current rules (NO ACTION): the blockers are the user's direct rows
    blockers = {b.table[1]: b.rows for b in now.certain_blockers}
    assert blockers["vitals"] == count(conn, "SELECT count(*) FROM vitals WHERE user_id = 42")
    assert blockers["device_readings"] == count(conn, "SELECT count(*) FROM device_readings WHERE user_id = 42")
    assert blockers["users"] == count(conn, "SELECT count(*) FROM users WHERE referred_by = 42")
    assert not now.ok and "BLOCKED" in now.message
    # planned rules: counts per table, the referred users detached, nothing blocks
    deleted = {t[1]: n for t, n in after_plan.deleted_counts().items()}
    assert deleted["users"] == 1
    assert deleted["vitals"] == count(conn, "SELECT count(*) FROM vitals WHERE user_id = 42")
    assert deleted["chat_messages"] == count(
        conn, "SELECT count(*) FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id WHERE s.user_id = 42")
    assert deleted["nutrition_goal_targets"] == count(
        conn, "SELECT count(*) FROM nutrition_goal_targets WHERE user_id = 42")
    leaves = after_plan.leaf_deleted_counts()
    assert sum(n for t, n in leaves.items() if t[1].startswith("device_readings_")) == deleted["device_readings"]
    assert after_plan.detached_counts() == {("public", "users"): count(
        conn, "SELECT count(*) FROM users WHERE referred_by = 42")}
    assert after_plan.ok
    assert {fk.name for fk in after_plan.unindexed} == {
        "feedback_user_id_fkey", "user_nutrient_focus_goal_id_fkey", "chat_sessions_last_message_id_fkey"}
    assert set(tu.preview_frame(after_plan)["table"]) >= {"public.users", "public.vitals"}
    # on an idle connection it opens a read-only transaction of its own and leaves nothing open
    assert tu.preview(conn, snap.parent, {"id": 42}, rules=planned).deleted_counts() == after_plan.deleted_counts()
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    missing = tu.preview(conn, snap.parent, 999_999)
    assert not missing.found and "does not exist" in missing.message


# ---------------------------------------------------------------- the demo and the ordered script


def test_ordered_delete_script_removes_the_user_where_nothing_cascades(db: Any) -> None:
    conn = db(DEMO)
    snap = inspect(conn)
    texts = [render.text(s) for s in tu.ordered_delete_script(snap, ("id",))]
    # ONLY: what an FK action reaches (a plain table's own rows, never its inheritance children's)
    targets = ('DELETE FROM ONLY "public"."nutrition_goal_targets" WHERE ("user_id", "goal_id") IN '
               '(SELECT "user_id", "id" FROM ONLY "public"."nutrition_goals" WHERE ("user_id") IN '
               '(SELECT "id" FROM "public"."users" WHERE "id" = %(user_id)s))')
    assert targets in texts
    null_first = next(i for i, t in enumerate(texts) if t.startswith('UPDATE ONLY "public"."chat_sessions" SET '
                                                                     '"last_message_id" = NULL'))
    assert null_first < texts.index(next(t for t in texts if t.startswith('DELETE FROM ONLY "public"."chat_messages"')))
    assert texts[-1] == 'DELETE FROM "public"."users" WHERE "id" = %(user_id)s'
    assert texts.index(next(t for t in texts if t.startswith('DELETE FROM ONLY "public"."prescriptions"'))) < \
        texts.index(next(t for t in texts if t.startswith('DELETE FROM ONLY "public"."appointments"')))
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker=tu.new_marker())
        assert synthesis.ok, synthesis.message
        plain = tu.delete_and_prove(conn, snap, synthesis, tu.preview(conn, snap.parent, synthesis.user_key))
        assert not plain.ok and plain.failure is not None and plain.failure.sqlstate == "23503"
        proof = tu.prove_ordered_delete(conn, snap, synthesis)
        assert proof.ok, proof.message
        assert sum(c["deleted"] for c in proof.counts) == len(synthesis.rows)
        assert count(conn, "SELECT count(*) FROM users WHERE email LIKE %s", synthesis.marker + "%") == 0
    with conn.transaction(force_rollback=True):
        # the script for one real user leaves every other user's rows alone
        before = count(conn, "SELECT count(*) FROM vitals")
        mine = count(conn, "SELECT count(*) FROM vitals WHERE user_id = 7")
        for statement in tu.ordered_delete_script(snap, ("id",)):
            conn.execute(statement, tu.script_params(("id",), 7))
        assert count(conn, "SELECT count(*) FROM vitals") == before - mine
        assert count(conn, "SELECT count(*) FROM users WHERE id = 7") == 0


def test_demo_after_the_plan_synthesize_delete_and_prove(db: Any) -> None:
    conn = db(DEMO)
    snap = inspect(conn)
    run = tu.run_test_user(conn, snap, setup=plan_ddl(snap))
    assert run.synthesis.ok, run.synthesis.message
    assert set(run.synthesis.rows) == set(run.synthesis.deletion_set)
    assert len(run.synthesis.rows) == 34
    assert run.ok, run.message
    assert run.proof is not None and run.proof.side_effects == {} and run.orphans == []
    assert run.synthesis.deferred_updates  # chat_sessions.last_message_id, closed after the message existed
    # rolled back: the rehearsed DDL and the test user are gone
    assert count(conn, "SELECT count(*) FROM users") == 200
    assert inspect(conn).fk("public.appointments.appointments_user_id_fkey").on_delete == "NO ACTION"  # type: ignore[union-attr]


def _extra_tables(n: int) -> str:
    """``n`` more tables around the demo: chains, composite keys, checks, enums, uniques."""
    parts = ["CREATE TYPE extra_state AS ENUM ('new', 'done');"]
    for i in range(n):
        parent = "users" if i % 4 == 0 else f"extra_{i - 1}"
        parts.append(f"""
            CREATE TABLE extra_{i} (
                id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                owner_id bigint NOT NULL REFERENCES {parent} (id),
                code varchar(12) NOT NULL UNIQUE,
                state extra_state NOT NULL,
                score smallint NOT NULL CHECK (score BETWEEN 5 AND 9),
                payload jsonb NOT NULL,
                medication_id integer REFERENCES medication_catalog (id),
                at timestamptz NOT NULL
            );
            CREATE INDEX ON extra_{i} (owner_id);""")
    return "\n".join(parts)


def test_time_to_synthesize_and_prove_on_more_than_40_tables(db: Any, record_property: Any) -> None:
    conn = db(DEMO + "\n" + _extra_tables(20))
    snap = inspect(conn)
    started = time.perf_counter()
    run = tu.run_test_user(conn, snap, setup=plan_ddl(snap))
    seconds = time.perf_counter() - started
    record_property("synthesize_and_prove_seconds", round(seconds, 3))
    assert len(run.synthesis.deletion_set) >= 50
    assert run.synthesis.ok, run.synthesis.message
    assert run.ok, run.message
    assert seconds < 60
