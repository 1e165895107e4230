"""``runbook erase`` as a command: one run folder per user (executed notebook 08 and its page, receipt,
orphans, index page, manifest) that verify-evidence accepts, live progress, refusals; and batches that
wait for a row lock another session holds: retried with backoff, or stopped cleanly for a rerun."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from runbook_lib import params as params_mod
from runbook_lib.erase_run import carry_out, erase_user, preview_user
from tests.test_erase import db  # noqa: F401 - the same fixture: the seeded social schema
from tests.test_erase import (HEAVY, RULES, assert_erased, assert_no_value_of_the_user, file_text, keys, params,
                              users_rows)

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ "
RECEIPT = {"receipt.json", "receipt.md", "receipt.html", "orphans.csv", "deleted_keys.csv.gz"}
RUN_FILES = {"08_erase_user.ipynb", "08_erase_user.html", "index.html", "manifest.json", "parameters.json",
             "identity.json", "verdicts/erase.json"}


def runbook(*args: str, dsn: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["RUNBOOK_DSN"] = dsn
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def params_file(tmp_path: Path, **erase: Any) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps({"parent_table": "users", "rules": RULES, "erase": {"batch_rows": 1000, **erase}}))
    return path


def files_of(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_bad_ids_are_refused_with_exit_2_before_anything_changes(db: Any, tmp_path: Path) -> None:
    dsn, conn = db
    path = params_file(tmp_path)
    before = keys(conn)
    for bad in ("not-a-number", "424242"):
        result = runbook("erase", "--params", str(path), "--user-id", bad, "--confirm", dsn=dsn, cwd=tmp_path)
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert bad in result.stderr
    queue = tmp_path / "ids.txt"
    queue.write_text(f"{HEAVY}\n# a comment\n999999\n")
    result = runbook("erase", "--params", str(path), "--user-ids-file", str(queue), "--confirm", dsn=dsn, cwd=tmp_path)
    assert result.returncode == 2 and "999999" in result.stderr
    assert keys(conn) == before and not (tmp_path / "evidence").exists()
    shown = runbook("preview", "--params", str(path), "--user-id", HEAVY, dsn=dsn, cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    tail = shown.stdout.split("orphans, for a clean-up job")[1]
    assert sum(1 for line in tail.splitlines() if line.startswith("public.media")) == 10


def test_a_preview_changes_nothing_and_confirm_writes_a_run_folder_that_verifies(db: Any, tmp_path: Path) -> None:
    dsn, conn = db
    path, ev = params_file(tmp_path), tmp_path / "ev"
    before, owned = keys(conn), users_rows(conn)
    dry = runbook("erase", "--params", str(path), "--user-id", HEAVY, "--evidence-dir", str(ev), dsn=dsn, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert "public.events" in dry.stdout and "nothing changed" in dry.stdout and keys(conn) == before
    [preview] = ev.iterdir()
    assert preview.name.endswith("-erase-preview") and not files_of(preview) & RECEIPT
    assert json.loads((preview / "manifest.json").read_text())["kind"] == "erase-preview"
    assert "nothing was erased in this run" in (preview / "index.html").read_text()
    done = runbook("erase", "--params", str(path), "--user-id", HEAVY, "--confirm", "--evidence-dir", str(ev),
                   dsn=dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"user {HEAVY}: PASS" in done.stdout
    [folder] = [p for p in ev.iterdir() if p != preview]
    assert folder.name.endswith("-erase") and files_of(folder) == RUN_FILES | RECEIPT
    assert_erased(conn, before, owned, orphans_deleted=False)
    # Live progress: one timestamped line per batch as it commits, and the final transaction.
    for n in (1, 25):
        assert re.search(STAMP + rf"batch {n} of 25 \(public\.events\): 1000 row\(s\) deleted in [0-9.]+s, "
                         r"[0-9.]+s elapsed", done.stderr), done.stderr[-3000:]
    assert re.search(STAMP + r"final transaction \(public\.users\): \d+ row\(s\) deleted", done.stderr)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["kind"] == "erase" and manifest["ok"] and manifest["steps"][0]["status"] == "passed"
    page = (folder / "index.html").read_text()
    assert "ALL STEPS PASSED" in page and 'href="receipt.html"' in page and 'href="08_erase_user.html"' in page
    assert "PASS: " in (folder / "08_erase_user.html").read_text()
    verified = runbook("verify-evidence", str(folder), dsn=dsn, cwd=tmp_path)
    assert verified.returncode == 0 and "evidence verifies" in verified.stdout, verified.stderr
    (folder / "orphans.csv").write_text("table\n")
    assert runbook("verify-evidence", str(folder), dsn=dsn, cwd=tmp_path).returncode == 1


@pytest.mark.parametrize("hash_keys", [False, True])
def test_the_run_folder_holds_no_value_of_the_user_and_hashed_keys_not_even_the_key(
        db: Any, tmp_path: Path, hash_keys: bool) -> None:
    dsn, conn = db
    conn.execute("DELETE FROM events WHERE user_id = %(u)s", {"u": int(HEAVY)})  # a light user: a quick run
    path, ev = params_file(tmp_path, hash_keys=hash_keys), tmp_path / "ev"
    done = runbook("erase", "--params", str(path), "--user-id", HEAVY, "--confirm", "--evidence-dir", str(ev),
                   dsn=dsn, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [folder] = ev.iterdir()
    assert files_of(folder) == RUN_FILES | RECEIPT
    assert_no_value_of_the_user(folder, key_allowed=lambda _path: not hash_keys)
    assert (HEAVY in file_text(folder / "08_erase_user.ipynb")) != hash_keys
    assert f"user {HEAVY}: PASS" in done.stdout  # the operator's own terminal names the user


def test_a_queue_makes_one_folder_per_user_and_goes_on_past_a_blocked_one(db: Any, tmp_path: Path) -> None:
    dsn, conn = db
    conn.execute("DROP INDEX events_user_id_idx")  # the heavy user's events would be scanned in full
    path, ev = params_file(tmp_path), tmp_path / "ev"
    queue = tmp_path / "ids.txt"
    queue.write_text(f"{HEAVY}\n7\n")
    result = runbook("erase", "--params", str(path), "--user-ids-file", str(queue), "--confirm",
                     "--evidence-dir", str(ev), dsn=dsn, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"user {HEAVY}: blocked: public.events" in result.stderr and "CREATE INDEX CONCURRENTLY" in result.stderr
    assert "user 7: PASS" in result.stdout and "1 of 2 user(s) erased, 1 blocked or failed" in result.stdout
    assert conn.execute("SELECT array_agg(id ORDER BY id) FROM users WHERE id IN (7, %(u)s)",
                        {"u": int(HEAVY)}).fetchone() == ([int(HEAVY)],)
    folders = sorted(ev.iterdir())  # run ids start with the time: the queue's order
    assert len(folders) == 2 and all(f.name.endswith("-erase") for f in folders)
    blocked, erased = folders
    assert files_of(erased) == RUN_FILES | RECEIPT and not files_of(blocked) & RECEIPT
    assert json.loads((blocked / "verdicts" / "erase.json").read_text())["status"] == "failed"
    assert json.loads((blocked / "manifest.json").read_text())["ok"] is False
    for folder in folders:
        assert runbook("verify-evidence", str(folder), dsn=dsn, cwd=tmp_path).returncode == 0


@pytest.fixture
def other(db: Any) -> Iterator[psycopg.Connection[Any]]:
    """Another session, in a transaction of its own (row locks it takes are held until it ends)."""
    dsn, _conn = db
    with psycopg.connect(dsn) as conn:
        yield conn


def lock_batch(other: psycopg.Connection[Any], conn: psycopg.Connection[Any], batch: int) -> int:
    """Lock (FOR UPDATE, in ``other``) the heavy user's events that erasure batch ``batch`` deletes."""
    plan = preview_user(conn, params(), HEAVY).plan
    assert plan is not None
    _leaf, ids = plan.batched[0].batches(1000)[batch - 1]
    rows = other.execute("SELECT id FROM events WHERE id = ANY(%s) FOR UPDATE",
                         [[int(str(i[0])) for i in ids]]).fetchall()
    return len(rows)


def retrying(attempts: int = 6, backoff: float = 0.3) -> params_mod.Parameters:
    """A short lock_timeout, and the retries apply uses."""
    return params_mod.validate({"parent_table": "users", "rules": RULES, "lock_timeout": "200ms",
                                "lock_retries": attempts, "retry_backoff": backoff,
                                "erase": {"batch_rows": 1000, "orphan_columns": ["media.storage_key"]}})


def test_a_batch_waiting_for_a_row_lock_is_retried_and_completes(db: Any, other: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    before, owned = keys(conn), users_rows(conn)
    assert lock_batch(other, conn, 2) == 1000
    lines: list[str] = []

    def progress(line: str) -> None:
        lines.append(line)
        if sum("retrying in" in seen for seen in lines) == 2:
            other.rollback()  # the other session ends after the batch has waited twice

    outcome = erase_user(conn, retrying(), HEAVY, confirm=True, evidence_dir=tmp_path, progress=progress)
    assert outcome.proof is not None and outcome.proof.ok, outcome.proof and outcome.proof.message
    waits = [line for line in lines if "lock not available" in line]
    assert len(waits) == 2 and all(line.startswith("batch 2 of 25 (public.events): lock not available within lock_timeout "
                                         "200ms (attempt ") and "retrying in" in line for line in waits), lines
    assert sum(1 for line in lines if line.startswith("batch 2 of 25") and "1000 row(s) deleted" in line) == 1
    assert outcome.erasure is not None and len(outcome.erasure.transactions) == 26
    assert_erased(conn, before, owned, orphans_deleted=False)


def test_a_lock_held_past_every_retry_stops_cleanly_and_a_rerun_finishes(db: Any, other: Any, tmp_path: Path) -> None:
    _dsn, conn = db
    before, owned = keys(conn), users_rows(conn)
    assert lock_batch(other, conn, 3) == 1000
    lines: list[str] = []
    outcome = erase_user(conn, retrying(attempts=2, backoff=0.05), HEAVY, confirm=True, evidence_dir=tmp_path,
                         progress=lines.append)
    assert not outcome.ok and outcome.erasure is not None and outcome.erasure.failure is not None
    assert outcome.erasure.failure.startswith(
        "batch 3 of 25 (public.events): lock not available within lock_timeout 200ms, gave up after 2 attempt(s)")
    assert "run the erasure again to finish" in outcome.erasure.failure
    assert sum(1 for line in lines if "retrying in" in line) == 1
    left = conn.execute("SELECT count(*) FROM events WHERE user_id = %(u)s", {"u": int(HEAVY)}).fetchone()
    assert left == (23000,)  # two whole batches done, the third rolled back, the user still there
    assert conn.execute("SELECT count(*) FROM users WHERE id = %(u)s", {"u": int(HEAVY)}).fetchone() == (1,)
    assert outcome.evidence is not None
    assert json.loads((outcome.evidence / "receipt.json").read_text())["ok"] is False
    other.rollback()
    rerun = preview_user(conn, retrying(), HEAVY)
    rerun = carry_out(conn, retrying(), rerun, evidence_dir=tmp_path)
    assert rerun.proof is not None and rerun.proof.ok, rerun.proof and rerun.proof.message
    assert rerun.erasure is not None and sum(1 for t in rerun.erasure.transactions if t.kind == "batch") == 23
    assert_erased(conn, before, owned, orphans_deleted=False)


def test_a_deadlock_victim_is_retried_like_a_lock_wait_and_other_errors_are_not(db: Any) -> None:
    """The server's own SQLSTATE 40P01 (raised as a deadlock would) on the first attempt only."""
    from runbook_lib.erase import _with_retries

    _dsn, conn = db
    attempts: list[int] = []
    raise_as = "DO $$ BEGIN RAISE EXCEPTION 'as a deadlock' USING ERRCODE = '{}'; END $$"

    def body(code: str) -> str:
        attempts.append(1)
        with conn.transaction():
            if len(attempts) == 1:
                conn.execute(raise_as.format(code))
            return "done"

    lines: list[str] = []
    assert _with_retries("batch 1 of 1 (t)", retrying(backoff=0.01), lambda: body("40P01"), lines.append) == "done"
    assert len(attempts) == 2
    assert lines[0].startswith("batch 1 of 1 (t): chosen as a deadlock's victim (attempt 1 of 6)")
    attempts.clear()
    with pytest.raises(psycopg.errors.QueryCanceled):  # a statement_timeout is not a lock wait
        _with_retries("batch 1 of 1 (t)", retrying(backoff=0.01), lambda: body("57014"), lines.append)
    assert len(attempts) == 1
