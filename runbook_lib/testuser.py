"""Proof of deletion: a synthetic test user, a deletion preview for any user, the proof, orphans and an
ordered delete script.

Everything here runs inside the caller's transaction and never commits; the caller decides (the test
user step rolls back by default). SQL is composed with ``psycopg.sql`` only; every value travels as
text through a placeholder and is cast server-side to the column's own type, so any type round-trips.

API (what notebooks, ``runbook preview`` and steps.py call)::

    new_marker() -> str
    synthesize(conn, snapshot, *, marker, values={}) -> Synthesis
        One row in every table of graph.deletion_set(snapshot), parent first, following the FK tree.
        Inside the caller's open transaction (a savepoint per insert attempt). Failures are listed in
        Synthesis.failures with the database's message; it does not raise for them.
    preview(conn, parent, user_key, *, read_only=True, rules=None) -> Preview
        What ``DELETE FROM parent WHERE pk = user_key`` will do, walking the FKs with the rules the
        catalog shows now (catalog.read_foreign_keys). Read-only: works in a READ ONLY transaction;
        when the connection is idle it opens its own READ ONLY REPEATABLE READ transaction.
        ``rules`` (FK key -> rule) previews another state, e.g. the plan's: {i.fk.key: i.planned}.
    delete_and_prove(conn, snapshot, synthesis, preview, *, strict_other_tables=False) -> Proof
        Exact counts of every leaf table, one DELETE of the parent row, then the proof. A failing
        DELETE is reported in the Proof (table and constraint), not raised.
    orphans(conn, preview) -> list[Orphans]
        After the delete: rows of tables outside the deletion set that the deleted rows referenced
        and that nothing references any more. Never deleted.
    parent_key_columns(conn, parent) -> tuple[str, ...]
    script_rules(snapshot, params=None) -> dict[str, str]
    ordered_delete_script(snapshot, user_key_columns, *, params=None) -> list[sql.Composed]
        Explicit UPDATE ... SET NULL / DELETE sequence for one user (children before parents);
        placeholder %(user_id)s for a one-column key, %(<column>)s per column otherwise.
    script_params(user_key_columns, user_key) -> dict[str, Any]
    prove_ordered_delete(conn, snapshot, synthesis, *, params=None) -> Proof
    run_test_user(conn, snapshot, *, marker=None, values={}, commit=False, setup=(),
                  strict_other_tables=False) -> UserDeletionRun
        All of the above for the test user in one transaction, rolled back unless ``commit``;
        ``setup`` statements (a rehearsal's DDL) run first inside the same transaction.
    DataFrames: synthesis_frame, preview_frame, blockers_frame, proof_frame, orphans_frame.

Blockers: a RESTRICT / NO ACTION edge with referencing rows that the cascade does not delete blocks
for certain. When the referencing row is itself deleted by the same cascade, PostgreSQL's outcome
depends on the order in which the cascade's triggers reach the two rows (the check runs at the end of
the query that deleted the referenced row, not of the whole statement): such rows are reported as
``certain=False`` ("may block") and the proof shows what the database actually did.
"""
from __future__ import annotations

import json
import re
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

import pandas as pd
import psycopg
from psycopg import sql

from . import catalog, logger
from .catalog import ForeignKey, Snapshot, TableKey, qualname
from .errors import RunbookError
from .graph import deletion_set, is_ownership

Text = str | None
Identity = tuple[Text, ...]

MAX_ATTEMPTS = 25
BATCH = 5000
_CTID = "ctid"  # identity of a table without a usable key: its tableoid and ctid

# ---------------------------------------------------------------- column-level catalog


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
       i.indexprs IS NULL AND i.indpred IS NULL
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
    for relid, name, primary, _unique, indkey, nkey, usable in conn.execute(_INDEXES, [oids]):
        keys = list(indkey)[:nkey]
        cols = tuple(names[relid].get(k, "") for k in keys)
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


# ---------------------------------------------------------------- SQL helpers


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
    """``alias.columns`` equal to one of ``tuples`` (text values), in a form that uses their index."""
    if len(columns) == 1:
        col = meta.column(columns[0])
        cond = sql.SQL("{} = ANY(CAST({} AS pg_catalog.text[])::{})").format(
            _ident(alias, col.name), sql.Placeholder(), cat.array_type(col))
        return cond, [[t[0] for t in tuples]]
    arrays = sql.SQL(", ").join(
        sql.SQL("CAST({} AS pg_catalog.text[])::{}").format(sql.Placeholder(), cat.array_type(meta.column(c)))
        for c in columns)
    cond = sql.SQL("({}) IN (SELECT * FROM unnest({}))").format(
        sql.SQL(", ").join(_ident(alias, c) for c in columns), arrays)
    return cond, [[t[i] for t in tuples] for i in range(len(columns))]


def _identity_match(cat: ColumnCatalog, meta: TableMeta, alias: str,
                    identities: Sequence[Identity]) -> tuple[sql.Composable, list[Any]]:
    cols = meta.identity_columns
    if cols:
        return _match(cat, meta, alias, cols, identities)
    # No key at all: the row's place (rare; a sequential scan).
    cond = sql.SQL("({a}.tableoid::pg_catalog.int8::pg_catalog.text || ':' || {a}.ctid::pg_catalog.text) "
                   "= ANY(CAST({p} AS pg_catalog.text[]))").format(a=_ident(alias), p=sql.Placeholder())
    return cond, [[i[0] for i in identities]]


def _identity_of(meta: TableMeta, tableoid: int, ctid: str, values: Mapping[str, Text]) -> Identity:
    cols = meta.identity_columns
    if cols:
        return tuple(values[c] for c in cols)
    return (f"{tableoid}:{ctid}",)


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


# ---------------------------------------------------------------- value candidates

_STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_NUMBER_LITERAL = re.compile(r"(?<![\w.'\"])(-?\d+(?:\.\d+)?)(?![\w.'\"])")
_BOUND = re.compile(r"(?:FROM|IN) \(\s*('(?:[^']|'')*'|[-\w.]+)")


def _literals(definition: str) -> list[str]:
    """Candidate values mentioned in a CHECK: quoted strings, numbers and their successors."""
    found = [m.group(1).replace("''", "'") for m in _STRING_LITERAL.finditer(definition)]
    unquoted = _STRING_LITERAL.sub("''", definition)
    for m in _NUMBER_LITERAL.finditer(unquoted):
        text = m.group(1)
        found.append(text)
        try:
            found.append(str(int(text) + 1) if "." not in text else str(float(text) + 1))
        except ValueError:
            pass
    return found


def _bound_values(bounds: Iterable[str]) -> list[str]:
    values = []
    for bound in bounds:
        m = _BOUND.search(bound)
        if not m:
            continue
        token = m.group(1)
        if token.startswith("'"):
            values.append(token[1:-1].replace("''", "'"))
        elif token.upper() not in ("MINVALUE", "MAXVALUE", "NULL"):
            values.append(token)
    return values


def _fit(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit]


def _email(local: str, limit: int | None) -> str:
    domain = "@example.invalid"
    if limit is not None and len(local) + len(domain) > limit:
        local = local[: max(1, limit - len(domain))]
    return _fit(local + domain, limit)


def _pg_array(items: Sequence[Any]) -> str:
    def one(item: Any) -> str:
        if item is None:
            return "NULL"
        text = _as_text(item) or ""
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(one(i) for i in items) + "}"


def _as_text(value: Any) -> Text:
    """A parameter-supplied value in PostgreSQL's text input form."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return _pg_array(list(value))
    return str(value)


_GEOMETRY = {"point": "(0,0)", "line": "{1,-1,0}", "lseg": "[(0,0),(1,1)]", "box": "(1,1),(0,0)",
             "path": "[(0,0),(1,1)]", "polygon": "((0,0),(1,1),(1,0))", "circle": "<(0,0),1>"}
_FIXED = {
    "bool": ["true", "false"], "uuid": [], "json": ["{}", "[]", '{"test": true}'],
    "jsonb": ["{}", "[]", '{"test": true}'], "xml": ["<test/>"], "bytea": ["\\x00"],
    "date": ["2024-01-15", "2000-01-01", "2099-12-31"],
    "timestamp": ["2024-01-15 12:00:00", "2000-01-01 00:00:00", "2099-12-31 00:00:00"],
    "timestamptz": ["2024-01-15 12:00:00+00", "2000-01-01 00:00:00+00", "2099-12-31 00:00:00+00"],
    "time": ["12:00:00", "00:00:00"], "timetz": ["12:00:00+00"], "interval": ["1 day", "1 hour", "0"],
    "inet": ["192.0.2.1", "::1"], "cidr": ["192.0.2.0/24"], "macaddr": ["08:00:2b:01:02:03"],
    "macaddr8": ["08:00:2b:01:02:03:04:05"], "tsvector": ["test"], "tsquery": ["test"],
    "money": ["1.00", "0"], "pg_lsn": ["0/0"], "varbit": ["1", "0"],
}


def _type_candidates(cat: ColumnCatalog, col: Column, marker: str, *, depth: int = 0) -> list[str]:
    """Sensible values of the column's type, most likely to pass a CHECK first."""
    base = cat.base(col.type_oid)
    limit = cat.max_length(col)
    if base.typtype == "e":
        return list(base.labels)
    if base.category == "A" and base.elem in cat.types and depth == 0:
        elem = cat.types[base.elem]
        inner = Column(col.name, col.attnum, elem.oid, -1, True, False, "", "")
        first = _type_candidates(cat, inner, marker, depth=1)[:2]
        return ["{}"] + [_pg_array([v]) for v in first]
    if base.typtype == "r":
        return ["empty"]
    if base.typtype == "m":
        return ["{}"]
    if base.name == "uuid":
        return [str(uuid.uuid4())]
    if base.name == "bit":
        n = limit or 1
        return ["0" * n, "1" * n]
    if base.name in _FIXED:
        return list(_FIXED[base.name])
    if base.name in _GEOMETRY:
        return [_GEOMETRY[base.name]]
    if base.name == "numeric":
        typmod = col.typmod if col.typmod >= 0 else next(
            (d.typmod for d in cat.domains(col.type_oid) if d.typmod >= 0), -1)
        if typmod >= 4 and ((typmod - 4) >> 16) - ((typmod - 4) & 0xFFFF) <= 0:
            return ["0.1", "0", "0.5"]
        return ["1", "0", "2", "10", "100", "0.5", "-1"]
    if base.category == "N":
        return ["1", "0", "2", "10", "100", "1000", "-1"]
    if base.category == "S":
        candidates = []
        if "mail" in col.name.lower():
            candidates.append(_email(marker, limit))
        candidates.append(_fit(marker, limit))
        candidates.extend(_fit(v, limit) for v in ("A", "a", "x", "0", "1", "test"))
        if base.name == "bpchar" and limit:
            candidates.extend(["A" * limit, "0" * limit])
        return candidates
    return []


@dataclass
class _Cand:
    kind: str  # value | null | default | copy | unique
    text: Text = None


@dataclass
class _ColumnPlan:
    column: Column
    candidates: list[_Cand]
    fixed: bool = False
    index: int = 0
    bump: int = 0

    @property
    def current(self) -> _Cand:
        return self.candidates[self.index]

    def advance(self) -> bool:
        if self.fixed or self.index + 1 >= len(self.candidates):
            return False
        self.index += 1
        return True


def _dedupe(cands: list[_Cand]) -> list[_Cand]:
    seen: set[tuple[str, Text]] = set()
    out = []
    for c in cands:
        if (c.kind, c.text) not in seen:
            seen.add((c.kind, c.text))
            out.append(c)
    return out


# ---------------------------------------------------------------- synthesis


@dataclass
class SynthesizedRow:
    table: TableKey
    leaf: TableKey
    identity_columns: tuple[str, ...]
    identity: Identity
    values: dict[str, Text]
    attempts: int

    @property
    def key(self) -> dict[str, Text]:
        cols = self.identity_columns or (_CTID,)
        return dict(zip(cols, self.identity))


@dataclass
class SynthesisFailure:
    table: TableKey
    reason: str
    sqlstate: str | None = None
    constraint: str | None = None
    attempts: int = 0

    def __str__(self) -> str:
        where = f" (constraint {self.constraint})" if self.constraint else ""
        return f"{qualname(self.table)}: {self.reason}{where}"


@dataclass
class Synthesis:
    parent: TableKey
    marker: str
    deletion_set: dict[TableKey, int]
    rows: dict[TableKey, SynthesizedRow] = field(default_factory=dict)
    failures: list[SynthesisFailure] = field(default_factory=list)
    deferred_updates: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def user_key(self) -> dict[str, Text]:
        row = self.rows.get(self.parent)
        if row is None:
            raise RunbookError(f"no test user was created in {qualname(self.parent)}: "
                               + "; ".join(str(f) for f in self.failures if f.table == self.parent))
        return row.key

    @property
    def ok(self) -> bool:
        return not self.failures and self.parent in self.rows

    @property
    def message(self) -> str:
        done = f"test user {self.marker}: {len(self.rows)} of {len(self.deletion_set)} tables filled"
        if not self.failures:
            return done
        return done + "; could not fill " + "; ".join(str(f) for f in self.failures)


class _Synthesizer:
    def __init__(self, conn: psycopg.Connection[Any], snapshot: Snapshot, marker: str,
                 values: Mapping[str, Mapping[str, Any]]) -> None:
        self.conn = conn
        self.snapshot = snapshot
        self.marker = marker
        self.values = values
        self.parent = snapshot.parent
        self.fks = list(snapshot.foreign_keys)
        self.dset = deletion_set(self.fks, self.parent)
        outside = {fk.parent for fk in self.fks if fk.child in self.dset}
        self.cat = read_column_catalog(conn, set(self.dset) | outside)
        self.result = Synthesis(parent=self.parent, marker=marker, deletion_set=dict(self.dset))

    # -- order
    def order(self) -> tuple[list[TableKey], set[str]]:
        """Parents before children; a nullable FK inside a cycle is deferred (filled by an UPDATE)."""
        deps: dict[TableKey, list[ForeignKey]] = defaultdict(list)
        for fk in self.fks:
            if fk.child in self.dset and fk.parent in self.dset and fk.child != fk.parent:
                deps[fk.child].append(fk)
        remaining = set(self.dset)
        order: list[TableKey] = []
        deferred: set[str] = set()
        while remaining:
            ready = sorted((t for t in remaining
                            if all(fk.parent not in remaining or fk.key in deferred for fk in deps[t])),
                           key=lambda t: (self.dset[t], t))
            if ready:
                order.extend(ready)
                remaining.difference_update(ready)
                continue
            stuck = [fk for t in remaining for fk in deps[t]
                     if fk.parent in remaining and fk.key not in deferred]
            nullable = sorted((fk for fk in stuck if fk.nullable),
                              key=lambda f: (is_ownership(f, self.dset), -self.dset[f.child], f.key))
            if nullable:
                deferred.add(nullable[0].key)
                continue
            forced = min(remaining, key=lambda t: (self.dset[t], t))
            logger.warning("%s sits in a cycle of NOT NULL foreign keys; inserting it first anyway",
                           qualname(forced))
            order.append(forced)
            remaining.discard(forced)
        return order, deferred

    # -- values
    def supplied(self, table: TableKey) -> Mapping[str, Any]:
        merged: dict[str, Any] = {}
        for key in (table[1], qualname(table)):
            merged.update(self.values.get(key, {}) or {})
        return merged

    def existing_key(self, table: TableKey, columns: Sequence[str]) -> Identity | None:
        not_null = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(_ident("r", c)) for c in columns)
        query = sql.SQL("SELECT {} FROM {} AS r WHERE {} LIMIT 1").format(
            sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(_ident("r", c)) for c in columns),
            _table(table), not_null)
        row = self.conn.execute(query).fetchone()
        return tuple(row) if row else None

    def has_rows(self, table: TableKey) -> bool:
        row = self.conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(_table(table))).fetchone()
        return bool(row and row[0])

    def unique_value(self, meta: TableMeta, plan: _ColumnPlan, email: bool) -> Text:
        col = plan.column
        base = self.cat.base(col.type_oid)
        limit = self.cat.max_length(col)
        token = uuid.uuid4().hex
        if base.category == "S":
            if email:
                local = self.marker if plan.bump == 0 else f"{self.marker}-{token[:8]}"
                return _email(local, limit)
            if limit is not None and limit < len(self.marker) + 9:
                return token[: max(1, limit)]
            return f"{self.marker}-{token[:8]}"
        if base.name == "uuid":
            return str(uuid.uuid4())
        if base.category == "N" or base.name == "date":
            start = sql.SQL("0" if base.category == "N" else "DATE '2024-01-01'")
            numeric = sql.SQL("SELECT (COALESCE(max({c}), {s}) + %s)::pg_catalog.text FROM {t}").format(
                c=_ident(col.name), s=start, t=_table(meta.key))
            row = self.conn.execute(numeric, [1 + plan.bump]).fetchone()
            return row[0] if row else "1"
        if base.name in ("timestamp", "timestamptz"):
            stamp = sql.SQL("SELECT (COALESCE(max({c}), '2024-01-01') + %s * interval '1 second')::pg_catalog.text "
                            "FROM {t}").format(c=_ident(col.name), t=_table(meta.key))
            row = self.conn.execute(stamp, [1 + plan.bump]).fetchone()
            return row[0] if row else None
        if base.name == "inet":
            n = int(token[:6], 16)
            return f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        if base.name == "cidr":
            n = int(token[:4], 16)
            return f"10.{n >> 8 & 255}.{n & 255}.0/24"
        cands = _type_candidates(self.cat, col, self.marker)
        return cands[plan.bump % len(cands)] if cands else None

    def column_plans(self, meta: TableMeta, fixed: Mapping[str, Text], template: bool) -> list[_ColumnPlan]:
        supplied = self.supplied(meta.key)
        single_unique = {idx.columns[0] for idx in meta.uniques if idx.usable and len(idx.columns) == 1}
        is_parent = meta.key == self.parent
        checks: dict[str, list[str]] = defaultdict(list)
        for chk in meta.checks:
            for c in chk.columns:
                checks[c].extend(_literals(chk.definition))
        plans = []
        for col in meta.columns:
            if col.name in supplied:
                text = supplied[col.name]
                if isinstance(text, (list, tuple)) and self.cat.base(col.type_oid).category != "A":
                    text = json.dumps(list(text))
                plans.append(_ColumnPlan(col, [_Cand("value", _as_text(text))], fixed=True))
                continue
            if col.database_made:
                plans.append(_ColumnPlan(col, [_Cand("default")], fixed=True))
                continue
            if col.name in fixed:
                value = fixed[col.name]
                plans.append(_ColumnPlan(col, [_Cand("null") if value is None else _Cand("value", value)],
                                         fixed=True))
                continue
            literals = list(checks.get(col.name, []))
            for dom in self.cat.domains(col.type_oid):
                for _name, definition in dom.checks:
                    literals.extend(_literals(definition))
            base = self.cat.base(col.type_oid)
            if base.category == "A":
                literals = [_pg_array([v]) for v in literals]
            elif base.category == "N":
                literals = [v for v in literals if _NUMBER_LITERAL.fullmatch(v)]
            elif base.category == "S":
                literals = [_fit(v, self.cat.max_length(col)) for v in literals]
            typed = [_Cand("value", v) for v in literals + _type_candidates(self.cat, col, self.marker)]
            copy = [_Cand("copy")] if template else []
            email = is_parent and "mail" in col.name.lower() and self.cat.base(col.type_oid).category == "S"
            if col.name in single_unique or email:
                cands = ([_Cand("default")] if col.has_default and not email else []) + [_Cand("unique")]
                if not col.not_null and not email:
                    cands.insert(0, _Cand("null"))
            elif col.name in meta.partition_columns:
                bounds = [_Cand("value", v) for v in _bound_values(meta.partition_bounds)]
                cands = copy + bounds + ([_Cand("default")] if col.has_default else []) + typed
            elif col.has_default:
                cands = [_Cand("default")] + copy + typed
            elif not col.not_null and not self.cat.types[col.type_oid].notnull:
                cands = [_Cand("null")] + copy + typed
            else:
                cands = copy + typed
            if not cands:
                cands = [_Cand("null")]
            plans.append(_ColumnPlan(col, _dedupe(cands)))
        return plans

    def build_insert(self, meta: TableMeta, plans: list[_ColumnPlan]) -> tuple[sql.Composed, list[Any]]:
        names: list[sql.Composable] = []
        exprs: list[sql.Composable] = []
        params: list[Any] = []
        copy = False
        is_parent = meta.key == self.parent
        for plan in plans:
            cand = plan.current
            if cand.kind == "default":
                continue
            names.append(_ident(plan.column.name))
            if cand.kind == "null":
                exprs.append(sql.SQL("NULL"))
            elif cand.kind == "copy":
                exprs.append(_ident("src", plan.column.name))
                copy = True
            else:
                text = cand.text
                if cand.kind == "unique":
                    email = is_parent and "mail" in plan.column.name.lower()
                    text = self.unique_value(meta, plan, email)
                exprs.append(_cast(self.cat, plan.column))
                params.append(text)
        returning = _select_list("r", [c.name for c in meta.columns])
        target = sql.SQL("{} AS r").format(_table(meta.key))
        if not names:
            query = sql.SQL("INSERT INTO {} DEFAULT VALUES RETURNING {}").format(target, returning)
        else:
            source = sql.SQL(" FROM {} AS src LIMIT 1").format(_table(meta.key)) if copy else sql.SQL("")
            query = sql.SQL("INSERT INTO {} ({}) SELECT {}{} RETURNING {}").format(
                target, sql.SQL(", ").join(names), sql.SQL(", ").join(exprs), source, returning)
        return query, params

    def adjust(self, meta: TableMeta, plans: list[_ColumnPlan], exc: psycopg.Error) -> bool:
        """Change the columns the error names; False when there is nothing left to try."""
        err = _error_fields(exc)
        state = err["sqlstate"] or ""
        by_name = {p.column.name: p for p in plans}
        targets: list[_ColumnPlan] = []
        if state == "23514":  # check_violation (also: no partition for the row)
            name = err["constraint"]
            cols: set[str] = set()
            for chk in meta.checks:
                if chk.name == name:
                    cols.update(chk.columns)
            for p in plans:
                if any(name == n for dom in self.cat.domains(p.column.type_oid) for n, _ in dom.checks):
                    cols.add(p.column.name)
            if name is None:
                cols.update(meta.partition_columns)
            targets = [by_name[c] for c in cols if c in by_name] or [p for p in plans if not p.fixed]
        elif state == "23505":  # unique_violation
            cols = set()
            for idx in meta.uniques:
                if idx.name == err["constraint"]:
                    cols.update(idx.columns)
            if not cols:  # e.g. the index of a partition: its name is not the parent's
                cols = {c for idx in meta.uniques for c in idx.columns}
            changed = False
            for c in cols:
                u = by_name.get(c)
                if u is None or u.fixed:
                    continue
                if u.current.kind == "unique":
                    u.bump += 1
                    changed = True
                elif u.current.kind in ("copy", "value", "default"):
                    u.candidates.insert(u.index + 1, _Cand("unique"))
                    changed = u.advance() or changed
            return changed
        elif state == "23502":  # not_null_violation
            named = by_name.get(err["column"] or "")
            targets = [named] if named is not None else []
        elif state.startswith("22"):  # data exceptions: a value of ours did not fit
            col = err["column"]
            targets = [by_name[col]] if col in by_name else self.unfit(plans)
        moved = False
        for p in targets:
            moved = p.advance() or moved
        return moved

    def unfit(self, plans: list[_ColumnPlan]) -> list[_ColumnPlan]:
        """The columns whose current value does not even cast to their type (the error named none)."""
        bad = []
        for p in plans:
            if p.fixed or p.current.kind != "value":
                continue
            try:
                with self.conn.transaction():
                    self.conn.execute(sql.SQL("SELECT {}").format(_cast(self.cat, p.column)), [p.current.text])
            except psycopg.Error:
                bad.append(p)
        return bad

    def insert(self, meta: TableMeta, fixed: Mapping[str, Text]) -> SynthesizedRow | SynthesisFailure:
        plans = self.column_plans(meta, fixed, self.has_rows(meta.key))
        last: SynthesisFailure | None = None
        for attempt in range(1, MAX_ATTEMPTS + 1):
            query, params = self.build_insert(meta, plans)
            try:
                with self.conn.transaction():
                    row = self.conn.execute(query, params).fetchone()
            except psycopg.Error as exc:
                err = _error_fields(exc)
                last = SynthesisFailure(meta.key, str(err["message"]), err["sqlstate"], err["constraint"], attempt)
                logger.debug("insert into %s, attempt %d: %s", qualname(meta.key), attempt, err["message"])
                if not self.adjust(meta, plans, exc):
                    return last
                continue
            if row is None:
                return SynthesisFailure(meta.key, "the insert returned no row (a trigger skipped it?)",
                                        attempts=attempt)
            tableoid, ctid, *texts = row
            values = dict(zip((c.name for c in meta.columns), texts))
            return SynthesizedRow(meta.key, self.cat.leaf(tableoid), meta.identity_columns,
                                  _identity_of(meta, tableoid, ctid, values), values, attempt)
        assert last is not None
        last.reason += f" (gave up after {MAX_ATTEMPTS} attempts)"
        return last

    def links(self, table: TableKey, deferred: set[str]) -> tuple[dict[str, Text], list[ForeignKey], str | None]:
        """FK column values for a new row of ``table``; the deferred FKs; or why it cannot be linked."""
        fixed: dict[str, Text] = {}
        later: list[ForeignKey] = []
        own = sorted((fk for fk in self.fks if fk.child == table),
                     key=lambda f: (not is_ownership(f, self.dset), -len(f.columns), f.key))
        linked = table == self.parent
        for fk in own:
            if all(c in fixed for c in fk.columns):
                continue
            values: Identity | None = None
            if fk.parent == table or fk.key in deferred:
                if fk.key in deferred:
                    later.append(fk)
                if fk.nullable:
                    values = tuple(None for _ in fk.columns)
                else:
                    values = self.existing_key(fk.parent, fk.ref_columns)
            elif fk.parent in self.dset:
                parent_row = self.result.rows.get(fk.parent)
                if parent_row is not None:
                    values = tuple(parent_row.values.get(c) for c in fk.ref_columns)
                    linked = True
                elif fk.nullable:
                    values = tuple(None for _ in fk.columns)
                else:
                    return fixed, later, f"{qualname(fk.parent)} has no test row to reference ({fk.name})"
            else:
                values = self.existing_key(fk.parent, fk.ref_columns)
                if values is None and fk.nullable:
                    values = tuple(None for _ in fk.columns)
            if values is None:
                return fixed, later, (f"needs a row of {qualname(fk.parent)} to reference ({fk.name}) "
                                      "and that table is empty")
            for col, value in zip(fk.columns, values):
                fixed.setdefault(col, value)
        if not linked:
            return fixed, later, "no table it belongs to has a test row"
        return fixed, later, None

    def fill_deferred(self, fk: ForeignKey) -> None:
        child, parent = self.result.rows.get(fk.child), self.result.rows.get(fk.parent)
        if child is None or parent is None:
            return
        meta = self.cat.meta(fk.child)
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(_ident(c), _cast(self.cat, meta.column(c))) for c in fk.columns)
        cond, cond_params = _identity_match(self.cat, meta, "r", [child.identity])
        query = sql.SQL("UPDATE {} AS r SET {} WHERE {} RETURNING {}").format(
            _table(fk.child), assignments, cond, _select_list("r", [c.name for c in meta.columns]))
        params = [parent.values.get(c) for c in fk.ref_columns] + cond_params
        try:
            with self.conn.transaction():
                row = self.conn.execute(query, params).fetchone()
        except psycopg.Error as exc:
            err = _error_fields(exc)
            self.result.failures.append(SynthesisFailure(
                fk.child, f"could not fill {', '.join(fk.columns)} ({fk.name}): {err['message']}",
                err["sqlstate"], err["constraint"]))
            return
        if row is not None:
            tableoid, ctid, *texts = row
            child.values = dict(zip((c.name for c in meta.columns), texts))
            child.identity = _identity_of(meta, tableoid, ctid, child.values)
            self.result.deferred_updates.append(
                f"{qualname(fk.child)}.{', '.join(fk.columns)} -> {qualname(fk.parent)} ({fk.name})")

    def run(self) -> Synthesis:
        started = time.perf_counter()
        order, deferred = self.order()
        pending: list[ForeignKey] = []
        for table in order:
            meta = self.cat.tables.get(table)
            if meta is None:
                self.result.failures.append(SynthesisFailure(table, "not found in the catalog"))
                continue
            fixed, later, problem = self.links(table, deferred)
            if problem is not None:
                self.result.failures.append(SynthesisFailure(table, problem))
                continue
            outcome = self.insert(meta, fixed)
            if isinstance(outcome, SynthesisFailure):
                self.result.failures.append(outcome)
                if table == self.parent:
                    break
                continue
            self.result.rows[table] = outcome
            pending.extend(later)
        for fk in pending:
            self.fill_deferred(fk)
        self.result.seconds = round(time.perf_counter() - started, 3)
        logger.info("%s (%.2fs)", self.result.message, self.result.seconds)
        return self.result


def new_marker() -> str:
    """An unmistakable, unique marker for a test user (its e-mail becomes <marker>@example.invalid)."""
    return f"rbtest-{uuid.uuid4().hex[:10]}"


def synthesize(conn: psycopg.Connection[Any], snapshot: Snapshot, *, marker: str,
               values: Mapping[str, Mapping[str, Any]] | None = None) -> Synthesis:
    """Create a test user and one row in every table of the deletion set, in the caller's transaction.

    ``values``: table or schema.table -> {column: value} for what the catalog cannot tell (text input
    form, or Python scalars, dicts for json, lists for arrays). Triggers fire as in production.
    """
    _require_transaction(conn, "synthesize")
    return _Synthesizer(conn, snapshot, marker, values or {}).run()


# ---------------------------------------------------------------- preview


@dataclass
class PreviewRow:
    leaf: TableKey
    values: dict[str, Text]


@dataclass
class Blocker:
    constraint: str
    name: str
    table: TableKey
    references: TableKey
    rule: str
    rows: int
    certain: bool
    sample: list[dict[str, Text]]

    @property
    def text(self) -> str:
        how = "blocks" if self.certain else "may block (rows also deleted by the cascade; trigger order decides)"
        return (f"{self.rule} constraint {self.name} on {qualname(self.table)} {how}: {self.rows} "
                f"referencing row(s) of {qualname(self.references)}")


@dataclass
class Detached:
    """Rows kept by a SET NULL / SET DEFAULT rule: they survive, detached from the deleted row."""
    constraint: str
    table: TableKey
    rule: str
    columns: tuple[str, ...]
    rows: dict[Identity, PreviewRow]


@dataclass
class Preview:
    parent: TableKey
    user_key: dict[str, Text]
    found: bool
    rules: dict[str, str]
    deleted: dict[TableKey, dict[Identity, PreviewRow]]
    detached: dict[str, Detached]
    blockers: list[Blocker]
    unindexed: list[ForeignKey]
    via: dict[TableKey, set[str]]
    foreign_keys: tuple[ForeignKey, ...]
    catalog: ColumnCatalog
    queries: int = 0
    seconds: float = 0.0

    def deleted_counts(self) -> dict[TableKey, int]:
        return {t: len(rows) for t, rows in self.deleted.items() if rows}

    def leaf_deleted_counts(self) -> dict[TableKey, int]:
        counts: dict[TableKey, int] = defaultdict(int)
        for rows in self.deleted.values():
            for row in rows.values():
                counts[row.leaf] += 1
        return dict(counts)

    def detached_counts(self) -> dict[TableKey, int]:
        counts: dict[TableKey, int] = defaultdict(int)
        for d in self.detached.values():
            counts[d.table] += len(d.rows)
        return dict(counts)

    @property
    def certain_blockers(self) -> list[Blocker]:
        return [b for b in self.blockers if b.certain]

    @property
    def ok(self) -> bool:
        return self.found and not self.certain_blockers

    @property
    def message(self) -> str:
        who = f"{qualname(self.parent)} {_key_text(self.user_key)}"
        if not self.found:
            return f"{who} does not exist"
        total = sum(self.deleted_counts().values())
        text = f"deleting {who} removes {total} row(s) in {len(self.deleted_counts())} table(s)"
        kept = sum(self.detached_counts().values())
        if kept:
            text += f", detaches {kept} row(s) (SET NULL/DEFAULT)"
        if self.certain_blockers:
            text += "; BLOCKED by " + "; ".join(b.text for b in self.certain_blockers)
        elif self.blockers:
            text += "; " + "; ".join(b.text for b in self.blockers)
        if self.unindexed:
            text += "; unindexed: " + ", ".join(fk.key for fk in self.unindexed)
        return text


def _key_text(key: Mapping[str, Text]) -> str:
    return ", ".join(f"{k}={v}" for k, v in key.items())


class _Walker:
    def __init__(self, conn: psycopg.Connection[Any], parent: TableKey, fks: list[ForeignKey],
                 rules: Mapping[str, str]) -> None:
        self.conn = conn
        self.parent = parent
        self.fks = fks
        self.rules = {fk.key: rules.get(fk.key, fk.on_delete) for fk in fks}
        self.dset = deletion_set(fks, parent)
        self.referencing: dict[TableKey, list[ForeignKey]] = defaultdict(list)
        for fk in fks:
            if fk.parent in self.dset:
                self.referencing[fk.parent].append(fk)
        outside = {fk.parent for fk in fks if fk.child in self.dset and fk.parent not in self.dset}
        self.cat = read_column_catalog(conn, set(self.dset) | outside)
        self.needed: dict[TableKey, list[str]] = {}
        for table in self.dset:
            if table not in self.cat.tables:
                continue
            cols = list(self.cat.meta(table).identity_columns)
            for fk in self.referencing[table]:
                cols.extend(fk.ref_columns)
            for fk in fks:
                if fk.child == table:
                    cols.extend(fk.columns)
            self.needed[table] = list(dict.fromkeys(cols))
        self.queries = 0

    def fetch(self, table: TableKey, cond: sql.Composable, params: list[Any]) -> dict[Identity, PreviewRow]:
        meta = self.cat.meta(table)
        cols = self.needed[table]
        query = sql.SQL("SELECT {} FROM {} AS t WHERE {}").format(_select_list("t", cols), _table(table), cond)
        self.queries += 1
        rows = {}
        for tableoid, ctid, *texts in self.conn.execute(query, params).fetchall():
            values = dict(zip(cols, texts))
            rows[_identity_of(meta, tableoid, ctid, values)] = PreviewRow(self.cat.leaf(tableoid), values)
        return rows

    def referencing_rows(self, fk: ForeignKey, parents: Iterable[PreviewRow]) -> dict[Identity, PreviewRow]:
        wanted = {tuple(r.values.get(c) for c in fk.ref_columns) for r in parents}
        keys = sorted((k for k in wanted if all(v is not None for v in k)), key=lambda k: tuple(str(v) for v in k))
        found: dict[Identity, PreviewRow] = {}
        meta = self.cat.meta(fk.child)
        for chunk in _chunks(keys):
            cond, params = _match(self.cat, meta, "t", fk.columns, chunk)
            found.update(self.fetch(fk.child, cond, params))
        return found

    def walk(self, user_key: Mapping[str, Text]) -> Preview:
        started = time.perf_counter()
        meta = self.cat.meta(self.parent)
        key_cols = tuple(user_key)
        cond, params = _match(self.cat, meta, "t", key_cols, [tuple(user_key[c] for c in key_cols)])
        first = self.fetch(self.parent, cond, params)
        deleted: dict[TableKey, dict[Identity, PreviewRow]] = defaultdict(dict)
        via: dict[TableKey, set[str]] = defaultdict(set)
        referencing: dict[str, dict[Identity, PreviewRow]] = defaultdict(dict)
        walked: set[str] = set()
        deleted[self.parent].update(first)
        queue: list[tuple[TableKey, list[PreviewRow]]] = [(self.parent, list(first.values()))] if first else []
        while queue:
            table, rows = queue.pop(0)
            for fk in self.referencing[table]:
                if fk.child not in self.cat.tables:
                    continue
                walked.add(fk.key)
                children = self.referencing_rows(fk, rows)
                if not children:
                    continue
                rule = self.rules[fk.key]
                if rule == "CASCADE":
                    fresh = {i: r for i, r in children.items() if i not in deleted[fk.child]}
                    via[fk.child].add(fk.key)
                    if fresh:
                        deleted[fk.child].update(fresh)
                        queue.append((fk.child, list(fresh.values())))
                else:
                    referencing[fk.key].update(children)
        detached: dict[str, Detached] = {}
        blockers: list[Blocker] = []
        by_key = {fk.key: fk for fk in self.fks}
        for fk_key, refs in referencing.items():
            fk = by_key[fk_key]
            rule = self.rules[fk_key]
            gone = deleted.get(fk.child, {})
            kept = {i: r for i, r in refs.items() if i not in gone}
            if rule in ("SET NULL", "SET DEFAULT"):
                columns = fk.delete_set_columns or fk.columns
                not_null = [c for c, nn in zip(fk.columns, fk.columns_not_null) if nn and c in columns]
                if rule == "SET NULL" and not_null and kept:
                    blockers.append(Blocker(fk.key, fk.name, fk.child, fk.parent, "SET NULL on NOT NULL "
                                            + ", ".join(not_null), len(kept), True,
                                            [r.values for r in list(kept.values())[:5]]))
                if kept:
                    detached[fk_key] = Detached(fk_key, fk.child, rule, tuple(columns), kept)
                continue
            if kept:
                blockers.append(Blocker(fk.key, fk.name, fk.child, fk.parent, rule, len(kept), True,
                                        [r.values for r in list(kept.values())[:5]]))
            also = len(refs) - len(kept)
            if also:
                blockers.append(Blocker(fk.key, fk.name, fk.child, fk.parent, rule, also, False,
                                        [r.values for i, r in refs.items() if i in gone][:5]))
        unindexed = [by_key[k] for k in sorted(walked) if not by_key[k].indexed]
        return Preview(
            parent=self.parent, user_key=dict(user_key), found=bool(first), rules=dict(self.rules),
            deleted={t: r for t, r in deleted.items() if r}, detached=detached, blockers=blockers,
            unindexed=unindexed, via=dict(via), foreign_keys=tuple(self.fks), catalog=self.cat,
            queries=self.queries, seconds=round(time.perf_counter() - started, 3))


def _user_key(conn: psycopg.Connection[Any], parent: TableKey, user_key: Mapping[str, Any] | Any) -> dict[str, Text]:
    if isinstance(user_key, Mapping):
        return {str(k): _as_text(v) for k, v in user_key.items()}
    cols = parent_key_columns(conn, parent)
    if len(cols) != 1:
        raise RunbookError(f"{qualname(parent)} has a composite key ({', '.join(cols)}): give the user's key "
                           "as a mapping of column -> value", table=qualname(parent))
    return {cols[0]: _as_text(user_key)}


def preview(conn: psycopg.Connection[Any], parent: TableKey, user_key: Mapping[str, Any] | Any, *,
            read_only: bool = True, rules: Mapping[str, str] | None = None) -> Preview:
    """What deleting the parent row ``user_key`` will do, from the FK rules the catalog shows now.

    Only SELECTs: children are found by their FK columns (``= ANY`` of a typed array, or a row IN over
    ``unnest`` for composite keys) so that FK indexes are used; FKs without one are listed in
    ``Preview.unindexed``. With ``read_only`` and an idle connection, the walk runs in a READ ONLY
    REPEATABLE READ transaction of its own (one consistent snapshot); otherwise in the caller's.
    """
    def run() -> Preview:
        fks = _read_fks(conn)
        key = _user_key(conn, parent, user_key)
        result = _Walker(conn, parent, fks, rules or {}).walk(key)
        logger.info("preview: %s (%d queries, %.2fs)", result.message, result.queries, result.seconds)
        return result

    if read_only and not _in_transaction(conn):
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            return run()
    return run()


# ---------------------------------------------------------------- proof


@dataclass
class DeleteFailure:
    statement: str
    sqlstate: str | None
    message: str
    table: TableKey | None
    constraint: str | None

    @property
    def text(self) -> str:
        where = f" on {qualname(self.table)}" if self.table else ""
        con = f" (constraint {self.constraint})" if self.constraint else ""
        return f"{self.statement} failed{where}{con}: {self.message} [SQLSTATE {self.sqlstate}]"


@dataclass
class Proof:
    ok: bool
    message: str
    action: str
    failure: DeleteFailure | None = None
    counts: list[dict[str, Any]] = field(default_factory=list)
    survivors: dict[TableKey, int] = field(default_factory=dict)
    detached: dict[str, dict[str, Any]] = field(default_factory=dict)
    mismatches: list[str] = field(default_factory=list)
    side_effects: dict[TableKey, int] = field(default_factory=dict)
    others_changed: list[str] = field(default_factory=list)
    unreached: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "message": self.message, "action": self.action,
            "failure": None if self.failure is None else {
                "statement": self.failure.statement, "sqlstate": self.failure.sqlstate,
                "message": self.failure.message, "constraint": self.failure.constraint,
                "table": qualname(self.failure.table) if self.failure.table else None},
            "counts": self.counts, "survivors": {qualname(k): v for k, v in self.survivors.items()},
            "detached": self.detached, "mismatches": self.mismatches,
            "side_effects": {qualname(k): v for k, v in self.side_effects.items()},
            "others_changed": self.others_changed, "unreached": self.unreached, "notes": self.notes,
            "seconds": self.seconds,
        }


def _exact_counts(conn: psycopg.Connection[Any], cat: ColumnCatalog) -> dict[TableKey, int]:
    """Exact row counts of every leaf table (relkind 'r': plain tables and partitions)."""
    leaves = sorted(key for key, _root, kind in cat.relations.values() if kind == "r")
    counts: dict[TableKey, int] = {}
    for chunk in _chunks(leaves, 200):
        query = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
            sql.SQL("(SELECT count(*) FROM ONLY {})").format(_table(t)) for t in chunk))
        row = conn.execute(query).fetchone()
        assert row is not None
        counts.update(zip(chunk, (int(v) for v in row)))
    return counts


def _fingerprint(conn: psycopg.Connection[Any], cat: ColumnCatalog, table: TableKey,
                 identities: Sequence[Identity] | None) -> tuple[int, str]:
    """Row count and a sum of 64-bit row hashes: equal before and after means the rows are the same."""
    where: sql.Composable = sql.SQL("")
    params: list[Any] = []
    if identities is not None:
        if not identities:
            return 0, "0"
        cond, params = _identity_match(cat, cat.meta(table), "t", identities)
        where = sql.SQL(" WHERE {}").format(cond)
    query = sql.SQL("SELECT count(*), COALESCE(sum(pg_catalog.hashtextextended(t::pg_catalog.text, 0)"
                    "::pg_catalog.numeric), 0)::pg_catalog.text FROM {} AS t{}").format(_table(table), where)
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return int(row[0]), str(row[1])


def _minus(a: str, b: str) -> int:
    return int(Decimal(a) - Decimal(b))


def _prove(conn: psycopg.Connection[Any], synthesis: Synthesis | None, preview_: Preview,
           action: Callable[[], None], description: str, *, strict_other_tables: bool) -> Proof:
    started = time.perf_counter()
    cat = preview_.catalog
    notes: list[str] = []
    replica = conn.execute("SELECT current_setting('session_replication_role')").fetchone()
    if replica and replica[0] == "replica":
        return Proof(False, "FAIL: session_replication_role is replica: FK triggers do not fire, "
                            "no cascade would happen", description)
    dset = deletion_set(preview_.foreign_keys, preview_.parent)
    graph_tables = sorted(t for t in dset if t in cat.tables)
    affected: dict[TableKey, list[Identity]] = defaultdict(list)
    for table, rows in preview_.deleted.items():
        affected[table].extend(rows)
    detached_ids: dict[TableKey, list[Identity]] = defaultdict(list)
    for d in preview_.detached.values():
        detached_ids[d.table].extend(i for i in d.rows if i not in detached_ids[d.table])
    for table, ids in detached_ids.items():
        affected[table].extend(i for i in ids if i not in set(affected[table]))
    before = _exact_counts(conn, cat)
    fp_before: dict[TableKey, tuple[int, int]] = {}
    for table in graph_tables:
        total = _fingerprint(conn, cat, table, None)
        part = _fingerprint(conn, cat, table, affected.get(table, []))
        fp_before[table] = (total[0] - part[0], _minus(total[1], part[1]))
    failure: DeleteFailure | None = None
    try:
        with conn.transaction():
            action()
    except psycopg.Error as exc:
        err = _error_fields(exc)
        where: TableKey | None = (err["schema"] or "", err["table"]) if err["table"] else None
        failure = DeleteFailure(description, err["sqlstate"], str(err["message"]), where, err["constraint"])
    if failure is not None:
        message = f"FAIL: {failure.text}"
        logger.warning("%s", message)
        return Proof(False, message, description, failure=failure,
                     seconds=round(time.perf_counter() - started, 3))
    after = _exact_counts(conn, cat)
    expected = preview_.leaf_deleted_counts()
    root_of = {key: root for key, root, _kind in cat.relations.values()}
    counts: list[dict[str, Any]] = []
    mismatches: list[str] = []
    side_effects: dict[TableKey, int] = {}
    for leaf in sorted(set(before) | set(after)):
        b, a = before.get(leaf, 0), after.get(leaf, 0)
        in_set = root_of.get(leaf, leaf) in dset
        want = -expected.get(leaf, 0)
        change = a - b
        if in_set and change != want:
            status = "MISMATCH"
            mismatches.append(f"{qualname(leaf)}: changed by {change}, the preview said {want}")
        elif not in_set and change != 0:
            status = "side effect"
            side_effects[leaf] = change
        elif want:
            status = "deleted as previewed"
        else:
            status = "unchanged"
        if in_set or change:
            counts.append({"table": qualname(leaf), "in deletion set": in_set, "before": b, "after": a,
                           "expected change": want if in_set else 0, "change": change, "status": status})
    survivors: dict[TableKey, int] = {}
    for table, rows in preview_.deleted.items():
        left = _fingerprint(conn, cat, table, list(rows))[0]
        if left:
            survivors[table] = left
    detached: dict[str, dict[str, Any]] = {}
    for key, d in preview_.detached.items():
        meta = cat.meta(d.table)
        if not meta.identity_columns:
            notes.append(f"{qualname(d.table)} has no key: its detached rows cannot be found again")
            continue
        cond, params = _identity_match(cat, meta, "t", list(d.rows))
        nulls: sql.Composable = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(_ident("t", c)) for c in d.columns)
        if d.rule == "SET DEFAULT":
            nulls = sql.SQL("true")
        row = conn.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {} AS t WHERE {}").format(
            nulls, _table(d.table), cond), params).fetchone()
        assert row is not None
        detached[key] = {"table": qualname(d.table), "rule": d.rule, "columns": list(d.columns),
                         "expected": len(d.rows), "kept": int(row[0]), "detached": int(row[1])}
        if int(row[1]) != len(d.rows):
            mismatches.append(f"{key}: {len(d.rows)} row(s) should be kept with {', '.join(d.columns)} "
                              f"{'NULL' if d.rule == 'SET NULL' else 'at the default'}, found {row[1]}")
    others_changed: list[str] = []
    for table in graph_tables:
        total = _fingerprint(conn, cat, table, None)
        part = _fingerprint(conn, cat, table, detached_ids.get(table, []))
        now = (total[0] - part[0], _minus(total[1], part[1]))
        if now != fp_before[table]:
            others_changed.append(f"{qualname(table)}: rows not of this user changed "
                                  f"({fp_before[table][0]} -> {now[0]} rows, or their contents)")
    unreached: list[str] = []
    if synthesis is not None:
        for table, srow in synthesis.rows.items():
            if srow.identity in preview_.deleted.get(table, {}):
                continue
            if any(d.table == table and srow.identity in d.rows for d in preview_.detached.values()):
                continue
            unreached.append(f"{qualname(table)} {_key_text(srow.key)}: a row of the test user that the "
                             "delete does not reach")
    extra = [f"{qualname(t)} {c:+d}" for t, c in sorted(side_effects.items())]
    ok = not (survivors or mismatches or others_changed or unreached or (strict_other_tables and extra))
    total_deleted = sum(expected.values())
    kept = sum(d["kept"] for d in detached.values())
    if ok:
        message = (f"PASS: {description}: {total_deleted} row(s) in {len(preview_.deleted_counts())} table(s) "
                   f"deleted as previewed, none left")
        if kept:
            message += f"; {kept} row(s) kept and detached"
        message += "; every other table unchanged" if not extra else f"; other tables changed: {', '.join(extra)}"
    else:
        problems = ([f"{qualname(t)}: {n} row(s) left" for t, n in survivors.items()] + mismatches
                    + others_changed + unreached)
        if strict_other_tables:
            problems += [f"{e} (outside the deletion set)" for e in extra]
        message = f"FAIL: {description}: " + "; ".join(problems)
    logger.info("%s", message)
    return Proof(ok, message, description, counts=counts, survivors=survivors, detached=detached,
                 mismatches=mismatches, side_effects=side_effects, others_changed=others_changed,
                 unreached=unreached, notes=notes, seconds=round(time.perf_counter() - started, 3))


def delete_and_prove(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis | None,
                     preview: Preview, *, strict_other_tables: bool = False) -> Proof:
    """One ``DELETE FROM parent WHERE key = …``, then prove it did exactly what the preview said.

    Proven: no previewed row survives; each leaf table of the deletion set changed by exactly the
    preview's count; rows of the deletion set's tables that are not this user's are unchanged (count
    and row hashes); every synthesized row was deleted or kept-and-detached. Tables outside the
    deletion set that changed (a trigger's side table) are listed in ``side_effects``; they fail the
    proof only with ``strict_other_tables``. A failing DELETE is in ``Proof.failure``, not raised.
    """
    _require_transaction(conn, "delete_and_prove")
    parent = preview.parent
    if parent != snapshot.parent:
        raise RunbookError(f"the preview is for {qualname(parent)}, the snapshot for {qualname(snapshot.parent)}")
    meta = preview.catalog.meta(parent)
    key_cols = tuple(preview.user_key)
    cond = sql.SQL(" AND ").join(
        sql.SQL("{} = {}").format(_ident(c), _cast(preview.catalog, meta.column(c))) for c in key_cols)
    statement = sql.SQL("DELETE FROM {} WHERE {}").format(_table(parent), cond)
    params = [preview.user_key[c] for c in key_cols]

    def action() -> None:
        conn.execute(statement, params)

    description = f"DELETE FROM {qualname(parent)} WHERE {_key_text(preview.user_key)}"
    return _prove(conn, synthesis, preview, action, description, strict_other_tables=strict_other_tables)


# ---------------------------------------------------------------- orphans


@dataclass
class Orphans:
    table: TableKey
    columns: tuple[str, ...]
    count: int
    keys: list[dict[str, Text]]
    referenced_by: list[str]


def orphans(conn: psycopg.Connection[Any], preview: Preview) -> list[Orphans]:
    """After the delete: rows outside the deletion set that the deleted rows referenced and that no
    remaining row references any more (e.g. stored media). Reported only; never deleted."""
    cat = preview.catalog
    dset = deletion_set(preview.foreign_keys, preview.parent)
    groups: dict[tuple[TableKey, tuple[str, ...]], set[Identity]] = defaultdict(set)
    sources: dict[tuple[TableKey, tuple[str, ...], Identity], set[str]] = defaultdict(set)
    for fk in preview.foreign_keys:
        if fk.child not in preview.deleted or fk.parent in dset or fk.parent not in cat.tables:
            continue
        for row in preview.deleted[fk.child].values():
            key = tuple(row.values.get(c) for c in fk.columns)
            if all(v is not None for v in key):
                groups[(fk.parent, fk.ref_columns)].add(key)
                sources[(fk.parent, fk.ref_columns, key)].add(fk.key)
    found: list[Orphans] = []
    for (table, ref_cols), keys in sorted(groups.items()):
        meta = cat.meta(table)
        referencing = [fk for fk in preview.foreign_keys if fk.parent == table]
        not_exists = [
            sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS x WHERE {})").format(
                _table(fk.child), sql.SQL(" AND ").join(
                    sql.SQL("{} = {}").format(_ident("x", c), _ident("r", rc))
                    for c, rc in zip(fk.columns, fk.ref_columns)))
            for fk in referencing]
        rows: list[tuple[Text, ...]] = []
        for chunk in _chunks(sorted(keys, key=lambda k: tuple(str(v) for v in k))):
            cond, params = _match(cat, meta, "r", ref_cols, chunk)
            query = sql.SQL("SELECT {} FROM {} AS r WHERE {}").format(
                sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(_ident("r", c)) for c in ref_cols),
                _table(table), sql.SQL(" AND ").join([cond, *not_exists]))
            rows.extend(tuple(r) for r in conn.execute(query, params).fetchall())
        if rows:
            via = sorted({k for r in rows for k in sources[(table, ref_cols, r)]})
            found.append(Orphans(table, ref_cols, len(rows), [dict(zip(ref_cols, r)) for r in rows], via))
    logger.info("orphans: %s", ", ".join(f"{qualname(o.table)} {o.count}" for o in found) or "none")
    return found


# ---------------------------------------------------------------- ordered delete script


def script_rules(snapshot: Snapshot, params: Any = None) -> dict[str, str]:
    """The rule the ordered script carries out for each FK into the deletion set: the plan's policy
    (ownership -> CASCADE, nullable cross edges and the parent's self-reference -> SET NULL, …)."""
    from . import params as params_mod
    from .plan import make_plan

    if params is None:
        params = params_mod.validate({"parent_table": snapshot.parent[1], "parent_schema": snapshot.parent[0]})
    return {item.fk.key: item.planned for item in make_plan(snapshot, params).items}


def _key_placeholders(user_key_columns: Sequence[str]) -> list[sql.Placeholder]:
    if len(user_key_columns) == 1:
        return [sql.Placeholder("user_id")]
    return [sql.Placeholder(c) for c in user_key_columns]


def script_params(user_key_columns: Sequence[str], user_key: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The parameters of ``ordered_delete_script`` for one user."""
    if len(user_key_columns) == 1:
        value = user_key[user_key_columns[0]] if isinstance(user_key, Mapping) else user_key
        return {"user_id": value}
    if not isinstance(user_key, Mapping):
        raise RunbookError("a composite user key must be a mapping of column -> value")
    return {c: user_key[c] for c in user_key_columns}


def ordered_delete_script(snapshot: Snapshot, user_key_columns: Sequence[str], *,
                          params: Any = None) -> list[sql.Composed]:
    """The explicit statements that delete one user where FKs do not cascade.

    First ``UPDATE … SET col = NULL`` for the FKs the policy sets to NULL (this breaks cycles such as
    chat_sessions.last_message_id), then a ``DELETE`` per table, children before parents, each keyed
    from the user's id through the ownership chain with sub-selects. Placeholders: ``%(user_id)s`` for
    a one-column key, ``%(<column>)s`` for each column of a composite key.
    """
    parent = snapshot.parent
    fks = list(snapshot.foreign_keys)
    dset = deletion_set(fks, parent)
    rules = script_rules(snapshot, params)
    deleting: dict[TableKey, list[ForeignKey]] = defaultdict(list)
    for fk in fks:
        if fk.key in rules and rules[fk.key] == "CASCADE" and is_ownership(fk, dset):
            deleting[fk.child].append(fk)
    placeholders = _key_placeholders(user_key_columns)
    memo: dict[TableKey, sql.Composable | None] = {}

    def condition(table: TableKey) -> sql.Composable | None:
        """Which rows of ``table`` belong to the user (None: none do, through deleting edges)."""
        if table in memo:
            return memo[table]
        if table == parent:
            memo[table] = sql.SQL(" AND ").join(
                sql.SQL("{} = {}").format(_ident(c), p) for c, p in zip(user_key_columns, placeholders))
            return memo[table]
        parts = []
        for fk in sorted(deleting.get(table, []), key=lambda f: f.key):
            sub = rows_of(fk.parent, fk.ref_columns)
            if sub is not None:
                parts.append(sql.SQL("({}) IN ({})").format(
                    sql.SQL(", ").join(_ident(c) for c in fk.columns), sub))
        memo[table] = sql.SQL(" OR ").join(parts) if parts else None
        return memo[table]

    def rows_of(table: TableKey, columns: Sequence[str]) -> sql.Composable | None:
        cond = condition(table)
        if cond is None:
            return None
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(_ident(c) for c in columns), _table(table), cond)

    statements: list[sql.Composed] = []
    for fk in sorted(fks, key=lambda f: (dset.get(f.child, 0), f.key)):
        rule = rules.get(fk.key)
        if rule not in ("SET NULL", "SET DEFAULT") or fk.parent not in dset:
            continue
        sub = rows_of(fk.parent, fk.ref_columns)
        if sub is None:
            continue
        value = sql.SQL("NULL" if rule == "SET NULL" else "DEFAULT")
        columns = fk.delete_set_columns or fk.columns
        statements.append(sql.SQL("UPDATE {} SET {} WHERE ({}) IN ({})").format(
            _table(fk.child), sql.SQL(", ").join(sql.SQL("{} = {}").format(_ident(c), value) for c in columns),
            sql.SQL(", ").join(_ident(c) for c in fk.columns), sub))
    # children before parents: a table goes once nothing still to be deleted references it
    tables = [t for t in dset if condition(t) is not None]
    blocks: dict[TableKey, set[TableKey]] = defaultdict(set)
    for fk in fks:
        if fk.child in tables and fk.parent in tables and fk.child != fk.parent \
                and rules.get(fk.key) not in ("SET NULL", "SET DEFAULT"):
            blocks[fk.parent].add(fk.child)
    remaining = set(tables)
    while remaining:
        ready = sorted((t for t in remaining if not (blocks[t] & remaining)), key=lambda t: (-dset[t], t))
        if not ready:
            ready = [max(remaining, key=lambda t: (dset[t], t))]
            logger.warning("ordered delete: a cycle of NOT NULL foreign keys at %s; its order may fail",
                           qualname(ready[0]))
        for table in ready:
            cond = condition(table)
            assert cond is not None
            statements.append(sql.SQL("DELETE FROM {} WHERE {}").format(_table(table), cond))
            remaining.discard(table)
    return statements


def prove_ordered_delete(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis, *,
                         params: Any = None) -> Proof:
    """Run the ordered delete script on the test user (inside the caller's transaction) and prove it
    the same way as the cascade: the preview walks the script's rules, not the catalog's."""
    _require_transaction(conn, "prove_ordered_delete")
    key_cols = tuple(synthesis.user_key)
    statements = ordered_delete_script(snapshot, key_cols, params=params)
    the_preview = preview(conn, snapshot.parent, synthesis.user_key, rules=script_rules(snapshot, params))
    values = script_params(key_cols, synthesis.user_key)

    def action() -> None:
        for statement in statements:
            conn.execute(statement, values)

    description = (f"ordered delete script ({len(statements)} statements) for {qualname(snapshot.parent)} "
                   f"{_key_text(synthesis.user_key)}")
    return _prove(conn, synthesis, the_preview, action, description, strict_other_tables=False)


# ---------------------------------------------------------------- one call for the notebook


@dataclass
class UserDeletionRun:
    synthesis: Synthesis
    preview: Preview | None
    proof: Proof | None
    orphans: list[Orphans]
    committed: bool

    @property
    def ok(self) -> bool:
        return self.proof is not None and self.proof.ok and self.synthesis.parent in self.synthesis.rows

    @property
    def message(self) -> str:
        if self.proof is None:
            return f"FAIL: {self.synthesis.message}"
        text = self.proof.message
        if self.synthesis.failures:
            text += f" (tables without a test row: {', '.join(qualname(f.table) for f in self.synthesis.failures)})"
        return text


def run_test_user(conn: psycopg.Connection[Any], snapshot: Snapshot, *, marker: str | None = None,
                  values: Mapping[str, Mapping[str, Any]] | None = None, commit: bool = False,
                  setup: Sequence[sql.Composed | sql.SQL] = (), strict_other_tables: bool = False) -> UserDeletionRun:
    """Synthesize, preview, delete, prove and list orphans in one transaction, rolled back unless
    ``commit``. ``setup`` runs first in the same transaction (e.g. a rehearsal's DDL: it takes the
    apply's locks until the transaction ends)."""
    with conn.transaction(force_rollback=not commit):
        for statement in setup:
            conn.execute(statement)
        synthesis = synthesize(conn, snapshot, marker=marker or new_marker(), values=values)
        if snapshot.parent not in synthesis.rows:
            return UserDeletionRun(synthesis, None, None, [], False)
        the_preview = preview(conn, snapshot.parent, synthesis.user_key)
        proof = delete_and_prove(conn, snapshot, synthesis, the_preview, strict_other_tables=strict_other_tables)
        found = orphans(conn, the_preview) if proof.failure is None else []
    return UserDeletionRun(synthesis, the_preview, proof, found, committed=commit)


# ---------------------------------------------------------------- DataFrames


def synthesis_frame(synthesis: Synthesis) -> pd.DataFrame:
    rows = [{"table": qualname(t), "distance": synthesis.deletion_set.get(t), "status": "inserted",
             "key": _key_text(r.key), "partition": qualname(r.leaf) if r.leaf != t else "",
             "attempts": r.attempts, "error": ""} for t, r in synthesis.rows.items()]
    rows += [{"table": qualname(f.table), "distance": synthesis.deletion_set.get(f.table), "status": "FAILED",
              "key": "", "partition": "", "attempts": f.attempts,
              "error": f.reason + (f" (constraint {f.constraint})" if f.constraint else "")}
             for f in synthesis.failures]
    frame = pd.DataFrame(rows, columns=["table", "distance", "status", "key", "partition", "attempts", "error"])
    return frame.sort_values(["distance", "table"], kind="stable").reset_index(drop=True)


def preview_frame(preview: Preview) -> pd.DataFrame:
    deleted = preview.deleted_counts()
    detached = preview.detached_counts()
    blocked: dict[TableKey, int] = defaultdict(int)
    for b in preview.certain_blockers:
        blocked[b.table] += b.rows
    unindexed: dict[TableKey, list[str]] = defaultdict(list)
    for fk in preview.unindexed:
        unindexed[fk.child].append(f"{fk.name} ({', '.join(fk.columns)})")
    tables = sorted(set(deleted) | set(detached) | set(blocked) | set(unindexed))
    rows = [{"table": qualname(t), "rows deleted": deleted.get(t, 0), "rows set null/default": detached.get(t, 0),
             "rows blocking": blocked.get(t, 0), "via": ", ".join(sorted(preview.via.get(t, ()))),
             "unindexed FK": "; ".join(unindexed.get(t, []))} for t in tables]
    return pd.DataFrame(rows, columns=["table", "rows deleted", "rows set null/default", "rows blocking",
                                       "via", "unindexed FK"])


def blockers_frame(preview: Preview) -> pd.DataFrame:
    rows = [{"constraint": b.constraint, "table": qualname(b.table), "references": qualname(b.references),
             "rule": b.rule, "rows": b.rows, "blocks": "yes" if b.certain else "maybe (trigger order)",
             "sample": json.dumps(b.sample[:3])} for b in preview.blockers]
    return pd.DataFrame(rows, columns=["constraint", "table", "references", "rule", "rows", "blocks", "sample"])


def proof_frame(proof: Proof) -> pd.DataFrame:
    return pd.DataFrame(proof.counts, columns=["table", "in deletion set", "before", "after", "expected change",
                                               "change", "status"])


def orphans_frame(found: Sequence[Orphans]) -> pd.DataFrame:
    rows = [{"table": qualname(o.table), "columns": ", ".join(o.columns), "count": o.count,
             "keys": json.dumps(o.keys[:20]), "referenced by": ", ".join(o.referenced_by)} for o in found]
    return pd.DataFrame(rows, columns=["table", "columns", "count", "keys", "referenced by"])
