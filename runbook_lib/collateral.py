"""Collateral of one user's delete: rows it removes or detaches that belong to another user.

A row belongs to a user through its owner edge: an FK straight to the parent that the policy classes
as ownership (or, in a table with no such edge, an FK to the parent whose columns are NOT NULL, the
creator of a comment, for example). A row the delete reaches whose owner edge names a different
parent row is someone else's: the preview lists those rows per table and per path, so that a DBA sees
what a user's deletion would do to other people's data before anything is deleted. Pure computation
over a preview: the rows and their FK values are already there.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from .catalog import ForeignKey, TableKey, qualname
from .classify import Vocabulary, classify, owners_of
from .params import Parameters
from .deletion.preview import Preview, PreviewRow


@dataclass(frozen=True)
class Collateral:
    table: TableKey
    effect: str               # "deleted" or "detached"
    via: str                  # the FK(s) through which the cascade reached the rows
    owner_edge: str           # the FK that names the rows' owner
    rows: int

    @property
    def text(self) -> str:
        return (f"{self.rows} row(s) of {qualname(self.table)} owned by another user "
                f"(by {self.owner_edge}) {self.effect}, reached via {self.via}")


def owner_edges(fks: Iterable[ForeignKey], parent: TableKey, params: Parameters) -> dict[TableKey, list[ForeignKey]]:
    """Per table, the FKs to the parent that say whose row it is."""
    fks = tuple(fks)
    vocab = Vocabulary(tuple(params.owner_columns), tuple(params.actor_columns), parent[1])
    owners = owners_of(classify(fks, parent, vocab), fks)
    found: dict[TableKey, list[ForeignKey]] = {}
    for fk in fks:
        if fk.parent != parent or fk.child == parent:
            continue
        own = [o for o in owners.get(fk.child, []) if o.parent == parent]
        if own:
            found[fk.child] = own
        elif all(fk.columns_not_null):
            found.setdefault(fk.child, []).append(fk)
    return found


def _others(rows: Iterable[PreviewRow], edges: list[ForeignKey], user: Mapping[str, str | None]) -> dict[str, int]:
    """Rows whose owner edge names a parent row other than the user, counted per owner edge."""
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        for fk in edges:
            values = [row.values.get(col) for col in fk.columns]
            if None in values:
                continue
            if values != [user.get(col) for col in fk.ref_columns]:
                counts[f"{fk.name} ({', '.join(fk.columns)})"] += 1
                break
    return counts


def of_preview(preview: Preview, params: Parameters) -> list[Collateral]:
    """Every group of other users' rows the previewed delete removes or detaches."""
    edges = owner_edges(preview.foreign_keys, preview.parent, params)
    found = []
    for table, rows in sorted(preview.deleted.items()):
        if table == preview.parent or table not in edges:
            continue
        via = ", ".join(sorted(preview.via.get(table, ())))
        for edge, count in _others(rows.values(), edges[table], preview.user_key).items():
            found.append(Collateral(table, "deleted", via, edge, count))
    for detached in preview.detached.values():
        if detached.table not in edges:
            continue
        for edge, count in _others(detached.rows.values(), edges[detached.table], preview.user_key).items():
            found.append(Collateral(detached.table, f"detached ({detached.rule})", detached.constraint, edge, count))
    return found
