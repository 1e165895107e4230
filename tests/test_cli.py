"""The command line end to end: real notebooks run by papermill against a real server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import sql_file

CORE_STEPS = "preflight,backup,inspect,plan,apply,verify"


def runbook(*args: str, dsn: str | None, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    full_env.pop("RUNBOOK_DSN", None)
    if dsn is not None:
        full_env["RUNBOOK_DSN"] = dsn
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=900)


def constraint_defs(dsn: str) -> dict[str, tuple[int, str, str | None]]:
    with psycopg.connect(dsn) as conn:
        conn.execute("SET search_path = ''")
        rows = conn.execute(
            "SELECT conrelid::regclass::text || '.' || conname, oid::int8, pg_get_constraintdef(oid), "
            "obj_description(oid, 'pg_constraint') FROM pg_constraint WHERE contype = 'f'").fetchall()
    return {name: (oid, definition, comment) for name, oid, definition, comment in rows}


def write_params(tmp_path: Path, **values: Any) -> Path:
    data = {"parent_table": "users", "dry_run": False, "rules": {"billing": "SET NULL"},
            "backup": {"enabled": True, "dir": str(tmp_path / "backups")}}
    data.update(values)
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def only_run(evidence: Path) -> Path:
    runs = sorted(p for p in evidence.iterdir() if p.is_dir())
    return runs[-1]


@pytest.mark.slow
def test_run_applies_verifies_reruns_as_noop_and_rolls_back_exactly(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    params = write_params(tmp_path)
    evidence = tmp_path / "evidence"

    first = runbook("run", "--params", str(params), "--evidence-dir", str(evidence), dsn=dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_dir = only_run(evidence)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert [s["status"] for s in manifest["steps"]] == ["passed"] * 7
    test_user = json.loads((run_dir / "test_user.json").read_text())
    assert test_user["ok"] and "none left" in test_user["message"] and not test_user["committed"]
    assert "index.html" in manifest["files"] and "delete_script.sql" in manifest["files"]
    for nb in ("00_preflight", "01_backup", "02_inspect", "03_plan", "04_apply", "05_verify", "06_test_user_deletion"):
        assert f"{nb}.ipynb" in manifest["files"] and f"{nb}.html" in manifest["files"]
    for name in ("plan.sql", "rollback.sql", "snapshot_before.json", "snapshot_after.json", "plan.json"):
        assert name in manifest["files"]
    assert manifest["backup"]["verified"] and Path(manifest["backup"]["path"]).is_file()
    assert manifest["server"]["database"] == psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    assert runbook("verify-evidence", str(run_dir), dsn=None, cwd=tmp_path).returncode == 0
    after = constraint_defs(dsn)
    assert set(after) == set(before)
    changed = {k for k in before if before[k][1] != after[k][1]}
    # 16 constraints, plus the clones of the partitioned one on its 2 partitions.
    assert len(changed) == 18 and all("ON DELETE" in after[k][1] for k in changed)
    assert after["public.memberships.memberships_owner_fk"][2] == "the owner's memberships"

    second = runbook("run", "--params", str(params), "--evidence-dir", str(evidence), "--steps", CORE_STEPS,
                     dsn=dsn, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    rerun = only_run(evidence)
    assert rerun != run_dir
    assert not [i for i in json.loads((rerun / "plan.json").read_text())["items"] if i["change"]]
    assert constraint_defs(dsn) == after  # same oids: nothing was even re-created

    rolled = runbook("rollback", str(run_dir), dsn=dsn, cwd=tmp_path)
    assert rolled.returncode == 0, rolled.stderr
    restored = constraint_defs(dsn)
    assert {k: v[1:] for k, v in restored.items()} == {k: v[1:] for k, v in before.items()}
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.ForeignKeyViolation):
        conn.execute("DELETE FROM public.users WHERE id = 1")


@pytest.mark.slow
def test_dry_run_by_default_changes_nothing(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    params = tmp_path / "p.yaml"
    params.write_text(f"parent_table: users\nbackup: {{enabled: false, dir: {tmp_path}}}\n")
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                     CORE_STEPS, dsn=dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert constraint_defs(dsn) == before
    run_dir = only_run(tmp_path / "ev")
    applied = json.loads((run_dir / "apply_result.json").read_text())
    assert applied["dry_run"] is True and len(applied["statements"]) > 16
    assert json.loads((run_dir / "backup.json").read_text())["enabled"] is False


@pytest.mark.slow
def test_a_failed_step_names_itself_and_its_notebook_and_stops_the_run(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    params = write_params(tmp_path, lock_timeout="100ms", lock_retries=2, retry_backoff=0.05)
    blocker = psycopg.connect(dsn)
    try:
        blocker.execute("LOCK TABLE public.appointments IN ACCESS SHARE MODE")
        result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                         CORE_STEPS, dsn=dsn, cwd=tmp_path)
    finally:
        blocker.close()
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "step apply failed" in last and "04_apply.ipynb" in last
    notebook = Path(last.rsplit("executed notebook: ", 1)[1])
    assert notebook.is_file()
    manifest = json.loads((notebook.parent / "manifest.json").read_text())
    assert [s["status"] for s in manifest["steps"]][-2:] == ["failed", "not run"]
    after = constraint_defs(dsn)
    # Both swaps that need a lock on appointments (as child and as referenced table) gave up and
    # were left exactly as they were; the 14 others were done (16 rows with the 2 partition clones).
    for blocked in ("public.appointments.appointments_user_id_fkey",
                    "public.prescriptions.prescriptions_appointment_id_fkey"):
        assert after[blocked] == before[blocked]
        assert blocked in result.stderr or blocked in (notebook.parent / "apply_result.json").read_text()
    assert sum(1 for k in before if after[k] != before[k]) == 16


@pytest.mark.parametrize("case", ["unknown key", "missing parent", "bad step", "unreachable", "bad override"])
def test_bad_input_is_one_line_nonzero_and_leaves_no_evidence(make_db: Any, tmp_path: Path, case: str) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\n")
    args = ["run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev")]
    expected = {"unknown key": "unknown parameter key(s): colour", "missing parent": "parent table public.nope "
                "does not exist", "bad step": "unknown step(s): deploy", "unreachable": "cannot connect to",
                "bad override": "'dry_run': expected true or false"}[case]
    if case == "unknown key":
        params.write_text("parent_table: users\ncolour: blue\n")
    elif case == "missing parent":
        params.write_text("parent_table: nope\n")
    elif case == "bad step":
        args += ["--steps", "inspect,deploy"]
    elif case == "bad override":
        args += ["-p", "dry_run=perhaps"]
    target = "postgresql://postgres@127.0.0.1:1/none" if case == "unreachable" else dsn
    result = runbook(*args, dsn=target, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("runbook: error: ") and expected in lines[0], result.stderr
    assert not (tmp_path / "ev").exists()
    assert constraint_defs(dsn) == before


def test_wrong_password_is_one_line_and_never_echoes_the_password(tmp_path: Path) -> None:
    """A server of its own with password authentication (the shared servers trust every login)."""
    from runbook_lib import embedded

    with embedded.server() as srv:
        uri = srv.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute("CREATE ROLE rb_secret LOGIN PASSWORD 'right-horse-battery'")
            hba = conn.execute("SHOW hba_file").fetchone()[0]  # type: ignore[index]
            Path(hba).write_text("local all rb_secret scram-sha-256\n" + Path(hba).read_text())
            conn.execute("SELECT pg_reload_conf()")
        host = psycopg.conninfo.conninfo_to_dict(uri)["host"]
        params = tmp_path / "p.yaml"
        params.write_text("parent_table: users\n")
        bad = f"postgresql://rb_secret:wrong-staple-9@/postgres?host={host}"
        result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), dsn=bad,
                         cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "password authentication failed" in lines[0]
        assert "wrong-staple-9" not in result.stderr + result.stdout
        assert not (tmp_path / "ev").exists()


def test_verify_evidence_names_the_tampered_file(tmp_path: Path) -> None:
    from runbook_lib.evidence import write_manifest

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "plan.sql").write_text("x")
    write_manifest(run_dir, {"run_id": "r"})
    assert runbook("verify-evidence", str(run_dir), dsn=None, cwd=tmp_path).returncode == 0
    (run_dir / "plan.sql").write_text("y")
    result = runbook("verify-evidence", str(run_dir), dsn=None, cwd=tmp_path)
    assert result.returncode == 1 and "plan.sql: changed" in result.stderr


@pytest.mark.slow
def test_a_role_that_may_not_alter_fails_preflight_before_anything_changes(make_db: Any, tmp_path: Path) -> None:
    import uuid

    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    role = f"rb_weak_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE ROLE {} LOGIN").format(psycopg.sql.Identifier(role)))
    try:
        params = write_params(tmp_path)
        weak = psycopg.conninfo.make_conninfo(dsn, user=role)
        result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), dsn=weak,
                         cwd=tmp_path)
        assert result.returncode == 1
        last = result.stderr.strip().splitlines()[-1]
        assert "step preflight failed" in last and f"{role} does not own" in last and "00_preflight.ipynb" in last
        assert constraint_defs(dsn) == before
        assert not (tmp_path / "backups").exists()  # the run stopped before the backup step
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("DROP ROLE {}").format(psycopg.sql.Identifier(role)))


@pytest.mark.slow
def test_test_user_step_fails_naming_the_fk_put_back_to_no_action(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = write_params(tmp_path, backup={"enabled": False, "dir": str(tmp_path)})
    applied = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                      "inspect,plan,apply,test_user", dsn=dsn, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.nutrition_goal_targets DROP CONSTRAINT nutrition_goal_targets_goal_id_fkey, "
                     "ADD CONSTRAINT nutrition_goal_targets_goal_id_fkey FOREIGN KEY (goal_id) "
                     "REFERENCES public.nutrition_goals (id)")
    before = constraint_defs(dsn)
    counts_sql = "SELECT (SELECT count(*) FROM public.users), (SELECT count(*) FROM public.nutrition_goal_targets)"
    with psycopg.connect(dsn) as conn:
        counts = conn.execute(counts_sql).fetchone()
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps", "test_user",
                     dsn=dsn, cwd=tmp_path)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert "step test_user failed" in last and "nutrition_goal_targets_goal_id_fkey" in last, last
    assert "06_test_user_deletion.ipynb" in last
    # Rolled back: the database is exactly as it was.
    assert constraint_defs(dsn) == before
    with psycopg.connect(dsn) as conn:
        assert conn.execute(counts_sql).fetchone() == counts


@pytest.mark.slow
def test_preview_lists_what_a_real_users_delete_removes_and_changes_nothing(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = write_params(tmp_path, backup={"enabled": False, "dir": str(tmp_path)})
    assert runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps",
                   "inspect,plan,apply", dsn=dsn, cwd=tmp_path).returncode == 0
    with psycopg.connect(dsn) as conn:
        goals = conn.execute("SELECT count(*) FROM public.nutrition_goal_targets t JOIN public.nutrition_goals g "
                             "ON g.id = t.goal_id WHERE g.user_id = 1").fetchone()
    result = runbook("preview", "--params", str(params), "--user-id", "1", dsn=dsn, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = next(ln for ln in result.stdout.splitlines() if "public.nutrition_goal_targets" in ln)
    assert line.split()[1] == str(goals[0])  # type: ignore[index]
    assert "public.billing" in result.stdout  # set to NULL by the override, shown as such
    missing = runbook("preview", "--params", str(params), "--user-id", "424242", dsn=dsn, cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip().startswith("runbook: error: no row of public.users")
