"""References no foreign key protects: columns that hold a parent key with nothing to keep them honest.

A ``user_id`` column without an FK is invisible to the cascade: deleting the user leaves its rows
behind. Inspect finds columns of the parent key's type whose names look like references to it (the
same owner and actor vocabularies as the policy, plus ``<parent>_id``), and counts the rows pointing
at existing parent rows and at missing ones: exactly in tables up to ``exact_count_rows`` (estimate),
from a ``TABLESAMPLE`` scaled up above that (and the figures say so), each count bounded by
``statement_timeout``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from . import logger
from .catalog import ReferenceColumn, Snapshot, qualname
from .classify import Vocabulary
from .params import Parameters

INTEGERS = ("int2", "int4", "int8")

_CANDIDATES = """
SELECT n.nspname::text, c.relname::text, a.attname::text, t.typname::text, a.attnotnull, c.reltuples::int8,
       c.relkind::text,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indkey[0] = a.attnum
               AND i.indisvalid AND i.indpred IS NULL)
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition AND a.attnum > 0 AND NOT a.attisdropped
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%%'
  AND n.nspname <> %s
  AND (t.typname = ANY(%s))
  AND NOT EXISTS (SELECT 1 FROM pg_constraint f WHERE f.contype = 'f' AND f.conrelid = c.oid
                  AND a.attnum = ANY(f.conkey))
ORDER BY 1, 2, a.attnum
"""

_KEY_TYPE = """
SELECT t.typname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type t ON t.oid = a.atttypid
WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s
"""


def _why(vocab: Vocabulary, column: str) -> str | None:
    if vocab.owner_named([column]):
        return f"named like an owner ({column})"
    if vocab.actor_named([column]):
        return f"named like an actor ({column})"
    return None


def _only(ref: ReferenceColumn) -> sql.Composable:
    """The table's own rows: an inheritance child's rows are counted once, under the child."""
    table = sql.Identifier(ref.schema, ref.table)
    return table if ref.partitioned else sql.SQL("ONLY {}").format(table)


def _counts(conn: psycopg.Connection[Any], snapshot: Snapshot, ref: ReferenceColumn,
            params: Parameters) -> ReferenceColumn:
    """Rows pointing at existing parent rows and at missing ones (exact, or sampled and scaled)."""
    column = sql.Identifier(ref.column)
    parent, key = sql.Identifier(*snapshot.parent), sql.Identifier(snapshot.parent_key[0])
    sampled = ref.rows is not None and ref.rows > params.exact_count_rows > 0
    table = _only(ref)
    source: sql.Composable = sql.SQL("{} AS t").format(table)
    if sampled:
        percent = max(0.01, min(100.0, 100.0 * params.exact_count_rows / float(ref.rows or 1)))
        source = sql.SQL("{} AS t TABLESAMPLE SYSTEM ({})").format(table, sql.Literal(round(percent, 4)))
    elif ref.rows is None:
        # Never analyzed: the size is unknown, so the count stops after exact_count_rows rows.
        source = sql.SQL("(SELECT {col} FROM {table} LIMIT {n}) AS t").format(
            col=column, table=table, n=sql.Literal(params.exact_count_rows))
    query = sql.SQL(
        "SELECT count(*), count(t.{col}) FILTER (WHERE EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{key} = t.{col})), "
        "count(t.{col}) FILTER (WHERE NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE p.{key} = t.{col})) "
        "FROM {source}").format(col=column, parent=parent, key=key, source=source)
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{params.statement_timeout_ms}ms"])
            row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        logger.warning("could not count %s.%s: %s", qualname(ref.child), ref.column, str(exc).strip().splitlines()[0])
        return ref
    assert row is not None
    seen, existing, missing = (int(v) for v in row)
    if ref.rows is None and seen >= params.exact_count_rows:
        return replace(ref, existing=existing, missing=missing, sampled=True)  # the first rows only
    if sampled and seen:
        scale = float(ref.rows or seen) / seen
        existing, missing = round(existing * scale), round(missing * scale)
    return replace(ref, existing=existing, missing=missing, sampled=sampled)


def candidates(conn: psycopg.Connection[Any], parent: tuple[str, str], key: tuple[str, ...],
               params: Parameters) -> list[ReferenceColumn]:
    """Columns that look like a reference to the parent's key and have no FK (catalog only, no counts)."""
    if len(key) != 1:
        return []
    row = conn.execute(_KEY_TYPE, [*parent, key[0]]).fetchone()
    if row is None:
        return []
    types = list(INTEGERS) if row[0] in INTEGERS else [row[0]]
    vocab = Vocabulary(tuple(params.owner_columns), tuple(params.actor_columns), parent[1])
    found = []
    for schema, table, column, type_name, not_null, rows, kind, indexed in conn.execute(
            _CANDIDATES, [params.history_schema, types]).fetchall():
        if (schema, table) == parent and column in key:
            continue
        why = _why(vocab, column)
        if why is not None:
            found.append(ReferenceColumn(schema, table, column, type_name, not_null, indexed,
                                         rows if rows is not None and rows >= 0 else None, why,
                                         partitioned=kind == "p"))
    return found


def find(conn: psycopg.Connection[Any], snapshot: Snapshot, params: Parameters) -> tuple[ReferenceColumn, ...]:
    """Every column that looks like a reference to the parent's key and has no FK, with its counts."""
    found = [_counts(conn, snapshot, ref, params)
             for ref in candidates(conn, snapshot.parent, snapshot.parent_key, params)]
    logger.info("references without a foreign key: %s", ", ".join(r.key for r in found) or "none")
    return tuple(found)


@dataclass(frozen=True)
class UserReference:
    """One user's rows in a column no FK protects: the delete will not reach them."""
    column: ReferenceColumn
    rows: int | None      # None: not counted (see note)
    note: str


_SIZE = """
SELECT pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""
ROW_BYTES_FLOOR = 64  # a narrow row's size on disk, header included: bounds the rows of a never-analyzed table


def _small(conn: psycopg.Connection[Any], ref: ReferenceColumn, params: Parameters) -> bool:
    """Whether a scan of the table is cheap: by its row estimate, or by its size when never analyzed."""
    if ref.rows is not None:
        return ref.rows <= params.exact_count_rows
    row = conn.execute(_SIZE, [ref.schema, ref.table]).fetchone()
    return row is not None and int(row[0]) <= params.exact_count_rows * ROW_BYTES_FLOOR


def user_rows(conn: psycopg.Connection[Any], parent: tuple[str, str], key: tuple[str, ...], user: Any,
              params: Parameters) -> list[UserReference]:
    """The user's rows in every unprotected reference column, looked up through an index where one exists.

    An unindexed column is only scanned when its table is small (``exact_count_rows``): a preview must not
    read a big table whole; the note then gives the index that would make the lookup cheap.
    """
    found = []
    for ref in candidates(conn, parent, key, params):
        if not ref.indexed and not _small(conn, ref, params):
            index = f"CREATE INDEX CONCURRENTLY ON {qualname(ref.child)} ({ref.column})"
            found.append(UserReference(ref, None, f"not counted: unindexed on a big table; {index}"))
            continue
        query = sql.SQL("SELECT count(*) FROM {} WHERE {} = %s").format(_only(ref), sql.Identifier(ref.column))
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)",
                             [f"{params.statement_timeout_ms}ms"])
                row = conn.execute(query, [str(user)]).fetchone()
        except psycopg.errors.QueryCanceled:
            found.append(UserReference(ref, None, "not counted: statement_timeout"))
            continue
        count = int(row[0]) if row else 0
        if count:
            found.append(UserReference(ref, count, "not reached by any foreign key"))
    return found
