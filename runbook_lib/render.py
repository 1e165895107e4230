"""Rendering plan steps as SQL: every name through ``sql.Identifier``, every value a literal or placeholder.

Composables render without a connection, so a plan's SQL is tested offline, text for text.
"""
from __future__ import annotations

import hashlib
from typing import Any, Mapping, Sequence

from psycopg import sql

from .catalog import ForeignKey

_ACTIONS = {
    "NO ACTION": sql.SQL("NO ACTION"),
    "RESTRICT": sql.SQL("RESTRICT"),
    "CASCADE": sql.SQL("CASCADE"),
    "SET NULL": sql.SQL("SET NULL"),
    "SET DEFAULT": sql.SQL("SET DEFAULT"),
}
_MATCH = {"SIMPLE": sql.SQL(""), "FULL": sql.SQL(" MATCH FULL"), "PARTIAL": sql.SQL(" MATCH PARTIAL")}


def _idents(names: tuple[str, ...]) -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(n) for n in names)


def fk_clause(fk: ForeignKey, on_delete: str, *, not_valid: bool,
              delete_set_columns: tuple[str, ...] = ()) -> sql.Composed:
    """``FOREIGN KEY (...) REFERENCES ... ON DELETE ...``, keeping every other property of ``fk``."""
    delete: sql.Composable = _ACTIONS[on_delete]
    if delete_set_columns and on_delete in ("SET NULL", "SET DEFAULT"):
        delete = sql.SQL("{} ({})").format(delete, _idents(delete_set_columns))
    deferral = sql.SQL("")
    if fk.deferrable:
        deferral = sql.SQL(" DEFERRABLE INITIALLY DEFERRED" if fk.deferred else " DEFERRABLE INITIALLY IMMEDIATE")
    return sql.SQL(
        "FOREIGN KEY ({cols}) REFERENCES {ref} ({rcols}){match} ON UPDATE {upd} ON DELETE {dele}{deferral}{nv}"
    ).format(
        cols=_idents(fk.columns),
        ref=sql.Identifier(fk.ref_schema, fk.ref_table),
        rcols=_idents(fk.ref_columns),
        match=_MATCH[fk.match],
        upd=_ACTIONS[fk.on_update],
        dele=delete,
        deferral=deferral,
        nv=sql.SQL(" NOT VALID") if not_valid else sql.SQL(""),
    )


def _defaults(set_defaults: Sequence[tuple[str, Any]], drop_defaults: Sequence[str]) -> list[sql.Composable]:
    parts: list[sql.Composable] = [
        sql.SQL("ALTER COLUMN {} SET DEFAULT {}").format(sql.Identifier(col), sql.Literal(value))
        for col, value in set_defaults]
    parts += [sql.SQL("ALTER COLUMN {} DROP DEFAULT").format(sql.Identifier(col)) for col in drop_defaults]
    return parts


def swap(fk: ForeignKey, on_delete: str, *, not_valid: bool, delete_set_columns: tuple[str, ...] = (),
         set_defaults: Sequence[tuple[str, Any]] = (), drop_defaults: Sequence[str] = ()) -> sql.Composed:
    """One atomic statement: there is never a moment where the constraint is missing.

    ``set_defaults`` / ``drop_defaults`` change the referencing columns' defaults in the same statement
    (a ghost reassignment: ``ON DELETE SET DEFAULT`` to the ghost row's key, and back).
    """
    parts = _defaults(set_defaults, drop_defaults)
    parts.append(sql.SQL("DROP CONSTRAINT {name}, ADD CONSTRAINT {name} {clause}").format(
        name=sql.Identifier(fk.name),
        clause=fk_clause(fk, on_delete, not_valid=not_valid, delete_set_columns=delete_set_columns)))
    return sql.SQL("ALTER TABLE {table} {changes}").format(
        table=sql.Identifier(fk.schema, fk.table), changes=sql.SQL(", ").join(parts))


def column_defaults(fk: ForeignKey, set_defaults: Sequence[tuple[str, Any]],
                    drop_defaults: Sequence[str]) -> sql.Composed:
    """The referencing columns' defaults alone (the partitioned swap takes several statements)."""
    return sql.SQL("ALTER TABLE {table} {changes}").format(
        table=sql.Identifier(fk.schema, fk.table), changes=sql.SQL(", ").join(_defaults(set_defaults, drop_defaults)))


def add_foreign_key(fk: ForeignKey, on_delete: str, *, not_valid: bool) -> sql.Composed:
    """A new constraint on a reference column no FK protected."""
    return sql.SQL("ALTER TABLE {table} ADD CONSTRAINT {name} {clause}").format(
        table=sql.Identifier(fk.schema, fk.table), name=sql.Identifier(fk.name),
        clause=fk_clause(fk, on_delete, not_valid=not_valid))


def drop_foreign_key(fk: ForeignKey) -> sql.Composed:
    return sql.SQL("ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {name}").format(
        table=sql.Identifier(fk.schema, fk.table), name=sql.Identifier(fk.name))


def insert_ghost(parent: tuple[str, str], key: Mapping[str, Any], values: Mapping[str, Any]) -> sql.Composed:
    """The ghost row, unless a row with its key exists (another unique key in the way is an error)."""
    columns = list(key) + [c for c in values if c not in key]
    row = [key[c] if c in key else values[c] for c in columns]
    return sql.SQL("INSERT INTO {table} ({cols}) VALUES ({vals}) ON CONFLICT ({keys}) DO NOTHING").format(
        table=sql.Identifier(*parent), cols=_idents(tuple(columns)),
        vals=sql.SQL(", ").join(sql.Literal(v) for v in row), keys=_idents(tuple(key)))


def constraint_name(table: str, column: str) -> str:
    """``<table>_<column>_fkey`` as PostgreSQL names it, within 63 bytes (a hash keeps long ones unique)."""
    full = f"{table}_{column}_fkey"
    if len(full.encode()) <= 63:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:8]
    return f"{full.encode()[:54].decode('utf-8', errors='ignore')}_{digest}"


def temporary_name(fk: ForeignKey) -> str:
    """The name of a partition's pre-validated copy: within 63 bytes, unique per FK by a hash."""
    digest = hashlib.sha256(fk.key.encode()).hexdigest()[:8]
    head = fk.name.encode()[:45].decode("utf-8", errors="ignore")
    return f"{head}_rbtmp_{digest}"


def add_to_partition(fk: ForeignKey, leaf: tuple[str, str], on_delete: str,
                     delete_set_columns: tuple[str, ...] = ()) -> sql.Composed:
    """The FK's copy on one partition, NOT VALID: added in milliseconds, validated later without
    blocking writes, then taken over by the partitioned table's own constraint."""
    return sql.SQL("ALTER TABLE {leaf} ADD CONSTRAINT {tmp} {clause}").format(
        leaf=sql.Identifier(*leaf), tmp=sql.Identifier(temporary_name(fk)),
        clause=fk_clause(fk, on_delete, not_valid=True, delete_set_columns=delete_set_columns))


def validate_on_partition(fk: ForeignKey, leaf: tuple[str, str]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {leaf} VALIDATE CONSTRAINT {tmp}").format(
        leaf=sql.Identifier(*leaf), tmp=sql.Identifier(temporary_name(fk)))


def drop_from_partition(fk: ForeignKey, leaf: tuple[str, str]) -> sql.Composed:
    return sql.SQL("ALTER TABLE {leaf} DROP CONSTRAINT IF EXISTS {tmp}").format(
        leaf=sql.Identifier(*leaf), tmp=sql.Identifier(temporary_name(fk)))


def swap_over_partitions(fk: ForeignKey, leaves: tuple[tuple[str, str], ...], on_delete: str,
                         delete_set_columns: tuple[str, ...] = ()) -> list[sql.Composed]:
    """One transaction: drop the partitioned table's FK (and its copies), give each pre-validated copy
    the FK's name, add the FK again: it takes the copies over, with no scan of any partition."""
    table, name = sql.Identifier(fk.schema, fk.table), sql.Identifier(fk.name)
    statements = [sql.SQL("ALTER TABLE {table} DROP CONSTRAINT {name}").format(table=table, name=name)]
    statements += [sql.SQL("ALTER TABLE {leaf} RENAME CONSTRAINT {tmp} TO {name}").format(
        leaf=sql.Identifier(*leaf), tmp=sql.Identifier(temporary_name(fk)), name=name) for leaf in leaves]
    statements.append(sql.SQL("ALTER TABLE {table} ADD CONSTRAINT {name} {clause}").format(
        table=table, name=name,
        clause=fk_clause(fk, on_delete, not_valid=False, delete_set_columns=delete_set_columns)))
    return statements


def comment(fk: ForeignKey) -> sql.Composed | None:
    """Dropping a constraint drops its comment: put it back in the same transaction."""
    if fk.comment is None:
        return None
    # COMMENT takes no bind parameters; sql.Literal quotes the value on the client.
    return sql.SQL("COMMENT ON CONSTRAINT {name} ON {table} IS {text}").format(
        name=sql.Identifier(fk.name), table=sql.Identifier(fk.schema, fk.table), text=sql.Literal(fk.comment)
    )


def validate(fk: ForeignKey) -> sql.Composed:
    return sql.SQL("ALTER TABLE {table} VALIDATE CONSTRAINT {name}").format(
        table=sql.Identifier(fk.schema, fk.table), name=sql.Identifier(fk.name)
    )


def create_index_concurrently(fk: ForeignKey, index_name: str) -> sql.Composed:
    return sql.SQL("CREATE INDEX CONCURRENTLY {idx} ON {table} ({cols})").format(
        idx=sql.Identifier(index_name), table=sql.Identifier(fk.schema, fk.table), cols=_idents(fk.columns)
    )


def text(statement: sql.Composable) -> str:
    return statement.as_string(None)
