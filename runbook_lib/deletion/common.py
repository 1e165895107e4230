"""Small SQL helpers shared by the deletion modules: identifiers, typed key matches, transactions."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import psycopg
from psycopg import sql

from .. import catalog
from ..catalog import ForeignKey, TableKey
from ..errors import RunbookError
from .columns import Column, ColumnCatalog, TableMeta

Text = str | None
Identity = tuple[Text, ...]

BATCH = 5000
_CTID = "ctid"  # identity of a table without a usable key: its tableoid and ctid


def _ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def _table(key: TableKey) -> sql.Identifier:
    return sql.Identifier(key[0], key[1])


def _cast(cat: ColumnCatalog, col: Column) -> sql.Composed:
    return sql.SQL("CAST({} AS {})").format(sql.Placeholder(), cat.cast_type(col))


def _select_list(alias: str, columns: Sequence[str]) -> sql.Composable:
    parts: list[sql.Composable] = [
        sql.SQL("{}.tableoid::pg_catalog.int8").format(_ident(alias)),
        sql.SQL("{}.ctid::pg_catalog.text").format(_ident(alias)),
    ]
    parts.extend(sql.SQL("{}::pg_catalog.text").format(_ident(alias, c)) for c in columns)
    return sql.SQL(", ").join(parts)


def _match(cat: ColumnCatalog, meta: TableMeta, alias: str, columns: Sequence[str],
           tuples: Sequence[Identity]) -> tuple[sql.Composable, list[Any]]:
    """``alias.columns`` (bare columns when ``alias`` is empty) equal to one of ``tuples`` (text values),
    in a form that uses their index."""
    def ident(col: str) -> sql.Identifier:
        return _ident(alias, col) if alias else _ident(col)

    if len(columns) == 1:
        col = meta.column(columns[0])
        cond = sql.SQL("{} = ANY(CAST({} AS pg_catalog.text[])::{})").format(
            ident(col.name), sql.Placeholder(), cat.array_type(col))
        return cond, [[t[0] for t in tuples]]
    arrays = sql.SQL(", ").join(
        sql.SQL("CAST({} AS pg_catalog.text[])::{}").format(sql.Placeholder(), cat.array_type(meta.column(c)))
        for c in columns)
    cond = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
        sql.SQL(", ").join(ident(c) for c in columns), arrays)
    return cond, [[t[i] for t in tuples] for i in range(len(columns))]


def _identity_match(cat: ColumnCatalog, meta: TableMeta, alias: str,
                    identities: Sequence[Identity]) -> tuple[sql.Composable, list[Any]]:
    cols = meta.identity_columns
    if cols:
        return _match(cat, meta, alias, cols, identities)
    # No key at all: the row's place. ``ctid = ANY`` is a TID scan in each partition; the tableoid then
    # tells apart equal ctids of different partitions.
    cond = sql.SQL("{a}.ctid = ANY(CAST({p} AS pg_catalog.tid[])) AND "
                   "({a}.tableoid::pg_catalog.int8::pg_catalog.text || ':' || {a}.ctid::pg_catalog.text) "
                   "= ANY(CAST({p} AS pg_catalog.text[]))").format(a=_ident(alias), p=sql.Placeholder())
    texts = [i[0] for i in identities]
    return cond, [[str(t).split(":", 1)[1] for t in texts], texts]


def _identity_of(meta: TableMeta, tableoid: int, ctid: str, values: Mapping[str, Text]) -> Identity:
    cols = meta.identity_columns
    if cols:
        return tuple(values[c] for c in cols)
    return (f"{tableoid}:{ctid}",)


@dataclass(frozen=True)
class Timeouts:
    """The run's statement_timeout and lock_timeout, applied to every statement of a deletion step."""
    statement: str = "30s"
    lock: str = "2s"


def set_timeouts(conn: psycopg.Connection[Any], timeouts: Timeouts | None) -> None:
    """SET LOCAL both timeouts for the rest of the caller's transaction (nothing when ``timeouts`` is None)."""
    if timeouts is None:
        return
    conn.execute("SELECT pg_catalog.set_config('statement_timeout', %s, true), "
                 "pg_catalog.set_config('lock_timeout', %s, true)", [timeouts.statement, timeouts.lock])


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _in_transaction(conn: psycopg.Connection[Any]) -> bool:
    return conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE or not conn.autocommit


def _require_transaction(conn: psycopg.Connection[Any], what: str) -> None:
    if conn.autocommit and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        raise RunbookError(f"{what} must run inside a transaction the caller rolls back or commits "
                           "(use `with conn.transaction(force_rollback=True):`)")


def _read_fks(conn: psycopg.Connection[Any]) -> list[ForeignKey]:
    # read_foreign_keys sets search_path = '' with SET LOCAL; inside a savepoint that is rolled back the
    # setting does not leak into the rest of the caller's transaction (triggers rely on search_path).
    with conn.transaction(force_rollback=True):
        return catalog.read_foreign_keys(conn, int(conn.info.server_version))


def _error_fields(exc: psycopg.Error) -> dict[str, Text]:
    diag = exc.diag
    return {
        "sqlstate": exc.sqlstate,
        "message": diag.message_primary or str(exc).splitlines()[0],
        "detail": diag.message_detail,
        "schema": diag.schema_name,
        "table": diag.table_name,
        "column": diag.column_name,
        "constraint": diag.constraint_name,
        "datatype": diag.datatype_name,
    }


def _key_text(key: Mapping[str, Text]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())
