"""Notebooks run by hand: a run folder per database and parent table, and no file read from another run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from runbook_lib import run_folder, steps
from runbook_lib.context import RunContext
from tests.conftest import sql_file


@pytest.fixture
def by_hand(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A notebook opened by hand: no run_dir, evidence under tmp_path/ev."""
    monkeypatch.delenv("RUNBOOK_RUN_DIR", raising=False)
    monkeypatch.setenv("RUNBOOK_EVIDENCE_DIR", str(tmp_path / "ev"))
    return tmp_path / "ev"


def opened(monkeypatch: pytest.MonkeyPatch, dsn: str, parent: str, run_dir: str = "", **values: Any) -> RunContext:
    monkeypatch.setenv("RUNBOOK_DSN", dsn)
    return RunContext.open(run_dir or None, **{"parent_table": parent, "dry_run": True, **values})


def test_two_parent_tables_by_hand_get_two_folders_each_with_its_own_plan(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    users = opened(monkeypatch, dsn, "users")
    steps.inspect(users)
    again = opened(monkeypatch, dsn, "users")  # the next notebook of the same workflow
    assert again.run_dir == users.run_dir
    database = users.run_dir.name.split("-public.users-")[0]
    assert users.run_dir.parent == by_hand.resolve() and database.startswith("rb_")
    assert users.run_dir.name.endswith("Z")
    users_plan = steps.plan(again)

    goals = opened(monkeypatch, dsn, "nutrition_goals")
    assert goals.run_dir != users.run_dir
    assert f"{database}-public.nutrition_goals-" in goals.run_dir.name
    goals_plan = steps.plan(goals)  # inspects its own parent: nothing of users' snapshot is used
    assert goals_plan.parent == ("public", "nutrition_goals") and users_plan.parent == ("public", "users")
    assert {i.fk.key for i in goals_plan.items} == {"public.nutrition_goal_targets.nutrition_goal_targets_goal_id_fkey"}
    assert len(users_plan.items) > 10
    recorded = json.loads((goals.run_dir / "identity.json").read_text())
    assert recorded["parent"] == "public.nutrition_goals" and recorded["database"] == database
    assert set(recorded["files"]) >= {"snapshot_before.json", "plan.json", "plan.sql", "rollback.sql"}


def test_a_foreign_snapshot_copied_into_the_folder_is_refused(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    users = opened(monkeypatch, dsn, "users")
    steps.inspect(users)
    goals = opened(monkeypatch, dsn, "nutrition_goals")
    shutil.copy(users.run_dir / "snapshot_before.json", goals.run_dir / "snapshot_before.json")
    with pytest.raises(run_folder.ForeignFile, match=f"snapshot_before.json in .* is a copy of the one in run "
                                                     f"folder {users.run_dir.name}; run the step that makes it"):
        steps.plan(goals)
    assert not (goals.run_dir / "plan.json").exists()
    # Not a copy of any run's file: simply not written here.
    (goals.run_dir / "snapshot_before.json").write_text("{}")
    with pytest.raises(run_folder.ForeignFile, match="snapshot_before.json .* was not written by a step of this run"):
        steps.plan(goals)


def test_a_snapshot_edited_after_inspect_is_refused(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    ctx = opened(monkeypatch, dsn, "users")
    steps.inspect(ctx)
    path = ctx.run_dir / "snapshot_before.json"
    data = json.loads(path.read_text())
    data["foreign_keys"] = data["foreign_keys"][1:]
    path.write_text(json.dumps(data))
    with pytest.raises(run_folder.ForeignFile, match="changed after its step wrote it"):
        steps.plan(ctx)


def test_a_run_folder_of_another_database_or_parent_is_refused(
        make_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = make_db(sql_file("edge_cases.sql")), make_db(sql_file("edge_cases.sql"))
    folder = tmp_path / "ev" / "run-1"
    steps.inspect(opened(monkeypatch, first, "users", str(folder)))
    with pytest.raises(run_folder.ForeignFile, match="belongs to database rb_.*parent table public.users, "
                                                     "not to database rb_"):
        opened(monkeypatch, second, "users", str(folder))
    with pytest.raises(run_folder.ForeignFile, match="not to .*parent table public.nutrition_goals"):
        opened(monkeypatch, first, "nutrition_goals", str(folder))


def test_a_snapshot_of_another_parent_is_refused_even_without_an_identity(
        make_db: Any, tmp_path: Path) -> None:
    """Folders written before identities existed still cannot mix parents."""
    from runbook_lib.params import validate

    dsn = make_db(sql_file("edge_cases.sql"))
    folder = tmp_path / "old"
    folder.mkdir()
    users = RunContext(params=validate({"parent_table": "users"}), run_dir=folder, dsn=dsn)
    steps.inspect(users)
    goals = RunContext(params=validate({"parent_table": "nutrition_goals"}), run_dir=folder, dsn=dsn)
    with pytest.raises(run_folder.ForeignFile, match="is of parent table public.users, but the parameters "
                                                     "name public.nutrition_goals"):
        steps.plan(goals)


def test_folder_names_carry_no_path_characters() -> None:
    ident = run_folder.Identity("7301234567890123456", "app/../x", 'public.we"ird name')
    name = run_folder.folder_name(ident, 0)
    assert name == "app_.._x-public.we_ird_name-19700101T000000Z"
    assert "/" not in name


def test_a_folder_run_by_hand_is_sealed_with_the_manifest_and_index_of_a_release_run(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib import by_hand as by_hand_mod
    from runbook_lib.evidence import verify_evidence

    dsn = make_db(sql_file("edge_cases.sql"))
    ctx = opened(monkeypatch, dsn, "users")
    assert ctx.by_hand
    for step in ("preflight", "backup", "inspect", "plan", "apply", "verify"):
        if step == "inspect":
            steps.inspect(ctx)
        ctx.verdict(step, True, "done by hand")
    ctx.verdict("test_user", True, "skipped: dry run", skipped=True)
    line = by_hand_mod.seal(ctx)
    assert line == f"ALL RUN STEPS PASSED, 1 SKIPPED: evidence sealed in {ctx.run_dir}"
    manifest = json.loads((ctx.run_dir / "manifest.json").read_text())
    assert manifest["kind"] == "by hand" and manifest["server"]["database"] == ctx.run_dir.name.split("-")[0]
    assert [s["status"] for s in manifest["steps"]] == ["passed"] * 6 + ["skipped"]
    assert {"identity.json", "snapshot_before.json", "index.html"} <= set(manifest["files"])
    assert verify_evidence(ctx.run_dir) == []
    assert "ALL RUN STEPS PASSED, 1 SKIPPED" in (ctx.run_dir / "index.html").read_text()
    # Sealed means finished: the next notebook opened by hand starts a new folder.
    assert opened(monkeypatch, dsn, "users").run_dir != ctx.run_dir


def test_a_folder_missing_a_step_does_not_pass_when_sealed(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib import by_hand as by_hand_mod

    ctx = opened(monkeypatch, make_db(sql_file("edge_cases.sql")), "users")
    ctx.verdict("preflight", True, "done")
    ctx.verdict("plan", True, "done")
    assert by_hand_mod.seal(ctx).startswith("RUN FAILED")
    statuses = [(s["step"], s["status"]) for s in json.loads((ctx.run_dir / "manifest.json").read_text())["steps"]]
    assert statuses == [("preflight", "passed"), ("backup", "not run"), ("inspect", "not run"), ("plan", "passed")]


def test_an_edited_pointer_never_leads_out_of_the_evidence_folder(tmp_path: Path) -> None:
    ident = run_folder.Identity("7301234567890123456", "app", "public.users")
    base, outside = tmp_path / "ev", tmp_path / "elsewhere"
    outside.mkdir()
    run_folder.establish(outside, ident, {})  # a folder that would otherwise be taken as this run's
    base.mkdir()
    (base / run_folder.CURRENT).write_text(json.dumps({"run_dir": "../elsewhere"}))
    folder = run_folder.interactive_folder(base, ident, {})
    assert folder.parent == base.resolve() and folder != outside.resolve()


def test_folder_keys_are_parameters_and_leave_out_how_a_step_runs() -> None:
    from runbook_lib.params import SPEC_BY_KEY, validate

    assert set(run_folder.FOLDER_KEYS) <= set(SPEC_BY_KEY)
    assert not {"dry_run", "lock_timeout", "statement_timeout", "preview_user_id", "backup.mode",
                "test_user.commit", "erase.batch_rows"} & set(run_folder.FOLDER_KEYS)
    planned = run_folder.folder_parameters(validate({"parent_table": "users", "rules": {"orders": "keep"}}))
    applied = run_folder.folder_parameters(validate({"parent_table": "users", "rules": {"orders": "keep"},
                                                     "dry_run": False, "lock_timeout": "5s"}))
    assert planned == applied and planned["rules"] == {"orders": "keep"} and planned["ghost.key"] is None
    other = run_folder.folder_parameters(validate({"parent_table": "users", "ghost": {"key": 0},
                                                   "owner_columns": ["user_id"]}))
    assert run_folder.differing(planned, other) == ["rules", "owner_columns", "ghost.key"]
    assert run_folder.differing(None, other) == []  # a folder from before parameters were recorded


def test_by_hand_a_dry_run_and_the_real_apply_share_a_folder_other_rules_start_a_new_one(
        make_db: Any, by_hand: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    planned = opened(monkeypatch, dsn, "users", rules={"memberships": "keep"})
    steps.inspect(planned)
    applying = opened(monkeypatch, dsn, "users", rules={"memberships": "keep"}, dry_run=False,
                      lock_timeout="5s", preview_user_id=7)
    assert applying.run_dir == planned.run_dir
    assert applying.load_snapshot(steps.SNAPSHOT_BEFORE) is not None
    with pytest.warns(run_folder.NewRunFolder, match=rf"parameters differ from run folder {planned.run_dir.name} "
                                                     r"\(rules, exact_count_rows\): new run folder .*run the steps "
                                                     "from 00_preflight again in it"):
        other = opened(monkeypatch, dsn, "users", exact_count_rows=10)
    assert other.run_dir != planned.run_dir and other.run_dir.parent == planned.run_dir.parent
    assert not (other.run_dir / "snapshot_before.json").exists()
    recorded = json.loads((other.run_dir / "identity.json").read_text())["parameters"]
    assert recorded["rules"] == {} and recorded["exact_count_rows"] == 10


def test_a_given_run_folder_refuses_other_parameters(
        make_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``runbook run`` (RUNBOOK_RUN_DIR) the folder is never switched."""
    dsn = make_db(sql_file("edge_cases.sql"))
    folder = tmp_path / "ev" / "run-1"
    monkeypatch.setenv("RUNBOOK_RUN_DIR", str(folder))
    steps.inspect(opened(monkeypatch, dsn, "users"))
    assert opened(monkeypatch, dsn, "users", dry_run=False).run_dir == folder.resolve()
    with pytest.raises(run_folder.ForeignFile, match=r"run folder .*run-1 was made with other parameters "
                                                     r"\(references, history_schema differ\)"):
        opened(monkeypatch, dsn, "users", references={"legacy.user_id": "CASCADE"}, history_schema="audit")


def test_a_step_reading_a_file_written_under_other_parameters_is_refused(
        make_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runbook_lib.params import validate

    dsn = make_db(sql_file("edge_cases.sql"))
    ctx = opened(monkeypatch, dsn, "users", str(tmp_path / "run"))
    steps.inspect(ctx)
    other = RunContext(params=validate({"parent_table": "users", "actor_columns": ["creator_id"]}),
                       run_dir=ctx.run_dir, dsn=dsn)
    with pytest.raises(run_folder.ForeignFile) as refused:
        steps.plan(other)
    assert str(refused.value) == (f"snapshot_before.json in {ctx.run_dir} was written under other parameters "
                                  "(actor_columns differ from this step's): run every step with the same "
                                  "parameters, or use a new run folder")
    assert not (ctx.run_dir / "plan.json").exists()
    assert steps.plan(ctx).parent == ("public", "users")  # the folder's own parameters still read it
