"""Reading the catalog: every foreign key of the database, straight from ``pg_constraint``.

information_schema hides tables the role cannot see, assumes constraint names are unique per schema
and is slow on large catalogs; one ``pg_constraint`` query answers for thousands of tables at once.
The snapshot taken here is the boundary: planning, verification and rollback work on it offline.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

from . import logger
from .errors import CatalogError
from .graph import deletion_set
from .model import (DELETE_RULES, MATCH_TYPES, ForeignKey, ReferenceColumn, Snapshot, TableInfo,
                    TableKey, qualname)

__all__ = ["CatalogError", "DELETE_RULES", "MATCH_TYPES", "ForeignKey", "ReferenceColumn", "Snapshot", "TableInfo",
           "TableKey", "inspect", "qualname"]


_FK_QUERY = """
SELECT c.oid::int8, c.conname::text, n.nspname::text, t.relname::text, t.relkind::text,
       rn.nspname::text, r.relname::text,
       ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attnotnull FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord),
       ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.ord),
       c.confdeltype::text, c.confupdtype::text, c.confmatchtype::text,
       c.condeferrable, c.condeferred, c.convalidated,
       pg_get_constraintdef(c.oid), obj_description(c.oid, 'pg_constraint'),
       t.reltuples::int8, c.conkey::int2[],
       {delsetcols},
       c.conrelid::int8,
       ARRAY(SELECT pg_get_expr(d.adbin, d.adrelid) FROM unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attrdef d ON d.adrelid = c.conrelid AND d.adnum = k.attnum ORDER BY k.ord)
FROM pg_constraint c
JOIN pg_class t ON t.oid = c.conrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class r ON r.oid = c.confrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0 {filter}
ORDER BY n.nspname, t.relname, c.conname
"""

# confdelsetcols exists from PostgreSQL 15 on (SET NULL (col) lists).
_DELSETCOLS = """ARRAY(SELECT a.attname::text FROM unnest(c.confdelsetcols) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.ord)"""

_TABLES_QUERY = """
SELECT n.nspname::text, c.relname::text, c.relkind::text, c.reltuples::int8, c.relispartition
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%%'
ORDER BY 1, 2
"""

_INDEX_QUERY = """
SELECT i.indrelid::int8, i.indkey::int2[], i.indisvalid, i.indpred IS NOT NULL
FROM pg_index i WHERE i.indrelid = ANY(%s)
"""


def _fk_query(version_num: int, one: bool) -> sql.Composed:
    delset = sql.SQL(_DELSETCOLS) if version_num >= 150000 else sql.SQL("ARRAY[]::text[]")
    where = sql.SQL("AND n.nspname = %s AND t.relname = %s AND c.conname = %s") if one else sql.SQL("")
    return sql.SQL(_FK_QUERY).format(delsetcols=delset, filter=where)


def _rows_to_fks(rows: Iterable[tuple[Any, ...]],
                 indexes: Mapping[int, list[tuple[list[int], bool, bool]]]) -> list[ForeignKey]:
    fks = []
    for row in rows:
        (oid, name, schema, table, kind, rschema, rtable, cols, notnull, rcols, deltype, updtype,
         matchtype, deferrable, deferred, validated, definition, comment, reltuples, conkey, delcols, relid,
         defaults) = row
        indexed = any(
            valid and not partial and list(indkey[: len(conkey)]) == list(conkey)
            for indkey, valid, partial in indexes.get(relid, [])
        )
        fks.append(
            ForeignKey(
                oid=oid, schema=schema, table=table, name=name, ref_schema=rschema, ref_table=rtable,
                columns=tuple(cols), ref_columns=tuple(rcols), columns_not_null=tuple(notnull),
                on_delete=DELETE_RULES[deltype], on_update=DELETE_RULES[updtype],
                match=MATCH_TYPES[matchtype], deferrable=deferrable, deferred=deferred,
                validated=validated, definition=definition, comment=comment,
                delete_set_columns=tuple(delcols or ()), child_kind=kind, indexed=indexed,
                child_rows=reltuples if reltuples is not None and reltuples >= 0 else None,
                column_defaults=tuple(defaults or ()),
            )
        )
    return fks


def _begin_catalog_read(conn: psycopg.Connection[Any]) -> None:
    # With an empty search_path pg_get_constraintdef schema-qualifies every name: the text is exact.
    conn.execute("SELECT set_config('search_path', '', true)")


def read_foreign_keys(conn: psycopg.Connection[Any], version_num: int,
                      only: tuple[str, str, str] | None = None) -> list[ForeignKey]:
    # Rolled back on purpose: the empty search_path must not outlive the read when the caller is in a
    # transaction of its own (a released savepoint would keep it).
    with conn.transaction(force_rollback=True):
        _begin_catalog_read(conn)
        cur = conn.execute(_fk_query(version_num, only is not None), list(only) if only else None)
        rows = cur.fetchall()
        wanted = sorted({r[-2] for r in rows})
        indexes: dict[int, list[tuple[list[int], bool, bool]]] = {}
        for relid, indkey, valid, partial in conn.execute(_INDEX_QUERY, [wanted]).fetchall():
            indexes.setdefault(relid, []).append((list(indkey), valid, partial))
    return _rows_to_fks(rows, indexes)


def read_one(conn: psycopg.Connection[Any], version_num: int, schema: str, table: str,
             name: str) -> ForeignKey | None:
    fks = read_foreign_keys(conn, version_num, only=(schema, table, name))
    return fks[0] if fks else None


def server_identity(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT current_setting('server_version_num')::int, current_setting('server_version'), "
        "current_database(), (SELECT system_identifier::text FROM pg_control_system()), current_user"
    ).fetchone()
    assert row is not None
    return {
        "server_version_num": row[0], "server_version": row[1], "database": row[2],
        "system_identifier": row[3], "user": row[4],
    }


def read_tables(conn: psycopg.Connection[Any]) -> list[TableInfo]:
    rows = conn.execute(_TABLES_QUERY).fetchall()
    return [TableInfo(s, n, k, r if r is not None and r >= 0 else None, p) for s, n, k, r, p in rows]


_LEAVES_QUERY = """
WITH RECURSIVE tree AS (
    SELECT i.inhrelid AS oid FROM pg_inherits i
    WHERE i.inhparent = (SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                         WHERE n.nspname = %s AND c.relname = %s)
    UNION ALL
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid
)
SELECT n.nspname::text, c.relname::text FROM tree JOIN pg_class c ON c.oid = tree.oid
JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' ORDER BY 1, 2
"""


def leaf_partitions(conn: psycopg.Connection[Any], table: TableKey) -> tuple[TableKey, ...]:
    return tuple((s, t) for s, t in conn.execute(_LEAVES_QUERY, list(table)).fetchall())


_KEY_QUERY = """
SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY AS k(attnum, ord)
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord),
       i.indisprimary,
       bool_and(a.attnotnull)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
GROUP BY i.indexrelid, i.indkey, i.indnkeyatts, i.indisprimary
ORDER BY i.indisprimary DESC, array_length(i.indkey, 1), i.indexrelid
"""


def parent_key(conn: psycopg.Connection[Any], table: TableKey) -> tuple[str, ...]:
    """The table's primary key, else its first unique key of NOT NULL columns: how a user is named."""
    for columns, primary, not_null in conn.execute(_KEY_QUERY, list(table)).fetchall():
        if primary or not_null:
            return tuple(columns)
    return ()


def count_orphans(conn: psycopg.Connection[Any], fk: ForeignKey) -> int:
    """Rows of a NOT VALID constraint's table that would fail its check today."""
    child = sql.Identifier(fk.schema, fk.table)
    parent = sql.Identifier(fk.ref_schema, fk.ref_table)
    not_null = sql.SQL(" AND ").join(
        sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(col)) for col in fk.columns
    )
    matches = sql.SQL(" AND ").join(
        sql.SQL("p.{} = c.{}").format(sql.Identifier(rc), sql.Identifier(cc))
        for cc, rc in zip(fk.columns, fk.ref_columns)
    )
    unmatched = sql.SQL("(({nn}) AND NOT EXISTS (SELECT 1 FROM {parent} AS p WHERE {m}))").format(
        nn=not_null, parent=parent, m=matches)
    if fk.match == "FULL" and len(fk.columns) > 1:
        # Under MATCH FULL a key that is partly NULL is a violation of its own.
        any_null = sql.SQL(" OR ").join(sql.SQL("c.{} IS NULL").format(sql.Identifier(c)) for c in fk.columns)
        unmatched = sql.SQL("({u} OR (({an}) AND NOT ({nn})))").format(u=unmatched, an=any_null, nn=not_null)
    query = sql.SQL("SELECT count(*) FROM {child} AS c WHERE {cond}").format(child=child, cond=unmatched)
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def inspect(conn: psycopg.Connection[Any], parent_schema: str, parent_table: str) -> Snapshot:
    """Take the snapshot: all FKs, all tables, and orphan counts for NOT VALID FKs into the deletion set."""
    ident = server_identity(conn)
    tables = read_tables(conn)
    parent = (parent_schema, parent_table)
    if parent not in {t.key for t in tables}:
        kind = conn.execute(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", [parent_schema, parent_table]).fetchone()
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.rollback()
        what = "is not a table (it is a view or another kind of relation)" if kind else "does not exist"
        raise CatalogError(f"parent table {qualname(parent)} {what} in database {ident['database']}",
                           table=qualname(parent))
    fks = read_foreign_keys(conn, ident["server_version_num"])
    dset = deletion_set(fks, parent)
    orphans: dict[str, int | None] = {}
    for fk in fks:
        if not fk.validated and fk.parent in dset:
            try:
                with conn.transaction():
                    orphans[fk.key] = count_orphans(conn, fk)
            except psycopg.errors.InsufficientPrivilege:
                # A role that may not read the table cannot count; preflight reports the privileges.
                orphans[fk.key] = None
    partitions = {qualname(fk.child): leaf_partitions(conn, fk.child)
                  for fk in fks if fk.partitioned and fk.parent in dset}
    key = parent_key(conn, parent)
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    logger.info("inspected %d foreign keys, %d tables in the deletion set", len(fks), len(dset))
    return Snapshot(
        server_version_num=ident["server_version_num"], server_version=ident["server_version"],
        database=ident["database"], parent=parent, foreign_keys=tuple(fks), tables=tuple(tables),
        orphans=orphans, partitions=partitions, parent_key=key,
    )


def with_fk(snapshot: Snapshot, fk: ForeignKey) -> Snapshot:
    others = tuple(f if f.key != fk.key else fk for f in snapshot.foreign_keys)
    return replace(snapshot, foreign_keys=others)
