"""The tables a notebook shows: pandas DataFrames built from snapshots, plans and results."""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from .catalog import ForeignKey, Snapshot, qualname
from .collateral import Collateral
from .references import UserReference
from .graph import deletion_set
from .plan import ADDED, NOT_REACHED, OWNERSHIP, SELF_REFERENCE, Plan, PlanItem


FK_COLUMNS = ["table", "constraint", "columns", "references", "distance", "on delete", "on update", "match",
              "deferrable", "valid", "orphans", "indexed", "partitioned", "rows (est.)", "comment"]


def foreign_keys_frame(snapshot: Snapshot, *, in_scope_only: bool = True) -> pd.DataFrame:
    dset = deletion_set(snapshot.foreign_keys, snapshot.parent)
    rows = []
    for fk in snapshot.foreign_keys:
        if in_scope_only and fk.parent not in dset:
            continue
        rows.append({
            "table": qualname(fk.child),
            "constraint": fk.name,
            "columns": ", ".join(fk.columns),
            "references": f"{qualname(fk.parent)} ({', '.join(fk.ref_columns)})",
            "distance": dset.get(fk.child),
            "on delete": fk.on_delete,
            "on update": fk.on_update,
            "match": fk.match,
            "deferrable": ("DEFERRED" if fk.deferred else "IMMEDIATE") if fk.deferrable else "no",
            "valid": fk.validated,
            "orphans": snapshot.orphans.get(fk.key) if not fk.validated else None,
            "indexed": fk.indexed,
            "partitioned": fk.partitioned,
            "rows (est.)": fk.child_rows,
            "comment": fk.comment,
        })
    # Explicit columns: a database where no FK reaches the parent still gives a frame to filter.
    return pd.DataFrame(rows, columns=FK_COLUMNS)


def deletion_set_frame(snapshot: Snapshot) -> pd.DataFrame:
    dset = deletion_set(snapshot.foreign_keys, snapshot.parent)
    rows = []
    for key, distance in sorted(dset.items(), key=lambda kv: (kv[1], kv[0])):
        info = snapshot.table(key)
        rows.append({"table": qualname(key), "distance": distance,
                     "kind": {"p": "partitioned", "r": "table"}.get(info.kind, info.kind) if info else "?",
                     "rows (est.)": info.rows if info else None})
    return pd.DataFrame(rows)


def plan_frame(plan: Plan, *, changes_only: bool = False) -> pd.DataFrame:
    rows = []
    for item in plan.items:
        if changes_only and not item.change:
            continue
        rows.append({
            "constraint": item.fk.key,
            "kind": item.kind,
            "current": item.current,
            "planned": item.planned,
            "change": "yes" if item.change else ("validate" if item.pending_validation else "no"),
            "override": item.override or "",
        })
    return pd.DataFrame(rows)


def reasons_frame(plan: Plan) -> pd.DataFrame:
    """Why each rule, and what deserves a second look (kept apart: the text is long)."""
    return pd.DataFrame([{"constraint": i.fk.key, "why": i.reason, "flags": "; ".join(i.flags)}
                         for i in plan.items])


def behaviour_frame(plan: Plan) -> pd.DataFrame:
    return pd.DataFrame([{"constraint": i.fk.key, "behaviour": i.behaviour, "lock cost": i.lock_cost}
                         for i in plan.actions])


def records_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(list(records))


def fk_brief(fk: ForeignKey) -> str:
    return f"{fk.key}: {fk.definition}"


def decisions_frame(plan: Plan) -> pd.DataFrame:
    """Each open decision: the question, the rules that close it and what each would do, the facts."""
    rows = [{"constraint": i.fk.key, "question": i.decision.question,
             "options": "\n".join(f"{o.rule}: {o.effect}" for o in i.decision.options),
             "facts": "\n".join(i.decision.facts)}
            for i in plan.decisions if i.decision is not None]
    return pd.DataFrame(rows, columns=["constraint", "question", "options", "facts"])


def references_frame(snapshot: Snapshot) -> pd.DataFrame:
    """Columns that look like references to the parent but that no foreign key protects."""
    rows = [{"table": qualname(r.child), "column": r.column, "type": r.type_name, "why": r.matched,
             "rows (est.)": r.rows, "pointing at existing": r.existing, "pointing at missing": r.missing,
             "counted": "sample, scaled" if r.sampled else ("exactly" if r.existing is not None else "not counted"),
             "indexed": r.indexed} for r in snapshot.references]
    return pd.DataFrame(rows, columns=["table", "column", "type", "why", "rows (est.)", "pointing at existing",
                                       "pointing at missing", "counted", "indexed"])


_EFFECT = {"CASCADE": "deleted", "SET NULL": "kept, detached (set to NULL)", "SET DEFAULT": "kept, reassigned",
           "NO ACTION": "blocks the delete", "RESTRICT": "blocks the delete"}


def collateral_frame(plan: Plan) -> pd.DataFrame:
    """Per path: what a user's delete does to rows that may belong to someone else (edges the policy
    does not count as the user's ownership), under the planned rules."""
    rows = []
    for item in plan.items:
        if item.kind in (OWNERSHIP, SELF_REFERENCE, ADDED) or item.reason.startswith(NOT_REACHED):
            continue
        effect = "undecided" if item.open else _EFFECT.get(item.planned, item.planned)
        if item.ghost_defaults:
            effect = "kept, reassigned to the ghost row"
        rows.append({"path": " → ".join(cascade_path(plan, item)), "class": item.kind,
                     "rule": "decision" if item.open else item.planned, "other owners' rows": effect,
                     "facts": "; ".join(plan.facts.get(item.fk.key, ()))})
    return pd.DataFrame(rows, columns=["path", "class", "rule", "other owners' rows", "facts"])


def cascade_path(plan: Plan, item: PlanItem) -> list[str]:
    """The shortest chain of planned cascades from the parent to ``item``'s edge, as text."""
    by_child: dict[tuple[str, str], list[PlanItem]] = {}
    for other in plan.items:
        if other.planned == "CASCADE" or other.open:
            by_child.setdefault(other.fk.child, []).append(other)
    chain = [f"{qualname(item.fk.child)} ({', '.join(item.fk.columns)})"]
    table, seen = item.fk.parent, set()
    while table != plan.parent and table not in seen:
        seen.add(table)
        step = min(by_child.get(table, []), key=lambda i: plan.deletion_set.get(i.fk.parent, 99), default=None)
        if step is None:
            break
        chain.append(f"{qualname(table)} ({', '.join(step.fk.columns)})")
        table = step.fk.parent
    chain.append(qualname(plan.parent))
    return list(reversed(chain))


def unprotected_frame(found: list[UserReference]) -> pd.DataFrame:
    """One user's rows that no foreign key reaches: the delete leaves them behind."""
    return pd.DataFrame([{"table": f"{r.column.schema}.{r.column.table}", "column": r.column.column,
                          "rows": r.rows, "note": r.note} for r in found],
                        columns=["table", "column", "rows", "note"])


def collateral_rows_frame(found: list[Collateral]) -> pd.DataFrame:
    """Other users' rows one user's delete removes or detaches, per table and path."""
    return pd.DataFrame([{"table": qualname(c.table), "rows": c.rows, "effect": c.effect, "owner edge": c.owner_edge,
                          "via": c.via} for c in found], columns=["table", "rows", "effect", "owner edge", "via"])
