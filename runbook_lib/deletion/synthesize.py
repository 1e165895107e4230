"""The synthetic test user: one row in every table of the deletion set, parent first, along the FKs."""
from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import ForeignKey, Snapshot, TableKey, qualname
from ..errors import RunbookError
from ..graph import deletion_set, is_ownership
from .columns import TableMeta, read_column_catalog
from .common import (_CTID, Identity, Text, _cast, _error_fields, _ident, _identity_match, _identity_of,
                     _require_transaction, _select_list, _table)
from .values import (_NUMBER_LITERAL, _as_text, _bound_values, _Cand, _ColumnPlan, _dedupe, _email, _fit,
                     _literals, _pg_array, _type_candidates)

MAX_ATTEMPTS = 25


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

    def column_plans(self, meta: TableMeta, fixed: Mapping[str, Text]) -> list[_ColumnPlan]:
        """Candidate values per column, from the catalog alone: another row is never copied, so the test
        user holds none of another user's data."""
        supplied = self.supplied(meta.key)
        single_unique = {idx.columns[0] for idx in meta.uniques if idx.usable and len(idx.columns) == 1}
        # Text under a unique expression or partial index (``lower(name)``): a fresh marker-based value,
        # never a copy of another row's, whose variants (case, spacing) the index would also refuse.
        single_unique |= {c for idx in meta.uniques if not idx.usable for c in idx.columns
                          if c and self.cat.base(meta.column(c).type_oid).category == "S"}
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
            email = is_parent and "mail" in col.name.lower() and self.cat.base(col.type_oid).category == "S"
            if col.name in single_unique or email:
                cands = ([_Cand("default")] if col.has_default and not email else []) + [_Cand("unique")]
                if not col.not_null and not email:
                    cands.insert(0, _Cand("null"))
            elif col.name in meta.partition_columns:
                bounds = [_Cand("value", v) for v in _bound_values(meta.partition_bounds)]
                cands = bounds + ([_Cand("default")] if col.has_default else []) + typed
            elif col.has_default:
                cands = [_Cand("default")] + typed
            elif not col.not_null and not self.cat.types[col.type_oid].notnull:
                cands = [_Cand("null")] + typed
            else:
                cands = typed
            if not cands:
                cands = [_Cand("null")]
            plans.append(_ColumnPlan(col, _dedupe(cands)))
        return plans

    def build_insert(self, meta: TableMeta, plans: list[_ColumnPlan]) -> tuple[sql.Composed, list[Any]]:
        names: list[sql.Composable] = []
        exprs: list[sql.Composable] = []
        params: list[Any] = []
        is_parent = meta.key == self.parent
        for plan in plans:
            cand = plan.current
            if cand.kind == "default":
                continue
            names.append(_ident(plan.column.name))
            if cand.kind == "null":
                exprs.append(sql.SQL("NULL"))
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
            query = sql.SQL("INSERT INTO {} ({}) SELECT {} RETURNING {}").format(
                target, sql.SQL(", ").join(names), sql.SQL(", ").join(exprs), returning)
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
                elif u.current.kind in ("value", "default"):
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
        plans = self.column_plans(meta, fixed)
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
