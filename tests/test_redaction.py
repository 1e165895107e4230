"""Redaction parses the connection string: every form, every secret libpq knows, nothing left in sight."""
from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from runbook_lib import connect as connect_mod
from runbook_lib.context import RunContext
from runbook_lib.errors import ConnectionFailed
from runbook_lib.params import validate
from tests.test_cli import only_run, runbook, write_params

SECRET = "S3cret-pa55"
SSL_SECRET = "Ssl-k3y-pa55"


@pytest.mark.parametrize("dsn", [
    f"postgresql://u:{SECRET}@db.example.com/app",
    f"postgres://u:{SECRET}@h1:5432,h2:5433/app?sslmode=prefer",
    f"postgresql://u@db.example.com/app?password={SECRET}",
    f"postgresql://u@db.example.com/app?sslmode=require&password={SECRET}&sslpassword={SSL_SECRET}",
    f"postgresql://u@db.example.com/app?pass%77ord={SECRET}",  # a percent-encoded keyword is still parsed
    f"postgresql://u:{SECRET}@/app?host=/tmp&sslpassword={SSL_SECRET}",
    f"host=db.example.com dbname=app user=u password={SECRET}",
    f"host=db.example.com dbname=app user=u password='{SECRET} with space'",
    f"host=db.example.com dbname=app user=u sslpassword={SSL_SECRET} password = {SECRET}",
    f"dbname='postgresql://u:{SECRET}@h/app' user=u",  # a connection string in dbname
])
def test_every_form_is_redacted_and_still_names_the_server(dsn: str) -> None:
    shown = connect_mod.redact(dsn)
    assert SECRET not in shown and SSL_SECRET not in shown
    assert "***" in shown
    # The redacted form is still a connection string libpq reads, naming the same database.
    parsed = conninfo_to_dict(shown)
    assert "app" in str(parsed.get("dbname"))
    assert parsed.get("user") == "u" or "u:***@" in shown


def test_secret_keywords_come_from_libpq() -> None:
    keywords = connect_mod.secret_keywords()
    assert {"password", "sslpassword"} <= keywords
    assert "user" not in keywords and "dbname" not in keywords and "host" not in keywords


def test_unparsable_strings_are_never_echoed() -> None:
    for dsn in (f"host=h password={SECRET} user", f"password='{SECRET}", f"nosuchkey={SECRET}"):
        assert SECRET not in connect_mod.redact(dsn)
        with pytest.raises(ConnectionFailed) as info:
            connect_mod.connect(dsn)
        assert SECRET not in str(info.value)


def test_a_failed_connection_names_the_server_but_not_the_secret() -> None:
    # Nothing listens on port 1: libpq's error mentions the address, never the password.
    dsn = f"postgresql://u@127.0.0.1:1/app?password={SECRET}&sslpassword={SSL_SECRET}&connect_timeout=2"
    with pytest.raises(ConnectionFailed) as info:
        connect_mod.connect(dsn)
    message = str(info.value)
    assert "127.0.0.1" in message and SECRET not in message and SSL_SECRET not in message


def test_scrub_removes_secret_values_from_any_message() -> None:
    dsn = f"host=h password={SECRET}"
    assert connect_mod.scrub(f"oops {SECRET} here", dsn) == "oops *** here"


def test_the_run_context_holds_no_secret(dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that does not ask for a password ignores one: open() connects with these.
    dsn = f"{dsn} password={SECRET} sslpassword={SSL_SECRET}"
    given = RunContext(params=validate({"parent_table": "users"}), run_dir=tmp_path, dsn=dsn)
    monkeypatch.setenv("RUNBOOK_DSN", dsn)
    from_env = RunContext.open(run_dir=tmp_path / "run", parent_table="users")
    for ctx in (given, from_env):
        for shown in (repr(ctx), str(ctx), repr(vars(ctx)), str(vars(ctx))):
            assert SECRET not in shown and SSL_SECRET not in shown
        assert ctx.conninfo() == dsn  # the code that connects still gets it
    assert given.with_run_dir(tmp_path / "x").conninfo() == dsn


@pytest.mark.slow
@pytest.mark.parametrize("form", ["url-query", "keyword-sslpassword"])
def test_secrets_in_the_dsn_never_reach_evidence_or_streams(make_db: object, tmp_path: Path, form: str) -> None:
    from tests.conftest import sql_file

    dsn = make_db(sql_file("edge_cases.sql"))  # type: ignore[operator]
    parts = conninfo_to_dict(dsn)
    # A server that does not ask for a password ignores one: the run connects and records everything.
    if form == "url-query":
        host = str(parts.get("host", "127.0.0.1"))
        port = str(parts.get("port", "5432"))
        user = str(parts.get("user", "postgres"))
        given = (f"postgresql://{user}@/{parts['dbname']}?host={host}&port={port}"
                 f"&password={SECRET}&sslpassword={SSL_SECRET}")
    else:
        given = f"{dsn} sslpassword={SSL_SECRET} password={SECRET}"
    # No backup step: pg_dump refuses an sslpassword it could only get on its command line (backup.py).
    params = write_params(tmp_path, dry_run=True, backup={"enabled": False})
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"),
                     "--steps", "preflight,inspect,plan,apply,verify", dsn=given, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    streams = result.stdout + result.stderr
    assert SECRET not in streams and SSL_SECRET not in streams
    run_dir = only_run(tmp_path / "ev")
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        data = path.read_bytes()
        assert SECRET.encode() not in data and SSL_SECRET.encode() not in data, path
    assert "***" in (run_dir / "manifest.json").read_text()
    # A connection that fails: stderr names it, redacted.
    failed = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev2"),
                     dsn=f"postgresql://u@127.0.0.1:1/x?password={SECRET}&connect_timeout=2", cwd=tmp_path)
    assert failed.returncode == 2 and SECRET not in failed.stdout + failed.stderr
    assert "127.0.0.1" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1
