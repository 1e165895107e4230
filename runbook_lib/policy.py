"""The policy: which rule each class of edge gets, and when the plan must stop and ask.

Pure functions. The precedence (the design's): an explicit ``rules`` override wins (applied by
``plan.make_plan``); an existing rule that deletes nothing (SET NULL, SET DEFAULT) is kept; the
parent's self-reference never cascades; reference edges are set to NULL when nullable; ownership
edges cascade; shared rows and other cross edges are set to NULL when nullable; everything that would
otherwise delete or block without the catalog being able to tell whose rows they are is a *decision*:
listed with its options and the facts that inform it, and closed only by a rule in the parameters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .catalog import ForeignKey, TableKey, qualname
from .classify import AMBIGUOUS, CROSS, OWNERSHIP, REFERENCE, SELF_REFERENCE, SHARED, EdgeClass

KEEPS_ROWS = ("SET NULL", "SET DEFAULT")


@dataclass(frozen=True)
class Option:
    rule: str  # what to write in `rules`: keep | ghost | CASCADE | SET NULL
    effect: str

    def to_dict(self) -> dict[str, str]:
        return {"rule": self.rule, "effect": self.effect}


@dataclass(frozen=True)
class Decision:
    """A question the catalog cannot answer; the plan step stops until a rule answers it."""
    question: str
    options: tuple[Option, ...]
    facts: tuple[str, ...] = ()

    @property
    def rules(self) -> tuple[str, ...]:
        return tuple(o.rule for o in self.options)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "options": [o.to_dict() for o in self.options],
                "facts": list(self.facts)}


@dataclass(frozen=True)
class Verdict:
    planned: str
    reason: str
    flags: tuple[str, ...] = ()
    decision: Decision | None = None


@dataclass(frozen=True)
class Context:
    """What the policy needs beyond the edge itself."""
    parent: TableKey
    facts: tuple[str, ...] = field(default_factory=tuple)


def _keep_effect(fk: ForeignKey, kind: str) -> str:
    child = qualname(fk.child)
    if fk.on_delete == "CASCADE":
        return f"stays CASCADE: {child} rows that reference a deleted row are deleted, whoever owns them"
    if kind in (SHARED, CROSS, AMBIGUOUS):
        return (f"stays {fk.on_delete}: the delete fails while {child} rows of others reference the deleted "
                "rows (checked when the statement that deleted them ends, so the outcome can depend on "
                "trigger order); the preview says so")
    return f"stays {fk.on_delete}: deleting the user fails while {child} rows reference it; the preview says so"


def _options(fk: ForeignKey, kind: str, ctx: Context, *, cascade: bool = True) -> tuple[Option, ...]:
    child, cols = qualname(fk.child), ", ".join(fk.columns)
    options = [Option("keep", _keep_effect(fk, kind))]
    if fk.parent == ctx.parent:
        options.append(Option("ghost", f"{child} rows are kept and reassigned to the ghost "
                                        f"{qualname(ctx.parent)} row (ghost.key): {cols} defaults to its key "
                                        "and the FK becomes ON DELETE SET DEFAULT"))
    if fk.nullable:
        options.append(Option("SET NULL", f"{child} rows are kept with {cols} set to NULL"))
    if cascade and fk.on_delete != "CASCADE":
        options.append(Option("CASCADE", f"{child} rows that reference a deleted {qualname(fk.parent)} row "
                                         "are deleted with it, whoever owns them"))
    return tuple(options)


def _decision(fk: ForeignKey, kind: str, question: str, ctx: Context, *, cascade: bool = True) -> Verdict:
    options = _options(fk, kind, ctx, cascade=cascade)
    return Verdict(fk.on_delete, f"decision: {question}",
                   decision=Decision(question, options, ctx.facts))


def _kept(fk: ForeignKey, cls: EdgeClass) -> Verdict:
    flags: tuple[str, ...] = ()
    if cls.kind == OWNERSHIP:
        flags = (f"kept {fk.on_delete}: these rows outlive their owner",)
    return Verdict(fk.on_delete, f"{cls.kind} ({cls.reason}); the current {fk.on_delete} deletes no row and "
                                 "was chosen on purpose: kept", flags)


def _self_reference(fk: ForeignKey, cls: EdgeClass, ctx: Context) -> Verdict:
    parent = qualname(ctx.parent)
    if fk.on_delete == "CASCADE":
        return _decision(fk, cls.kind, f"the parent's self-reference {fk.name} is CASCADE: deleting one "
                                       f"{parent} row deletes the other {parent} rows that point at it",
                         ctx, cascade=False)
    if fk.nullable:
        return Verdict("SET NULL", f"self-reference of the parent: CASCADE would delete other {parent} rows; "
                                   "SET NULL keeps them")
    return _decision(fk, cls.kind, f"the parent's self-reference {fk.name} ({', '.join(fk.columns)}) is NOT NULL: "
                                   f"other {parent} rows point at the one deleted", ctx, cascade=False)


def _not_owned(fk: ForeignKey, cls: EdgeClass, ctx: Context) -> Verdict:
    """Reference, shared, cross and ambiguous edges: never delete someone else's rows unasked."""
    child, ref, cols = qualname(fk.child), qualname(fk.parent), ", ".join(fk.columns)
    if fk.on_delete == "CASCADE":
        return _decision(fk, cls.kind, f"{child}.{cols} is a {cls.kind} edge ({cls.reason}) that already "
                                       f"cascades: deleting a user deletes {child} rows that may be other "
                                       "users'", ctx)
    if cls.kind == AMBIGUOUS:
        return _decision(fk, cls.kind, f"does {ref} own {child} rows through {cols}? {cls.reason}", ctx)
    if fk.nullable:
        why = {REFERENCE: "a reference, not ownership",
               SHARED: "the referenced row may belong to another owner",
               CROSS: "not on an ownership path"}[cls.kind]
        return Verdict("SET NULL", f"{cls.kind}: {cls.reason}; {why}, so SET NULL keeps the {child} rows and "
                                   "lets the delete succeed")
    what = {REFERENCE: f"{child}.{cols} is a NOT NULL reference ({cls.reason})",
            SHARED: f"{child} rows of other owners can hang off the deleted {ref} rows through NOT NULL {cols}",
            CROSS: f"{child}.{cols} is a NOT NULL edge off the ownership paths ({cls.reason})"}[cls.kind]
    return _decision(fk, cls.kind, what, ctx)


def decide(fk: ForeignKey, cls: EdgeClass, ctx: Context) -> Verdict:
    """The rule the policy gives ``fk`` (before any override)."""
    if fk.on_delete in KEEPS_ROWS:
        return _kept(fk, cls)
    if cls.kind == SELF_REFERENCE:
        return _self_reference(fk, cls, ctx)
    if cls.kind == OWNERSHIP:
        flags = ("policy change: explicit RESTRICT converted to CASCADE",) if fk.on_delete == "RESTRICT" else ()
        return Verdict("CASCADE", f"ownership: {cls.reason}", flags)
    return _not_owned(fk, cls, ctx)
