"""An erasure is recorded in the database's run history by its own final transaction, so the database
vouches for its receipt; a preview records nothing, an edited receipt is not vouched for, and an
erasure folder is never rolled back."""
from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from runbook_lib import history, vouch
from runbook_lib.erase_run import carry_out, preview_user
from tests.test_erase import db  # noqa: F401 - the same fixture: the seeded social schema
from tests.test_erase import HEAVY, keys, params
from tests.test_erase_evidence import params_file, runbook
from tests.test_vouch import reseal

VOUCHED = "vouched by the database's run history: yes"
NOT_VOUCHED = "vouched by the database's run history: no"


def history_table(conn: psycopg.Connection[Any]) -> bool:
    return history.exists(conn, "cascade_runbook")


def erase_rows(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT * FROM cascade_runbook.history WHERE kind = 'erase'").fetchall()


def light(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DELETE FROM events WHERE user_id = %(u)s", {"u": int(HEAVY)})  # a quick run


def test_an_erasure_is_recorded_and_vouched_for_and_an_edited_receipt_is_not(
        db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn, conn = db
    light(conn)
    path, ev = params_file(tmp_path, hash_keys=True), tmp_path / "ev"
    assert not history_table(conn)  # the keys cascade already: no apply ever created the history
    dry = runbook("erase", "--params", str(path), "--user-id", HEAVY, "--evidence-dir", str(ev), dsn=dsn, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "cascade_runbook.history does not exist yet: the erasure creates it" in dry.stdout.replace("\n      ", " ")
    assert not history_table(conn)  # a preview records nothing, and creates nothing
    done = runbook("erase", "--params", str(path), "--user-id", HEAVY, "--confirm", "--evidence-dir", str(ev),
                   dsn=dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [folder] = [p for p in ev.iterdir() if p.name.endswith("-erase")]
    [row] = conn.execute("SELECT run_id, kind, status, parent_table, plan_sha256, snapshot_sha256, manifest_sha256, "
                         "finished IS NOT NULL FROM cascade_runbook.history").fetchall()
    receipt = json.loads((folder / "receipt.json").read_text())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert row[:4] == (folder.name, "erase", "erased", "public.users") and row[7]
    assert (row[4], row[5]) == history.receipt_hashes(receipt) and row[6] == manifest["manifest_sha256"]
    # Neither the key nor its hash: the row ties to the receipt only by counts and key digests.
    whole = json.dumps([str(v) for v in erase_rows(conn)[0]])
    assert HEAVY not in whole and receipt["user"]["key_sha256"] not in whole
    checked = runbook("verify-evidence", str(folder), dsn=dsn, cwd=tmp_path)
    assert checked.returncode == 0 and VOUCHED in checked.stdout, checked.stdout + checked.stderr

    refused = runbook("rollback", str(folder), dsn=dsn, cwd=tmp_path)
    assert refused.returncode == 2 and "is an erasure; only an apply is rolled back" in refused.stderr, refused.stderr

    # The editor without the database: fewer rows claimed, the manifest resealed so that it verifies.
    receipt["tables"][0]["deleted"] += 1
    (folder / "receipt.json").write_text(json.dumps(receipt, indent=2, sort_keys=True) + "\n")
    reseal(folder, None, monkeypatch)
    edited = runbook("verify-evidence", str(folder), dsn=dsn, cwd=tmp_path)
    assert edited.returncode == 0 and "evidence verifies" in edited.stdout, edited.stderr
    assert f"{NOT_VOUCHED} (manifest.json of erasure {folder.name} differs from the sha256 recorded in " \
           "cascade_runbook.history)" in edited.stdout, edited.stdout


def test_only_a_committed_erasure_is_recorded_and_a_sealed_receipt_is_vouched_for(
        db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn, conn = db
    light(conn)
    for statement in history.create_statements("cascade_runbook"):
        conn.execute(statement)
    stale = preview_user(conn, params(), "7")
    conn.execute("INSERT INTO events (user_id, kind, detail) VALUES (7, 'view', 'after the preview')")
    failed = carry_out(conn, params(), stale, evidence_dir=tmp_path / "ev")
    assert failed.erasure is not None and failed.erasure.failure and "does not match the preview" in \
        failed.erasure.failure
    assert erase_rows(conn) == []  # the final transaction rolled back, and its history row with it
    assert vouch.vouched(conn, "cascade_runbook", failed.evidence or tmp_path)[0] is False

    before = keys(conn)
    done = carry_out(conn, params(), preview_user(conn, params(), "7"), evidence_dir=tmp_path / "ev")
    assert done.ok and done.evidence is not None and keys(conn) != before
    ok, detail = vouch.vouched(conn, "cascade_runbook", done.evidence)
    assert ok and detail == "recorded in cascade_runbook.history, status erased"
    (done.evidence / "receipt.md").write_text("# Erasure receipt\n\nNothing happened.\n")
    reseal(done.evidence, None, monkeypatch)
    assert vouch.vouched(conn, "cascade_runbook", done.evidence)[0] is False


@pytest.mark.parametrize("history_exists", [True, False])
def test_a_role_that_cannot_write_the_history_is_refused_before_anything_is_deleted(
        db: Any, history_exists: bool) -> None:
    dsn, conn = db
    light(conn)
    if history_exists:
        for statement in history.create_statements("cascade_runbook"):
            conn.execute(statement)
    role = f"rb_eraser_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        # What an application's own role often has: its tables, not the runbook's history, and no
        # CREATE on the database (PUBLIC does not get it).
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}")
                     .format(sql.Identifier(role)))
        if history_exists:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA cascade_runbook TO {}").format(sql.Identifier(role)))
        problem = (f"role {role} may not INSERT into cascade_runbook.history" if history_exists else
                   f"cascade_runbook.history does not exist and role {role} may not create it "
                   "(no CREATE on the database)")
        before = keys(conn)
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as eraser:
            outcome = preview_user(eraser, params(), "7")
            assert outcome.blocked == [f"the erasure could not be recorded in the run history: {problem}"]
            refused = carry_out(eraser, params(), outcome)
        assert refused.erasure is None and not refused.ok
        assert keys(conn) == before
        assert (erase_rows(conn) == []) if history_exists else not history_table(conn)
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_run_folder_takes_one_erasure_and_no_folder_of_another_recorded_run(db: Any, tmp_path: Path) -> None:
    """A notebook opened by hand may continue in a folder that already holds a run: its receipt and its
    history row are never overwritten or doubled, and nothing is deleted for the refused erasure."""
    _dsn, conn = db
    light(conn)
    folder = tmp_path / "by-hand"
    folder.mkdir()
    first = carry_out(conn, params(), preview_user(conn, params(), "7"), run_dir=folder)
    assert first.ok and first.erasure is not None
    receipt_before = (folder / "receipt.json").read_bytes()
    before = keys(conn)
    second = carry_out(conn, params(), preview_user(conn, params(), "8"), run_dir=folder)
    assert second.erasure is None and not second.ok
    assert second.blocked[-1].startswith("run folder by-hand already holds a run recorded in the history")
    assert keys(conn) == before and (folder / "receipt.json").read_bytes() == receipt_before
    # A folder whose name the history knows (an apply made there) is refused the same way.
    applied = tmp_path / "applied-here"
    applied.mkdir()
    history.record_start(conn, "cascade_runbook", run_id=applied.name, kind="apply", parent="public.users",
                         hashes={"plan.json": "a", "snapshot_before.json": "b"})
    third = carry_out(conn, params(), preview_user(conn, params(), "8"), run_dir=applied)
    assert third.erasure is None and keys(conn) == before
    assert len(erase_rows(conn)) == 1
