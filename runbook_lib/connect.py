"""Connections: where the server is, and how to say so without ever showing a password.

The connection comes from ``RUNBOOK_DSN`` when set, else from libpq's own ``PG*`` variables, service
file and ``.pgpass`` (an empty conninfo string lets libpq apply all of them).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from . import logger
from .errors import ConnectionFailed

APPLICATION_NAME = "cascade-runbook"


def dsn_from_env() -> str:
    return os.environ.get("RUNBOOK_DSN", "")


# Keywords libpq shows as "*" (secret) in PQconndefaults; this list covers a libpq too old to say so.
_KNOWN_SECRETS = frozenset({"password", "sslpassword", "oauth_client_secret"})
_MASK = "***"


@lru_cache(maxsize=1)
def secret_keywords() -> frozenset[str]:
    """Every connection keyword this libpq treats as a secret (display character ``*``)."""
    try:
        found = {o.keyword.decode() for o in pq.Conninfo.get_defaults() if o.dispchar == b"*"}
    except Exception:  # noqa: BLE001 - libpq without PQconndefaults: the fixed list still applies
        found = set()
    return frozenset(found) | _KNOWN_SECRETS


def _is_secret(keyword: str) -> bool:
    return keyword.strip().lower() in secret_keywords()


def secret_values(dsn: str) -> list[str]:
    """The secret values ``dsn`` holds, as libpq itself parses them (both URL and key=value forms)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return []
    values = [str(v) for k, v in params.items() if _is_secret(k) and v]
    nested = str(params.get("dbname") or "")
    if "=" in nested or "://" in nested:
        values += secret_values(nested)
    return values


def _redact_url(dsn: str) -> str:
    scheme, netloc, path, query, fragment = urlsplit(dsn)
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        netloc = userinfo.partition(":")[0] + (":" + _MASK if ":" in userinfo else "") + "@" + hosts
    pairs = []
    for pair in query.split("&") if query else []:
        key, eq, value = pair.partition("=")
        if _is_secret(unquote(key)):
            value = _MASK
        pairs.append(key + eq + value)
    return urlunsplit((scheme, netloc, path, "&".join(pairs), fragment))


def _redact_keywords(dsn: str) -> str:
    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items()}
    for key in params:
        if _is_secret(key):
            params[key] = _MASK
    nested = params.get("dbname", "")
    if "=" in nested or "://" in nested:
        params["dbname"] = redact(nested)
    return make_conninfo(**params)


def redact(dsn: str) -> str:
    """A printable form of ``dsn`` with every secret libpq knows replaced, in whatever form it was given.

    The string is parsed (URL userinfo, URL query parameters, key=value pairs), never pattern-matched;
    as a last guard, a result that still holds a secret value is never returned.
    """
    if not dsn:
        return "(libpq defaults: PG* variables, service file, .pgpass)"
    try:
        conninfo_to_dict(dsn)
    except psycopg.Error:
        return "(unparsable connection string, not shown)"
    try:
        shown = _redact_url(dsn) if dsn.lstrip().lower().startswith(("postgresql://", "postgres://")) \
            else _redact_keywords(dsn)
    except (ValueError, psycopg.Error):
        shown = _redact_keywords(dsn)
    if not _only_masks(shown):
        shown = _redact_keywords(dsn)
    return shown if _only_masks(shown) else "(connection string not shown: it holds a secret)"


def _only_masks(shown: str) -> bool:
    """libpq, parsing ``shown``, finds no secret but the mask."""
    try:
        params = conninfo_to_dict(shown)
    except psycopg.Error:
        return False
    nested = str(params.get("dbname") or "")
    if ("=" in nested or "://" in nested) and not _only_masks(nested):
        return False
    return all(str(v) == _MASK for k, v in params.items() if _is_secret(k) and v)


def scrub(text: str, dsn: str) -> str:
    """``text`` (a server or libpq message) with any secret value of ``dsn`` replaced."""
    for secret in sorted(secret_values(dsn), key=len, reverse=True):
        text = text.replace(secret, _MASK)
    return text


class Hidden:
    """A connection string kept out of sight: its repr and str show only the redacted form."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Hidden({redact(self._value)!r})"

    __str__ = __repr__


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
        reason = scrub(reason.removeprefix("FATAL:").strip(), dsn)
        raise ConnectionFailed(f"cannot connect to {redact(dsn)}: {reason}", sqlstate=exc.sqlstate) from None
    except psycopg.ProgrammingError:
        # libpq's parse error quotes the text around the mistake, which may be the password itself.
        raise ConnectionFailed("invalid connection string (not shown: it may hold a password); "
                               "check RUNBOOK_DSN against libpq's key=value or URI syntax") from None
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
