"""Rows outside the deletion set that the deleted rows referenced and that nothing references any more."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import TableKey, qualname
from ..graph import deletion_set
from .common import Identity, Text, _chunks, _ident, _match, _table
from .preview import Preview


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
