"""What erasing one real user will do, worked out before anything changes.

The preflight (the plan's check must be empty: every FK already has the rule the policy wants), the
deletion preview, the tables whose rows of this user are deleted in batches (bottom-up, by key), the
unindexed FKs that make a batch or the final delete scan a big table, and the rows that will be left
unreferenced (orphans) for the clean-up job.

This module is the erasure's only import site of the deletion package (runbook_lib.deletion).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import psycopg
from psycopg import sql

from . import logger, render
from .graph import deletion_set, layered_order
from .model import ForeignKey, TableKey, qualname
from .params import Parameters
from .deletion import Orphans, Preview, PreviewRow, Timeouts
from .deletion import orphans as orphans_after
from .deletion import preview as take_preview
from .deletion.common import _chunks, _match

__all__ = ["ErasePlan", "OrphanRow", "Orphans", "Preview", "PreviewRow", "TableBatches", "Timeouts", "key_match",
           "make_erase_plan", "orphans_after", "plan_check", "predict_orphans", "take_preview"]

Text = str | None
Identity = tuple[Text, ...]
CHUNK = 5000


def plan_check(conn: psycopg.Connection[Any], params: Parameters) -> list[str]:
    """One line per FK whose rule is not yet what the policy wants, and per open decision.

    Empty means re-planning on the current catalog yields nothing to do: the cascade the erasure
    relies on is in place.
    """
    from .plan import make_plan
    from .steps import survey

    the_plan = make_plan(survey(conn, params), params)
    lines = list(the_plan.decision_lines())
    for item in the_plan.actions:
        fk = item.fk
        lines.append(f"{qualname(fk.child)}.{', '.join(fk.columns)} -> {qualname(fk.parent)} ({fk.name}): "
                     f"ON DELETE {item.current}, the policy wants {item.planned} ({item.reason})")
    return lines


def key_match(preview: Preview, table: TableKey, alias: str | None, columns: Sequence[str],
              tuples: Sequence[Identity]) -> tuple[sql.Composable, list[Any]]:
    """``columns`` equal to one of ``tuples`` (text values cast to the columns' types), index-friendly."""
    return _match(preview.catalog, preview.catalog.meta(table), alias or "", columns, tuples)


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    return _chunks(items, size)


def _sort_key(identity: Identity) -> tuple[str, ...]:
    return tuple("" if v is None else v for v in identity)


@dataclass(frozen=True)
class TableBatches:
    """One table's rows of the user, deleted ahead of the final transaction in batches by key."""
    table: TableKey
    key_columns: tuple[str, ...]
    rows: int
    # leaf partition (or the table itself) -> the keys of its rows, sorted
    keys: Mapping[TableKey, tuple[Identity, ...]]

    def batches(self, size: int) -> list[tuple[TableKey, Sequence[Identity]]]:
        return [(leaf, part) for leaf, ids in sorted(self.keys.items()) for part in chunks(ids, size)]


@dataclass
class OrphanRow:
    table: TableKey
    columns: tuple[str, ...]
    key: Identity
    values: dict[str, Text]
    referenced_by: tuple[str, ...]


@dataclass
class ErasePlan:
    preview: Preview
    batch_rows: int
    batched: list[TableBatches]
    unindexed: list[tuple[ForeignKey, int, str]]  # FK, the user's rows in its table, the index that fixes it
    refused: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def blockers(self) -> list[str]:
        """Why the erasure may not proceed: the preview's certain blockers, refused tables (and a run
        history this role cannot write)."""
        return [b.text for b in self.preview.certain_blockers] + self.refused


def _leaf_keys(rows: Mapping[Identity, PreviewRow]) -> dict[TableKey, tuple[Identity, ...]]:
    grouped: dict[TableKey, list[Identity]] = defaultdict(list)
    for identity, row in rows.items():
        grouped[row.leaf].append(identity)
    return {leaf: tuple(sorted(ids, key=_sort_key)) for leaf, ids in grouped.items()}


def bottom_up(preview: Preview, tables: Iterable[TableKey]) -> list[TableKey]:
    """Children before parents along the cascading FKs between ``tables`` (deepest first)."""
    wanted = set(tables)
    below: dict[TableKey, set[TableKey]] = defaultdict(set)
    for fk in preview.foreign_keys:
        if fk.child in wanted and fk.parent in wanted and fk.child != fk.parent \
                and preview.rules.get(fk.key) == "CASCADE":
            below[fk.parent].add(fk.child)
    # In a cycle of cascading FKs any order is as good: keep it stable.
    return layered_order(wanted, below, key=lambda t: t, on_cycle=min)


def make_erase_plan(preview: Preview, params: Parameters) -> ErasePlan:
    """Which tables go in batches, in which order, and what refuses the erasure."""
    size = int(params.erase["batch_rows"])
    allow_unindexed = bool(params.erase["allow_unindexed"])
    counts = preview.deleted_counts()
    detached = preview.detached_counts()
    notes: list[str] = []
    big: list[TableKey] = []
    for table, n in counts.items():
        if table == preview.parent or n <= size:
            continue
        if not preview.catalog.meta(table).identity_columns:
            notes.append(f"{qualname(table)} has no primary or unique key: its {n} row(s) go in the final "
                         "transaction, not in batches")
            continue
        big.append(table)
    batched = [TableBatches(t, preview.catalog.meta(t).identity_columns, counts[t], _leaf_keys(preview.deleted[t]))
               for t in bottom_up(preview, big)]
    unindexed: list[tuple[ForeignKey, int, str]] = []
    refused: list[str] = []
    for fk in preview.unindexed:
        rows = counts.get(fk.child, 0) + detached.get(fk.child, 0)
        fix = render.text(render.create_index_concurrently(fk, _index_name(fk)))
        unindexed.append((fk, rows, fix))
        # Above the batch size, or under a table deleted in batches, each referenced row deleted would
        # scan this table in full, inside a batch or the final transaction.
        if (rows > size or fk.parent in big) and not allow_unindexed:
            refused.append(f"{qualname(fk.child)}: {rows} row(s) of this user reached through unindexed "
                           f"{fk.name} ({', '.join(fk.columns)}): every delete of a referenced row scans the "
                           f"table; fix: {fix}; or set erase.allow_unindexed")
    return ErasePlan(preview, size, batched, unindexed, refused, notes)


def _index_name(fk: ForeignKey) -> str:
    from .indexes import index_name

    return index_name(fk)


# ---------------------------------------------------------------- orphans before the delete


def _candidates(preview: Preview) -> dict[tuple[TableKey, tuple[str, ...]], dict[Identity, set[str]]]:
    """Rows outside the deletion set that the user's rows reference, by (table, referenced columns)."""
    reachable = deletion_set(preview.foreign_keys, preview.parent)
    groups: dict[tuple[TableKey, tuple[str, ...]], dict[Identity, set[str]]] = defaultdict(lambda: defaultdict(set))
    for fk in preview.foreign_keys:
        if fk.child not in preview.deleted or fk.parent in reachable or fk.parent not in preview.catalog.tables:
            continue
        for row in preview.deleted[fk.child].values():
            key = tuple(row.values.get(c) for c in fk.columns)
            if all(v is not None for v in key):
                groups[(fk.parent, fk.ref_columns)][key].add(fk.key)
    return groups


def _still_referenced(conn: psycopg.Connection[Any], preview: Preview, table: TableKey,
                      ref_cols: tuple[str, ...], keys: Sequence[Identity]) -> set[Identity]:
    """The keys that a row outside the user's deleted rows still references."""
    kept: set[Identity] = set()
    for fk in preview.foreign_keys:
        if fk.parent != table:
            continue
        gone = preview.deleted.get(fk.child, {})
        child_meta = preview.catalog.tables.get(fk.child)
        id_cols = child_meta.identity_columns if child_meta is not None and gone else ()
        join = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(sql.Identifier("x", c), sql.Identifier("r", rc))
                                     for c, rc in zip(fk.columns, fk.ref_columns))
        select = [sql.SQL("{}::pg_catalog.text").format(sql.Identifier("r", c)) for c in ref_cols]
        select += [sql.SQL("{}::pg_catalog.text").format(sql.Identifier("x", c)) for c in id_cols]
        for part in chunks(keys):
            cond, params = key_match(preview, table, "r", ref_cols, part)
            query = sql.SQL("SELECT DISTINCT {} FROM {} AS r JOIN {} AS x ON {} WHERE {}").format(
                sql.SQL(", ").join(select), sql.Identifier(*table), sql.Identifier(*fk.child), join, cond)
            for row in conn.execute(query, params).fetchall():
                key, ident = tuple(row[:len(ref_cols)]), tuple(row[len(ref_cols):])
                if not gone or not id_cols or ident not in gone:
                    kept.add(key)
    return kept


def orphan_columns_of(table: TableKey, names: Sequence[str]) -> list[str]:
    """The columns of ``table`` named in ``erase.orphan_columns`` (table.column or schema.table.column)."""
    wanted = []
    for name in names:
        parts = name.split(".")
        if len(parts) == 2 and parts[0] == table[1] or len(parts) == 3 and tuple(parts[:2]) == table:
            wanted.append(parts[-1])
    return wanted


def orphan_values(conn: psycopg.Connection[Any], preview: Preview, table: TableKey, ref_cols: tuple[str, ...],
                  keys: Sequence[Identity], names: Sequence[str]) -> dict[Identity, dict[str, Text]]:
    """The ``erase.orphan_columns`` values of the given rows (what the clean-up job needs)."""
    columns = [c for c in orphan_columns_of(table, names) if any(col.name == c for col in
                                                                preview.catalog.meta(table).columns)]
    found: dict[Identity, dict[str, Text]] = {k: {} for k in keys}
    if not columns:
        return found
    select = sql.SQL(", ").join(sql.SQL("{}::pg_catalog.text").format(sql.Identifier(c))
                                for c in [*ref_cols, *columns])
    for part in chunks(keys):
        cond, params = key_match(preview, table, None, ref_cols, part)
        for row in conn.execute(sql.SQL("SELECT {} FROM {} WHERE {}").format(
                select, sql.Identifier(*table), cond), params).fetchall():
            found[tuple(row[:len(ref_cols)])] = dict(zip(columns, row[len(ref_cols):]))
    return found


def predict_orphans(conn: psycopg.Connection[Any], preview: Preview,
                    orphan_columns: Sequence[str] = ()) -> list[OrphanRow]:
    """Read-only, before the delete: the rows that deleting this user will leave unreferenced."""
    found: list[OrphanRow] = []
    for (table, ref_cols), sources in sorted(_candidates(preview).items()):
        keys = sorted(sources, key=_sort_key)
        exists: set[Identity] = set()
        for part in chunks(keys):
            cond, params = key_match(preview, table, None, ref_cols, part)
            query = sql.SQL("SELECT {} FROM {} WHERE {}").format(sql.SQL(", ").join(
                sql.SQL("{}::pg_catalog.text").format(sql.Identifier(c)) for c in ref_cols), sql.Identifier(*table), cond)
            exists.update(tuple(r) for r in conn.execute(query, params).fetchall())
        kept = _still_referenced(conn, preview, table, ref_cols, keys)
        lonely = [k for k in keys if k in exists and k not in kept]
        values = orphan_values(conn, preview, table, ref_cols, lonely, orphan_columns)
        found.extend(OrphanRow(table, ref_cols, k, values.get(k, {}), tuple(sorted(sources[k]))) for k in lonely)
    logger.info("orphans to be: %d row(s)", len(found))
    return found
