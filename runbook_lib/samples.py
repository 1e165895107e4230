"""Facts that inform a decision: whose rows actually meet at an edge the catalog cannot judge.

For an edge from an owned table into another owned table (a comment on a post, an answer to a
question), or a reference to the parent from an owned table (a topic's creator), a bounded sample
says how many rows point at a row of *another* owner: the collateral a CASCADE there would cause.
The sample reads at most ``SAMPLE_ROWS`` rows of the child (``TABLESAMPLE SYSTEM`` on big tables)
and finds each referenced row by its key, under ``statement_timeout``.
"""
from __future__ import annotations

from typing import Any, Mapping

import psycopg
from psycopg import sql

from . import logger
from .catalog import ForeignKey, Snapshot, TableKey, qualname
from .classify import AMBIGUOUS, CROSS, OWNERSHIP, REFERENCE, SHARED, EdgeClass, Vocabulary, classify
from .params import Parameters

SAMPLE_ROWS = 10_000
JUDGED = (SHARED, AMBIGUOUS, CROSS, REFERENCE)


def _direct_owner(table: TableKey, owners: Mapping[TableKey, list[ForeignKey]], parent: TableKey) -> str | None:
    """The column of ``table`` that names its owner directly (a one-column FK to the parent)."""
    for fk in owners.get(table, []):
        if fk.parent == parent and len(fk.columns) == 1:
            return fk.columns[0]
    return None


def _query(fk: ForeignKey, child_owner: str, ref_owner: str | None, rows: int | None) -> sql.Composed:
    child = sql.Identifier(fk.schema, fk.table)
    source: sql.Composable = child
    if rows is not None and rows > SAMPLE_ROWS:
        percent = max(0.01, min(100.0, 100.0 * SAMPLE_ROWS / rows))
        source = sql.SQL("{} TABLESAMPLE SYSTEM ({})").format(child, sql.Literal(round(percent, 4)))
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in dict.fromkeys((child_owner, *fk.columns)))
    sample = sql.SQL("(SELECT {cols} FROM {source} LIMIT {limit}) AS c").format(
        cols=cols, source=source, limit=sql.Literal(SAMPLE_ROWS))
    if ref_owner is None:  # the edge points at the parent itself: the referenced row is its own owner
        other = sql.SQL("c.{} IS DISTINCT FROM c.{}").format(sql.Identifier(child_owner), sql.Identifier(fk.columns[0]))
        return sql.SQL("SELECT count(*), count(*) FILTER (WHERE c.{col} IS NOT NULL AND {other}) FROM {sample}").format(
            col=sql.Identifier(fk.columns[0]), other=other, sample=sample)
    join = sql.SQL(" AND ").join(sql.SQL("r.{} = c.{}").format(sql.Identifier(rc), sql.Identifier(cc))
                                 for cc, rc in zip(fk.columns, fk.ref_columns))
    return sql.SQL("SELECT count(*), count(*) FILTER (WHERE c.{own} IS DISTINCT FROM r.{theirs}) "
                   "FROM {sample} JOIN {ref} AS r ON {join}").format(
        own=sql.Identifier(child_owner), theirs=sql.Identifier(ref_owner), sample=sample,
        ref=sql.Identifier(fk.ref_schema, fk.ref_table), join=join)


def _sample(conn: psycopg.Connection[Any], fk: ForeignKey, query: sql.Composed, timeout_ms: int,
            what: str) -> str | None:
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"])
            row = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        logger.warning("could not sample %s: %s", fk.key, str(exc).strip().splitlines()[0])
        return None
    assert row is not None
    seen, others = int(row[0]), int(row[1])
    if not seen:
        return f"{qualname(fk.child)} has no rows that reference {qualname(fk.parent)} today"
    share = f" ({100.0 * others / seen:.1f}%)" if others else ""
    return (f"in a sample of {seen:,} {qualname(fk.child)} rows, {others:,}{share} point at a "
            f"{qualname(fk.parent)} row of {what}"
            + ("" if others else ": a CASCADE here would delete no other user's rows today"))


def facts(conn: psycopg.Connection[Any], snapshot: Snapshot, params: Parameters,
          classes: Mapping[str, EdgeClass] | None = None) -> dict[str, tuple[str, ...]]:
    """Per FK key: sampled facts for the edges whose owner the catalog cannot judge."""
    if len(snapshot.parent_key) != 1:
        return {}
    parent = snapshot.parent
    vocab = Vocabulary(tuple(params.owner_columns), tuple(params.actor_columns), parent[1])
    classes = classes if classes is not None else classify(snapshot.foreign_keys, parent, vocab)
    owners: dict[TableKey, list[ForeignKey]] = {}
    for fk in snapshot.foreign_keys:
        if classes.get(fk.key) is not None and classes[fk.key].kind == OWNERSHIP:
            owners.setdefault(fk.child, []).append(fk)
    found: dict[str, tuple[str, ...]] = {}
    for fk in snapshot.foreign_keys:
        cls = classes.get(fk.key)
        if cls is None or cls.kind not in JUDGED or len(fk.columns) != 1 or fk.child == parent:
            continue
        mine = _direct_owner(fk.child, owners, parent)
        theirs = None if fk.parent == parent else _direct_owner(fk.parent, owners, parent)
        if mine is None or (fk.parent != parent and theirs is None) or mine == fk.columns[0]:
            continue
        what = "a user other than the row's owner" if fk.parent == parent else "another owner"
        fact = _sample(conn, fk, _query(fk, mine, theirs, fk.child_rows), params.statement_timeout_ms, what)
        if fact is not None:
            found[fk.key] = (fact,)
    return found
