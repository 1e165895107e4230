"""Reading the catalog: every foreign key of the database, straight from ``pg_constraint``.

information_schema hides tables the role cannot see, assumes constraint names are unique per schema
and is slow on large catalogs; one ``pg_constraint`` query answers for thousands of tables at once.
The snapshot taken here is the boundary: planning, verification and rollback work on it offline.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

from . import logger
from .errors import CatalogError

__all__ = ["CatalogError", "ForeignKey", "Snapshot", "TableInfo", "inspect", "qualname"]

TableKey = tuple[str, str]

DELETE_RULES = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
MATCH_TYPES = {"s": "SIMPLE", "f": "FULL", "p": "PARTIAL"}


def qualname(key: TableKey) -> str:
    """A readable ``schema.table`` (for people; SQL always goes through ``sql.Identifier``)."""
    return f"{key[0]}.{key[1]}"


@dataclass(frozen=True)
class ForeignKey:
    oid: int
    schema: str
    table: str
    name: str
    ref_schema: str
    ref_table: str
    columns: tuple[str, ...]
    ref_columns: tuple[str, ...]
    columns_not_null: tuple[bool, ...]
    on_delete: str
    on_update: str
    match: str
    deferrable: bool
    deferred: bool
    validated: bool
    definition: str
    comment: str | None
    delete_set_columns: tuple[str, ...] = ()
    child_kind: str = "r"
    indexed: bool = False
    child_rows: int | None = None
    # The referencing columns' defaults (pg_get_expr text, None where there is none), in column order.
    column_defaults: tuple[str | None, ...] = ()

    @property
    def child(self) -> TableKey:
        return (self.schema, self.table)

    @property
    def parent(self) -> TableKey:
        return (self.ref_schema, self.ref_table)

    @property
    def key(self) -> str:
        """Constraint names are unique per table, not per schema: the table is part of the identity."""
        return f"{self.schema}.{self.table}.{self.name}"

    @property
    def nullable(self) -> bool:
        return not any(self.columns_not_null)

    @property
    def partitioned(self) -> bool:
        return self.child_kind == "p"

    def same_shape(self, other: "ForeignKey") -> bool:
        """Every property except the delete rule and validity."""
        return (
            self.columns == other.columns
            and self.ref_schema == other.ref_schema
            and self.ref_table == other.ref_table
            and self.ref_columns == other.ref_columns
            and self.on_update == other.on_update
            and self.match == other.match
            and self.deferrable == other.deferrable
            and self.deferred == other.deferred
            and self.comment == other.comment
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ForeignKey":
        values = dict(data)
        for name in ("columns", "ref_columns", "columns_not_null", "delete_set_columns", "column_defaults"):
            values[name] = tuple(values.get(name) or ())
        return cls(**values)


@dataclass(frozen=True)
class TableInfo:
    schema: str
    name: str
    kind: str
    rows: int | None
    is_partition: bool = False

    @property
    def key(self) -> TableKey:
        return (self.schema, self.name)


@dataclass(frozen=True)
class ReferenceColumn:
    """A column that looks like a reference to the parent's key but that no foreign key protects."""
    schema: str
    table: str
    column: str
    type_name: str
    not_null: bool
    indexed: bool
    rows: int | None
    matched: str
    existing: int | None = None   # rows whose value is the key of an existing parent row
    missing: int | None = None    # rows whose value is the key of no parent row
    sampled: bool = False         # the counts are scaled up from a sample
    partitioned: bool = False

    @property
    def child(self) -> TableKey:
        return (self.schema, self.table)

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.table}.{self.column}"


@dataclass(frozen=True)
class Snapshot:
    server_version_num: int
    server_version: str
    database: str
    parent: TableKey
    foreign_keys: tuple[ForeignKey, ...]
    tables: tuple[TableInfo, ...]
    orphans: Mapping[str, int | None] = field(default_factory=dict)
    # Leaf partitions of each partitioned referencing table in the deletion set ("schema.table" -> keys).
    partitions: Mapping[str, tuple[TableKey, ...]] = field(default_factory=dict)
    # The parent's key columns (primary key, else a unique NOT NULL key).
    parent_key: tuple[str, ...] = ()
    # Columns that look like references to the parent but have no foreign key.
    references: tuple[ReferenceColumn, ...] = ()
    # Facts that inform decisions, per FK key (e.g. a sample of rows whose owners differ).
    facts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def fk(self, key: str) -> ForeignKey | None:
        for fk in self.foreign_keys:
            if fk.key == key:
                return fk
        return None

    def table(self, key: TableKey) -> TableInfo | None:
        for info in self.tables:
            if info.key == key:
                return info
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "server_version_num": self.server_version_num,
            "server_version": self.server_version,
            "database": self.database,
            "parent": list(self.parent),
            "foreign_keys": [fk.to_dict() for fk in self.foreign_keys],
            "tables": [asdict(t) for t in self.tables],
            "orphans": dict(self.orphans),
            "partitions": {k: [list(t) for t in v] for k, v in self.partitions.items()},
            "parent_key": list(self.parent_key),
            "references": [asdict(r) for r in self.references],
            "facts": {k: list(v) for k, v in self.facts.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Snapshot":
        return cls(
            server_version_num=int(data["server_version_num"]),
            server_version=str(data["server_version"]),
            database=str(data["database"]),
            parent=(data["parent"][0], data["parent"][1]),
            foreign_keys=tuple(ForeignKey.from_dict(d) for d in data["foreign_keys"]),
            tables=tuple(TableInfo(**t) for t in data["tables"]),
            orphans=dict(data.get("orphans", {})),
            partitions={k: tuple((t[0], t[1]) for t in v) for k, v in data.get("partitions", {}).items()},
            parent_key=tuple(data.get("parent_key", ())),
            references=tuple(ReferenceColumn(**r) for r in data.get("references", ())),
            facts={k: tuple(v) for k, v in data.get("facts", {}).items()},
        )


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
    from .graph import deletion_set  # the graph is pure; imported here to keep modules acyclic

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
