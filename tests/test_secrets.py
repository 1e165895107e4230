"""No secret reaches the evidence: not the notebooks, not papermill's metadata, not any file."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from runbook_lib import embedded
from tests.conftest import sql_file
from tests.test_cli import CORE_STEPS, only_run, runbook

PASSWORD = "Tr0ub4dor-and-3-horses"


@pytest.fixture(scope="module")
def password_server() -> Iterator[str]:
    """A server of its own where role rb_owner must log in with a password (scram-sha-256)."""
    with embedded.server() as srv:
        uri = srv.get_uri()
        with psycopg.connect(uri, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("CREATE ROLE rb_owner LOGIN PASSWORD {}").format(psycopg.sql.Literal(PASSWORD)))
            conn.execute("CREATE DATABASE secretdb OWNER rb_owner")
            hba = conn.execute("SHOW hba_file").fetchone()[0]  # type: ignore[index]
            Path(hba).write_text("local all rb_owner scram-sha-256\n" + Path(hba).read_text())
            conn.execute("SELECT pg_reload_conf()")
        yield str(conninfo_to_dict(uri)["host"])


def load_schema(host: str) -> None:
    with psycopg.connect(host=host, dbname="secretdb", user="rb_owner", password=PASSWORD,
                         autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS public CASCADE; DROP SCHEMA IF EXISTS \"Other Schema\" CASCADE; "
                     "CREATE SCHEMA public")
        conn.execute(sql_file("edge_cases.sql"))  # type: ignore[call-overload]


@pytest.mark.slow
@pytest.mark.parametrize("via", ["RUNBOOK_DSN", "PGPASSWORD"])
def test_password_never_reaches_the_evidence(password_server: str, tmp_path: Path, via: str) -> None:
    load_schema(password_server)
    params = tmp_path / "p.yaml"
    params.write_text(f"parent_table: users\ndry_run: false\nrules: {{billing: SET NULL}}\n"
                      f"backup: {{enabled: true, dir: {tmp_path / 'backups'}}}\n")
    if via == "RUNBOOK_DSN":
        dsn = f"postgresql://rb_owner:{PASSWORD}@/secretdb?host={password_server}"
        env: dict[str, str] = {}
    else:
        dsn = f"host={password_server} dbname=secretdb user=rb_owner"
        env = {"PGPASSWORD": PASSWORD}
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), "--steps", CORE_STEPS,
                     dsn=dsn, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    run_dir = only_run(tmp_path / "ev")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        assert PASSWORD.encode() not in path.read_bytes(), path
    # The redacted connection is recorded, so the check above is not vacuous.
    manifest = (run_dir / "manifest.json").read_text()
    assert "rb_owner" in manifest and "secretdb" in manifest
