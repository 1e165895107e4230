"""The deletion preview: what deleting one parent row removes, detaches or is blocked by, found by key
along the FK paths."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import ForeignKey, TableKey, qualname
from ..errors import RunbookError
from ..graph import deletion_set
from .columns import ColumnCatalog, parent_key_columns, read_column_catalog
from .common import (Identity, Text, Timeouts, _chunks, _identity_of, _in_transaction, _key_text, _match,
                     _read_fks, _select_list, _table, set_timeouts)
from .values import _as_text


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
    # leaf -> rows a SET NULL/DEFAULT edge reaches that the cascade also deletes: whether the update
    # happens before the delete depends on the order of the RI triggers, so it may or may not be counted
    maybe_updated: dict[TableKey, int] = field(default_factory=dict)

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

    def fetch(self, table: TableKey, cond: sql.Composable, params: list[Any], *,
              only: bool = False) -> dict[Identity, PreviewRow]:
        meta = self.cat.meta(table)
        cols = self.needed[table]
        # An FK's action reaches ONLY the plain table it is declared on, never its inheritance children
        # (partitions are different: the FK is the partitioned table's and covers every partition).
        scope = sql.SQL("ONLY " if only and meta.kind == "r" else "")
        query = sql.SQL("SELECT {} FROM {}{} AS t WHERE {}").format(_select_list("t", cols), scope, _table(table),
                                                                     cond)
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
            found.update(self.fetch(fk.child, cond, params, only=True))
        return found

    def outcome(self, referencing: Mapping[str, dict[Identity, PreviewRow]],
                deleted: Mapping[TableKey, dict[Identity, PreviewRow]]
                ) -> tuple[dict[str, Detached], list[Blocker], dict[TableKey, int]]:
        """The rows non-cascading edges reach: detached (SET NULL/DEFAULT), blocking, or also deleted."""
        detached: dict[str, Detached] = {}
        maybe_updated: dict[TableKey, int] = defaultdict(int)
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
                for i, r in refs.items():
                    if i in gone:
                        maybe_updated[r.leaf] += 1
                continue
            if kept:
                blockers.append(Blocker(fk.key, fk.name, fk.child, fk.parent, rule, len(kept), True,
                                        [r.values for r in list(kept.values())[:5]]))
            also = len(refs) - len(kept)
            if also:
                blockers.append(Blocker(fk.key, fk.name, fk.child, fk.parent, rule, also, False,
                                        [r.values for i, r in refs.items() if i in gone][:5]))
        return detached, blockers, dict(maybe_updated)

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
        detached, blockers, maybe_updated = self.outcome(referencing, deleted)
        by_key = {fk.key: fk for fk in self.fks}
        unindexed = [by_key[k] for k in sorted(walked) if not by_key[k].indexed]
        return Preview(
            parent=self.parent, user_key=dict(user_key), found=bool(first), rules=dict(self.rules),
            deleted={t: r for t, r in deleted.items() if r}, detached=detached, blockers=blockers,
            unindexed=unindexed, via=dict(via), foreign_keys=tuple(self.fks), catalog=self.cat,
            queries=self.queries, seconds=round(time.perf_counter() - started, 3),
            maybe_updated=maybe_updated)


def _user_key(conn: psycopg.Connection[Any], parent: TableKey, user_key: Mapping[str, Any] | Any) -> dict[str, Text]:
    if isinstance(user_key, Mapping):
        return {str(k): _as_text(v) for k, v in user_key.items()}
    cols = parent_key_columns(conn, parent)
    if len(cols) != 1:
        raise RunbookError(f"{qualname(parent)} has a composite key ({', '.join(cols)}): give the user's key "
                           "as a mapping of column -> value", table=qualname(parent))
    return {cols[0]: _as_text(user_key)}


def preview(conn: psycopg.Connection[Any], parent: TableKey, user_key: Mapping[str, Any] | Any, *,
            read_only: bool = True, rules: Mapping[str, str] | None = None,
            timeouts: Timeouts | None = None) -> Preview:
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
            set_timeouts(conn, timeouts)
            return run()
    return run()
