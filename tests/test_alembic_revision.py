"""`runbook alembic`: the plan as a revision in the application's own history, run by Alembic itself.

Each database test builds two copies of one schema: the runbook applies its plan to one, `alembic
upgrade head` runs the generated revision on the other, and every FK (partition clones included) is
compared as pg_get_constraintdef writes it.
"""
from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from runbook_lib import embedded
from runbook_lib.alembic_revision import current_head, definition, revisions
from runbook_lib.errors import RunbookError
from tests.conftest import sql_file
from tests.factories import fk
from tests.toolchain_support import (BASELINE, alembic, app, fk_oids, fk_state, runbook, runbook_apply,
                                     write_params)

ROOT = Path(__file__).resolve().parent.parent
INJECTION = sql_file("db_injection.sql").split("INSERT INTO public.users VALUES (1), (2);", 1)[1]
SCHEMAS: dict[str, tuple[str, dict[str, Any]]] = {
    # composite, MATCH FULL, ON UPDATE, deferrable, commented, NOT VALID, partitioned, other schema,
    # 63-byte names, and names that are injection attempts
    "edge": (sql_file("edge_cases.sql") + INJECTION, {"rules": {"billing": "SET NULL"}}),
    "health": ((ROOT / "demo" / "health_app.sql").read_text(encoding="utf-8"), {"rules": {}}),
    # a ghost reassignment: the ghost row, a column default and ON DELETE SET DEFAULT in one swap
    "ghost": (sql_file("edge_cases.sql"), {"rules": {"billing": "SET NULL", "appointments": "ghost"},
                                           "ghost": {"key": 0, "values": {"email": "ghost@example.com"}}}),
}


def column_defaults(dsn: str) -> dict[str, str | None]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT table_name || '.' || column_name, column_default FROM information_schema.columns "
                            "WHERE table_schema = 'public' AND table_name <> 'alembic_version'").fetchall()
    return {r[0]: r[1] for r in rows}


def generate(tmp_path: Path, dsn: str, values: dict[str, Any], *extra: str) -> tuple[Path, Path]:
    app_dir = app(tmp_path)
    params = write_params(tmp_path, **values)
    made = runbook(dsn, "alembic", "--params", str(params), "--versions-dir", str(app_dir / "migrations" / "versions"),
                   *extra, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    written = [p for p in (app_dir / "migrations" / "versions").glob("*.py") if BASELINE not in p.name]
    assert len(written) == 1 and str(written[0]) in made.stdout
    assert alembic(app_dir, dsn, "stamp", BASELINE).returncode == 0
    return app_dir, written[0]


@pytest.mark.parametrize("schema", sorted(SCHEMAS))
def test_upgrade_matches_the_runbook_and_downgrade_restores_the_original(
        make_db: Any, tmp_path: Path, schema: str, server_version: int) -> None:
    text, values = SCHEMAS[schema]
    by_alembic, by_runbook = make_db(text), make_db(text)
    original, original_defaults = fk_state(by_alembic), column_defaults(by_alembic)
    app_dir, revision = generate(tmp_path, by_alembic, values)
    source = revision.read_text(encoding="utf-8")
    assert "runbook_lib" not in source  # it runs where the runbook is not installed
    assert f"down_revision = {BASELINE!r}" in source
    # Before PostgreSQL 18 a partitioned child is swapped over copies validated beforehand, as apply does.
    assert ("copies=[" in source) == (server_version < 180000)

    upgraded = alembic(app_dir, by_alembic, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    runbook_apply(by_runbook, write_params(tmp_path, **values), tmp_path / "evidence" / "run")
    applied = fk_state(by_runbook)
    assert applied != original
    assert fk_state(by_alembic) == applied
    assert column_defaults(by_alembic) == column_defaults(by_runbook)
    if "ghost" in values:
        assert column_defaults(by_alembic)["appointments.user_id"] == "0"
        assert applied["public.appointments.appointments_user_id_fkey"].definition.endswith("ON DELETE SET DEFAULT")
        with psycopg.connect(by_alembic) as conn:
            assert conn.execute("SELECT email FROM public.users WHERE id = 0").fetchall() == [("ghost@example.com",)]

    downgraded = alembic(app_dir, by_alembic, "downgrade", "-1")
    assert downgraded.returncode == 0, downgraded.stderr
    assert fk_state(by_alembic) == original and column_defaults(by_alembic) == original_defaults

    # A database the runbook already migrated adopts the revision: nothing is even re-created.
    oids = fk_oids(by_runbook)
    assert alembic(app_dir, by_runbook, "stamp", BASELINE).returncode == 0
    adopted = alembic(app_dir, by_runbook, "upgrade", "head")
    assert adopted.returncode == 0, adopted.stderr
    assert fk_oids(by_runbook) == oids and fk_state(by_runbook) == applied


def test_offline_sql_applied_with_psql_gives_the_same_foreign_keys(make_db: Any, tmp_path: Path) -> None:
    text, values = SCHEMAS["edge"]
    by_script, by_runbook = make_db(text), make_db(text)
    app_dir, _revision = generate(tmp_path, by_script, values)
    offline = alembic(app_dir, by_script, "upgrade", f"{BASELINE}:head", "--sql")
    assert offline.returncode == 0, offline.stderr
    script = offline.stdout
    assert "SET LOCAL lock_timeout = '2000ms';" in script and "NOT VALID;" in script
    assert "%%" not in script  # nothing doubled for a driver: the text psql runs
    (tmp_path / "upgrade.sql").write_text(script)
    tools = embedded.bin_dir()
    assert tools is not None
    ran = subprocess.run([str(tools / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", str(tmp_path / "upgrade.sql"),
                          by_script], capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr
    runbook_apply(by_runbook, write_params(tmp_path, **values), tmp_path / "evidence" / "run")
    assert fk_state(by_script) == fk_state(by_runbook)


def test_a_constraint_changed_since_generation_stops_the_upgrade_and_a_rerun_resumes(
        make_db: Any, tmp_path: Path) -> None:
    text, values = SCHEMAS["edge"]
    dsn = make_db(text)
    app_dir, _revision = generate(tmp_path, dsn, values)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.appointments DROP CONSTRAINT appointments_user_id_fkey, ADD CONSTRAINT "
                     "appointments_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users (id) ON DELETE RESTRICT")
    before = fk_state(dsn)
    stopped = alembic(app_dir, dsn, "upgrade", "head")
    assert stopped.returncode != 0
    assert "public.appointments.appointments_user_id_fkey is 'FOREIGN KEY (user_id) REFERENCES public.users(id) " \
           "ON DELETE RESTRICT'" in stopped.stderr and "left as it is" in stopped.stderr
    after = fk_state(dsn)
    assert after["public.appointments.appointments_user_id_fkey"] == before["public.appointments.appointments_user_id_fkey"]
    # The blocks before it were committed one by one; the version is not stamped.
    assert after["public.users.users_referred_by_fkey"].definition.endswith("ON DELETE SET NULL")
    assert BASELINE in alembic(app_dir, dsn, "current").stdout
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE public.appointments DROP CONSTRAINT appointments_user_id_fkey, ADD CONSTRAINT "
                     "appointments_user_id_fkey FOREIGN KEY (user_id) REFERENCES public.users (id)")
    resumed = alembic(app_dir, dsn, "upgrade", "head")
    assert resumed.returncode == 0, resumed.stderr
    assert fk_state(dsn)["public.appointments.appointments_user_id_fkey"].definition.endswith("ON DELETE CASCADE")


def test_open_decisions_refuse_with_the_decision_lines_and_write_nothing(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_self_ref_not_null.sql"))
    app_dir = app(tmp_path)
    params = write_params(tmp_path, parent_table="nodes")
    result = runbook(dsn, "alembic", "--params", str(params), "--versions-dir", str(app_dir / "migrations" / "versions"),
                     cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("runbook: error: the plan has 1 open decision(s)")
    assert any(line.startswith("runbook: decision needed: public.nodes.root_id") for line in lines[1:])
    assert sorted(p.name for p in (app_dir / "migrations" / "versions").glob("*.py")) == [f"{BASELINE}_baseline.py"]


def test_bad_input_is_one_line_and_exit_2(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = write_params(tmp_path, rules={"billing": "SET NULL"})
    missing = runbook(dsn, "alembic", "--params", str(params), "--versions-dir", str(tmp_path / "nope"), cwd=tmp_path)
    assert missing.returncode == 2 and missing.stderr.strip() == \
        f"runbook: error: --versions-dir {tmp_path / 'nope'}: no such directory"
    app_dir = app(tmp_path)
    unknown = runbook(dsn, "alembic", "--params", str(params), "--versions-dir", str(app_dir / "migrations" / "versions"),
                      "--down-revision", "ffffffffffff", cwd=tmp_path)
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    assert "--down-revision 'ffffffffffff'" in unknown.stderr


def test_the_head_is_the_revision_nothing_revises(tmp_path: Path) -> None:
    (tmp_path / "a.py").write_text('revision = "aaa"\ndown_revision = None\n')
    (tmp_path / "b.py").write_text('from typing import Union\nrevision: str = "bbb"\ndown_revision: Union[str, None] = "aaa"\n')
    (tmp_path / "c.py").write_text('revision = "ccc"\ndown_revision = ("bbb",)\nimport app_that_is_not_installed\n')
    assert revisions(tmp_path) == {"aaa": (), "bbb": ("aaa",), "ccc": ("bbb",)}
    assert current_head(tmp_path) == "ccc"
    (tmp_path / "d.py").write_text('revision = "ddd"\ndown_revision = "bbb"\n')
    with pytest.raises(RunbookError, match="2 heads \\(ccc, ddd\\)"):
        current_head(tmp_path)
    (tmp_path / "empty").mkdir()
    assert current_head(tmp_path / "empty") is None


def test_definition_is_written_as_postgresql_writes_it() -> None:
    composite = fk("memberships", "m_fk", "users", ("tenant", "user_id"), ("tenant", "id"), match="FULL",
                   on_update="CASCADE", deferrable=True, deferred=True)
    quote = {"tenant": "tenant", "user_id": "user_id", "id": "id", "public": "public", "users": "users"}.__getitem__
    assert definition(composite, "CASCADE", validated=False, quote=quote) == (
        "FOREIGN KEY (tenant, user_id) REFERENCES public.users(tenant, id) MATCH FULL ON UPDATE CASCADE "
        "ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED NOT VALID")
    assert definition(composite, "SET NULL", validated=True, quote=quote, delete_set_columns=("user_id",)) == (
        "FOREIGN KEY (tenant, user_id) REFERENCES public.users(tenant, id) MATCH FULL ON UPDATE CASCADE "
        "ON DELETE SET NULL (user_id) DEFERRABLE INITIALLY DEFERRED")


def test_lock_waits_are_bounded_retried_and_given_up_leaving_the_fk_as_it_was(make_db: Any, tmp_path: Path) -> None:
    text, values = SCHEMAS["edge"]
    dsn = make_db(text)
    app_dir = app(tmp_path)
    params = write_params(tmp_path, **values, lock_timeout="100ms", lock_retries=3, retry_backoff=0.1)
    made = runbook(dsn, "alembic", "--params", str(params), "--versions-dir", str(app_dir / "migrations" / "versions"),
                   cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert alembic(app_dir, dsn, "stamp", BASELINE).returncode == 0
    appointments = "public.appointments.appointments_user_id_fkey"
    before = fk_state(dsn)[appointments]

    holder = psycopg.connect(dsn)
    holder.execute("LOCK TABLE public.appointments IN ACCESS SHARE MODE")  # a long reader, never finishing
    started = time.perf_counter()
    gave_up = alembic(app_dir, dsn, "upgrade", "head")
    assert gave_up.returncode != 0 and "lock timeout" in gave_up.stderr
    assert time.perf_counter() - started < 30
    state = fk_state(dsn)
    assert state[appointments] == before
    assert state["public.users.users_referred_by_fkey"].definition.endswith("ON DELETE SET NULL")  # done before it

    # The same reader, finishing after a second: the retries outlast it and the upgrade completes.
    revision = next(p for p in (app_dir / "migrations" / "versions").glob("*.py") if BASELINE not in p.name)
    revision.write_text(revision.read_text().replace("ATTEMPTS = 3", "ATTEMPTS = 20"))
    threading.Timer(1.0, holder.close).start()
    started = time.perf_counter()
    waited = alembic(app_dir, dsn, "upgrade", "head")
    assert waited.returncode == 0, waited.stderr
    assert time.perf_counter() - started >= 1.0
    assert fk_state(dsn)[appointments].definition.endswith("ON DELETE CASCADE")
