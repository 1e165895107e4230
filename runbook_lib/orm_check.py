"""The application's SQLAlchemy models against the plan: what would undo it, or fight it.

Two traps follow a change made behind the models' back. Alembic's autogenerate compares each FK's
``ondelete`` with the models, so a model that does not say what the database now does makes the next
revision drop and re-create the FK with the old rule. And a ``relationship()`` from the parent to a
child whose FK the database now cascades, without ``passive_deletes=True``, makes
``session.delete(parent)`` load every child and delete it (or blank out its key) row by row. The
models are read with SQLAlchemy's own inspection (``sqlalchemy.inspect``, ``Mapper.relationships``,
``ForeignKeyConstraint.ondelete``); only the line numbers come from the source.
"""
from __future__ import annotations

import importlib
import inspect as pyinspect
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Mapper, RelationshipDirection, RelationshipProperty, configure_mappers

from .catalog import ForeignKey, TableKey, qualname
from .errors import RunbookError
from .plan import Plan, PlanItem



@dataclass(frozen=True)
class Finding:
    where: str      # file:line (or the module file when no line is known)
    model: str      # Class.attribute, or the table
    constraint: str
    problem: str    # what happens if it stays
    fix: str        # what to write

    def to_dict(self) -> dict[str, str]:
        return {"where": self.where, "model": self.model, "constraint": self.constraint,
                "problem": self.problem, "fix": self.fix}


@dataclass(frozen=True)
class Models:
    metadata: sa.MetaData
    mappers: tuple[Mapper[Any], ...]
    origin: str
    # Where a table without a schema lives: the connection's current_schema().
    default_schema: str = "public"

    def key(self, table: sa.Table) -> TableKey:
        return (table.schema or self.default_schema, table.name)


# ---------------------------------------------------------------- loading the models


def load(spec: str, search: Iterable[str] = ()) -> Models:
    """``module[:attr]``: a declarative base (its registry gives the mappers) or a MetaData."""
    module_name, _, attr = spec.partition(":")
    for path in search:
        if path not in sys.path:
            sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the application's import is bad input
        raise RunbookError(f"--models {spec}: cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    names = [attr] if attr else ["Base", "metadata"]
    found = next((getattr(module, n) for n in names if hasattr(module, n)), None)
    if found is None:
        raise RunbookError(f"--models {spec}: {module_name} has no {' or '.join(names)}")
    if isinstance(found, sa.MetaData):
        return Models(found, (), spec)
    registry = getattr(found, "registry", None)
    metadata = getattr(found, "metadata", None)
    if registry is None or not isinstance(metadata, sa.MetaData):
        raise RunbookError(f"--models {spec}: not a declarative base or a MetaData ({type(found).__name__})")
    try:
        configure_mappers()
    except Exception as exc:  # noqa: BLE001 - the models themselves are broken: bad input
        raise RunbookError(f"--models {spec}: the mappers do not configure: {exc}") from None
    return Models(metadata, tuple(registry.mappers), spec)


# ---------------------------------------------------------------- where in the source


def _line_of(cls: type, attribute: str) -> str:
    try:
        path = pyinspect.getsourcefile(cls) or "?"
        lines, start = pyinspect.getsourcelines(cls)
    except (OSError, TypeError):
        return f"{cls.__module__}.{cls.__qualname__}"
    pattern = re.compile(rf"^\s*{re.escape(attribute)}\s*[:=]")
    offset = next((n for n, line in enumerate(lines) if pattern.match(line)), 0)
    return f"{path}:{start + offset}"


def _mapper_for(models: Models, table: sa.Table) -> Mapper[Any] | None:
    return next((m for m in models.mappers if m.local_table is table), None)


# ---------------------------------------------------------------- (a) ondelete in the models


def _rule(value: str | None) -> str:
    return (value or "NO ACTION").upper()


def _model_fk(models: Models, fk: ForeignKey) -> sa.ForeignKeyConstraint | None:
    for table in models.metadata.tables.values():
        if models.key(table) != fk.child:
            continue
        for constraint in table.foreign_key_constraints:
            try:
                target = models.key(constraint.referred_table)
                ref_columns = tuple(e.column.name for e in constraint.elements)
            except (sa.exc.NoReferencedTableError, sa.exc.NoReferencedColumnError):
                continue  # points at a table the models do not declare: not one of the plan's
            if tuple(constraint.column_keys) == fk.columns and target == fk.parent and ref_columns == fk.ref_columns:
                return constraint
    return None


def _ondelete_fix(constraint: sa.ForeignKeyConstraint, rule: str) -> str:
    option = "" if rule == "NO ACTION" else f", ondelete={rule!r}"
    option = option.replace("'", '"')
    if len(constraint.elements) == 1:
        return f'ForeignKey("{constraint.elements[0].target_fullname}"{option})'
    local = ", ".join(f'"{c}"' for c in constraint.column_keys)
    remote = ", ".join(f'"{e.target_fullname}"' for e in constraint.elements)
    return f"ForeignKeyConstraint([{local}], [{remote}]{option})"


def _where(models: Models, table: sa.Table, column: str | None) -> tuple[str, str]:
    mapper = _mapper_for(models, table)
    if mapper is None:
        return f"{models.origin} (table {table.fullname})", table.fullname
    attribute = "__table_args__"
    if column is not None:
        attribute = mapper.get_property_by_column(table.c[column]).key if column in table.c else column
    return _line_of(mapper.class_, attribute), f"{mapper.class_.__name__}.{attribute}"


def ondelete_findings(models: Models, item: PlanItem) -> list[Finding]:
    constraint = _model_fk(models, item.fk)
    if constraint is None or _rule(constraint.ondelete) == item.planned:
        return []
    # A composite FK is declared in __table_args__, a single-column one on its column.
    where, model = _where(models, constraint.table, item.fk.columns[0] if len(item.fk.columns) == 1 else None)
    said = f"ondelete={constraint.ondelete!r}" if constraint.ondelete else "no ondelete"
    return [Finding(where, model, item.fk.key,
                    f"the model has {said}, the database will have ON DELETE {item.planned}: "
                    f"the next alembic autogenerate drops and re-creates the FK as ON DELETE "
                    f"{_rule(constraint.ondelete)}",
                    _ondelete_fix(constraint, item.planned))]


# ---------------------------------------------------------------- (b) relationships


def _relationships_into(models: Models, fk: ForeignKey) -> list[RelationshipProperty[Any]]:
    found: list[RelationshipProperty[Any]] = []
    for mapper in models.mappers:
        if models.key(mapper.local_table) != fk.parent:  # type: ignore[arg-type]
            continue
        for rel in mapper.relationships:
            # A subclass mapper lists the relationships it inherits: each is reported once.
            if rel.direction is not RelationshipDirection.ONETOMANY or rel.secondary is not None or rel in found:
                continue
            child = [c for _p, c in rel.synchronize_pairs]
            if (child and isinstance(child[0].table, sa.Table) and models.key(child[0].table) == fk.child
                    and tuple(c.name for c in child) == fk.columns):
                found.append(rel)
    return found


def _blank_out(fk: ForeignKey, rel: RelationshipProperty[Any]) -> str | None:
    """Why setting the child's key to NULL fails, if it does."""
    child = [c for _p, c in rel.synchronize_pairs]
    if any(c.primary_key for c in child):
        return "its key is part of the primary key (\"tried to blank-out primary key column\")"
    if any(fk.columns_not_null) or any(not c.nullable for c in child):
        return "the column is NOT NULL (IntegrityError)"
    return None


def _relationship_problem(fk: ForeignKey, rule: str, rel: RelationshipProperty[Any]) -> tuple[str, str] | None:
    deletes = rel.cascade.delete or rel.cascade.delete_orphan
    passive = rel.passive_deletes
    name = f"{rel.parent.class_.__name__}.{rel.key}"
    if rule == "CASCADE":
        if passive == "all":
            return ("passive_deletes='all': children already in the session stay there as if they still existed "
                    "after the database deleted them", 'cascade="all, delete-orphan", passive_deletes=True')
        if passive is True and deletes:
            return None
        if deletes:
            return (f"session.delete(parent) SELECTs every {qualname(fk.child)} row of {name} and DELETEs them one "
                    "by one; the database would cascade in one statement", "passive_deletes=True")
        blank = _blank_out(fk, rel)
        what = f"UPDATEs every loaded {qualname(fk.child)} row to set {', '.join(fk.columns)} to NULL"
        if blank:
            what += f", which fails: {blank}"
        return (f"session.delete(parent) {'loads the children and ' if passive is not True else ''}{what}, "
                "instead of letting the database delete them", 'cascade="all, delete-orphan", passive_deletes=True')
    if rule in ("SET NULL", "SET DEFAULT"):
        if deletes:
            return (f"cascade=\"{', '.join(sorted(rel.cascade))}\" makes session.delete(parent) DELETE the {qualname(fk.child)} "
                    f"rows the database keeps ({rule})", 'cascade="save-update, merge", passive_deletes=True')
        if passive is not True:
            return (f"session.delete(parent) SELECTs every {qualname(fk.child)} row of {name} and UPDATEs them one "
                    f"by one; the database does it ({rule}) in the same statement", "passive_deletes=True")
    return None


def relationship_findings(models: Models, item: PlanItem) -> list[Finding]:
    findings = []
    for rel in _relationships_into(models, item.fk):
        problem = _relationship_problem(item.fk, item.planned, rel)
        if problem is None:
            continue
        what, options = problem
        findings.append(Finding(_line_of(rel.parent.class_, rel.key), f"{rel.parent.class_.__name__}.{rel.key}",
                                item.fk.key, what, f"relationship(..., {options})"))
    return findings


def check(models: Models, plan: Plan) -> list[Finding]:
    """Every disagreement between the models and the database after the plan (open decisions aside)."""
    findings: list[Finding] = []
    for item in plan.items:
        if item.open:
            continue
        findings += ondelete_findings(models, item) + relationship_findings(models, item)
    return findings


def modelled(models: Models, plan: Plan) -> int:
    return sum(1 for i in plan.items if _model_fk(models, i.fk) is not None)
