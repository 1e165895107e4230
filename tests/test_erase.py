"""Erasing a real user against a real PostgreSQL: dry runs, batches, a crash between batches, refusals,
the proof, the orphans and a receipt that holds none of the user's values."""
from __future__ import annotations

import csv
import gzip
import io
import json
import re
import stat
from pathlib import Path
from typing import Any, Callable, Iterator

import psycopg
import pytest

from runbook_lib import params as params_mod
from runbook_lib.erase_run import EraseOutcome, erase_user
from runbook_lib.errors import ParameterError
from runbook_lib.evidence import verify_evidence
from runbook_lib.receipt import keys_digest
from tests.conftest import sql_file

HEAVY = "918273"
EMAIL = "erin.quartz-7f3a@example.org"
RULES = {"comments.post_id": "CASCADE", "moderation_notes.post_id": "CASCADE"}
TABLES = ("users", "posts", "comments", "events", "moderation_notes", "media", "audit_log")


def params(**erase: Any) -> params_mod.Parameters:
    settings = {"batch_rows": 1000, "orphan_columns": ["media.storage_key"], **erase}
    return params_mod.validate({"parent_table": "users", "rules": RULES, "erase": settings})


@pytest.fixture
def db(make_db: Any) -> Iterator[tuple[str, psycopg.Connection[Any]]]:
    dsn = make_db(sql_file("erase_social.sql"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield dsn, conn


def keys(conn: psycopg.Connection[Any]) -> dict[str, set[tuple[Any, ...]]]:
    """Every table's rows as (id, the columns an erasure may change): what "intact" is compared by."""
    queries = {
        "users": "SELECT id FROM users", "posts": "SELECT id, user_id FROM posts",
        "comments": "SELECT id FROM comments", "events": "SELECT id FROM events",
        "moderation_notes": "SELECT id, reviewer_id FROM moderation_notes", "media": "SELECT id FROM media",
        "audit_log": "SELECT row_id FROM audit_log"}
    return {t: {tuple(r) for r in conn.execute(q).fetchall()} for t, q in queries.items()}


def users_rows(conn: psycopg.Connection[Any]) -> dict[str, set[tuple[Any, ...]]]:
    """The keys of the heavy user's rows (and of others' rows that hang off them), before the erasure."""
    q = {
        "users": "SELECT id FROM users WHERE id = %(u)s",
        "posts": "SELECT id, user_id FROM posts WHERE user_id = %(u)s",
        "comments": "SELECT c.id FROM comments c LEFT JOIN posts p ON p.id = c.post_id "
                    "WHERE c.author_id = %(u)s OR p.user_id = %(u)s",
        "events": "SELECT id FROM events WHERE user_id = %(u)s",
        "moderation_notes": "SELECT n.id, n.reviewer_id FROM moderation_notes n JOIN posts p ON p.id = n.post_id "
                            "WHERE p.user_id = %(u)s"}
    return {t: {tuple(r) for r in conn.execute(s, {"u": int(HEAVY)}).fetchall()} for t, s in q.items()}


def assert_erased(conn: psycopg.Connection[Any], before: dict[str, set[tuple[Any, ...]]],
                  owned: dict[str, set[tuple[Any, ...]]], *, orphans_deleted: bool) -> None:
    after = keys(conn)
    for table, rows in owned.items():
        assert after[table] & rows == set(), table
    for table in ("users", "posts", "comments", "events"):
        assert after[table] == before[table] - owned[table], table
    notes_kept = {(i, None if r == int(HEAVY) else r) for i, r in before["moderation_notes"] - owned["moderation_notes"]}
    assert after["moderation_notes"] == notes_kept  # others' notes kept; the reviewer column detached
    orphaned = {(i,) for i in range(1, 11)}
    assert after["media"] == (before["media"] - orphaned if orphans_deleted else before["media"])
    assert len(after["audit_log"]) == len(before["audit_log"]) + 30  # the trigger ran, once per post


def test_without_confirm_nothing_changes_and_the_preview_shows_batches_and_orphans(db: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    before = keys(conn)
    outcome = erase_user(conn, params(), HEAVY, confirm=False, evidence_dir=tmp_path / "ev")
    assert outcome.ok and outcome.erasure is None and not outcome.preflight
    assert outcome.plan is not None
    assert [b.table for b in outcome.plan.batched] == [("public", "events")]
    assert len(outcome.plan.batched[0].batches(1000)) == 25
    assert outcome.plan.preview.deleted_counts()[("public", "comments")] == 140
    assert sorted(int(str(o.key[0])) for o in outcome.predicted_orphans) == list(range(1, 11))  # media 11 is shared
    assert all(o.values["storage_key"].startswith("blob/") for o in outcome.predicted_orphans)  # type: ignore[union-attr]
    assert keys(conn) == before
    assert not (tmp_path / "ev").exists()


@pytest.mark.parametrize("mode", ["report", "delete"])
def test_confirm_erases_the_user_in_batches_with_proof_and_leaves_others_intact(db: Any, tmp_path: Path,
                                                                               mode: str) -> None:
    _dsn, conn = db
    before, owned = keys(conn), users_rows(conn)
    outcome = erase_user(conn, params(orphans=mode), HEAVY, confirm=True, evidence_dir=tmp_path)
    assert outcome.proof is not None and outcome.proof.ok, outcome.proof and outcome.proof.message
    assert outcome.erasure is not None
    batches = [t for t in outcome.erasure.transactions if t.kind == "batch"]
    assert len(batches) == 25 and all(t.keys == 1000 and t.deleted == {"public.events": 1000} for t in batches)
    final = outcome.erasure.transactions[-1]
    assert final.kind == "final" and "public.events" not in final.deleted
    assert outcome.proof.inserted == {"public.audit_log": 30}  # reported, not a failure
    assert_erased(conn, before, owned, orphans_deleted=mode == "delete")
    assert outcome.evidence is not None
    csv_text = (outcome.evidence / "orphans.csv").read_text()
    assert csv_text.count("blob/") == 10 and csv_text.count(mode + "ed" if mode == "report" else "deleted") == 10


def test_a_crash_between_batches_is_finished_by_a_rerun(db: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    before, owned = keys(conn), users_rows(conn)

    def crash(done: int) -> None:
        if done == 7:
            raise KeyboardInterrupt("killed after 7 batches")

    with pytest.raises(KeyboardInterrupt):
        erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path, after_batch=crash)
    left = conn.execute("SELECT count(*) FROM events WHERE user_id = %(u)s", {"u": int(HEAVY)}).fetchone()
    assert left is not None and left[0] == 25000 - 7000  # whole batches only, the user still there
    assert conn.execute("SELECT count(*) FROM users WHERE id = %(u)s", {"u": int(HEAVY)}).fetchone() == (1,)
    rerun = erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path)
    assert rerun.proof is not None and rerun.proof.ok, rerun.proof and rerun.proof.message
    assert rerun.erasure is not None
    assert sum(1 for t in rerun.erasure.transactions if t.kind == "batch") == 18
    assert_erased(conn, before, owned, orphans_deleted=False)


def test_an_unindexed_fk_on_a_big_table_refuses_with_the_index_that_fixes_it(db: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    conn.execute("DROP INDEX events_user_id_idx")
    before = keys(conn)
    outcome = erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path / "ev")
    assert not outcome.ok and outcome.erasure is None
    assert outcome.plan is not None and len(outcome.plan.refused) == 1
    assert "CREATE INDEX CONCURRENTLY" in outcome.plan.refused[0] and "public.events" in outcome.plan.refused[0]
    assert keys(conn) == before and not (tmp_path / "ev").exists()
    allowed = erase_user(conn, params(allow_unindexed=True), HEAVY, confirm=True, evidence_dir=tmp_path / "ev")
    assert allowed.proof is not None and allowed.proof.ok


def test_an_fk_not_as_the_policy_wants_refuses_before_anything_is_deleted(db: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    conn.execute("ALTER TABLE events DROP CONSTRAINT events_user_id_fkey, "
                 "ADD CONSTRAINT events_user_id_fkey FOREIGN KEY (user_id) REFERENCES users(id)")
    before = keys(conn)
    outcome = erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path / "ev")
    assert not outcome.ok and outcome.erasure is None
    assert len(outcome.preflight) == 1 and "events_user_id_fkey" in outcome.preflight[0]
    assert "NO ACTION" in outcome.preflight[0] and "CASCADE" in outcome.preflight[0]
    assert keys(conn) == before


def file_text(path: Path) -> str:
    """A file's text as a search sees it: a gzipped file decompressed, a binary one as Latin-1."""
    data = path.read_bytes()
    if path.name.endswith(".gz"):
        data = gzip.decompress(data)
    return data.decode("latin-1")


def assert_no_value_of_the_user(folder: Path, *, key_allowed: Callable[[Path], bool]) -> None:
    """No seeded value of the heavy user in any file of ``folder``; the key only where allowed."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
        text = file_text(path)
        for value in (EMAIL, "Quartzfeld", "Erin"):
            assert value not in text, (path.name, value)
        # the key as a value of its own, not as six digits inside some 64-digit hash
        as_value = re.search(rf"(?<![0-9a-f]){HEAVY}(?![0-9a-f])", text) is not None
        assert not as_value or key_allowed(path), path.name


@pytest.mark.parametrize("hash_keys", [False, True])
def test_the_evidence_holds_no_value_of_the_erased_user(db: Any, tmp_path: Path, hash_keys: bool) -> None:
    _dsn, conn = db
    outcome: EraseOutcome = erase_user(conn, params(hash_keys=hash_keys), HEAVY, confirm=True, evidence_dir=tmp_path)
    assert outcome.evidence is not None and outcome.proof is not None and outcome.proof.ok
    assert {f.name for f in outcome.evidence.iterdir()} == {
        "manifest.json", "orphans.csv", "receipt.html", "receipt.json", "receipt.md", "deleted_keys.csv.gz"}
    assert_no_value_of_the_user(outcome.evidence,
                                key_allowed=lambda p: not hash_keys and p.name.startswith("receipt"))
    assert (HEAVY in file_text(outcome.evidence / "receipt.md")) != hash_keys
    receipt = json.loads((outcome.evidence / "receipt.json").read_text())
    assert receipt["ok"] and {t["table"]: t["deleted"] for t in receipt["tables"]}["public.comments"] == 140
    assert ("discarded" in receipt["user"]["hashing"]) == hash_keys
    # One line per deleted row in the gzipped file; the receipt keeps a count and one digest per table.
    rows = list(csv.reader(io.StringIO(file_text(outcome.evidence / "deleted_keys.csv.gz"))))
    assert rows[0] == ["table", "key_sha256"] and len(rows) == 1 + sum(t["deleted"] for t in receipt["tables"])
    events = [h for table, h in rows[1:] if table == "public.events"]
    assert len(events) == len(set(events)) == 25000 and all(re.fullmatch("[0-9a-f]{64}", h) for h in events)
    assert receipt["deleted_keys"]["tables"]["public.events"] == {"rows": 25000, "sha256": keys_digest(events)}
    assert (outcome.evidence / "receipt.json").stat().st_size < 20_000  # not one hash per row any more
    assert verify_evidence(outcome.evidence) == []


def test_read_ids_needs_at_least_one(tmp_path: Path) -> None:
    from runbook_lib.erase_run import read_ids

    with pytest.raises(ParameterError):
        read_ids(None, None)
    (tmp_path / "ids").write_text("1\n\n 2 # second\n")
    assert read_ids("0", str(tmp_path / "ids")) == ["0", "1", "2"]


def test_markdown_escaping_and_key_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib import markup, receipt
    from runbook_lib.receipt import SALT_ENV, KeyHasher

    # The receipt escapes with the project's one Markdown escape (which also escapes "=").
    assert receipt.md_text is markup.md_text
    assert receipt.md_text("a_b*c <img src=x>|[l](u)") == r"a\_b\*c &lt;img src\=x&gt;\|\[l\]\(u\)"
    plain = KeyHasher(False)
    assert plain("public.users", ("42",)) == KeyHasher(False)("public.users", ("42",))
    monkeypatch.delenv(SALT_ENV, raising=False)
    first, second = KeyHasher(True), KeyHasher(True)
    assert first("public.users", ("42",)) != second("public.users", ("42",))  # the random salt is not kept
    assert "discarded" in first.salt_note
    monkeypatch.setenv(SALT_ENV, "operator-held")
    kept = KeyHasher(True)
    assert kept("public.users", ("42",)) == KeyHasher(True)("public.users", ("42",)) != plain("public.users", ("42",))
    assert SALT_ENV in kept.salt_note


def test_several_heavy_tables_go_bottom_up_and_the_sums_still_prove_it(db: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    conn.execute("DELETE FROM events WHERE user_id = %(u)s", {"u": int(HEAVY)})  # not the point here
    before, owned = keys(conn), users_rows(conn)
    outcome = erase_user(conn, params(batch_rows=25), HEAVY, confirm=True, evidence_dir=tmp_path)
    assert outcome.proof is not None and outcome.proof.ok, outcome.proof and outcome.proof.message
    assert outcome.erasure is not None
    order = [t.table for t in outcome.erasure.transactions if t.kind == "batch"]
    assert order.count("public.comments") == 6 and order.count("public.posts") == 2
    # comments reference posts: every batch of comments before the first batch of posts
    assert max(i for i, t in enumerate(order) if t == "public.comments") < order.index("public.posts")
    assert all(t.keys <= 25 for t in outcome.erasure.transactions)
    assert_erased(conn, before, owned, orphans_deleted=False)


def test_a_row_added_meanwhile_rolls_the_final_transaction_back_and_a_rerun_takes_it(
        db: Any, tmp_path: Path) -> None:
    dsn, conn = db
    before, owned = keys(conn), users_rows(conn)

    def user_posts_again(done: int) -> None:
        if done == 3:  # another session: the user is still active while the erasure runs
            with psycopg.connect(dsn, autocommit=True) as other:
                other.execute("INSERT INTO events (user_id, kind, detail) VALUES (%s, 'view', 'late')", [int(HEAVY)])

    outcome = erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path, after_batch=user_posts_again)
    assert outcome.proof is not None and not outcome.proof.ok and outcome.erasure is not None
    assert outcome.erasure.failure is not None and "public.events: 25001 row(s) deleted, the preview said 25000" \
        in outcome.erasure.failure
    assert conn.execute("SELECT count(*) FROM users WHERE id = %(u)s", {"u": int(HEAVY)}).fetchone() == (1,)
    assert outcome.evidence is not None
    assert json.loads((outcome.evidence / "receipt.json").read_text())["ok"] is False
    rerun = erase_user(conn, params(), HEAVY, confirm=True, evidence_dir=tmp_path)
    assert rerun.proof is not None and rerun.proof.ok, rerun.proof and rerun.proof.message
    assert_erased(conn, before, owned, orphans_deleted=False)


QA_ORPHANS = """
WITH dq AS (SELECT id, media_asset_id FROM question WHERE asker_id = %(u)s),
     ep AS (SELECT id FROM expert_profile WHERE user_id = %(u)s),
     da AS (SELECT id, media_asset_id FROM answer
            WHERE expert_profile_id IN (SELECT id FROM ep) OR question_id IN (SELECT id FROM dq)),
     used AS (SELECT media_asset_id AS m FROM dq UNION SELECT media_asset_id FROM da),
     kept AS (SELECT media_asset_id AS m FROM question WHERE id NOT IN (SELECT id FROM dq)
              UNION SELECT media_asset_id FROM answer WHERE id NOT IN (SELECT id FROM da))
SELECT m FROM used WHERE m IS NOT NULL AND m NOT IN (SELECT m FROM kept WHERE m IS NOT NULL) ORDER BY m
"""


def test_an_expert_on_the_qa_demo_leaves_media_for_the_clean_up_job(make_db: Any, tmp_path: Path) -> None:
    """The demo Q&A schema after its plan is applied: deleting an expert leaves media assets nothing
    references any more; they are reported with their storage ids, then deleted with orphans: delete."""
    from runbook_lib.demo import ROOT
    from tests.test_db_apply import full_run

    dsn = make_db((ROOT / "demo" / "qa_marketplace.sql").read_text(encoding="utf-8"))
    rules = params_mod.read_file(ROOT / "parameters" / "demo_qa.yaml")["rules"]
    assert full_run(dsn, tmp_path / "applied", parent_table="user", rules=rules).verify.ok
    with psycopg.connect(dsn, autocommit=True) as conn:
        experts = [int(r[0]) for r in conn.execute("SELECT user_id FROM expert_profile ORDER BY user_id").fetchall()]
        expected = {u: [int(r[0]) for r in conn.execute(QA_ORPHANS, {"u": u}).fetchall()] for u in experts}
        expert = max(experts, key=lambda u: len(expected[u]))
        assert len(expected[expert]) >= 2, expected
        media = {int(r[0]): r[1] for r in conn.execute("SELECT id, asset_id FROM media_asset").fetchall()}
        settings = {"orphan_columns": ["media_asset.asset_id"]}
        qa = params_mod.validate({"parent_table": "user", "rules": rules, "erase": {**settings, "orphans": "report"}})
        shown = erase_user(conn, qa, str(expert), confirm=False, evidence_dir=tmp_path / "dry")
        assert sorted(int(str(o.key[0])) for o in shown.predicted_orphans) == expected[expert]
        qa = params_mod.validate({"parent_table": "user", "rules": rules, "erase": {**settings, "orphans": "delete"}})
        done = erase_user(conn, qa, str(expert), confirm=True, evidence_dir=tmp_path / "ev")
        assert done.proof is not None and done.proof.ok, done.proof and done.proof.message
        left = {int(r[0]) for r in conn.execute("SELECT id FROM media_asset").fetchall()}
    assert left == set(media) - set(expected[expert])
    assert done.evidence is not None
    listed = (done.evidence / "orphans.csv").read_text()
    assert all(media[m] in listed for m in expected[expert])


@pytest.mark.parametrize("bad", ["no-such-key-4711", "99999999"])
def test_with_hashed_keys_a_bad_key_is_refused_without_being_named(db: Any, bad: str) -> None:
    """The notebook's error would be kept in the evidence: it must not quote the key."""
    from runbook_lib.errors import ParameterError
    from runbook_lib.erase_run import preview_user

    _dsn, conn = db
    with pytest.raises(ParameterError) as hidden:
        preview_user(conn, params(hash_keys=True), bad)
    assert bad not in str(hidden.value) and "key hidden" in str(hidden.value)
    with pytest.raises(ParameterError) as named:
        preview_user(conn, params(), bad)
    assert bad in str(named.value)
