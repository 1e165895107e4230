"""The tables a notebook shows: pandas DataFrames built from snapshots, plans and results."""
from __future__ import annotations

from typing import Any, Iterable

import pandas as pd

from .catalog import ForeignKey, Snapshot, qualname
from .graph import deletion_set
from .plan import Plan


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
    return pd.DataFrame(rows)


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
