"""The proof: one DELETE, then evidence that it did exactly what the preview said."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable, Sequence

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import Snapshot, TableKey, qualname
from ..errors import RunbookError
from ..graph import deletion_set
from .columns import ColumnCatalog
from .common import (Identity, _cast, _chunks, _error_fields, _ident, _identity_match, _key_text,
                     _require_transaction, _table)
from .preview import Preview
from .synthesize import Synthesis


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
