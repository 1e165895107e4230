"""``runbook erase``: erase one user or a queue of users, each in a run folder of its own.

Every id is checked before anything changes (a bad one: exit 2). Then, per user, notebook 08 runs
through the runner into its own evidence folder (executed notebook and its page, receipt, orphans,
index page, manifest); a blocked or failed user does not stop the queue.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from . import params as params_mod
from . import runner, terminal
from .connect import dsn_from_env
from .erase_run import PREVIEW_COLUMNS, open_connection, read_ids, validate_ids

EXIT_OK, EXIT_FAILED = 0, 1


def erase_command(args: argparse.Namespace) -> int:
    """Bad input (parameters, ids) raises before anything changes; the caller turns it into exit 2."""
    params = params_mod.load(args.params, args.param)
    ids = read_ids(args.user_id, args.user_ids_file)
    dsn = dsn_from_env()
    ident = runner.precheck(params, dsn)
    with open_connection(dsn) as conn:
        validate_ids(conn, params, ids)
    failed = 0
    for user_id in ids:
        result = runner.erase(params, user_id, confirm=args.confirm, evidence_dir=args.evidence_dir, dsn=dsn,
                              ident=ident)
        if not report(user_id, result):
            failed += 1
    if len(ids) > 1:
        print(f"{len(ids) - failed} of {len(ids)} user(s) {'erased' if args.confirm else 'previewed'}, "
              f"{failed} blocked or failed")
    return EXIT_OK if not failed else EXIT_FAILED


def _verdict(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "verdicts" / "erase.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def preview_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The preview table in ``terminal.WIDTH`` columns; the index each unindexed FK needs is listed whole
    below it rather than cut in a cell."""
    frame = pd.DataFrame(rows, columns=PREVIEW_COLUMNS)
    fixes = [fix for fix in frame.pop("unindexed FK fix") if fix]
    lines = terminal.frame_lines(frame)
    if fixes:
        lines += ["", "unindexed foreign keys (each deletion scans its table); index them with:"]
        for fix in fixes:
            lines += terminal.code_lines(fix, "    ", first="  ")
    return lines


def report(user_id: str, result: runner.RunResult) -> bool:
    """One user's outcome: the preview table and result on stdout, refusals and failures on stderr."""
    step = result.steps[0]
    verdict = _verdict(result.run_dir)
    if verdict is None or "result" not in verdict:
        print(f"runbook: user {user_id}: the erase notebook failed: {step.error}; executed notebook: "
              f"{result.run_dir / (step.notebook or '')}", file=sys.stderr)
        return False
    for text in preview_lines(verdict["preview"]):
        print(text)
    if verdict["orphans"]:
        print(f"{verdict['orphans']} row(s) referenced only by this user's rows (orphans)")
    for note in verdict["notes"]:
        print("\n".join(terminal.text_lines(note, "      ", first="note: ")))
    for line in verdict["refusals"]:
        print(f"runbook: user {user_id}: {line}", file=sys.stderr)
    ok = step.status == "passed" and bool(verdict["ok"])
    line = f"user {user_id}: {verdict['result']}"
    print(line if ok else f"runbook: {line}", file=sys.stdout if ok else sys.stderr)
    print(f"evidence: {terminal.shown_path(result.run_dir)}")
    return ok
