"""Which foreign keys mean ownership: every edge into the deletion set gets a class and a reason.

Pure computation over the FKs. The classes (see the design's policy):

- ``ownership``: the child row exists for its owner: an owner-like column name, or NOT NULL with no
  actor-like name, on a shortest path to the parent; when a table has several such edges, one
  owner-like name wins, several FKs to one table own nothing, and edges to different tables that
  cannot be told apart are ``ambiguous``.
- ``reference``: someone who acted on a row: an actor-like name, a nullable edge with a neutral name,
  or one of several FKs from one table to the same table where none is the owner.
- ``shared``: an edge of an owned table into another table of the set (another user's comment on this
  user's post): following it could delete someone else's row. A composite FK that carries the owner
  column on both sides (``(user_id, goal_id) -> goals (user_id, id)``) is the same owner by
  construction and stays ownership.
- ``self-reference``: the parent's own FK to itself.
- ``cross``: any other edge into the set (from a table nobody owns).
"""
from __future__ import annotations

import fnmatch
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from .catalog import ForeignKey, TableKey, qualname
from .graph import deletion_set

OWNERSHIP = "ownership"
AMBIGUOUS = "ambiguous ownership"
REFERENCE = "reference"
SHARED = "shared"
SELF_REFERENCE = "parent self-reference"
CROSS = "cross edge"

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[^A-Za-z0-9*]+")


@dataclass(frozen=True)
class Vocabulary:
    """Column-name patterns (globs) that mark owners and actors; ``{parent}`` is the parent's name."""
    owners: tuple[str, ...]
    actors: tuple[str, ...]
    parent: str

    def _expand(self, patterns: Iterable[str]) -> list[str]:
        names = {normalize(self.parent)}
        if self.parent.endswith("s"):
            names.add(normalize(self.parent[:-1]))
        out: list[str] = []
        for pattern in patterns:
            if "{parent}" in pattern:
                out.extend(normalize(pattern.replace("{parent}", n)) for n in sorted(names))
            else:
                out.append(normalize(pattern))
        return out

    def owner_named(self, columns: Sequence[str]) -> bool:
        pats = self._expand(self.owners)
        return any(fnmatch.fnmatchcase(normalize(c), p) for c in columns for p in pats)

    def actor_named(self, columns: Sequence[str]) -> bool:
        pats = self._expand(self.actors)
        return any(fnmatch.fnmatchcase(normalize(c), p) for c in columns for p in pats)


def normalize(name: str) -> str:
    """``createdBy``, ``Created By`` and ``created_by`` compare equal."""
    return _SEPARATORS.sub("_", _CAMEL.sub("_", name)).strip("_").lower()


@dataclass(frozen=True)
class EdgeClass:
    kind: str
    reason: str
    owner_named: bool = False
    actor_named: bool = False
    # For shared and ambiguous edges: the edges through which the same table is owned.
    owners: tuple[str, ...] = ()


def _names(fk: ForeignKey) -> str:
    return ", ".join(fk.columns)


def _same_owner(fk: ForeignKey, own: Iterable[ForeignKey], ref_own: Iterable[ForeignKey],
                parent: TableKey) -> bool:
    """The FK maps the child's owner column onto the referenced table's owner column (both direct to
    the parent, on the same parent column): whatever it references belongs to the same owner."""
    pairs = dict(zip(fk.columns, fk.ref_columns))
    for mine in own:
        if mine.parent != parent:
            continue
        for theirs in ref_own:
            if theirs.parent != parent:
                continue
            mine_to_parent = dict(zip(mine.columns, mine.ref_columns))
            theirs_to_parent = dict(zip(theirs.columns, theirs.ref_columns))
            if any(pairs.get(c) in theirs_to_parent and theirs_to_parent[pairs[c]] == pcol
                   for c, pcol in mine_to_parent.items()):
                return True
    return False


class _Classifier:
    def __init__(self, fks: Sequence[ForeignKey], parent: TableKey, vocabulary: Vocabulary) -> None:
        self.parent = parent
        self.vocab = vocabulary
        self.dset = deletion_set(fks, parent)
        self.edges = [fk for fk in fks if fk.parent in self.dset]
        self.by_child: dict[TableKey, list[ForeignKey]] = defaultdict(list)
        for fk in self.edges:
            self.by_child[fk.child].append(fk)
        self.result: dict[str, EdgeClass] = {}
        self.owning: dict[TableKey, list[ForeignKey]] = defaultdict(list)

    def on_shortest_path(self, fk: ForeignKey) -> bool:
        return (fk.child != fk.parent and fk.child in self.dset
                and self.dset[fk.child] == self.dset[fk.parent] + 1)

    def run(self) -> dict[str, EdgeClass]:
        for table in sorted(self.by_child, key=lambda t: (self.dset.get(t, 0), t)):
            self.table_owners(table, self.by_child[table])
        for fk in self.edges:
            if fk.key not in self.result:
                self.result[fk.key] = self.off_path(fk)
        return self.result

    def table_owners(self, table: TableKey, edges: list[ForeignKey]) -> None:
        """Classify a table's edges on its shortest paths: who owns its rows."""
        by_target: dict[TableKey, list[ForeignKey]] = defaultdict(list)
        for fk in edges:
            if fk.child == self.parent and fk.parent == self.parent:
                self.result[fk.key] = EdgeClass(SELF_REFERENCE, "self-reference of the parent table")
            elif self.on_shortest_path(fk):
                by_target[fk.parent].append(fk)
        candidates = []
        for group in by_target.values():
            if len(group) > 1:
                candidates.extend(self.several(table, group))
                continue
            fk = group[0]
            owner, actor = self.vocab.owner_named(fk.columns), self.vocab.actor_named(fk.columns)
            if actor:
                self.result[fk.key] = EdgeClass(REFERENCE, f"{_names(fk)} is named like an actor (someone who "
                                                           "acted on the row, not its owner)", owner, actor)
            elif owner or not fk.nullable:
                candidates.append(fk)
            else:
                self.result[fk.key] = EdgeClass(REFERENCE, f"nullable {_names(fk)} with no owner-like name: the "
                                                           "row can exist without it, so it does not own the row")
        self.choose_owner(table, candidates)

    def several(self, table: TableKey, group: list[ForeignKey]) -> list[ForeignKey]:
        """Several FKs from one table to one table: at most one owns, and only one named like an owner."""
        named = [fk for fk in group if self.vocab.owner_named(fk.columns) and not self.vocab.actor_named(fk.columns)]
        target = qualname(group[0].parent)
        for fk in group:
            if len(named) == 1 and fk is named[0]:
                continue
            why = (f"{qualname(table)} is owned through {_names(named[0])}; {_names(fk)} only refers to another "
                   f"{target} row" if len(named) == 1 else
                   f"one of {len(group)} foreign keys from {qualname(table)} to {target} and "
                   f"{'none' if not named else 'more than one'} is named like the owner: at most one owns the row")
            self.result[fk.key] = EdgeClass(REFERENCE, why, self.vocab.owner_named(fk.columns),
                                            self.vocab.actor_named(fk.columns), tuple(n.key for n in named))
        return named if len(named) == 1 else []

    def choose_owner(self, table: TableKey, candidates: list[ForeignKey]) -> None:
        """Among edges to different tables, the owner is the only candidate or the only owner-like name;
        the others are judged as edges off the ownership path (shared). None stands out: ambiguous."""
        if not candidates:
            return
        named = [fk for fk in candidates if self.vocab.owner_named(fk.columns)]
        if len(candidates) == 1 or len(named) == 1:
            owner = candidates[0] if len(candidates) == 1 else named[0]
            why = (f"{_names(owner)} is named like an owner" if self.vocab.owner_named(owner.columns)
                   else f"NOT NULL {_names(owner)}: the row cannot exist without its {qualname(owner.parent)} row")
            self.result[owner.key] = EdgeClass(OWNERSHIP, f"{why} (distance {self.dset[table]} from "
                                                          f"{qualname(self.parent)})", owner in named)
            self.owning[table].append(owner)
            return
        keys = tuple(fk.key for fk in candidates)
        for fk in candidates:
            others = ", ".join(f"{qualname(o.parent)} ({_names(o)})" for o in candidates if o is not fk)
            self.result[fk.key] = EdgeClass(
                AMBIGUOUS, f"{qualname(table)} hangs off {qualname(fk.parent)} ({_names(fk)}) and off {others}: "
                           "rows of different owners may meet here, and the catalog cannot tell which one owns "
                           "the row", False, False, tuple(k for k in keys if k != fk.key))

    def off_path(self, fk: ForeignKey) -> EdgeClass:
        """An edge that is not on a shortest path (or was not classified there)."""
        owner, actor = self.vocab.owner_named(fk.columns), self.vocab.actor_named(fk.columns)
        if actor:
            return EdgeClass(REFERENCE, f"{_names(fk)} is named like an actor (someone who acted on the row, "
                                        "not its owner)", owner, actor)
        own = self.owning.get(fk.child, [])
        if own:
            if _same_owner(fk, own, self.owning.get(fk.parent, []), self.parent):
                return EdgeClass(OWNERSHIP, f"the key ({_names(fk)}) carries the owner column to the owner "
                                            f"column of {qualname(fk.parent)}: the same owner by construction",
                                 owner)
            return EdgeClass(SHARED, f"{qualname(fk.child)} has an owner of its own ({', '.join(_names(o) for o in own)}); "
                                     f"{_names(fk)} leads to a {qualname(fk.parent)} row that may belong to "
                                     "someone else", owner, actor, tuple(o.key for o in own))
        return EdgeClass(CROSS, f"{qualname(fk.child)} is not owned through this edge (not on a shortest path "
                                f"to {qualname(self.parent)})", owner, actor)


def classify(fks: Sequence[ForeignKey], parent: TableKey, vocabulary: Vocabulary) -> dict[str, EdgeClass]:
    """The class of every FK into the deletion set, keyed by ``ForeignKey.key``."""
    return _Classifier(fks, parent, vocabulary).run()


def owners_of(classes: Mapping[str, EdgeClass], fks: Iterable[ForeignKey]) -> dict[TableKey, list[ForeignKey]]:
    """Each table's ownership edges."""
    found: dict[TableKey, list[ForeignKey]] = defaultdict(list)
    for fk in fks:
        if classes.get(fk.key) is not None and classes[fk.key].kind == OWNERSHIP:
            found[fk.child].append(fk)
    return dict(found)
