"""Column-level catalog of the tables a deletion touches: types, domains, unique keys, checks and
partitioning, read in a few catalog queries."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
from psycopg import sql

from ..catalog import TableKey, qualname
from ..errors import RunbookError


@dataclass(frozen=True)
class PgType:
    oid: int
    schema: str
    name: str
    typtype: str
    category: str
    base: int
    typmod: int
    elem: int
    array_schema: str | None
    array_name: str | None
    notnull: bool
    labels: tuple[str, ...]
    checks: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    type_oid: int
    typmod: int
    not_null: bool
    has_default: bool
    identity: str
    generated: str

    @property
    def database_made(self) -> bool:
        return bool(self.identity) or bool(self.generated)


@dataclass(frozen=True)
class UniqueIndex:
    name: str
    columns: tuple[str, ...]
    primary: bool
    usable: bool  # no expressions, no predicate


@dataclass(frozen=True)
class CheckConstraint:
    name: str
    columns: tuple[str, ...]
    definition: str


@dataclass(frozen=True)
class TableMeta:
    key: TableKey
    oid: int
    kind: str
    columns: tuple[Column, ...]
    uniques: tuple[UniqueIndex, ...]
    checks: tuple[CheckConstraint, ...]
    partition_columns: tuple[str, ...] = ()
    partition_bounds: tuple[str, ...] = ()

    def column(self, name: str) -> Column:
        for col in self.columns:
            if col.name == name:
                return col
        raise KeyError(f"{qualname(self.key)} has no column {name}")

    @property
    def identity_columns(self) -> tuple[str, ...]:
        """The primary key, else a unique key of NOT NULL columns, else () (tableoid + ctid)."""
        for idx in self.uniques:
            if idx.primary:
                return idx.columns
        for idx in self.uniques:
            if idx.usable and all(self.column(c).not_null for c in idx.columns):
                return idx.columns
        return ()


class ColumnCatalog:
    """Columns, types, unique keys, checks and partitioning of a set of tables."""

    def __init__(self, tables: dict[TableKey, TableMeta], types: dict[int, PgType],
                 relations: dict[int, tuple[TableKey, TableKey, str]]) -> None:
        self.tables = tables
        self.types = types
        # oid -> (relation, its partition root or itself, relkind) for every table of the database
        self.relations = relations

    def meta(self, key: TableKey) -> TableMeta:
        return self.tables[key]

    def base(self, type_oid: int) -> PgType:
        t = self.types[type_oid]
        while t.typtype == "d" and t.base in self.types:
            t = self.types[t.base]
        return t

    def domains(self, type_oid: int) -> list[PgType]:
        chain = []
        t = self.types[type_oid]
        while t.typtype == "d":
            chain.append(t)
            if t.base not in self.types:
                break
            t = self.types[t.base]
        return chain

    def max_length(self, col: Column) -> int | None:
        base = self.base(col.type_oid)
        typmod = col.typmod
        if typmod < 0:
            for dom in self.domains(col.type_oid):
                if dom.typmod >= 0:
                    typmod = dom.typmod
                    break
        if base.name in ("varchar", "bpchar") and typmod >= 4:
            return typmod - 4
        if base.name in ("bit", "varbit") and typmod > 0:
            return typmod
        return None

    def cast_type(self, col: Column) -> sql.Composable:
        t = self.types[col.type_oid]
        if t.typtype != "d" and t.name == "bit":
            # A bare ``bit`` is bit(1); varbit takes any length and assigns to bit(n).
            return sql.Identifier("pg_catalog", "varbit")
        return sql.Identifier(t.schema, t.name)

    def array_type(self, col: Column) -> sql.Composable:
        t = self.types[col.type_oid]
        if t.typtype != "d" and t.name == "bit":
            return sql.Identifier("pg_catalog", "_varbit")
        if t.array_name is None:
            t = self.base(col.type_oid)
        if t.array_name is None or t.array_schema is None:
            return sql.Identifier("pg_catalog", "_text")
        return sql.Identifier(t.array_schema, t.array_name)

    def leaf(self, oid: int) -> TableKey:
        found = self.relations.get(oid)
        return found[0] if found else ("?", str(oid))

    def root(self, oid: int) -> TableKey:
        found = self.relations.get(oid)
        return found[1] if found else ("?", str(oid))


_RELATIONS = """
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text, rn.nspname::text, r.relname::text
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class r ON r.oid = COALESCE(pg_catalog.pg_partition_root(c.oid), c.oid)
JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
"""

_COLUMNS = """
SELECT a.attrelid::int8, a.attnum::int, a.attname::text, a.atttypid::int8, a.atttypmod, a.attnotnull,
       a.atthasdef, a.attidentity::text, a.attgenerated::text
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY(%s::pg_catalog.oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_TYPES = """
SELECT t.oid::int8, n.nspname::text, t.typname::text, t.typtype::text, t.typcategory::text,
       t.typbasetype::int8, t.typtypmod, t.typelem::int8, an.nspname::text, at.typname::text, t.typnotnull,
       ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e WHERE e.enumtypid = t.oid
             ORDER BY e.enumsortorder),
       ARRAY(SELECT c.conname::text FROM pg_catalog.pg_constraint c
             WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname),
       ARRAY(SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c
             WHERE c.contypid = t.oid AND c.contype = 'c' ORDER BY c.conname)
FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
LEFT JOIN pg_catalog.pg_type at ON at.oid = t.typarray
LEFT JOIN pg_catalog.pg_namespace an ON an.oid = at.typnamespace
WHERE t.oid = ANY(%s::pg_catalog.oid[])
"""

_INDEXES = """
SELECT i.indrelid::int8, ic.relname::text, i.indisprimary, i.indisunique, i.indkey::int2[], i.indnkeyatts::int,
       i.indexprs IS NULL AND i.indpred IS NULL,
       ARRAY(SELECT d.refobjsubid::int FROM pg_catalog.pg_depend d
             WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = i.indexrelid
               AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid = i.indrelid
               AND d.refobjsubid > 0 ORDER BY d.refobjsubid)
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
WHERE i.indrelid = ANY(%s::pg_catalog.oid[]) AND i.indisunique
ORDER BY i.indisprimary DESC, ic.relname
"""

_CHECKS = """
SELECT c.conrelid::int8, c.conname::text, c.conkey::int2[], pg_catalog.pg_get_constraintdef(c.oid)
FROM pg_catalog.pg_constraint c
WHERE c.contype = 'c' AND c.conrelid = ANY(%s::pg_catalog.oid[])
ORDER BY c.conname
"""

_PARTITIONS = """
SELECT p.partrelid::int8, p.partattrs::int2[] FROM pg_catalog.pg_partitioned_table p
WHERE p.partrelid = ANY(%s::pg_catalog.oid[])
"""

_BOUNDS = """
SELECT i.inhparent::int8, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = ANY(%s::pg_catalog.oid[]) AND c.relispartition
ORDER BY c.relname
"""


def read_column_catalog(conn: psycopg.Connection[Any], tables: Iterable[TableKey]) -> ColumnCatalog:
    """Column-level facts for ``tables`` (plus the map of every table to its partition root)."""
    relations: dict[int, tuple[TableKey, TableKey, str]] = {}
    by_key: dict[TableKey, tuple[int, str]] = {}
    for oid, schema, name, kind, rschema, rname in conn.execute(_RELATIONS).fetchall():
        relations[oid] = ((schema, name), (rschema, rname), kind)
        by_key[(schema, name)] = (oid, kind)
    wanted = {key: by_key[key] for key in set(tables) if key in by_key}
    oids = [oid for oid, _ in wanted.values()]
    columns: dict[int, list[Column]] = defaultdict(list)
    type_oids: set[int] = set()
    for relid, attnum, name, typid, typmod, notnull, hasdef, ident, gen in conn.execute(_COLUMNS, [oids]):
        columns[relid].append(Column(name, attnum, typid, typmod, notnull, hasdef, ident or "", gen or ""))
        type_oids.add(typid)
    types: dict[int, PgType] = {}
    todo = set(type_oids)
    while todo:
        for row in conn.execute(_TYPES, [sorted(todo)]).fetchall():
            (toid, schema, name, typtype, category, base, typmod, elem, aschema, aname, notnull,
             labels, connames, condefs) = row
            types[toid] = PgType(toid, schema, name, typtype, category, base, typmod, elem, aschema, aname,
                                 notnull, tuple(labels), tuple(zip(connames, condefs)))
        todo = {o for t in types.values() for o in (t.base, t.elem) if o and o not in types} - todo
        todo -= set(types)
    names = {relid: {c.attnum: c.name for c in cols} for relid, cols in columns.items()}
    uniques: dict[int, list[UniqueIndex]] = defaultdict(list)
    for relid, name, primary, _unique, indkey, nkey, usable, used in conn.execute(_INDEXES, [oids]):
        keys = list(indkey)[:nkey]
        cols = tuple(names[relid].get(k, "") for k in keys)
        if 0 in keys or not usable:
            # An expression or partial index (``lower(name)``): the columns its expressions use, so that
            # a unique violation on it names the columns to change.
            cols = tuple(dict.fromkeys([c for c in cols if c] + [names[relid][a] for a in used if a in names[relid]]))
        uniques[relid].append(UniqueIndex(name, cols, primary, usable and 0 not in keys))
    checks: dict[int, list[CheckConstraint]] = defaultdict(list)
    for relid, name, conkey, definition in conn.execute(_CHECKS, [oids]):
        cols = tuple(names[relid][k] for k in (conkey or []) if k in names[relid])
        checks[relid].append(CheckConstraint(name, cols, definition))
    part_cols: dict[int, tuple[str, ...]] = {}
    for relid, attrs in conn.execute(_PARTITIONS, [oids]):
        part_cols[relid] = tuple(names[relid][a] for a in attrs if a in names[relid])
    bounds: dict[int, list[str]] = defaultdict(list)
    for parent_oid, bound in conn.execute(_BOUNDS, [oids]):
        if bound:
            bounds[parent_oid].append(bound)
    metas = {
        key: TableMeta(key, oid, kind, tuple(columns[oid]), tuple(uniques[oid]), tuple(checks[oid]),
                       part_cols.get(oid, ()), tuple(bounds[oid]))
        for key, (oid, kind) in wanted.items()
    }
    return ColumnCatalog(metas, types, relations)


def parent_key_columns(conn: psycopg.Connection[Any], parent: TableKey) -> tuple[str, ...]:
    """The parent's primary key (or a unique NOT NULL key): how a user is named."""
    meta = read_column_catalog(conn, [parent]).tables.get(parent)
    if meta is None:
        raise RunbookError(f"{qualname(parent)} does not exist", table=qualname(parent))
    cols = meta.identity_columns
    if not cols:
        raise RunbookError(f"{qualname(parent)} has no primary key or unique NOT NULL key to name a user by",
                           table=qualname(parent))
    return cols
