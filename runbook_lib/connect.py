"""Connections: where the server is, and how to say so without ever showing a password.

The connection comes from ``RUNBOOK_DSN`` when set, else from libpq's own ``PG*`` variables, service
file and ``.pgpass`` (an empty conninfo string lets libpq apply all of them).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Iterator

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from . import logger
from .errors import ConnectionFailed

APPLICATION_NAME = "cascade-runbook"


def dsn_from_env() -> str:
    return os.environ.get("RUNBOOK_DSN", "")


def redact(dsn: str) -> str:
    """A printable form of ``dsn``: the password, in whatever form it was given, is replaced."""
    if not dsn:
        return "(libpq defaults: PG* variables, service file, .pgpass)"
    if "://" in dsn:
        try:
            return make_url(dsn).render_as_string(hide_password=True)
        except Exception:  # noqa: BLE001 - an unparsable URL is still never printed as is
            return "(unparsable connection URL)"
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable connection string)"
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def libpq_params(dsn: str) -> dict[str, str]:
    """The connection as keyword parameters, password included (for child processes' environment)."""
    return {k: str(v) for k, v in conninfo_to_dict(dsn).items()}


def connect(dsn: str | None = None, *, autocommit: bool = False, **kwargs: Any) -> psycopg.Connection[Any]:
    dsn = dsn_from_env() if dsn is None else dsn
    try:
        conn = psycopg.connect(
            dsn, autocommit=autocommit, application_name=APPLICATION_NAME, connect_timeout=10, **kwargs
        )
    except psycopg.OperationalError as exc:
        # libpq's message can span several lines (one per address tried); the last is the reason.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = lines[-1] if lines else exc.__class__.__name__
        for line in lines:
            if "password authentication failed" in line or "no password supplied" in line:
                reason = line
                break
        reason = reason.removeprefix("FATAL:").strip()
        raise ConnectionFailed(f"cannot connect to {redact(dsn)}: {reason}", sqlstate=exc.sqlstate) from None
    except psycopg.ProgrammingError as exc:
        raise ConnectionFailed(f"invalid connection string {redact(dsn)}: {exc}") from None
    logger.debug("connected to %s", redact(dsn))
    return conn


@contextmanager
def connection(dsn: str | None = None, *, autocommit: bool = False) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(dsn, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


def engine(dsn: str | None = None) -> Engine:
    """A SQLAlchemy engine over the same libpq connection, for ``pandas.read_sql``."""
    resolved = dsn_from_env() if dsn is None else dsn
    return create_engine(
        "postgresql+psycopg://",
        creator=lambda: connect(resolved),
        poolclass=NullPool,
    )
