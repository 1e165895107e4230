"""Plan items: one foreign key's change, reversible, carrying its forward and rollback SQL.

An item swaps an FK's ``ON DELETE`` rule (one atomic ``ALTER TABLE``), reassigns to a ghost row
(the column's default and ``SET DEFAULT`` in the same statement), or adds an FK to a reference column
no constraint protected. Its ``reverse`` restores the exact original definition.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from . import render
from .catalog import ForeignKey, TableKey, qualname
from .policy import Decision

PG_NOT_VALID_ON_PARTITIONED = 180000
ADDED = "added FK"
NO_FK = "(no FK)"

Pre = list[tuple[TableKey, sql.Composed, sql.Composed]]


def phrase(fk: ForeignKey, rule: str, delete_set_columns: tuple[str, ...] = ()) -> str:
    child = qualname(fk.child)
    cols = ", ".join(delete_set_columns or fk.columns)
    return {
        "NO ACTION": f"fails while rows of {child} still reference it (checked at the end of the statement)",
        "RESTRICT": f"fails at once while rows of {child} still reference it",
        "CASCADE": f"also deletes the rows of {child} that reference it",
        "SET NULL": f"keeps the referencing rows of {child} and sets their {cols} to NULL",
        "SET DEFAULT": f"keeps the referencing rows of {child} and sets their {cols} to the column default",
        NO_FK: f"does nothing to the rows of {child} that hold its key ({cols}): no FK protects them",
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
    # An open question: the FK is left as it is until a rule answers it.
    decision: Decision | None = None
    # A ghost reassignment: (column, the ghost row's key value) set as the columns' defaults.
    ghost_defaults: tuple[tuple[str, Any], ...] = ()
    # A new FK on a reference column no constraint protected (``fk`` is the constraint to add).
    adds: bool = False

    @property
    def current(self) -> str:
        return NO_FK if self.adds else self.fk.on_delete

    @property
    def open(self) -> bool:
        return self.decision is not None

    @property
    def change(self) -> bool:
        return not self.open and (self.adds or self.planned != self.current or self._defaults_change)

    @property
    def _defaults_change(self) -> bool:
        return bool(self.ghost_defaults) and any(
            d is None for d in (self.fk.column_defaults or (None,) * len(self.fk.columns)))

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
        return (self.change and not self.adds and not self.not_valid_swap and self.fk.validated
                and bool(self.partitions))

    def _pre(self, rule: str, delete_set_columns: tuple[str, ...]) -> Pre:
        if not self.prevalidate:
            return []
        return [(leaf, render.add_to_partition(self.fk, leaf, rule, delete_set_columns),
                 render.validate_on_partition(self.fk, leaf)) for leaf in self.partitions]

    def forward_pre(self) -> Pre:
        return self._pre(self.planned, ())

    def reverse_pre(self) -> Pre:
        return [] if self.adds else self._pre(self.fk.on_delete, self.fk.delete_set_columns)

    def cleanup(self) -> list[sql.Composed]:
        return [render.drop_from_partition(self.fk, leaf) for leaf in self.partitions] if self.prevalidate else []

    def _swap(self, rule: str, delete_set_columns: tuple[str, ...], *, back: bool) -> list[sql.Composed]:
        defaults = [] if back else list(self.ghost_defaults)
        dropped = [c for c, _v in self.ghost_defaults] if back and self._defaults_change else []
        if self.prevalidate:
            statements = render.swap_over_partitions(self.fk, self.partitions, rule, delete_set_columns)
            if defaults or dropped:
                statements.insert(0, render.column_defaults(self.fk, defaults, dropped))
        else:
            statements = [render.swap(self.fk, rule, not_valid=self.not_valid_swap,
                                      delete_set_columns=delete_set_columns, set_defaults=defaults,
                                      drop_defaults=dropped)]
        note = render.comment(self.fk)
        if note is not None:
            statements.append(note)
        return statements

    def forward(self) -> list[sql.Composed]:
        """The statements of the swap transaction (one ALTER, and the comment it would otherwise lose)."""
        if self.adds:
            return [render.add_foreign_key(self.fk, self.planned, not_valid=self.not_valid_swap)]
        return self._swap(self.planned, (), back=False)

    def rehearsal(self) -> list[sql.Composed]:
        """Every statement of the change, in order, for one transaction that is rolled back."""
        pre = [s for _leaf, add, check in self.forward_pre() for s in (add, check)]
        return pre + self.forward()

    def forward_validate(self) -> sql.Composed | None:
        return render.validate(self.fk) if self.validate_after else None

    def reverse(self) -> list[sql.Composed]:
        """Back to the exact original definition (rule, SET NULL column list, validity, defaults)."""
        if self.adds:
            return [render.drop_foreign_key(self.fk)]
        return self._swap(self.fk.on_delete, self.fk.delete_set_columns, back=True)

    def reverse_validate(self) -> sql.Composed | None:
        # The original was validated (or it stays NOT VALID): the swap back validates the same way.
        if self.adds:
            return None
        return render.validate(self.fk) if (self.change and self.not_valid_swap and self.fk.validated) else None

    @property
    def behaviour(self) -> str:
        ref = qualname(self.fk.parent)
        now = phrase(self.fk, self.current, self.fk.delete_set_columns)
        if self.pending_validation:
            return f"rule already {self.planned}; an interrupted run left it NOT VALID: VALIDATE only"
        if self.open:
            return f"undecided, left as it is: deleting a row of {ref} {now}"
        if not self.change:
            return f"unchanged: deleting a row of {ref} {now}"
        after = phrase(self.fk, self.planned)
        if self.ghost_defaults:
            after += " (the ghost row's key: " + ", ".join(f"{c} = {v!r}" for c, v in self.ghost_defaults) + ")"
        return f"before: deleting a row of {ref} {now}; after: it {after}"

    @property
    def lock_cost(self) -> str:
        return lock_cost(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "constraint": self.fk.key, "table": qualname(self.fk.child), "name": self.fk.name,
            "references": qualname(self.fk.parent), "columns": list(self.fk.columns),
            "ref_columns": list(self.fk.ref_columns), "kind": self.kind, "current": self.current,
            "planned": self.planned, "change": self.change, "pending_validation": self.pending_validation,
            "override": self.override, "reason": self.reason, "flags": list(self.flags),
            "decision": self.decision.to_dict() if self.decision else None,
            "ghost_defaults": [[c, v] for c, v in self.ghost_defaults], "adds": self.adds,
            "validate_after": self.validate_after, "not_valid_swap": self.not_valid_swap,
            "behaviour": self.behaviour, "lock_cost": self.lock_cost,
            "prevalidate_partitions": [list(p) for p in self.partitions] if self.prevalidate else [],
            "forward": [render.text(s) for s in self.forward()] if self.change else [],
            "forward_validate": render.text(v) if (v := self.forward_validate()) is not None else None,
            "reverse": [render.text(s) for s in self.reverse()] if self.change else [],
            "reverse_validate": render.text(v) if (v := self.reverse_validate()) is not None else None,
        }


def lock_cost(item: PlanItem) -> str:
    fk = item.fk
    child, ref = qualname(fk.child), qualname(fk.parent)
    rows = "an unknown number of" if fk.child_rows is None else f"~{fk.child_rows:,}"
    if item.pending_validation:
        return f"VALIDATE only: scans {rows} rows without blocking reads or writes"
    if not item.change:
        return "none: not touched"
    version = item.server_version_num // 10000
    if item.prevalidate:
        return (f"PostgreSQL {version} cannot add a NOT VALID foreign key to a partitioned table: each of its "
                f"{len(item.partitions)} partitions first gets a NOT VALID copy (milliseconds) that VALIDATE scans "
                f"without blocking reads or writes ({rows} rows in all); the swap then holds ACCESS EXCLUSIVE on "
                f"{child}, its partitions and {ref} for milliseconds and takes the copies over with no scan")
    if not item.not_valid_swap:
        return (f"PostgreSQL {version} cannot add a NOT VALID foreign key to a partitioned table: the change "
                f"validates while it holds its locks on {child} and {ref}, so writes of both wait for a scan of "
                f"{rows} rows (each attempt bounded by lock_timeout {item.lock_timeout} only while waiting)")
    held = "SHARE ROW EXCLUSIVE" if item.adds else "ACCESS EXCLUSIVE"
    swap = (f"{held} on {child} and {ref} for the {'addition' if item.adds else 'swap'} only (no scan, "
            f"milliseconds; waiting bounded by lock_timeout {item.lock_timeout}, then retried)")
    if item.validate_after:
        return swap + f"; then VALIDATE scans {rows} rows without blocking reads or writes"
    if item.adds:
        return swap + "; stays NOT VALID while rows point at missing parent rows (its orphans)"
    return swap + "; stays NOT VALID as before, no scan"
