"""Planning: which rule each foreign key gets, and why. Pure computation over a snapshot.

Policy (see the design): an FK on a shortest path to the parent is an ownership edge and becomes
CASCADE; the parent's own self-reference never does; other edges into the deletion set (cross edges)
get the least surprising rule that still lets the parent's delete succeed; a ``rules`` override wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Mapping

from psycopg import sql

from . import render
from .catalog import ForeignKey, Snapshot, TableKey, qualname
from .errors import PlanError
from .graph import deletion_set, is_ownership
from .params import Parameters, parse_duration

PG_NOT_VALID_ON_PARTITIONED = 180000

OWNERSHIP = "ownership"
SELF_REFERENCE = "parent self-reference"
CROSS = "cross edge"


def _phrase(fk: ForeignKey, rule: str, delete_set_columns: tuple[str, ...] = ()) -> str:
    child = qualname(fk.child)
    cols = ", ".join(delete_set_columns or fk.columns)
    return {
        "NO ACTION": f"fails while rows of {child} still reference it (checked at the end of the statement)",
        "RESTRICT": f"fails at once while rows of {child} still reference it",
        "CASCADE": f"also deletes the rows of {child} that reference it",
        "SET NULL": f"keeps the referencing rows of {child} and sets their {cols} to NULL",
        "SET DEFAULT": f"keeps the referencing rows of {child} and sets their {cols} to the column default",
    }[rule]


@dataclass(frozen=True)
class PlanItem:
    fk: ForeignKey
    kind: str
    planned: str
    reason: str
    override: str | None
    flags: tuple[str, ...]
    server_version_num: int
    lock_timeout: str = "2s"
    # Swapped by an interrupted run whose VALIDATE never ran: this run validates it.
    pending_validation: bool = False
    # Leaf partitions of a partitioned referencing table (for the pre-validated swap before PG 18).
    partitions: tuple[TableKey, ...] = ()

    @property
    def current(self) -> str:
        return self.fk.on_delete

    @property
    def change(self) -> bool:
        return self.planned != self.current

    @property
    def not_valid_swap(self) -> bool:
        """Before PostgreSQL 18 a partitioned table cannot take a NOT VALID foreign key."""
        return not (self.fk.partitioned and self.server_version_num < PG_NOT_VALID_ON_PARTITIONED)

    @property
    def validate_after(self) -> bool:
        """A NOT VALID constraint stays not valid; a valid one is validated in its own transaction."""
        return (self.change and self.not_valid_swap and self.fk.validated) or self.pending_validation

    @property
    def action(self) -> bool:
        """Whether apply has anything to do for this FK."""
        return self.change or self.pending_validation

    @property
    def prevalidate(self) -> bool:
        """Before PostgreSQL 18 a partitioned table's swap would validate while holding its locks;
        instead each partition gets a copy validated beforehand, which the swap takes over unscanned."""
        return self.change and not self.not_valid_swap and self.fk.validated and bool(self.partitions)

    def _swap_not_valid(self) -> bool:
        return self.not_valid_swap

    def _pre(self, rule: str, delete_set_columns: tuple[str, ...]) -> list[tuple[TableKey, sql.Composed,
                                                                                 sql.Composed]]:
        if not self.prevalidate:
            return []
        return [(leaf, render.add_to_partition(self.fk, leaf, rule, delete_set_columns),
                 render.validate_on_partition(self.fk, leaf)) for leaf in self.partitions]

    def forward_pre(self) -> list[tuple[TableKey, sql.Composed, sql.Composed]]:
        return self._pre(self.planned, ())

    def reverse_pre(self) -> list[tuple[TableKey, sql.Composed, sql.Composed]]:
        return self._pre(self.fk.on_delete, self.fk.delete_set_columns)

    def cleanup(self) -> list[sql.Composed]:
        return [render.drop_from_partition(self.fk, leaf) for leaf in self.partitions] if self.prevalidate else []

    def forward(self) -> list[sql.Composed]:
        """The statements of the swap transaction (one ALTER, and the comment it would otherwise lose)."""
        if self.prevalidate:
            statements = render.swap_over_partitions(self.fk, self.partitions, self.planned)
        else:
            statements = [render.swap(self.fk, self.planned, not_valid=self._swap_not_valid())]
        note = render.comment(self.fk)
        if note is not None:
            statements.append(note)
        return statements

    def rehearsal(self) -> list[sql.Composed]:
        """Every statement of the change, in order, for one transaction that is rolled back."""
        pre = [s for _leaf, add, check in self.forward_pre() for s in (add, check)]
        return pre + self.forward()

    def forward_validate(self) -> sql.Composed | None:
        return render.validate(self.fk) if self.validate_after else None

    def reverse(self) -> list[sql.Composed]:
        """The swap back to the exact original definition (rule, SET NULL column list, validity)."""
        if self.prevalidate:
            statements = render.swap_over_partitions(self.fk, self.partitions, self.fk.on_delete,
                                                     self.fk.delete_set_columns)
        else:
            statements = [render.swap(self.fk, self.fk.on_delete, not_valid=self._swap_not_valid(),
                                      delete_set_columns=self.fk.delete_set_columns)]
        note = render.comment(self.fk)
        if note is not None:
            statements.append(note)
        return statements

    def reverse_validate(self) -> sql.Composed | None:
        # The original was validated (or it stays NOT VALID): the swap back validates the same way.
        return render.validate(self.fk) if (self.change and self.not_valid_swap and self.fk.validated) else None

    @property
    def behaviour(self) -> str:
        ref = qualname(self.fk.parent)
        now = _phrase(self.fk, self.current, self.fk.delete_set_columns)
        if self.pending_validation:
            return f"rule already {self.planned}; an interrupted run left it NOT VALID: VALIDATE only"
        if not self.change:
            return f"unchanged: deleting a row of {ref} {now}"
        return f"before: deleting a row of {ref} {now}; after: it {_phrase(self.fk, self.planned)}"

    @property
    def lock_cost(self) -> str:
        child, ref = qualname(self.fk.child), qualname(self.fk.parent)
        rows = "an unknown number of" if self.fk.child_rows is None else f"~{self.fk.child_rows:,}"
        if self.pending_validation:
            return f"VALIDATE only: scans {rows} rows without blocking reads or writes"
        if not self.change:
            return "none: not touched"
        if self.prevalidate:
            return (f"PostgreSQL {self.server_version_num // 10000} cannot add a NOT VALID foreign key to a "
                    f"partitioned table: each of its {len(self.partitions)} partitions first gets a NOT VALID "
                    f"copy (milliseconds) that VALIDATE scans without blocking reads or writes ({rows} rows in "
                    f"all); the swap then holds ACCESS EXCLUSIVE on {child}, its partitions and {ref} for "
                    f"milliseconds and takes the copies over with no scan")
        if not self.not_valid_swap:
            return (f"PostgreSQL {self.server_version_num // 10000} cannot add a NOT VALID foreign key to a "
                    f"partitioned table: the swap validates while it holds ACCESS EXCLUSIVE on {child} and "
                    f"{ref}, so reads and writes of both wait for a scan of {rows} rows "
                    f"(each attempt bounded by lock_timeout {self.lock_timeout} only while waiting)")
        swap = (f"ACCESS EXCLUSIVE on {child} and {ref} for the swap only (no scan, milliseconds; "
                f"waiting bounded by lock_timeout {self.lock_timeout}, then retried)")
        if self.validate_after:
            return swap + f"; then VALIDATE scans {rows} rows without blocking reads or writes"
        return swap + "; stays NOT VALID as before, no scan"

    def to_dict(self) -> dict[str, Any]:
        return {
            "constraint": self.fk.key,
            "table": qualname(self.fk.child),
            "name": self.fk.name,
            "references": qualname(self.fk.parent),
            "columns": list(self.fk.columns),
            "kind": self.kind,
            "current": self.current,
            "planned": self.planned,
            "change": self.change,
            "pending_validation": self.pending_validation,
            "override": self.override,
            "reason": self.reason,
            "flags": list(self.flags),
            "validate_after": self.validate_after,
            "not_valid_swap": self.not_valid_swap,
            "behaviour": self.behaviour,
            "lock_cost": self.lock_cost,
            "prevalidate_partitions": [list(p) for p in self.partitions] if self.prevalidate else [],
            "forward": [render.text(s) for s in self.forward()] if self.change else [],
            "forward_validate": render.text(v) if (v := self.forward_validate()) is not None else None,
            "reverse": [render.text(s) for s in self.reverse()] if self.change else [],
            "reverse_validate": render.text(v) if (v := self.reverse_validate()) is not None else None,
        }


@dataclass(frozen=True)
class Plan:
    parent: TableKey
    server_version_num: int
    items: tuple[PlanItem, ...]
    notes: tuple[str, ...]
    deletion_set: Mapping[TableKey, int]

    @property
    def changes(self) -> tuple[PlanItem, ...]:
        """The FKs whose rule changes (what a rollback restores)."""
        return tuple(i for i in self.items if i.change)

    @property
    def actions(self) -> tuple[PlanItem, ...]:
        """Everything apply does: the changes, and validations an interrupted run left pending."""
        return tuple(i for i in self.items if i.action)

    def item(self, key: str) -> PlanItem | None:
        for i in self.items:
            if i.fk.key == key:
                return i
        return None

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
            "items": [i.to_dict() for i in self.items],
        }


def _script(plan: Plan, *, forward: bool) -> str:
    title = "apply" if forward else "rollback"
    lines = [f"-- cascade runbook {title} script for parent {qualname(plan.parent)}",
             "-- One transaction per foreign key; each swap is a single atomic ALTER TABLE.",
             "-- Run each block on its own; keep lock_timeout short and retry on SQLSTATE 55P03."]
    items = plan.actions if forward else plan.changes
    if not items:
        lines.append("-- nothing to change")
    for item in items:
        if item.pending_validation and forward:
            lines.append("")
            lines.append(f"-- {item.fk.key}: validate (left NOT VALID by an interrupted run)")
            lines.append(render.text(render.validate(item.fk)) + ";")
            continue
        statements = item.forward() if forward else item.reverse()
        validate = item.forward_validate() if forward else item.reverse_validate()
        for _leaf, add, check in (item.forward_pre() if forward else item.reverse_pre()):
            lines.append("")
            lines.append(f"-- {item.fk.key}: a pre-validated copy on a partition")
            lines.append("BEGIN;")
            lines.append(render.text(sql.SQL("SET LOCAL lock_timeout = {}").format(
                sql.Literal(_duration_literal(item.lock_timeout)))) + ";")
            lines.append(render.text(add) + ";")
            lines.append("COMMIT;")
            lines.append(render.text(check) + ";")
        lines.append("")
        lines.append(f"-- {item.fk.key}: {item.current if forward else item.planned} -> "
                     f"{item.planned if forward else item.current}")
        lines.append("BEGIN;")
        lines.append(render.text(sql.SQL("SET LOCAL lock_timeout = {}").format(
            sql.Literal(_duration_literal(item.lock_timeout)))) + ";")
        lines.extend(render.text(s) + ";" for s in statements)
        lines.append("COMMIT;")
        if validate is not None:
            lines.append(render.text(validate) + ";")
    return "\n".join(lines) + "\n"


def _duration_literal(text: str) -> str:
    return f"{int(round(parse_duration(text) * 1000))}ms"


def _cross_edge_rule(fk: ForeignKey) -> tuple[str, str, tuple[str, ...]]:
    """The least surprising rule for a cross edge that still lets the parent's delete succeed."""
    child, ref = qualname(fk.child), qualname(fk.parent)
    cascade_would = (f"CASCADE here would also delete rows of {child} that point at a deleted {ref} row, "
                     f"even rows owned by another {ref} owner")
    if fk.on_delete in ("CASCADE", "SET NULL", "SET DEFAULT"):
        return fk.on_delete, f"cross edge; the current {fk.on_delete} already lets the delete succeed. " \
                             + cascade_would, ()
    if fk.nullable:
        return "SET NULL", (f"cross edge with nullable {', '.join(fk.columns)}: SET NULL lets the delete "
                            f"succeed and keeps the referencing rows. " + cascade_would), ()
    # NO ACTION and RESTRICT are checked when the query that deleted the referenced row ends, so a
    # referencing row that the same cascade deletes may still block, depending on trigger order
    # (tests/test_testuser.py pins this down). Only CASCADE lets the delete succeed in every order.
    return "CASCADE", (f"cross edge with NOT NULL {', '.join(fk.columns)}: NO ACTION or RESTRICT can block "
                       f"the owner's delete even when the referencing row is deleted by the same cascade "
                       f"(it depends on trigger order); CASCADE cannot. " + cascade_would), (
        f"policy change: {fk.on_delete} on a NOT NULL cross edge becomes CASCADE; set a rule to keep it",
        "rows of another owner pointing here are deleted with it")


def _override_for(fk: ForeignKey, rules: Mapping[str, str]) -> tuple[str, str] | None:
    for key in (fk.name, f"{fk.schema}.{fk.table}", fk.table):
        if key in rules:
            return key, rules[key]
    return None


def make_plan(snapshot: Snapshot, params: Parameters, pending: Collection[str] = ()) -> Plan:
    """``pending``: FK keys an interrupted run swapped without validating (see execute.pending_validations)."""
    parent = snapshot.parent
    dset = deletion_set(snapshot.foreign_keys, parent)
    items: list[PlanItem] = []
    used_rules: set[str] = set()
    errors: list[str] = []
    for fk in snapshot.foreign_keys:
        if fk.parent not in dset:
            continue  # outside the deletion set: never touched
        flags: list[str] = []
        if fk.child == parent and fk.parent == parent:
            kind = SELF_REFERENCE
            if fk.on_delete in ("SET NULL", "SET DEFAULT"):
                planned, reason = fk.on_delete, "self-reference on the parent; already keeps the other rows"
            elif fk.nullable:
                planned, reason = "SET NULL", ("self-reference on the parent: CASCADE would delete other "
                                               f"{qualname(parent)} rows; SET NULL keeps them")
            else:
                planned, reason = fk.on_delete, ("self-reference on the parent with NOT NULL "
                                                 f"{', '.join(fk.columns)}: left alone")
                flags.append("self-reference left alone: deleting a referenced row fails while it is referenced")
        elif is_ownership(fk, dset):
            kind = OWNERSHIP
            if fk.on_delete in ("SET NULL", "SET DEFAULT"):
                planned = fk.on_delete
                reason = (f"ownership edge whose {fk.on_delete} already lets the delete succeed and keeps the "
                          f"rows on purpose; set a rule to CASCADE to delete them instead")
                flags.append(f"kept {fk.on_delete}: these rows outlive the owner")
            else:
                planned = "CASCADE"
                reason = f"ownership edge (distance {dset[fk.child]} from {qualname(parent)})"
                if fk.on_delete == "RESTRICT":
                    flags.append("policy change: explicit RESTRICT converted to CASCADE")
        else:
            kind = CROSS
            planned, reason, extra = _cross_edge_rule(fk)
            flags.extend(extra)
        override = _override_for(fk, params.rules)
        used = None
        if override is not None:
            used, rule = override
            used_rules.add(used)
            if rule != "keep" and rule != planned:
                flags.append(f"override: policy said {planned}")
            planned = fk.on_delete if rule == "keep" else rule
            reason = f"override from rules[{used!r}] = {rule}"
            if kind == SELF_REFERENCE and planned == "CASCADE":
                errors.append(f"rules[{used!r}] asks CASCADE on {fk.key}, a self-reference of the parent: "
                              "a delete would remove other parent rows; refused")
        if planned == "SET NULL" and planned != fk.on_delete and not fk.nullable:
            errors.append(f"{fk.key} cannot be SET NULL: column(s) {', '.join(fk.columns)} are NOT NULL")
        if planned != fk.on_delete and not fk.indexed:
            flags.append("referencing columns not indexed: each delete scans the table")
        if not fk.validated:
            orphans = snapshot.orphans.get(fk.key)
            flags.append(f"NOT VALID, stays not valid ({orphans if orphans is not None else '?'} orphan rows)")
        leaves = tuple(snapshot.partitions.get(qualname(fk.child), ()))
        if planned != fk.on_delete and fk.partitioned and snapshot.server_version_num < PG_NOT_VALID_ON_PARTITIONED:
            flags.append("partitioned table before PostgreSQL 18: each partition gets a pre-validated copy "
                         "that the swap takes over; while the copies exist a delete may follow either rule"
                         if leaves and fk.validated else
                         "partitioned table before PostgreSQL 18: the swap validates while holding its locks")
        resume = fk.key in pending and not fk.validated and planned == fk.on_delete
        if resume:
            flags.append("left NOT VALID by an interrupted run: validated now")
        items.append(PlanItem(fk=fk, kind=kind, planned=planned, reason=reason, override=used,
                              flags=tuple(flags), server_version_num=snapshot.server_version_num,
                              lock_timeout=params.lock_timeout, pending_validation=resume, partitions=leaves))
    if errors:
        raise PlanError("; ".join(errors))
    notes = _rule_notes(snapshot, params.rules, used_rules, dset)
    items.sort(key=lambda i: (dset.get(i.fk.child, 0), i.fk.schema, i.fk.table, i.fk.name))
    return Plan(parent=parent, server_version_num=snapshot.server_version_num, items=tuple(items),
                notes=tuple(notes), deletion_set=dset)


def _rule_notes(snapshot: Snapshot, rules: Mapping[str, str], used: set[str],
                dset: Mapping[TableKey, int]) -> list[str]:
    tables = {t.key for t in snapshot.tables}
    names = {t.name for t in snapshot.tables}
    constraints = {fk.name for fk in snapshot.foreign_keys}
    notes = []
    for key in rules:
        if key in used:
            continue
        schema, _, table = key.rpartition(".")
        if (schema and (schema, table) in tables) or (not schema and key in names):
            notes.append(f"rule for {key!r} skipped: the table has no foreign key into the deletion set")
        elif key in constraints:
            notes.append(f"rule for {key!r} skipped: the constraint is not on a path to {qualname(snapshot.parent)}")
        else:
            notes.append(f"rule for {key!r} skipped: no table or constraint of that name exists")
    return notes
