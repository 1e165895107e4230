"""The proof: one DELETE, then evidence that it did exactly what the preview said."""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import Snapshot, TableKey, qualname
from ..errors import RunbookError
from ..graph import deletion_set
from .columns import ColumnCatalog
from .common import (_cast, _chunks, _error_fields, _ident, _identity_match, _key_text,
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


Counters = dict[int, tuple[int, int, int]]

_XACT = """
SELECT relid::pg_catalog.int8, n_tup_ins, n_tup_upd, n_tup_del FROM pg_catalog.pg_stat_xact_user_tables
"""


def _xact_counters(conn: psycopg.Connection[Any]) -> Counters:
    """Rows this transaction inserted, updated and deleted so far, per table (cascades and triggers
    included; other sessions' work never). The figures of the backend's not yet reported earlier
    transactions may be in them too, so only differences within one transaction mean anything."""
    return {int(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in conn.execute(_XACT).fetchall()}


@dataclass
class Expected:
    deleted: dict[TableKey, int]
    updated: dict[TableKey, int]
    maybe_updated: dict[TableKey, int]
    tables: set[TableKey]


def _expected(preview_: Preview) -> Expected:
    updated: dict[TableKey, int] = defaultdict(int)
    for d in preview_.detached.values():
        for row in d.rows.values():
            updated[row.leaf] += 1
    cat = preview_.catalog
    dset = deletion_set(preview_.foreign_keys, preview_.parent)
    tables = {leaf for leaf, root, _kind in cat.relations.values() if root in dset or leaf in dset}
    return Expected(preview_.leaf_deleted_counts(), dict(updated), dict(preview_.maybe_updated), tables)


def compare_counters(cat: ColumnCatalog, before: Counters, after: Counters, want: Expected,
             proof: Proof) -> None:
    """Per table, what the statement did against what the preview said; fills the proof's lists."""
    for relid in sorted(set(after), key=lambda r: cat.leaf(r)):
        leaf = cat.leaf(relid)
        b = before.get(relid, (0, 0, 0))
        ins, upd, dele = (a - z for a, z in zip(after[relid], b))
        exp_del, exp_upd = want.deleted.get(leaf, 0), want.updated.get(leaf, 0)
        max_upd = exp_upd + want.maybe_updated.get(leaf, 0)
        in_set = leaf in want.tables
        if not (ins or upd or dele or exp_del or exp_upd):
            continue
        problems = []
        if dele > exp_del:
            problems.append(f"{dele - exp_del} row(s) deleted that the preview did not list")
        elif dele < exp_del:
            proof.mismatches.append(f"{qualname(leaf)}: {dele} row(s) deleted, the preview said {exp_del}")
        if upd > max_upd:
            problems.append(f"{upd - max_upd} row(s) updated that the preview did not detach")
        elif upd < exp_upd:
            proof.mismatches.append(f"{qualname(leaf)}: {upd} row(s) detached, the preview said {exp_upd}")
        if ins and in_set:
            problems.append(f"{ins} row(s) inserted")
        elif ins:
            proof.side_effects[leaf] = ins
        proof.others_changed.extend(f"{qualname(leaf)}: {p} (rows not of this user changed)" for p in problems)
        status = ("CHANGED BEYOND THE PREVIEW" if problems else "side effect" if ins and not in_set
                  else "as previewed")
        proof.counts.append({"table": qualname(leaf), "in deletion set": in_set, "deleted": dele,
                             "expected deleted": exp_del, "updated": upd,
                             "expected updated": exp_upd if max_upd == exp_upd else f"{exp_upd}..{max_upd}",
                             "inserted": ins, "status": status})


def _survivors(conn: psycopg.Connection[Any], preview_: Preview) -> dict[TableKey, int]:
    """Key lookups: how many of the rows the preview listed as deleted are still there."""
    cat = preview_.catalog
    left: dict[TableKey, int] = {}
    for table, rows in preview_.deleted.items():
        found = 0
        for chunk in _chunks(list(rows)):
            cond, params = _identity_match(cat, cat.meta(table), "t", chunk)
            row = conn.execute(sql.SQL("SELECT count(*) FROM {} AS t WHERE {}").format(_table(table), cond),
                               params).fetchone()
            found += int(row[0]) if row else 0
        if found:
            left[table] = found
    return left


def _detached(conn: psycopg.Connection[Any], preview_: Preview, proof: Proof) -> None:
    """Key lookups: every row the preview listed as detached is still there, its FK columns NULL
    (or, for SET DEFAULT, still there)."""
    cat = preview_.catalog
    for key, d in preview_.detached.items():
        meta = cat.meta(d.table)
        if not meta.identity_columns:
            proof.notes.append(f"{qualname(d.table)} has no key: its detached rows are proven by the counters only")
            continue
        nulls: sql.Composable = sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(_ident("t", c)) for c in d.columns)
        if d.rule == "SET DEFAULT":
            nulls = sql.SQL("true")
        kept = done = 0
        for chunk in _chunks(list(d.rows)):
            cond, params = _identity_match(cat, meta, "t", chunk)
            row = conn.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {} AS t WHERE {}").format(
                nulls, _table(d.table), cond), params).fetchone()
            assert row is not None
            kept, done = kept + int(row[0]), done + int(row[1])
        proof.detached[key] = {"table": qualname(d.table), "rule": d.rule, "columns": list(d.columns),
                               "expected": len(d.rows), "kept": kept, "detached": done}
        if done != len(d.rows):
            proof.mismatches.append(f"{key}: {len(d.rows)} row(s) should be kept with {', '.join(d.columns)} "
                                    f"{'NULL' if d.rule == 'SET NULL' else 'at the default'}, found {done}")


def _unreached(synthesis: Synthesis | None, preview_: Preview) -> list[str]:
    if synthesis is None:
        return []
    found = []
    for table, srow in synthesis.rows.items():
        if srow.identity in preview_.deleted.get(table, {}):
            continue
        if any(d.table == table and srow.identity in d.rows for d in preview_.detached.values()):
            continue
        found.append(f"{qualname(table)} {_key_text(srow.key)}: a row of the test user that the delete does not reach")
    return found


def _run_action(conn: psycopg.Connection[Any], action: Callable[[], None], description: str) -> DeleteFailure | None:
    try:
        with conn.transaction():
            action()
    except psycopg.Error as exc:
        err = _error_fields(exc)
        where: TableKey | None = (err["schema"] or "", err["table"]) if err["table"] else None
        return DeleteFailure(description, err["sqlstate"], str(err["message"]), where, err["constraint"])
    return None


def _prove(conn: psycopg.Connection[Any], synthesis: Synthesis | None, preview_: Preview,
           action: Callable[[], None], description: str, *, strict_other_tables: bool) -> Proof:
    """Run ``action`` in a savepoint between two readings of this transaction's row counters, then
    compare them per table with the preview and look up every previewed row by key. Nothing here
    reads a table in full: the counters come from this backend's own statistics, the rows by key."""
    started = time.perf_counter()
    replica = conn.execute("SELECT current_setting('session_replication_role')").fetchone()
    if replica and replica[0] == "replica":
        return Proof(False, "FAIL: session_replication_role is replica: FK triggers do not fire, "
                            "no cascade would happen", description)
    before = _xact_counters(conn)
    failure = _run_action(conn, action, description)
    if failure is not None:
        logger.warning("FAIL: %s", failure.text)
        return Proof(False, f"FAIL: {failure.text}", description, failure=failure,
                     seconds=round(time.perf_counter() - started, 3))
    after = _xact_counters(conn)
    proof = Proof(True, "", description)
    want = _expected(preview_)
    compare_counters(preview_.catalog, before, after, want, proof)
    proof.survivors = _survivors(conn, preview_)
    _detached(conn, preview_, proof)
    proof.unreached = _unreached(synthesis, preview_)
    extra = [f"{qualname(t)} +{c}" for t, c in sorted(proof.side_effects.items())]
    proof.ok = not (proof.survivors or proof.mismatches or proof.others_changed or proof.unreached
                    or (strict_other_tables and extra))
    proof.message = _message(proof, preview_, want, extra, strict_other_tables)
    proof.seconds = round(time.perf_counter() - started, 3)
    logger.info("%s", proof.message)
    return proof


def _message(proof: Proof, preview_: Preview, want: Expected, extra: list[str], strict: bool) -> str:
    if proof.ok:
        text = (f"PASS: {proof.action}: {sum(want.deleted.values())} row(s) in {len(preview_.deleted_counts())} "
                f"table(s) deleted as previewed, none left")
        kept = sum(d["kept"] for d in proof.detached.values())
        if kept:
            text += f"; {kept} row(s) kept and detached"
        return text + ("; no other row changed" if not extra else f"; rows inserted elsewhere: {', '.join(extra)}")
    problems = ([f"{qualname(t)}: {n} row(s) left" for t, n in proof.survivors.items()] + proof.mismatches
                + proof.others_changed + proof.unreached)
    if strict:
        problems += [f"{e} (outside the deletion set)" for e in extra]
    return f"FAIL: {proof.action}: " + "; ".join(problems)


def delete_and_prove(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis | None,
                     preview: Preview, *, strict_other_tables: bool = False) -> Proof:
    """One ``DELETE FROM parent WHERE key = …``, then prove it did exactly what the preview said.

    Proven, from this transaction's own row counters (pg_stat_xact_user_tables) read before and after
    the statement: each table lost exactly the rows the preview listed and updated exactly the rows it
    detached, so no other row was deleted or changed, whatever other sessions do meanwhile; key lookups
    then show every listed row gone and every detached row kept. Every synthesized row was deleted or
    kept-and-detached. Rows inserted outside the deletion set (an audit trigger's log) are listed in
    ``side_effects``; they fail the proof only with ``strict_other_tables``. A failing DELETE is in
    ``Proof.failure``, not raised.
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
