"""The commands that meet the application's own toolchain: ``alembic``, ``orm-check`` and ``check``.

Each reads the live catalog and plans exactly as ``runbook run`` would (no evidence folder: nothing
is written but the revision file), then hands the plan over in the form the team works in.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import psycopg

from . import params as params_mod
from . import terminal
from .connect import connect, dsn_from_env
from .plan import Plan, make_plan

EXIT_OK, EXIT_FOUND, EXIT_BAD_INPUT = 0, 1, 2


@contextmanager
def live_plan(params_file: str) -> Iterator[tuple[params_mod.Parameters, psycopg.Connection[Any], Plan]]:
    """The parameters, an autocommit connection, and the plan for the database as it is now."""
    from .steps import survey

    params = params_mod.load(params_file)
    with connect(dsn_from_env(), autocommit=True) as conn:
        yield params, conn, make_plan(survey(conn, params), params)


def alembic(params_file: str, versions_dir: str, message: str | None, down_revision: str | None) -> int:
    from .alembic_revision import OpenDecisions, write_revision
    from .catalog import qualname

    try:
        with live_plan(params_file) as (params, conn, plan):
            if not plan.changes and not plan.decisions:
                print("nothing to change: the database already has the planned rules; no revision written")
                return EXIT_OK
            path = write_revision(
                plan, conn, Path(versions_dir),
                message=message or f"cascade foreign keys into {qualname(plan.parent)}",
                down_revision=down_revision, lock_timeout_ms=params.lock_timeout_ms,
                attempts=params.lock_retries, backoff=params.retry_backoff)
    except OpenDecisions as exc:
        print(f"runbook: error: {exc}; no revision written", file=sys.stderr)
        for line in exc.lines:
            print(f"runbook: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {path} ({len(plan.changes)} foreign key(s))")
    return EXIT_OK


def orm_check(params_file: str, models_spec: str) -> int:
    """The models against the database after the plan: exit 1 listing each disagreement with its fix."""
    import os

    from . import orm_check as orm

    models = orm.load(models_spec, search=[os.getcwd()])
    with live_plan(params_file) as (_params, conn, plan):
        row = conn.execute("SELECT current_schema()").fetchone()
        models = replace(models, default_schema=str(row[0]) if row and row[0] else "public")
        findings = orm.check(models, plan)
        modelled = orm.modelled(models, plan)
    for f in findings:
        for line in finding_lines(f):
            print(line)
    decided = len(plan.items) - len(plan.decisions)
    summary = (f"{len(findings)} finding(s); {modelled} of the plan's {len(plan.items)} foreign keys are in "
               f"{models_spec}")
    if plan.decisions:
        summary += f"; {len(plan.decisions)} open decision(s) not checked ({decided} decided)"
    print("\n".join(terminal.text_lines(summary if findings else f"the models agree with the planned rules: {summary}",
                                        "  ")))
    return EXIT_FOUND if findings else EXIT_OK


def finding_lines(finding: Any) -> list[str]:
    """One orm-check finding in lines that fit the terminal; the file is named relative to the working
    folder when it lies inside it."""
    path, colon, line = finding.where.rpartition(":")
    where = f"{terminal.shown_path(path)}:{line}" if colon else finding.where
    return [*terminal.text_lines(f"{where}: {finding.model} ({finding.constraint})", "    "),
            *terminal.text_lines(finding.problem, "    ", first="    "),
            *terminal.code_lines(finding.fix, "           ", first="    write: ")]


def check(params_file: str) -> int:
    """Read-only CI guard: exit 1 naming each FK whose rule is not the policy's, with its DDL."""
    from .schema_check import guard

    params = params_mod.load(params_file)
    with connect(dsn_from_env(), autocommit=True) as conn:
        result = guard(conn, params)
    for line in result.lines():
        print(line)
    print("\n".join(terminal.text_lines(result.summary(), "  ")))
    return EXIT_OK if result.ok else EXIT_FOUND
