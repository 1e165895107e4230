"""The CI guard: does every FK into the deletion set have the rule the policy gives it?

Made for the database an application's CI builds from its migrations: a new table whose FK forgets
its ``ondelete`` fails the build the day it is written. Read-only and cheap: one catalog snapshot
(``pg_constraint``, no table is scanned but the orphans of NOT VALID FKs) and the pure planner; no
row is sampled, and reference columns without an FK are looked for only when ``references`` asks.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from . import catalog, references, terminal
from .catalog import qualname
from .params import Parameters
from .plan import Plan, make_plan


@dataclass(frozen=True)
class Guard:
    plan: Plan
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.plan.changes and not self.plan.decisions

    def lines(self) -> list[str]:
        """Each FK that differs, with the DDL that fixes it; then each open decision: lines that fit a
        terminal of ``terminal.WIDTH`` columns."""
        out = []
        for item in self.plan.changes:
            validate = item.forward_validate()
            fix = "; ".join(s.as_string(None) for s in [*item.forward(), *([validate] if validate else [])])
            out += terminal.text_lines(f"{item.fk.key}: ON DELETE {item.current}, the policy wants "
                                       f"{item.planned} ({item.reason})", "    ")
            out += terminal.code_lines(fix, "         ", first="    fix: ")
        for line in self.plan.decision_lines():
            out += terminal.text_lines(line, "    ")
        return out

    def summary(self) -> str:
        checked = len(self.plan.items)
        parent = qualname(self.plan.parent)
        if self.ok:
            return (f"every foreign key into the deletion set of {parent} has the rule the policy gives it "
                    f"({checked} checked in {self.seconds * 1000:.0f} ms)")
        return (f"{len(self.plan.changes)} foreign key(s) differ from the policy and {len(self.plan.decisions)} "
                f"decision(s) are open ({checked} checked in {self.seconds * 1000:.0f} ms)")


def guard(conn: psycopg.Connection[Any], params: Parameters) -> Guard:
    started = time.perf_counter()
    snapshot = catalog.inspect(conn, params.parent_schema, params.parent_table)
    if params.references:
        snapshot = replace(snapshot, references=references.find(conn, snapshot, params))
    return Guard(make_plan(snapshot, params), time.perf_counter() - started)
