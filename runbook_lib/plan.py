"""Planning: which rule each foreign key gets, and why. Pure computation over a snapshot.

``make_plan`` classifies every edge into the deletion set (``classify``), asks the policy for its rule
(``policy``), applies the parameters' ``rules`` (an override always wins), leaves alone what a user's
delete never reaches, and adds the opt-in FKs on reference columns no constraint protected. What the
catalog cannot decide is an open *decision*: the plan lists it, and apply refuses to run until a rule
closes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Collection, Mapping

from psycopg import sql

from . import render
from .catalog import ForeignKey, ReferenceColumn, Snapshot, TableKey, qualname
from .classify import AMBIGUOUS, CROSS, OWNERSHIP, REFERENCE, SELF_REFERENCE, SHARED, EdgeClass, Vocabulary, classify
from .errors import PlanError
from .graph import deletion_set
from .indexes import index_name
from .params import Parameters, parse_duration
from .plan_items import ADDED, PG_NOT_VALID_ON_PARTITIONED, PlanItem
from .policy import Context, Verdict, decide

__all__ = ["ADDED", "AMBIGUOUS", "CROSS", "NOT_REACHED", "OWNERSHIP", "REFERENCE", "SELF_REFERENCE", "SHARED", "GhostRow",
           "Plan", "PlanItem", "make_plan"]

NOT_REACHED = "not reached"


@dataclass(frozen=True)
class GhostRow:
    """The placeholder parent row that ``ghost`` rules reassign rows to; created when missing."""
    parent: TableKey
    key: Mapping[str, Any]
    values: Mapping[str, Any]

    def statement(self) -> sql.Composed:
        return render.insert_ghost(self.parent, self.key, self.values)

    def to_dict(self) -> dict[str, Any]:
        return {"parent": list(self.parent), "key": dict(self.key), "values": dict(self.values),
                "sql": render.text(self.statement())}


@dataclass(frozen=True)
class Plan:
    parent: TableKey
    server_version_num: int
    items: tuple[PlanItem, ...]
    notes: tuple[str, ...]
    deletion_set: Mapping[TableKey, int]
    ghost_row: GhostRow | None = None
    classes: Mapping[str, EdgeClass] = field(default_factory=dict)
    # Sampled facts per FK key (from the inspection): whose rows meet at edges the catalog cannot judge.
    facts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def changes(self) -> tuple[PlanItem, ...]:
        """The FKs whose rule changes (what a rollback restores)."""
        return tuple(i for i in self.items if i.change)

    @property
    def actions(self) -> tuple[PlanItem, ...]:
        """Everything apply does: the changes, and validations an interrupted run left pending."""
        return tuple(i for i in self.items if i.action)

    @property
    def decisions(self) -> tuple[PlanItem, ...]:
        """Open questions: until a rule closes each, apply refuses to run."""
        return tuple(i for i in self.items if i.open)

    def decision_lines(self) -> list[str]:
        """One line per open decision: table, columns and the rules that close it."""
        return [f"decision needed: {qualname(i.fk.child)}.{', '.join(i.fk.columns)} -> {qualname(i.fk.parent)} "
                f"({i.fk.name}): {i.decision.question}; close it with rules: "
                f"{{{_rule_key(i.fk)}: {' | '.join(i.decision.rules)}}}"
                for i in self.decisions if i.decision is not None]

    def item(self, key: str) -> PlanItem | None:
        return next((i for i in self.items if i.fk.key == key), None)

    def forward_script(self) -> str:
        return _script(self, forward=True)

    def rollback_script(self) -> str:
        return _script(self, forward=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parent": list(self.parent),
            "server_version_num": self.server_version_num,
            "deletion_set": [{"table": qualname(t), "distance": d} for t, d in sorted(
                self.deletion_set.items(), key=lambda kv: (kv[1], kv[0]))],
            "notes": list(self.notes),
            "decisions": self.decision_lines(),
            "ghost_row": self.ghost_row.to_dict() if self.ghost_row else None,
            "items": [i.to_dict() for i in self.items],
        }


def _rule_key(fk: ForeignKey) -> str:
    return f"{fk.table}.{fk.columns[0]}" if len(fk.columns) == 1 else fk.name


def _lock_line(item: PlanItem) -> str:
    seconds = parse_duration(item.lock_timeout)
    return render.text(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{int(round(seconds * 1000))}ms"))) + ";"


def _script_item(item: PlanItem, forward: bool) -> list[str]:
    if item.pending_validation and forward:
        return ["", f"-- {item.fk.key}: validate (left NOT VALID by an interrupted run)",
                render.text(render.validate(item.fk)) + ";"]
    lines: list[str] = []
    for _leaf, add, check in (item.forward_pre() if forward else item.reverse_pre()):
        lines += ["", f"-- {item.fk.key}: a pre-validated copy on a partition", "BEGIN;", _lock_line(item),
                  render.text(add) + ";", "COMMIT;", render.text(check) + ";"]
    before, after = (item.current, item.planned) if forward else (item.planned, item.current)
    lines += ["", f"-- {item.fk.key}: {before} -> {after}", "BEGIN;", _lock_line(item)]
    lines += [render.text(s) + ";" for s in (item.forward() if forward else item.reverse())]
    lines.append("COMMIT;")
    validate = item.forward_validate() if forward else item.reverse_validate()
    if validate is not None:
        lines.append(render.text(validate) + ";")
    return lines


def _script(plan: Plan, *, forward: bool) -> str:
    title = "apply" if forward else "rollback"
    lines = [f"-- cascade runbook {title} script for parent {qualname(plan.parent)}",
             "-- One transaction per foreign key; each swap is a single atomic ALTER TABLE.",
             "-- Run each block on its own; keep lock_timeout short and retry on SQLSTATE 55P03."]
    for line in plan.decision_lines():
        lines.append(f"-- NOT APPLIED until decided: {line}")
    items = plan.actions if forward else plan.changes
    if forward and plan.ghost_row is not None and items:
        lines += ["", "-- the ghost row that ghost rules reassign rows to (kept if it exists)",
                  render.text(plan.ghost_row.statement()) + ";"]
    if not items:
        lines.append("-- nothing to change")
    for item in items:
        lines += _script_item(item, forward)
    if not forward and plan.ghost_row is not None and items:
        lines += ["", "-- the ghost row is left in place: rows reassigned to it may still reference it"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- overrides


def _override_keys(fk: ForeignKey) -> list[str]:
    """Most specific first: constraint name, schema.table.column, table.column, schema.table, table."""
    keys = [fk.name]
    if len(fk.columns) == 1:
        keys += [f"{fk.schema}.{fk.table}.{fk.columns[0]}", f"{fk.table}.{fk.columns[0]}"]
    return keys + [f"{fk.schema}.{fk.table}", fk.table]


def _override_for(fk: ForeignKey, rules: Mapping[str, str]) -> tuple[str, str] | None:
    return next(((k, rules[k]) for k in _override_keys(fk) if k in rules), None)


def _rule_notes(snapshot: Snapshot, rules: Mapping[str, str], used: set[str], dset: Mapping[TableKey, int]) -> list[str]:
    keys_anywhere = {k for fk in snapshot.foreign_keys for k in _override_keys(fk)}
    tables = {qualname(t.key) for t in snapshot.tables} | {t.name for t in snapshot.tables}
    notes = []
    for key in rules:
        if key in used:
            continue
        if key in keys_anywhere:
            notes.append(f"rule for {key!r} skipped: the constraint is not on a path to {qualname(snapshot.parent)}")
        elif key in tables:
            notes.append(f"rule for {key!r} skipped: the table has no foreign key into the deletion set")
        else:
            notes.append(f"rule for {key!r} skipped: no table, column or constraint of that name exists")
    return notes


# ---------------------------------------------------------------- ghost


def _ghost_key(params: Parameters, snapshot: Snapshot) -> dict[str, Any] | None:
    key = params.ghost.get("key")
    if key is None:
        return None
    if isinstance(key, Mapping):
        return dict(key)
    if len(snapshot.parent_key) > 1:
        raise PlanError(f"ghost.key must name every column of {qualname(snapshot.parent)}'s key "
                        f"({', '.join(snapshot.parent_key)})")
    return {(snapshot.parent_key or ("id",))[0]: key}


def _ghost_defaults(fk: ForeignKey, key: dict[str, Any] | None, parent: TableKey, used: str) -> tuple[tuple[str, Any], ...]:
    where = f"rules[{used!r}] = ghost on {fk.key}"
    if fk.parent != parent:
        raise PlanError(f"{where}: ghost reassigns to a row of {qualname(parent)}, but the FK references "
                        f"{qualname(fk.parent)}")
    if key is None:
        raise PlanError(f"{where}: set ghost.key (the placeholder {qualname(parent)} row) in the parameters")
    missing = [c for c in fk.ref_columns if c not in key]
    if missing:
        raise PlanError(f"{where}: ghost.key gives no value for {', '.join(missing)}")
    has_default = [c for c, d in zip(fk.columns, fk.column_defaults) if d is not None]
    if has_default and fk.on_delete != "SET DEFAULT":
        raise PlanError(f"{where}: {', '.join(has_default)} already has a default; a ghost would replace it")
    return tuple((c, key[r]) for c, r in zip(fk.columns, fk.ref_columns))


# ---------------------------------------------------------------- the plan


def _flags(fk: ForeignKey, planned: str, snapshot: Snapshot, params: Parameters, reached: bool) -> list[str]:
    flags = []
    if reached and not fk.indexed:
        statement = render.text(render.create_index_concurrently(fk, index_name(fk)))
        if fk.child_rows is not None and fk.child_rows > params.expensive_cascade_rows:
            flags.append(f"expensive cascade: {qualname(fk.child)} has ~{fk.child_rows:,} rows and no index on "
                         f"{', '.join(fk.columns)}, so every deleted row scans it; fix: {statement}")
        elif planned != fk.on_delete:
            flags.append(f"referencing columns not indexed: each delete scans the table; fix: {statement}")
    if not fk.validated:
        orphans = snapshot.orphans.get(fk.key)
        flags.append(f"NOT VALID, stays not valid ({orphans if orphans is not None else '?'} orphan rows)")
    if planned != fk.on_delete and fk.partitioned and snapshot.server_version_num < PG_NOT_VALID_ON_PARTITIONED:
        flags.append("partitioned table before PostgreSQL 18: each partition gets a pre-validated copy that the "
                     "swap takes over; while the copies exist a delete may follow either rule"
                     if snapshot.partitions.get(qualname(fk.child)) and fk.validated else
                     "partitioned table before PostgreSQL 18: the swap validates while holding its locks")
    return flags


def _carries(fk: ForeignKey, verdict: Verdict, rules: Mapping[str, str]) -> bool:
    """Whether a delete can travel along ``fk`` under the plan: CASCADE (asked for, kept, or the
    policy's), or an open decision (which may become one)."""
    override = _override_for(fk, rules)
    if override is not None:
        rule = override[1]
        return rule == "CASCADE" or (rule == "keep" and fk.on_delete == "CASCADE")
    return verdict.planned == "CASCADE" or verdict.decision is not None


def _reached(parent: TableKey, verdicts: Mapping[str, tuple[ForeignKey, Verdict]],
             rules: Mapping[str, str]) -> set[TableKey]:
    """Tables whose rows a user's delete can reach under the plan."""
    reached = {parent}
    grew = True
    while grew:
        grew = False
        for fk, verdict in verdicts.values():
            if fk.parent in reached and fk.child not in reached and _carries(fk, verdict, rules):
                reached.add(fk.child)
                grew = True
    return reached


class _Planner:
    def __init__(self, snapshot: Snapshot, params: Parameters, pending: Collection[str]) -> None:
        self.snapshot, self.params, self.pending = snapshot, params, set(pending)
        self.parent = snapshot.parent
        self.dset = deletion_set(snapshot.foreign_keys, self.parent)
        vocab = Vocabulary(tuple(params.owner_columns), tuple(params.actor_columns), self.parent[1])
        self.classes = classify(snapshot.foreign_keys, self.parent, vocab)
        self.used: set[str] = set()
        self.errors: list[str] = []
        self.ghost_key = _ghost_key(params, snapshot)
        self.ghost_used = False

    def verdicts(self) -> dict[str, tuple[ForeignKey, Verdict]]:
        found = {}
        for fk in self.snapshot.foreign_keys:
            if fk.parent in self.dset:
                ctx = Context(self.parent, tuple(self.snapshot.facts.get(fk.key, ())) + _row_facts(fk))
                found[fk.key] = (fk, decide(fk, self.classes[fk.key], ctx))
        return found

    def item(self, fk: ForeignKey, verdict: Verdict, reached: bool) -> PlanItem:
        kind = self.classes[fk.key].kind
        planned, reason, decision = verdict.planned, verdict.reason, verdict.decision
        flags = list(verdict.flags)
        if not reached:
            planned, reason, decision, flags = fk.on_delete, (
                f"{NOT_REACHED}: a user's delete never reaches {qualname(fk.parent)} under this plan "
                f"({kind}: {self.classes[fk.key].reason}); left as it is"), None, []
        ghost: tuple[tuple[str, Any], ...] = ()
        override = _override_for(fk, self.params.rules)
        if override is not None:
            used, rule = override
            self.used.add(used)
            planned, ghost = self.apply_override(fk, kind, used, rule)
            if decision is not None:
                reason = f"decision closed by rules[{used!r}] = {rule} ({decision.question})"
            else:
                reason = f"override from rules[{used!r}] = {rule}"
                if rule != "keep" and planned != verdict.planned and reached:
                    flags.append(f"override: policy said {verdict.planned}")
            decision = None
        if planned == "SET NULL" and planned != fk.on_delete and not fk.nullable:
            self.errors.append(f"{fk.key} cannot be SET NULL: column(s) {', '.join(fk.columns)} are NOT NULL")
        flags += _flags(fk, planned, self.snapshot, self.params, reached)
        resume = fk.key in self.pending and not fk.validated and planned == fk.on_delete
        if resume:
            flags.append("left NOT VALID by an interrupted run: validated now")
        return PlanItem(fk=fk, kind=kind, planned=planned, reason=reason, override=override[0] if override else None,
                        flags=tuple(flags), server_version_num=self.snapshot.server_version_num,
                        lock_timeout=self.params.lock_timeout, pending_validation=resume,
                        partitions=tuple(self.snapshot.partitions.get(qualname(fk.child), ())),
                        decision=decision, ghost_defaults=ghost)

    def apply_override(self, fk: ForeignKey, kind: str, used: str, rule: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The planned rule (and ghost defaults) a ``rules`` entry asks for."""
        if rule == "keep":
            return fk.on_delete, ()
        if rule == "ghost":
            try:
                ghost = _ghost_defaults(fk, self.ghost_key, self.parent, used)
            except PlanError as exc:
                self.errors.append(str(exc))
                return fk.on_delete, ()
            self.ghost_used = True
            return "SET DEFAULT", ghost
        if kind == SELF_REFERENCE and rule == "CASCADE":
            self.errors.append(f"rules[{used!r}] asks CASCADE on {fk.key}, a self-reference of the parent: "
                               "a delete would remove other parent rows; refused")
        return rule, ()

    def added(self) -> list[PlanItem]:
        return [item for column in self.snapshot.references if (item := self.add_item(column)) is not None]

    def add_item(self, column: ReferenceColumn) -> PlanItem | None:
        key = next((k for k in (column.key, f"{column.table}.{column.column}") if k in self.params.references), None)
        if key is None:
            return None
        self.used.add(f"references:{key}")
        rule = self.params.references[key]
        if rule in ("keep", "ghost"):
            self.errors.append(f"references[{key!r}] = {rule}: a new FK needs CASCADE, SET NULL, SET DEFAULT, "
                               "RESTRICT or NO ACTION")
            return None
        fk = new_foreign_key(column, self.snapshot)
        if fk.partitioned and self.snapshot.server_version_num < PG_NOT_VALID_ON_PARTITIONED and column.missing:
            self.errors.append(f"references[{key!r}]: {column.missing} row(s) point at missing parent rows and "
                               "a partitioned table cannot take a NOT VALID FK before PostgreSQL 18")
        flags = [] if fk.validated else [f"{column.missing} row(s) point at missing {qualname(self.parent)} rows: "
                                         "added NOT VALID, validated once they are handled"]
        return PlanItem(fk=replace(fk, on_delete=rule), kind=ADDED, planned=rule,
                        reason=f"opt-in from references[{key!r}] = {rule}: {column.matched}, no FK protected it",
                        override=None, flags=tuple(flags), server_version_num=self.snapshot.server_version_num,
                        lock_timeout=self.params.lock_timeout, adds=True)

    def reference_notes(self) -> list[str]:
        known = {k for c in self.snapshot.references for k in (c.key, f"{c.table}.{c.column}")}
        return [f"references rule for {key!r} skipped: inspect found no unprotected reference column of that name"
                for key in self.params.references if key not in known]


def new_foreign_key(column: ReferenceColumn, snapshot: Snapshot) -> ForeignKey:
    """The constraint an opt-in reference item adds (named as PostgreSQL would name it)."""
    name = render.constraint_name(column.table, column.column)
    parent_key = snapshot.parent_key or ("id",)
    base = ForeignKey(
        oid=0, schema=column.schema, table=column.table, name=name, ref_schema=snapshot.parent[0],
        ref_table=snapshot.parent[1], columns=(column.column,), ref_columns=parent_key[:1],
        columns_not_null=(column.not_null,), on_delete="NO ACTION", on_update="NO ACTION", match="SIMPLE",
        deferrable=False, deferred=False, validated=not column.missing, definition="", comment=None,
        child_kind="p" if column.partitioned else "r", indexed=column.indexed, child_rows=column.rows,
        column_defaults=(None,))
    return replace(base, definition=render.text(render.fk_clause(base, "NO ACTION", not_valid=False)))


def _row_facts(fk: ForeignKey) -> tuple[str, ...]:
    rows = "unknown" if fk.child_rows is None else f"~{fk.child_rows:,}"
    return (f"{qualname(fk.child)}: {rows} rows; {', '.join(fk.columns)} "
            f"{'indexed' if fk.indexed else 'not indexed'}; currently ON DELETE {fk.on_delete}",)


def make_plan(snapshot: Snapshot, params: Parameters, pending: Collection[str] = ()) -> Plan:
    """``pending``: FK keys an interrupted run swapped without validating (see execute.pending_validations)."""
    planner = _Planner(snapshot, params, pending)
    verdicts = planner.verdicts()
    reached = _reached(snapshot.parent, verdicts, params.rules)
    items = [planner.item(fk, verdict, fk.parent in reached) for fk, verdict in verdicts.values()]
    items += planner.added()
    if planner.errors:
        raise PlanError("; ".join(planner.errors))
    dset = planner.dset
    items.sort(key=lambda i: (dset.get(i.fk.child, 99), i.fk.schema, i.fk.table, i.fk.name))
    notes = _rule_notes(snapshot, params.rules, planner.used, dset) + planner.reference_notes()
    ghost = None
    if planner.ghost_used and planner.ghost_key is not None:
        ghost = GhostRow(snapshot.parent, planner.ghost_key, dict(params.ghost.get("values") or {}))
    return Plan(parent=snapshot.parent, server_version_num=snapshot.server_version_num, items=tuple(items),
                notes=tuple(notes), deletion_set=dset, ghost_row=ghost, classes=planner.classes,
                facts=snapshot.facts)
