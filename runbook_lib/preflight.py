"""Preflight: what must hold before anything is changed (server, privileges, activity, locks, backup)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from . import backup_choice, catalog, execute
from .catalog import qualname
from .context import RunContext
from .errors import PreflightFailed
from .plan import make_plan


@dataclass
class Check:
    check: str
    status: str  # ok | warn | fail | info
    detail: str


@dataclass
class PreflightResult:
    checks: list[Check]

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([c.__dict__ for c in self.checks])


def preflight(ctx: RunContext) -> PreflightResult:
    checks: list[Check] = []
    with ctx.connect() as conn:
        ident = catalog.server_identity(conn)
        ctx.save_json("server.json", ident)
        checks.append(Check("server", "info", f"PostgreSQL {ident['server_version']}, database "
                                              f"{ident['database']}, system id {ident['system_identifier']}"))
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
        checks.append(Check("role", "info", f"{ident['user']}{' (superuser)' if row and row[0] else ''}"))
        snap = catalog.inspect(conn, ctx.params.parent_schema, ctx.params.parent_table)
        plan = make_plan(snap, ctx.params)
        affected = sorted({i.fk.child for i in plan.changes} | {i.fk.parent for i in plan.changes})
        checks.append(Check("plan preview", "info", f"{len(plan.changes)} foreign key(s) to change on "
                                                    f"{len(affected)} table(s)"))
        if plan.decisions:
            checks.append(Check("decisions", "warn", f"{len(plan.decisions)} open decision(s): the plan step "
                                                     "will stop until rules close them: "
                                                     + "; ".join(plan.decision_lines())))
        not_owned = [qualname(t) for t in affected if not _owns(conn, t)]
        checks.append(Check(
            "privileges", "fail" if not_owned else "ok",
            f"{ident['user']} does not own (cannot ALTER): {', '.join(not_owned)}" if not_owned
            else f"{ident['user']} may alter all {len(affected)} affected table(s)"))
        replica = conn.execute("SELECT current_setting('session_replication_role')").fetchone()
        if replica and replica[0] == "replica":
            checks.append(Check("session_replication_role", "fail",
                                "replica: foreign-key triggers do not fire, no cascade would happen"))
        checks.extend(_activity_checks(conn, affected, ctx.params.lock_timeout_seconds))
        try:
            execute.check_run_lock_free(conn)
            checks.append(Check("advisory lock", "ok", "no other runbook run is changing this database"))
        except PreflightFailed as exc:
            checks.append(Check("advisory lock", "fail", str(exc)))
        if ctx.params.backup_enabled:
            checks.extend(_backup_checks(ctx, conn, ident))
        else:
            checks.append(Check("backup", "warn", "backup is turned off in the parameters (recorded)"))
    result = PreflightResult(checks)
    ctx.save_json("preflight.json", [c.__dict__ for c in checks])
    return result


def _owns(conn: Any, table: tuple[str, str]) -> bool:
    row = conn.execute(
        "SELECT pg_has_role(current_user, c.relowner, 'USAGE') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
        list(table)).fetchone()
    return bool(row and row[0])


def _activity_checks(conn: Any, affected: list[tuple[str, str]], lock_timeout: float) -> list[Check]:
    checks = []
    long_tx = conn.execute(
        # Not the statement's text: it may carry literal values (a password, a user's data) into
        # the evidence. The application's name says who holds the transaction.
        "SELECT pid, usename, state, extract(epoch FROM now() - xact_start)::int, left(application_name, 40) "
        "FROM pg_stat_activity WHERE xact_start IS NOT NULL AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' AND now() - xact_start > interval '1 minute' "
        "ORDER BY xact_start").fetchall()
    if long_tx:
        listed = "; ".join(f"pid {p} ({u}, {s}, {sec}s, application {a or 'unnamed'})"
                           for p, u, s, sec, a in long_tx[:5])
        checks.append(Check("long transactions", "warn",
                            f"{len(long_tx)} transaction(s) open for over a minute; each swap waits at most "
                            f"lock_timeout then retries: {listed}"))
    else:
        checks.append(Check("long transactions", "ok", "none open for over a minute"))
    if affected:
        holders = conn.execute(
            "SELECT DISTINCT l.pid, n.nspname::text, c.relname::text, l.mode FROM pg_locks l "
            "JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE l.pid <> pg_backend_pid() AND (n.nspname, c.relname) IN "
            "(SELECT * FROM unnest(%s::text[], %s::text[]))",
            [[t[0] for t in affected], [t[1] for t in affected]]).fetchall()
        if holders:
            listed = "; ".join(f"pid {p} holds {m} on {s}.{t}" for p, s, t, m in holders[:8])
            checks.append(Check("locks on affected tables", "warn", listed))
        else:
            checks.append(Check("locks on affected tables", "ok", "no other session holds a lock on them"))
    return checks


def _backup_checks(ctx: RunContext, conn: Any, ident: dict[str, Any]) -> list[Check]:
    major = int(ident["server_version_num"]) // 10000
    return [Check(*line) for line in backup_choice.checks(conn, ctx.params.backup_mode, ctx.backup_dir(), major)]
