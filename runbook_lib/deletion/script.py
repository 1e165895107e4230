"""The ordered delete script (explicit statements, children before parents) and its proof."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping, Sequence

import psycopg
from psycopg import sql

from .. import logger
from .. import params as params_mod
from ..catalog import ForeignKey, Snapshot, TableKey, qualname
from ..errors import RunbookError
from ..graph import deletion_set, is_ownership, layered_order
from ..plan import make_plan
from .common import _ident, _key_text, _require_transaction, _table
from .preview import preview
from .proof import Proof, _prove
from .synthesize import Synthesis


def script_rules(snapshot: Snapshot, params: Any = None) -> dict[str, str]:
    """The rule the ordered script carries out for each FK into the deletion set: the plan's policy
    (ownership -> CASCADE, nullable cross edges and the parent's self-reference -> SET NULL, …)."""
    if params is None:
        params = params_mod.validate({"parent_table": snapshot.parent[1], "parent_schema": snapshot.parent[0]})
    return {item.fk.key: item.planned for item in make_plan(snapshot, params).items}


def _key_placeholders(user_key_columns: Sequence[str]) -> list[sql.Placeholder]:
    if len(user_key_columns) == 1:
        return [sql.Placeholder("user_id")]
    return [sql.Placeholder(c) for c in user_key_columns]


def script_params(user_key_columns: Sequence[str], user_key: Mapping[str, Any] | Any) -> dict[str, Any]:
    """The parameters of ``ordered_delete_script`` for one user."""
    if len(user_key_columns) == 1:
        value = user_key[user_key_columns[0]] if isinstance(user_key, Mapping) else user_key
        return {"user_id": value}
    if not isinstance(user_key, Mapping):
        raise RunbookError("a composite user key must be a mapping of column -> value")
    return {c: user_key[c] for c in user_key_columns}


class _Script:
    """The sub-selects that name one user's rows of each table through the deleting edges."""

    def __init__(self, snapshot: Snapshot, user_key_columns: Sequence[str], rules: Mapping[str, str]) -> None:
        self.snapshot = snapshot
        self.parent = snapshot.parent
        self.fks = list(snapshot.foreign_keys)
        self.dset = deletion_set(self.fks, self.parent)
        self.rules = rules
        self.deleting: dict[TableKey, list[ForeignKey]] = defaultdict(list)
        for fk in self.fks:
            if rules.get(fk.key) == "CASCADE" and is_ownership(fk, self.dset):
                self.deleting[fk.child].append(fk)
        self.key = sql.SQL(" AND ").join(sql.SQL("{} = {}").format(_ident(c), p) for c, p in
                                         zip(user_key_columns, _key_placeholders(user_key_columns)))
        self.memo: dict[TableKey, sql.Composable | None] = {}

    def target(self, table: TableKey) -> sql.Composable:
        # What an FK action would reach: ONLY a plain table's own rows, not its inheritance children's.
        info = self.snapshot.table(table)
        plain = table != self.parent and (info is None or info.kind == "r")
        return sql.SQL("ONLY {}").format(_table(table)) if plain else _table(table)

    def condition(self, table: TableKey) -> sql.Composable | None:
        """Which rows of ``table`` belong to the user (None: none do, through deleting edges)."""
        if table not in self.memo:
            if table == self.parent:
                self.memo[table] = self.key
            else:
                parts = []
                for fk in sorted(self.deleting.get(table, []), key=lambda f: f.key):
                    sub = self.rows_of(fk.parent, fk.ref_columns)
                    if sub is not None:
                        parts.append(sql.SQL("({}) IN ({})").format(
                            sql.SQL(", ").join(_ident(c) for c in fk.columns), sub))
                self.memo[table] = sql.SQL(" OR ").join(parts) if parts else None
        return self.memo[table]

    def rows_of(self, table: TableKey, columns: Sequence[str]) -> sql.Composable | None:
        cond = self.condition(table)
        if cond is None:
            return None
        return sql.SQL("SELECT {} FROM {} WHERE {}").format(
            sql.SQL(", ").join(_ident(c) for c in columns), self.target(table), cond)

    def updates(self) -> list[sql.Composed]:
        statements = []
        for fk in sorted(self.fks, key=lambda f: (self.dset.get(f.child, 0), f.key)):
            rule = self.rules.get(fk.key)
            sub = self.rows_of(fk.parent, fk.ref_columns) if fk.parent in self.dset else None
            if rule not in ("SET NULL", "SET DEFAULT") or sub is None:
                continue
            value = sql.SQL("NULL" if rule == "SET NULL" else "DEFAULT")
            statements.append(sql.SQL("UPDATE {} SET {} WHERE ({}) IN ({})").format(
                self.target(fk.child),
                sql.SQL(", ").join(sql.SQL("{} = {}").format(_ident(c), value)
                                   for c in fk.delete_set_columns or fk.columns),
                sql.SQL(", ").join(_ident(c) for c in fk.columns), sub))
        return statements

    def deletes(self) -> list[sql.Composed]:
        """Children before parents: a table goes once nothing still to be deleted references it."""
        tables = [t for t in self.dset if self.condition(t) is not None]
        blocks: dict[TableKey, set[TableKey]] = defaultdict(set)
        for fk in self.fks:
            if fk.child in tables and fk.parent in tables and fk.child != fk.parent \
                    and self.rules.get(fk.key) not in ("SET NULL", "SET DEFAULT"):
                blocks[fk.parent].add(fk.child)
        def on_cycle(remaining: set[TableKey]) -> TableKey:
            table = max(remaining, key=lambda t: (self.dset[t], t))
            logger.warning("ordered delete: a cycle of NOT NULL foreign keys at %s; its order may fail",
                           qualname(table))
            return table

        statements = []
        for table in layered_order(tables, blocks, key=lambda t: (-self.dset[t], t), on_cycle=on_cycle):
            cond = self.condition(table)
            assert cond is not None
            statements.append(sql.SQL("DELETE FROM {} WHERE {}").format(self.target(table), cond))
        return statements


def ordered_delete_script(snapshot: Snapshot, user_key_columns: Sequence[str], *,
                          params: Any = None) -> list[sql.Composed]:
    """The explicit statements that delete one user where FKs do not cascade.

    First ``UPDATE … SET col = NULL`` for the FKs the policy sets to NULL (this breaks cycles such as
    chat_sessions.last_message_id), then a ``DELETE`` per table, children before parents, each keyed
    from the user's id through the ownership chain with sub-selects. Placeholders: ``%(user_id)s`` for
    a one-column key, ``%(<column>)s`` for each column of a composite key. Plain tables are named with
    ONLY, as an FK action reaches them.
    """
    script = _Script(snapshot, user_key_columns, script_rules(snapshot, params))
    return script.updates() + script.deletes()


def prove_ordered_delete(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis, *,
                         params: Any = None) -> Proof:
    """Run the ordered delete script on the test user (inside the caller's transaction) and prove it
    the same way as the cascade: the preview walks the script's rules, not the catalog's."""
    _require_transaction(conn, "prove_ordered_delete")
    key_cols = tuple(synthesis.user_key)
    statements = ordered_delete_script(snapshot, key_cols, params=params)
    the_preview = preview(conn, snapshot.parent, synthesis.user_key, rules=script_rules(snapshot, params))
    values = script_params(key_cols, synthesis.user_key)

    def action() -> None:
        for statement in statements:
            conn.execute(statement, values)

    description = (f"ordered delete script ({len(statements)} statements) for {qualname(snapshot.parent)} "
                   f"{_key_text(synthesis.user_key)}")
    return _prove(conn, synthesis, the_preview, action, description, strict_other_tables=False)
