"""``runbook erase``: erase one user or a queue of users, each with its own receipt."""
from __future__ import annotations

import argparse
import sys

import psycopg

from . import params as params_mod
from .connect import dsn_from_env
from .erase_run import erase_user, open_connection, read_ids, refusal_lines, report_lines, validate_ids

EXIT_OK, EXIT_FAILED = 0, 1


def erase_command(args: argparse.Namespace) -> int:
    """Bad input (parameters, ids) raises before anything changes; the caller turns it into exit 2."""
    params = params_mod.load(args.params, args.param)
    ids = read_ids(args.user_id, args.user_ids_file)
    failed = 0
    with open_connection(dsn_from_env()) as conn:
        validate_ids(conn, params, ids)
        for user_id in ids:
            try:
                outcome = erase_user(conn, params, user_id, confirm=args.confirm, evidence_dir=args.evidence_dir)
            except psycopg.Error as exc:
                # One user's failure (a lock timeout, a lost row) does not stop the queue.
                failed += 1
                print(f"runbook: user {user_id}: {type(exc).__name__}: "
                      f"{exc.diag.message_primary or str(exc).splitlines()[0]}", file=sys.stderr)
                continue
            for line in report_lines(outcome):
                print(line)
            for line in refusal_lines(outcome):
                print(f"runbook: user {user_id}: {line}", file=sys.stderr)
            if outcome.ok:
                print(outcome.message)
            else:
                failed += 1
                print(f"runbook: {outcome.message}", file=sys.stderr)
    if len(ids) > 1:
        print(f"{len(ids) - failed} of {len(ids)} user(s) {'erased' if args.confirm else 'previewed'}, "
              f"{failed} blocked or failed")
    return EXIT_OK if not failed else EXIT_FAILED
