"""The deletion set and the cascade tree: pure functions over foreign keys."""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Hashable, Iterable, Mapping, TypeVar

from .model import ForeignKey, TableKey, qualname

Node = TypeVar("Node", bound=Hashable)


def deletion_set(fks: Iterable[ForeignKey], parent: TableKey) -> dict[TableKey, int]:
    """Every table that can reach ``parent`` by following FKs, with its shortest distance in hops.

    Breadth-first from the parent over reversed edges, so the first distance found is the shortest.
    """
    referencing: dict[TableKey, list[ForeignKey]] = {}
    for fk in fks:
        referencing.setdefault(fk.parent, []).append(fk)
    distance = {parent: 0}
    queue = deque([parent])
    while queue:
        table = queue.popleft()
        for fk in referencing.get(table, []):
            if fk.child not in distance:
                distance[fk.child] = distance[table] + 1
                queue.append(fk.child)
    return distance


def in_scope(fks: Iterable[ForeignKey], dset: Mapping[TableKey, int]) -> list[ForeignKey]:
    """The FKs whose referenced table is in the deletion set: the only ones the runbook may touch."""
    return [fk for fk in fks if fk.parent in dset]


def is_ownership(fk: ForeignKey, dset: Mapping[TableKey, int]) -> bool:
    """An edge on a shortest path from its table to the parent."""
    return (
        fk.child != fk.parent
        and fk.parent in dset
        and fk.child in dset
        and dset[fk.child] == dset[fk.parent] + 1
    )


def cascade_tree_lines(fks: Iterable[ForeignKey], parent: TableKey,
                       rule_of: Mapping[str, str] | None = None) -> list[str]:
    """A text drawing of the ownership tree, each edge labelled with its rule.

    ``rule_of`` maps an FK key to the rule to show (e.g. the planned one); by default the current rule.
    """
    fk_list = list(fks)
    dset = deletion_set(fk_list, parent)
    children: dict[TableKey, list[ForeignKey]] = {}
    for fk in fk_list:
        if is_ownership(fk, dset):
            children.setdefault(fk.parent, []).append(fk)
    for edges in children.values():
        edges.sort(key=lambda f: (f.schema, f.table, f.name))
    lines = [qualname(parent)]
    seen: set[TableKey] = {parent}

    def walk(table: TableKey, prefix: str) -> None:
        edges = children.get(table, [])
        for i, fk in enumerate(edges):
            last = i == len(edges) - 1
            rule = (rule_of or {}).get(fk.key, fk.on_delete)
            again = fk.child in seen
            suffix = " (see above)" if again else ""
            lines.append(f"{prefix}{'└── ' if last else '├── '}{qualname(fk.child)} "
                         f"[{', '.join(fk.columns)}] {rule}{suffix}")
            if not again:
                seen.add(fk.child)
                walk(fk.child, prefix + ("    " if last else "│   "))

    walk(parent, "")
    return lines


def layered_order(nodes: Iterable[Node], waits_for: Mapping[Node, set[Node]], *, key: Callable[[Node], Any],
                  on_cycle: Callable[[set[Node]], Node]) -> list[Node]:
    """Kahn's order: each round takes every node none of whose ``waits_for`` remain, sorted by ``key``;
    when a cycle leaves none ready, ``on_cycle`` picks the one to take (and may say so)."""
    remaining = set(nodes)
    order: list[Node] = []
    while remaining:
        ready = sorted((n for n in remaining if not (waits_for.get(n, set()) & remaining)), key=key)
        if not ready:
            ready = [on_cycle(remaining)]
        order.extend(ready)
        remaining.difference_update(ready)
    return order
