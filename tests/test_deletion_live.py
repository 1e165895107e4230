"""The test-user proof on a live database: other sessions write to the same tables while it runs, and
triggers that touch other users' rows are caught by name. Real PostgreSQL, a realistic image-board
schema seeded with 300 users."""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Iterator

import psycopg
import pytest

from runbook_lib import catalog
from runbook_lib import deletion as tu
from runbook_lib import params as params_mod
from runbook_lib.plan import make_plan
from tests.conftest import ROOT

BOARD = """
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    email text NOT NULL UNIQUE,
    invited_by bigint REFERENCES users ON DELETE SET NULL
);
CREATE UNIQUE INDEX users_lower_name_idx ON users (lower(name));
CREATE INDEX ON users (invited_by);
CREATE TABLE posts (
    id bigserial PRIMARY KEY,
    uploader_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    approver_id bigint REFERENCES users ON DELETE SET NULL,
    body text NOT NULL,
    score int NOT NULL DEFAULT 0
);
CREATE INDEX ON posts (uploader_id);
CREATE INDEX ON posts (approver_id);
CREATE TABLE comments (
    id bigserial PRIMARY KEY,
    post_id bigint NOT NULL REFERENCES posts ON DELETE CASCADE,
    creator_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    body text NOT NULL
);
CREATE INDEX ON comments (post_id);
CREATE INDEX ON comments (creator_id);
CREATE TABLE votes (
    user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
    post_id bigint NOT NULL REFERENCES posts ON DELETE CASCADE,
    up boolean NOT NULL,
    PRIMARY KEY (user_id, post_id)
);
CREATE INDEX ON votes (post_id);
-- a keyless table detached by SET NULL: its rows are found again by place, and proven by the counters
CREATE TABLE flags (
    post_id bigint REFERENCES posts ON DELETE CASCADE,
    flagger_id bigint REFERENCES users ON DELETE SET NULL,
    reason text NOT NULL DEFAULT 'spam'
);
CREATE INDEX ON flags (post_id);
CREATE INDEX ON flags (flagger_id);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, what text NOT NULL, at timestamptz NOT NULL DEFAULT now());

INSERT INTO users (name, email) SELECT 'user' || g, 'user' || g || '@example.com' FROM generate_series(1, 300) g;
UPDATE users SET invited_by = id - 1 WHERE id > 1;
INSERT INTO posts (uploader_id, approver_id, body)
    SELECT 1 + g % 300, CASE WHEN g % 3 = 0 THEN 1 + (g * 7) % 300 END, 'post ' || g FROM generate_series(1, 2000) g;
INSERT INTO comments (post_id, creator_id, body)
    SELECT 1 + g % 2000, 1 + (g * 13) % 300, 'comment ' || g FROM generate_series(1, 4000) g;
INSERT INTO votes (user_id, post_id, up)
    SELECT DISTINCT 1 + (g * 17) % 300, 1 + (g * 31) % 2000, g % 2 = 0 FROM generate_series(1, 3000) g;
INSERT INTO flags (post_id, flagger_id) SELECT 1 + g % 2000, 1 + (g * 11) % 300 FROM generate_series(1, 500) g;
ANALYZE;
"""


@pytest.fixture
def board(make_db: Any) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    dsn = make_db(BOARD)
    conn = psycopg.connect(dsn, autocommit=True)
    yield dsn, conn
    conn.close()


def count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()  # type: ignore[call-overload]
    assert row is not None
    return int(row[0])


class Writer(threading.Thread):
    """Another application session: inserts, updates and deletes other users' rows in every table of
    the deletion set, one short transaction at a time, until told to stop (bounded in time)."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.stop = threading.Event()
        self.ops = 0
        self.errors: list[str] = []

    def run(self) -> None:
        rnd = random.Random(7)
        deadline = time.monotonic() + 120
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop.is_set() and time.monotonic() < deadline:
                user, post = rnd.randint(1, 300), rnd.randint(1, 2000)
                try:
                    with conn.transaction():
                        conn.execute("INSERT INTO posts (uploader_id, body) VALUES (%s, 'live')", [user])
                        conn.execute("INSERT INTO comments (post_id, creator_id, body) "
                                     "SELECT id, %s, 'live' FROM posts WHERE id = %s", [user, post])
                        conn.execute("UPDATE posts SET score = score + 1 WHERE id = %s", [post])
                        conn.execute("UPDATE users SET name = name WHERE id = %s", [user])
                        conn.execute("DELETE FROM comments WHERE id = (SELECT min(id) FROM comments "
                                     "WHERE creator_id = %s)", [user])
                        conn.execute("INSERT INTO votes (user_id, post_id, up) VALUES (%s, %s, true) "
                                     "ON CONFLICT (user_id, post_id) DO UPDATE SET up = NOT votes.up", [user, post])
                        conn.execute("DELETE FROM flags WHERE ctid = (SELECT ctid FROM flags "
                                     "WHERE flagger_id = %s LIMIT 1)", [user])
                    self.ops += 7
                except psycopg.Error as exc:  # pragma: no cover - reported by the test
                    self.errors.append(str(exc))


def test_concurrent_writers_in_every_table_do_not_fail_the_proof(board: Any) -> None:
    dsn, conn = board
    snap = catalog.inspect(conn, "public", "users")
    writer = Writer(dsn)
    writer.start()
    try:
        while writer.ops < 50:
            time.sleep(0.05)
        runs = []
        for _ in range(4):
            before = writer.ops
            run = tu.run_test_user(conn, snap, timeouts=tu.Timeouts("30s", "2s"))
            runs.append((run, writer.ops - before))
    finally:
        writer.stop.set()
        writer.join()
    assert writer.errors == []
    for run, ops_during in runs:
        assert run.ok, run.message
        assert ops_during > 0  # the other session did write while this proof ran
        assert run.proof is not None and run.proof.others_changed == [] and run.proof.mismatches == []
        proof_tables = {c["table"] for c in run.proof.counts}
        assert {"public.users", "public.posts", "public.comments", "public.votes"} <= proof_tables
    # the test user was rolled back; the other session's rows are there
    assert count(conn, "SELECT count(*) FROM users") == 300
    assert count(conn, "SELECT count(*) FROM posts WHERE body = 'live'") > 0


def test_set_null_on_rows_inserted_in_the_same_transaction_is_proven(board: Any) -> None:
    """The test user's post is approved by the test user (SET NULL) and uploaded by it (CASCADE); its
    flag row has no key and is detached by SET NULL: all inserted in the step's own transaction."""
    _dsn, conn = board
    snap = catalog.inspect(conn, "public", "users")
    with conn.transaction(force_rollback=True):
        synthesis = tu.synthesize(conn, snap, marker=tu.new_marker())
        assert synthesis.ok, synthesis.message
        post = synthesis.rows[("public", "posts")].values
        assert post["approver_id"] == post["uploader_id"] == synthesis.user_key["id"]
        preview = tu.preview(conn, snap.parent, synthesis.user_key)
        assert preview.maybe_updated == {("public", "posts"): 1, ("public", "flags"): 1}
        proof = tu.delete_and_prove(conn, snap, synthesis, preview)
        assert proof.ok, proof.message
        flags = next(c for c in proof.counts if c["table"] == "public.flags")
        assert flags["deleted"] == flags["expected deleted"] == 1  # the flag on the user's post
    with conn.transaction(force_rollback=True):
        # a real user: other users' posts they approved and flags they raised are kept, detached
        user = count(conn, "SELECT min(approver_id) FROM posts WHERE approver_id <> uploader_id "
                           "AND approver_id IN (SELECT flagger_id FROM flags) AND approver_id < 300")
        preview = tu.preview(conn, snap.parent, user)
        detached = preview.detached_counts()
        assert detached[("public", "posts")] == count(
            conn, f"SELECT count(*) FROM posts WHERE approver_id = {user} AND uploader_id <> {user}")
        assert detached[("public", "users")] == 1  # the next user was invited by this one
        proof = tu.delete_and_prove(conn, snap, None, preview)
        assert proof.ok, proof.message
        assert count(conn, f"SELECT count(*) FROM flags WHERE flagger_id = {user}") == 0
        assert count(conn, f"SELECT count(*) FROM users WHERE invited_by IS NULL") == 2
    assert count(conn, f"SELECT count(*) FROM flags WHERE flagger_id = {user}") > 0  # rolled back


@pytest.mark.parametrize("what, table", [
    ("DELETE FROM comments WHERE id = (SELECT min(id) FROM comments WHERE creator_id <> OLD.uploader_id)",
     "public.comments"),
    ("UPDATE users SET name = name || '!' WHERE id = (SELECT min(id) FROM users WHERE id <> OLD.uploader_id)",
     "public.users"),
    ("DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)", "public.audit_log"),
])
def test_a_trigger_that_deletes_or_changes_another_users_row_fails_and_names_the_table(
        board: Any, what: str, table: str) -> None:
    _dsn, conn = board
    conn.execute("INSERT INTO audit_log (what) VALUES ('an old entry')")
    conn.execute(f"""
        CREATE FUNCTION posts_gone() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN {what}; RETURN OLD; END $$;
        CREATE TRIGGER posts_gone AFTER DELETE ON posts FOR EACH ROW EXECUTE FUNCTION posts_gone();
    """)
    snap = catalog.inspect(conn, "public", "users")
    totals = [count(conn, f"SELECT count(*) FROM {t}") for t in ("comments", "users", "audit_log")]
    run = tu.run_test_user(conn, snap)
    assert not run.ok
    assert run.proof is not None and any(c.startswith(table + ":") for c in run.proof.others_changed), run.message
    assert "FAIL" in run.message and table in run.message
    row = next(c for c in run.proof.counts if c["table"] == table)
    assert row["status"] == "CHANGED BEYOND THE PREVIEW"
    # nothing left behind
    assert [count(conn, f"SELECT count(*) FROM {t}") for t in ("comments", "users", "audit_log")] == totals
    assert count(conn, "SELECT count(*) FROM users WHERE name LIKE '%!'") == 0


def test_an_audit_trigger_is_reported_and_passes(board: Any) -> None:
    _dsn, conn = board
    conn.execute("""
        CREATE FUNCTION log_post() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO audit_log (what) VALUES ('post ' || OLD.id || ' deleted'); RETURN OLD; END $$;
        CREATE TRIGGER log_post AFTER DELETE ON posts FOR EACH ROW EXECUTE FUNCTION log_post();
    """)
    run = tu.run_test_user(conn, catalog.inspect(conn, "public", "users"))
    assert run.ok, run.message
    assert run.proof is not None and run.proof.side_effects == {("public", "audit_log"): 1}
    assert "public.audit_log +1" in run.message


def test_a_held_lock_ends_the_step_within_lock_timeout(board: Any) -> None:
    dsn, conn = board
    snap = catalog.inspect(conn, "public", "users")
    with psycopg.connect(dsn) as holder:
        holder.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            tu.run_test_user(conn, snap, timeouts=tu.Timeouts("30s", "150ms"))
        assert time.monotonic() - started < 10
        holder.rollback()
    assert conn.execute("SHOW lock_timeout").fetchone() == ("0",)  # SET LOCAL: gone with the transaction


def test_a_unique_expression_index_on_the_parent_does_not_stop_the_test_user(board: Any) -> None:
    _dsn, conn = board
    # names that a copied or guessed value would collide with under lower(name)
    conn.execute("INSERT INTO users (name, email) VALUES ('A', 'a@example.com'), ('Test', 't@example.com'), "
                 "('X', 'x@example.com')")
    run = tu.run_test_user(conn, catalog.inspect(conn, "public", "users"))
    assert run.synthesis.ok, run.synthesis.message
    assert run.ok, run.message
    assert run.synthesis.rows[("public", "users")].values["name"].startswith(run.synthesis.marker)


INHERIT = """
CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL UNIQUE);
CREATE TABLE events (id bigserial PRIMARY KEY, user_id bigint NOT NULL REFERENCES users ON DELETE CASCADE,
                     kind text NOT NULL DEFAULT 'view');
CREATE INDEX ON events (user_id);
-- an archive that inherits the columns but not the FK: the cascade never reaches its rows
CREATE TABLE events_archive (archived_at timestamptz NOT NULL DEFAULT now()) INHERITS (events);
CREATE INDEX ON events_archive (user_id);
-- a child with an FK of its own: reached once, through that FK
CREATE TABLE events_hot (PRIMARY KEY (id), FOREIGN KEY (user_id) REFERENCES users ON DELETE CASCADE) INHERITS (events);
CREATE INDEX ON events_hot (user_id);
INSERT INTO users (email) SELECT 'u' || g || '@example.com' FROM generate_series(1, 50) g;
INSERT INTO events (user_id) SELECT 1 + g % 50 FROM generate_series(1, 500) g;
INSERT INTO events_archive (user_id) SELECT 1 + g % 50 FROM generate_series(1, 300) g;
INSERT INTO events_hot (user_id) SELECT 1 + g % 50 FROM generate_series(1, 200) g;
"""


def test_inheritance_children_are_counted_once_and_proven(make_db: Any) -> None:
    with psycopg.connect(make_db(INHERIT), autocommit=True) as conn:
        snap = catalog.inspect(conn, "public", "users")
        with conn.transaction(force_rollback=True):
            preview = tu.preview(conn, snap.parent, 7)
            counts = preview.deleted_counts()
            assert counts[("public", "events")] == count(conn, "SELECT count(*) FROM ONLY events WHERE user_id = 7")
            assert counts[("public", "events_hot")] == count(conn, "SELECT count(*) FROM events_hot WHERE user_id = 7")
            assert ("public", "events_archive") not in counts
            proof = tu.delete_and_prove(conn, snap, None, preview)
            assert proof.ok, proof.message
            assert count(conn, "SELECT count(*) FROM events_archive WHERE user_id = 7") == 6  # kept: no FK there
        run = tu.run_test_user(conn, snap)
        assert run.ok, run.message
        # the ordered script deletes from ONLY the plain table, as the FK action does
        archived = count(conn, "SELECT count(*) FROM events_archive")
        with conn.transaction(force_rollback=True):
            synthesis = tu.synthesize(conn, snap, marker=tu.new_marker())
            conn.execute("INSERT INTO events_archive (user_id) VALUES (%s)", [synthesis.user_key["id"]])
            proof = tu.prove_ordered_delete(conn, snap, synthesis)
            assert proof.ok, proof.message
            assert count(conn, "SELECT count(*) FROM events_archive") == archived + 1


def test_the_image_board_demo_rehearsed_with_its_decisions_passes(make_db: Any) -> None:
    """demo/image_board.sql (users_lower_name_idx, ghost rules): the plan of parameters/demo_board.yaml
    rehearsed inside the test user's transaction, ghost row first; reassigned rows are proven as
    detached (SET DEFAULT updates) and nothing else changes."""
    with psycopg.connect(make_db((ROOT / "demo" / "image_board.sql").read_text(encoding="utf-8")),
                         autocommit=True) as conn:
        snap = catalog.inspect(conn, "public", "users")
        the_plan = make_plan(snap, params_mod.load(ROOT / "parameters" / "demo_board.yaml"))
        run = tu.run_test_user(conn, snap, setup=tu.rehearsal_setup(the_plan), timeouts=tu.Timeouts("30s", "2s"))
        assert run.ok, run.message
        assert run.proof is not None and sum(d["detached"] for d in run.proof.detached.values()) > 0
        assert count(conn, "SELECT count(*) FROM users WHERE id = 0") == 0  # the rehearsal's ghost: rolled back


def test_a_second_user_s_rows_on_the_test_user_s_rows_are_shown_and_proven(board: Any) -> None:
    _dsn, conn = board
    snap = catalog.inspect(conn, "public", "users")
    run = tu.run_test_user(conn, snap, second_user=True)
    assert run.ok, run.message
    other = run.second_user
    assert other is not None and other.user is not None and other.user_found == "there"
    fate = {r.row.table[1]: r.planned for r in other.rows}
    # a comment, a vote and a flag by someone else on the test user's post go with the post; the other
    # user's own post that the test user approved stays, detached from its approver
    assert fate == {"posts": "detached", "comments": "deleted", "votes": "deleted", "flags": "deleted"}
    assert all(r.ok for r in other.rows)
    assert ("another user's rows on the test user's: 3 deleted (public.comments, public.flags, public.votes), "
            "1 detached (public.posts)") in run.message
    assert count(conn, "SELECT count(*) FROM users") == 300  # both rolled back


def test_a_second_users_row_treated_otherwise_than_planned_fails_and_is_named(board: Any) -> None:
    """A trigger removes the other user's detached post: the counters and the key lookup both see it."""
    _dsn, conn = board
    conn.execute("""
        CREATE FUNCTION drop_unapproved() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN IF NEW.approver_id IS NULL AND OLD.approver_id IS NOT NULL THEN
            DELETE FROM posts WHERE id = NEW.id; END IF; RETURN NULL; END $$;
        CREATE TRIGGER drop_unapproved AFTER UPDATE OF approver_id ON posts
            FOR EACH ROW EXECUTE FUNCTION drop_unapproved();
    """)
    run = tu.run_test_user(conn, catalog.inspect(conn, "public", "users"), second_user=True)
    assert not run.ok
    assert "public.posts" in run.message and "the preview said detached, the database shows it gone" in run.message


def test_a_lock_released_meanwhile_is_retried_with_nothing_held_between_attempts(board: Any) -> None:
    dsn, conn = board
    snap = catalog.inspect(conn, "public", "users")
    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
    release = threading.Timer(0.6, holder.rollback)
    release.start()
    try:
        run = tu.run_test_user_retrying(conn, snap, attempts=6, backoff=0.2, timeouts=tu.Timeouts("30s", "100ms"))
    finally:
        release.join()
        holder.close()
    assert run.ok, run.message
    assert any(n.startswith("lock_timeout: done at attempt") for n in run.notes)
    with psycopg.connect(dsn) as other:  # and once more, with the lock never released: the error surfaces
        other.execute("LOCK TABLE comments IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            tu.run_test_user_retrying(conn, snap, attempts=2, backoff=0.05, timeouts=tu.Timeouts("30s", "100ms"))

