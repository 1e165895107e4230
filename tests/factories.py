"""Small builders of catalog objects for pure tests (no database)."""
from __future__ import annotations

from typing import Any

from runbook_lib.catalog import ForeignKey, Snapshot, TableInfo

_oid = iter(range(10_000, 1_000_000))


def fk(table: str, name: str, ref: str, cols: tuple[str, ...] = ("user_id",), ref_cols: tuple[str, ...] = ("id",),
       *, schema: str = "public", ref_schema: str = "public", on_delete: str = "NO ACTION",
       not_null: bool = True, **extra: Any) -> ForeignKey:
    values: dict[str, Any] = dict(
        oid=next(_oid), schema=schema, table=table, name=name, ref_schema=ref_schema, ref_table=ref,
        columns=cols, ref_columns=ref_cols, columns_not_null=tuple(not_null for _ in cols),
        on_delete=on_delete, on_update="NO ACTION", match="SIMPLE", deferrable=False, deferred=False,
        validated=True, definition=f"FOREIGN KEY ({', '.join(cols)}) REFERENCES {ref_schema}.{ref}", comment=None,
        indexed=True, child_rows=100)
    values.update(extra)
    return ForeignKey(**values)


def snapshot(*fks: ForeignKey, parent: str = "users", version: int = 150000,
             extra_tables: tuple[str, ...] = ()) -> Snapshot:
    names = {parent, *extra_tables} | {f.table for f in fks} | {f.ref_table for f in fks}
    tables = tuple(TableInfo("public", n, "r", 10) for n in sorted(names))
    return Snapshot(server_version_num=version, server_version=str(version), database="db",
                    parent=("public", parent), foreign_keys=tuple(fks), tables=tables)
