"""Shared by the toolchain tests: the small application (tests/toolchain_app) copied per test, its
``alembic`` run as a team runs it, the ``runbook`` command, and every FK's state read from pg_constraint."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import psycopg

from runbook_lib import params as params_mod
from runbook_lib import steps
from runbook_lib.context import RunContext

APP = Path(__file__).parent / "toolchain_app"
BASELINE = "a1b2c3d4e5f6"


class Fk(NamedTuple):
    definition: str
    comment: str | None
    validated: bool


def fk_state(dsn: str) -> dict[str, Fk]:
    """Every FK (partition clones too), keyed schema.table.name, with the text pg_get_constraintdef gives."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SET LOCAL search_path = ''")
        rows = conn.execute(
            "SELECT n.nspname || '.' || t.relname || '.' || c.conname, pg_get_constraintdef(c.oid), "
            "obj_description(c.oid, 'pg_constraint'), c.convalidated FROM pg_constraint c "
            "JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
            "WHERE c.contype = 'f'").fetchall()
        conn.rollback()
    return {r[0]: Fk(*r[1:]) for r in rows}


def fk_oids(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT conrelid::regclass::text || '.' || conname, oid::int8 FROM pg_constraint "
                            "WHERE contype = 'f'").fetchall()
    return {r[0]: r[1] for r in rows}


def app(tmp_path: Path) -> Path:
    """A fresh copy of the application (its Alembic environment, baseline revision and models)."""
    target = tmp_path / "app"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def environment(dsn: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "RUNBOOK_DSN"}
    if dsn is not None:
        env.update(RUNBOOK_DSN=dsn, APP_DATABASE=dsn)
    env.update(extra)
    return env


def alembic(app_dir: Path, dsn: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "alembic", "-c", str(app_dir / "alembic.ini"), *args],
                          capture_output=True, text=True, cwd=app_dir, env=environment(dsn, **extra), timeout=600)


def runbook(dsn: str | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runbook_lib.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=environment(dsn, PYTHONPATH=str(Path(__file__).parent.parent)),
                          timeout=600)


def write_params(tmp_path: Path, **values: Any) -> Path:
    data: dict[str, Any] = {"parent_table": "users"}
    data.update(values)
    path = tmp_path / "params.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def runbook_apply(dsn: str, params_file: Path, run_dir: Path) -> None:
    """What `runbook run` does to the FKs: the apply step itself (backup off, not a dry run)."""
    params = params_mod.load(params_file, ["dry_run=false", "backup.enabled=false"])
    run_dir.mkdir(parents=True, exist_ok=True)
    outcome = steps.apply(RunContext(params=params, run_dir=run_dir, dsn=dsn))
    assert not outcome.failed, [r.error for r in outcome.failed]
