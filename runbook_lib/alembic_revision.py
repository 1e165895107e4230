"""The plan as an Alembic revision: the team's own migration history carries the change.

The revision applies the plan with the recipe of ``execute`` (one FK per transaction, lock_timeout
with retries, the atomic NOT VALID swap, VALIDATE on its own) and its downgrade restores each FK's
exact original definition. Every statement is rendered here, with ``psycopg.sql`` against the live
connection, and written into the file as a string literal: the file needs no runbook to run.
"""
from __future__ import annotations

import ast
import datetime as dt
import re
import textwrap
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import psycopg
from psycopg import sql

from . import logger
from .alembic_template import HEADER, HELPERS
from .catalog import ForeignKey, qualname
from .errors import RunbookError
from .plan import Plan

Quote = Callable[[str], str]


class OpenDecisions(RunbookError):
    """The plan has questions only the parameters can answer: no revision is written."""

    def __init__(self, lines: Sequence[str]) -> None:
        super().__init__(f"the plan has {len(lines)} open decision(s); close each with a rule")
        self.lines = list(lines)


# ---------------------------------------------------------------- the current head


def _assigned(tree: ast.Module, name: str) -> Any:
    for node in tree.body:
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        if any(isinstance(t, ast.Name) and t.id == name for t in targets):
            try:
                return ast.literal_eval(value)
            except ValueError:
                return None
    return None


def revisions(versions_dir: Path) -> dict[str, tuple[str, ...]]:
    """revision -> its down revisions, read from the files (parsed, never imported: importing would
    run the application's code)."""
    found: dict[str, tuple[str, ...]] = {}
    for path in sorted(versions_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except (SyntaxError, UnicodeDecodeError) as exc:
            raise RunbookError(f"{path}: not a readable Alembic revision file ({exc})") from None
        rev = _assigned(tree, "revision")
        if not isinstance(rev, str):
            continue
        down = _assigned(tree, "down_revision")
        found[rev] = (down,) if isinstance(down, str) else tuple(d for d in (down or ()) if isinstance(d, str))
    return found


def current_head(versions_dir: Path) -> str | None:
    """The one revision nothing revises (None for an empty history); several heads are an error."""
    found = revisions(versions_dir)
    revised = {d for downs in found.values() for d in downs}
    heads = sorted(r for r in found if r not in revised)
    if len(heads) > 1:
        raise RunbookError(f"{versions_dir} has {len(heads)} heads ({', '.join(heads)}): merge them or "
                           "pass --down-revision")
    return heads[0] if heads else None


# ---------------------------------------------------------------- definitions as the server writes them


def quoter(conn: psycopg.Connection[Any], fks: Sequence[ForeignKey]) -> Quote:
    """The server's own quote_ident, which pg_get_constraintdef uses, for every name involved."""
    names = sorted({n for fk in fks for n in (*fk.columns, *fk.ref_columns, fk.ref_schema, fk.ref_table,
                                              *fk.delete_set_columns)})
    rows = conn.execute("SELECT n, quote_ident(n) FROM unnest(%s::text[]) AS n", [names]).fetchall()
    quoted = {str(a): str(b) for a, b in rows}
    return lambda name: quoted[name]


def definition(fk: ForeignKey, rule: str, *, validated: bool, quote: Quote,
               delete_set_columns: tuple[str, ...] = ()) -> str:
    """The text ``pg_get_constraintdef`` gives for ``fk`` with ``rule`` (search_path empty)."""
    def names(cols: Sequence[str]) -> str:
        return ", ".join(quote(c) for c in cols)

    text = (f"FOREIGN KEY ({names(fk.columns)}) REFERENCES {quote(fk.ref_schema)}.{quote(fk.ref_table)}"
            f"({names(fk.ref_columns)})")
    if fk.match != "SIMPLE":
        text += f" MATCH {fk.match}"
    if fk.on_update != "NO ACTION":
        text += f" ON UPDATE {fk.on_update}"
    if rule != "NO ACTION":
        text += f" ON DELETE {rule}" + (f" ({names(delete_set_columns)})" if delete_set_columns else "")
    if fk.deferrable:
        text += " DEFERRABLE"
    if fk.deferred:
        text += " INITIALLY DEFERRED"
    return text if validated else text + " NOT VALID"


# ---------------------------------------------------------------- one block per FK


@dataclass(frozen=True)
class Block:
    constraint: tuple[str, str, str]
    comments: tuple[str, ...]
    before: str | None
    after: str | None
    swap: tuple[str, ...]
    validate: str | None
    copies: tuple[tuple[str, str], ...]
    cleanup: tuple[str, ...]

    def source(self) -> list[str]:
        lines = [f"# {c}" for c in self.comments]
        lines += ["_change(", f"    {self.constraint!r},", f"    before={self.before!r},",
                  f"    after={self.after!r},", "    swap=["]
        lines += [f"        {s!r}," for s in self.swap] + ["    ],"]
        if self.validate is not None:
            lines.append(f"    validate={self.validate!r},")
        if self.copies:
            lines.append("    copies=[")
            for add, check in self.copies:
                lines += [f"        ({add!r},", f"         {check!r}),"]
            lines += ["    ],", "    cleanup=["] + [f"        {s!r}," for s in self.cleanup] + ["    ],"]
        return lines + [")", ""]


def _safe(text: str) -> str:
    """Text from the database made harmless in a Python comment: no line break can end the comment."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _wrapped(text: str) -> list[str]:
    return textwrap.wrap(_safe(text), 100, subsequent_indent="  ") or [""]


def _blocks(plan: Plan, conn: psycopg.Connection[Any], quote: Quote) -> tuple[list[Block], list[Block]]:
    def render(statement: sql.Composable) -> str:
        return statement.as_string(conn)

    ups, downs = [], []
    for item in plan.changes:
        fk = item.fk
        after = definition(fk, item.planned, quote=quote, validated=fk.validated or not item.not_valid_swap)
        before = None if item.adds else fk.definition
        if before is not None and definition(fk, fk.on_delete, quote=quote, validated=fk.validated,
                                             delete_set_columns=fk.delete_set_columns) != before:
            raise RunbookError(f"{fk.key}: its definition {before!r} is not in the form this version knows; "
                               "no revision written")
        ident = (fk.schema, fk.table, fk.name)
        why = [f"Why: {item.reason}"] + [f"Note: {flag}" for flag in item.flags]
        ups.append(Block(
            ident, tuple(line for text in [f"{fk.key}: ON DELETE {item.current} -> {item.planned}",
                                           *why, item.behaviour] for line in _wrapped(text)),
            before, after, tuple(render(s) for s in item.forward()),
            _text(item.forward_validate(), render),
            tuple((render(a), render(c)) for _leaf, a, c in item.forward_pre()),
            tuple(render(s) for s in item.cleanup())))
        downs.append(Block(
            ident, tuple(_wrapped(f"{fk.key}: back to ON DELETE {item.current} (exact original definition)")),
            after, before, tuple(render(s) for s in item.reverse()), _text(item.reverse_validate(), render),
            tuple((render(a), render(c)) for _leaf, a, c in item.reverse_pre()),
            tuple(render(s) for s in item.cleanup())))
    return ups, list(reversed(downs))


def _text(statement: sql.Composable | None, render: Callable[[sql.Composable], str]) -> str | None:
    return None if statement is None else render(statement)


# ---------------------------------------------------------------- the file


def _title(message: str) -> str:
    # The docstring's first line: no quotes or backslashes that could end it early.
    return _safe(message).replace("\\", "/").replace('"', "'") or "cascade foreign keys"


def slug(message: str) -> str:
    words = re.sub(r"\W", " ", message.lower()).split()
    return "_".join(words)[:40].rstrip("_") or "cascade"


_AUTOCOMMIT = ("    # Alembic's own transaction is committed here: each foreign key below commits on its own.\n"
               "    with op.get_context().autocommit_block():")


def revision_source(plan: Plan, conn: psycopg.Connection[Any], *, revision: str, down_revision: str | None,
                    message: str, lock_timeout_ms: int, attempts: int, backoff: float,
                    created: dt.datetime) -> str:
    if plan.decisions:
        raise OpenDecisions(plan.decision_lines())
    quote = quoter(conn, [i.fk for i in plan.changes])
    ups, downs = _blocks(plan, conn, quote)
    lock = sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(f"{lock_timeout_ms}ms")).as_string(conn)
    parts = [HEADER.format(title=_title(message), revision=revision, down_revision=down_revision or "",
                           create_date=created.strftime("%Y-%m-%d %H:%M:%S"),
                           parent=_safe(qualname(plan.parent)).replace("\\", "/").replace('"', "'"),
                           revision_literal=repr(revision), down_literal=repr(down_revision)),
             HELPERS.format(attempts=attempts, backoff=repr(backoff), lock_timeout=repr(lock)),
             "", "", "def upgrade():", _AUTOCOMMIT]
    ghost = plan.ghost_row is not None and any(i.ghost_defaults for i in plan.changes)
    if plan.ghost_row is not None and ghost:
        parts += ["        # The ghost row that ghost rules reassign rows to (kept if it exists).",
                  f"        _in_one_transaction([{plan.ghost_row.statement().as_string(conn)!r}])", ""]
    parts += [f"        {line}".rstrip() for b in ups for line in b.source()]
    parts += ["", "def downgrade():", _AUTOCOMMIT]
    if ghost:
        parts += ["        # The ghost row is left in place: rows reassigned to it may still reference it.", ""]
    parts += [f"        {line}".rstrip() for b in downs for line in b.source()]
    return "\n".join(parts).rstrip() + "\n"


def write_revision(plan: Plan, conn: psycopg.Connection[Any], versions_dir: Path, *, message: str,
                   down_revision: str | None, lock_timeout_ms: int, attempts: int, backoff: float) -> Path:
    """Write the revision file into ``versions_dir``; ``down_revision`` None means the current head."""
    if not versions_dir.is_dir():
        raise RunbookError(f"--versions-dir {versions_dir}: no such directory")
    if plan.decisions:
        raise OpenDecisions(plan.decision_lines())
    known = revisions(versions_dir)
    if down_revision is not None and down_revision not in known:
        raise RunbookError(f"--down-revision {down_revision!r}: no revision of that id in {versions_dir}")
    down = down_revision if down_revision is not None else current_head(versions_dir)
    revision = uuid.uuid4().hex[-12:]
    text = revision_source(plan, conn, revision=revision, down_revision=down, message=message,
                           lock_timeout_ms=lock_timeout_ms, attempts=attempts, backoff=backoff,
                           created=dt.datetime.now())
    compile(text, "revision", "exec")  # a file that does not parse is never written
    path = versions_dir / f"{revision}_{slug(message)}.py"
    path.write_text(text, encoding="utf-8")
    logger.info("wrote %s (%d foreign keys, revises %s)", path, len(plan.changes), down)
    return path
