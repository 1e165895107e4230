"""Collateral: what deleting the most active user does to other users' rows, before and after the policy.

On the image-board demo (demo/image_board.sql: 300 users who upload, approve, comment on, vote on and
moderate each other's content), three fresh copies of the same database:

- previous defaults: the rules the runbook applied before the ownership policy (every FK on a
  shortest path to users CASCADE, NOT NULL cross edges CASCADE, nullable ones SET NULL), forced
  through ``rules`` so that the same executor applies them;
- new defaults: the plan as the policy makes it with no rules (it stops at its open decisions and
  applies nothing);
- decisions closed: parameters/demo_board.yaml.

On each, user 1 is deleted inside a transaction that is rolled back, and every row of every table
is compared by key before and after: rows removed (the user's own, and other users'), other users'
rows changed (detached or reassigned). A row's owner is the column ``OWNER`` names.

    .venv/bin/python -m bench.collateral [--embedded]
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import common
from runbook_lib import catalog, params
from runbook_lib.demo import ROOT
from runbook_lib.graph import deletion_set, is_ownership

BOARD = ROOT / "demo" / "image_board.sql"
USER = 1
OWNER = {
    "users": "id", "user_profiles": "user_id", "posts": "uploader_id", "post_versions": "updater_id",
    "comments": "creator_id", "comment_votes": "user_id", "post_votes": "user_id", "favorites": "user_id",
    "uploads": "uploader_id", "forum_topics": "creator_id", "forum_posts": "creator_id", "bans": "user_id",
    "mod_actions": "creator_id", "upgrades": "recipient_id", "payments": "user_id", "dmails": "owner_id",
    "saved_searches": "user_id", "api_keys": "user_id", "user_events": "user_id", "ip_bans": "creator_id",
    "audit_log": "user_id",
}


def previous_rules(dsn: str) -> dict[str, str]:
    """The rules the runbook's earlier default policy gave every FK into the deletion set."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        snap = catalog.inspect(conn, "public", "users")
    dset = deletion_set(snap.foreign_keys, snap.parent)
    rules = {}
    for fk in snap.foreign_keys:
        if fk.parent not in dset or fk.on_delete in ("SET NULL", "SET DEFAULT", "CASCADE"):
            continue
        if fk.child == fk.parent:
            rule = "SET NULL" if fk.nullable else "keep"
        elif is_ownership(fk, dset) or not fk.nullable:
            rule = "CASCADE"
        else:
            rule = "SET NULL"
        rules[fk.name] = rule
    return rules


def table_rows(conn: psycopg.Connection[Any]) -> dict[str, dict[tuple[Any, ...], tuple[Any, str]]]:
    """Per table (ONLY the table itself): key -> (owner, row hash)."""
    found = {}
    for table, owner in OWNER.items():
        key = catalog.parent_key(conn, ("public", table))
        query = sql.SQL("SELECT {key}, {owner}, md5(t::text) FROM ONLY {table} AS t").format(
            key=sql.SQL(", ").join(sql.Identifier(c) for c in key), owner=sql.Identifier(owner),
            table=sql.Identifier("public", table))
        found[table] = {tuple(r[:len(key)]): (r[len(key)], r[-1]) for r in conn.execute(query).fetchall()}
    return found


def measure(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        before = table_rows(conn)
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("DELETE FROM users WHERE id = %s", [USER])
                after = table_rows(conn)
        except psycopg.Error as exc:
            return {"blocked": str(exc).strip().splitlines()[0]}
    figures = {"own removed": 0, "others' removed": 0, "others' changed": 0}
    per_table: dict[str, int] = {}
    for table, rows in before.items():
        for key, (owner, digest) in rows.items():
            now = after[table].get(key)
            mine = owner == USER
            if now is None:
                figures["own removed" if mine else "others' removed"] += 1
                if not mine:
                    per_table[table] = per_table.get(table, 0) + 1
            elif not mine and now[1] != digest:
                figures["others' changed"] += 1
    return {**figures, "others' removed by table": per_table}


def phase(admin: str, template: str, name: str, values: dict[str, Any] | None,
          rules_of: Any = None) -> tuple[str, dict[str, Any]]:
    with common.scratch_database(admin, "bench_collateral", template) as dsn, common.evidence_root("collateral") as ev:
        note = "nothing applied"
        if values is not None:
            rules = rules_of(dsn) if rules_of else values.get("rules", {})
            run = common.run_runbook(dsn, ev / name, **{**values, "rules": rules})
            note = (f"{sum(1 for r in run.outcome.results if r.status == 'applied')} FKs changed, "
                    f"verify {'ok' if run.verify_ok else 'FAILED'}")
        else:
            from runbook_lib import steps

            ctx = common.run_context(dsn, ev / name)
            plan = steps.plan(ctx) if steps.inspect(ctx) else None
            note = f"plan stops: {len(plan.decisions) if plan else 0} open decisions; nothing applied"
        return note, measure(dsn)


def main(argv: list[str] | None = None) -> int:
    args = common.parser(__doc__ or "").parse_args(argv)
    with common.server(args) as admin:
        template = common.unique_name("bench_collateral_tpl")
        tpl_dsn = common.create_database(admin, template)
        with psycopg.connect(tpl_dsn, autocommit=True) as conn:
            conn.execute(BOARD.read_text(encoding="utf-8"))  # type: ignore[call-overload]
            conn.execute("ANALYZE")
        try:
            board = params.read_file(ROOT / "parameters" / "demo_board.yaml")
            closed = {k: board[k] for k in ("rules", "ghost", "references")}
            rows = []
            for name, values, rules_of in (("previous defaults", {}, previous_rules), ("new defaults", None, None),
                                           ("decisions closed", closed, None)):
                note, figures = phase(admin, template, name.replace(" ", "_"), values, rules_of)
                if "blocked" in figures:
                    rows.append((name, note, "-", "-", "-", f"delete blocked: {figures['blocked']}"))
                    continue
                by_table = ", ".join(f"{t} {n}" for t, n in sorted(figures["others' removed by table"].items()))
                rows.append((name, note, figures["own removed"], figures["others' removed"],
                             figures["others' changed"], by_table or "-"))
        finally:
            common.drop_database(admin, template)
        print(common.machine_line(admin))
        common.print_table(f"Deleting user {USER} (the most active) on the image board",
                           ["policy", "applied", "own rows removed", "other users' rows removed",
                            "other users' rows changed", "other users' rows removed, by table"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
