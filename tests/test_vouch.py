"""Rollback only from a run the database vouches for (or one signed with the evidence key)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runbook_lib.evidence import write_manifest
from tests.conftest import sql_file
from tests.test_cli import constraint_defs, only_run, runbook, write_params

KEY = "public.billing.billing_user_id_fkey"


def reseal(run_dir: Path, env_key: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """What an editor without the database does: recompute the manifest's own hashes."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("files", "manifest_sha256", "manifest_hmac")}
    if env_key:
        monkeypatch.setenv("RUNBOOK_EVIDENCE_KEY", env_key)
    else:
        monkeypatch.delenv("RUNBOOK_EVIDENCE_KEY", raising=False)
    write_manifest(run_dir, fields)


def history_rows(dsn: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT run_id, kind, status, plan_sha256, snapshot_sha256, manifest_sha256, "
                            "jsonb_array_length(changed), source_run FROM cascade_runbook.history "
                            "ORDER BY started").fetchall()


def applied_run(dsn: str, tmp_path: Path) -> tuple[Path, Path]:
    """A real run of inspect, plan and apply: its evidence folder and its run folder."""
    params = write_params(tmp_path, backup={"enabled": False})
    evidence = tmp_path / "evidence"
    first = runbook("run", "--params", str(params), "--evidence-dir", str(evidence),
                    "--steps", "inspect,plan,apply", dsn=dsn, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    return evidence, only_run(evidence)


@pytest.mark.slow
def test_an_edited_run_folder_is_refused_and_the_signed_one_verifies(
        make_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    evidence, run_dir = applied_run(dsn, tmp_path)
    # The plan shows the history's creation first; the database recorded the run with its hashes.
    assert "CREATE TABLE IF NOT EXISTS \"cascade_runbook\".\"history\"" in (run_dir / "plan.sql").read_text()
    [row] = history_rows(dsn)
    assert row[0] == run_dir.name and row[1] == "apply" and row[2] == "applied" and row[6] == 16
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert row[5] == manifest["manifest_sha256"]
    checked = runbook("verify-evidence", str(run_dir), dsn=dsn, cwd=tmp_path)
    assert checked.returncode == 0 and "vouched by the database's run history: yes" in checked.stdout

    # The attacker's edit: billing's FK goes back to a rule nobody planned, the manifest is resealed.
    snapshot = json.loads((run_dir / "snapshot_before.json").read_text())
    [fk] = [f for f in snapshot["foreign_keys"] if f"{f['schema']}.{f['table']}.{f['name']}" == KEY]
    fk["on_delete"] = "CASCADE"
    (run_dir / "snapshot_before.json").write_text(json.dumps(snapshot, indent=2))
    reseal(run_dir, None, monkeypatch)
    unsigned = runbook("verify-evidence", str(run_dir), dsn=dsn, cwd=tmp_path)
    assert unsigned.returncode == 0, unsigned.stderr  # the files match the (resealed) manifest...
    assert "vouched by the database's run history: no" in unsigned.stdout  # ...but the database disagrees
    assert "snapshot_before.json" in unsigned.stdout

    before = constraint_defs(dsn)
    refused = runbook("rollback", str(run_dir), dsn=dsn, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "rollback refused" in refused.stderr
    assert "snapshot_before.json" in refused.stderr
    assert constraint_defs(dsn) == before
    assert [p.name for p in evidence.iterdir()] == [run_dir.name]  # no rollback folder was made
    assert len(history_rows(dsn)) == 1

    # The same folder sealed with the evidence key verifies as signed (the key holder vouches for it).
    reseal(run_dir, "k-123", monkeypatch)
    signed = runbook("verify-evidence", str(run_dir), dsn=dsn, cwd=tmp_path, env={"RUNBOOK_EVIDENCE_KEY": "k-123"})
    assert signed.returncode == 0, signed.stderr
    assert "signed: yes" in signed.stdout and "vouched by the database's run history: no" in signed.stdout
    wrong = runbook("verify-evidence", str(run_dir), dsn=dsn, cwd=tmp_path, env={"RUNBOOK_EVIDENCE_KEY": "other"})
    assert wrong.returncode == 1 and "signed: no" in wrong.stdout


@pytest.mark.slow
def test_a_vouched_run_rolls_back_and_the_history_records_it(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    before = constraint_defs(dsn)
    _evidence, run_dir = applied_run(dsn, tmp_path)
    back = runbook("rollback", str(run_dir), dsn=dsn, cwd=tmp_path)
    assert back.returncode == 0, back.stderr
    assert {k: v[1] for k, v in constraint_defs(dsn).items()} == {k: v[1] for k, v in before.items()}
    rows = history_rows(dsn)
    assert [(r[1], r[2]) for r in rows] == [("apply", "rolled back"), ("rollback", "rolled back")]
    assert rows[1][7] == run_dir.name and rows[1][6] == 16


def test_a_signed_folder_whose_snapshot_disagrees_with_its_recorded_plan_is_refused(
        make_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib import steps, vouch
    from runbook_lib.context import RunContext
    from runbook_lib.errors import VerificationFailed
    from runbook_lib.params import validate

    dsn = make_db(sql_file("edge_cases.sql"))
    params = validate({"parent_table": "users", "dry_run": False, "backup": {"enabled": False},
                       "rules": {"billing": "SET NULL"}})
    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "r1", dsn=dsn)
    ctx.run_dir.mkdir(parents=True)
    steps.inspect(ctx)
    steps.plan(ctx)
    steps.apply(ctx)
    write_manifest(ctx.run_dir, {"run_id": "r1", "steps": []})
    other = RunContext(params=params, run_dir=tmp_path / "ev" / "r2", dsn=dsn)
    planned = vouch.rollback_plan(other, ctx.run_dir)
    assert len(planned.items) == 16  # the keys the history recorded as changed

    snapshot = json.loads((ctx.run_dir / "snapshot_before.json").read_text())
    [fk] = [f for f in snapshot["foreign_keys"] if f"{f['schema']}.{f['table']}.{f['name']}" == KEY]
    fk["on_delete"] = "RESTRICT"
    (ctx.run_dir / "snapshot_before.json").write_text(json.dumps(snapshot))
    reseal(ctx.run_dir, "k-1", monkeypatch)  # the key holder signs the edit
    with pytest.raises(VerificationFailed, match="differs from the one recorded in r1/plan.json"):
        vouch.rollback_plan(other, ctx.run_dir)
    monkeypatch.delenv("RUNBOOK_EVIDENCE_KEY")
    with pytest.raises(Exception, match="rollback refused: snapshot_before.json of run r1 differs"):
        vouch.rollback_plan(other, ctx.run_dir)
