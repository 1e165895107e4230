"""Does the PostgreSQL the tests expect answer? Used by scripts/test.sh before it runs the suite.

Exit 0 and print the server's version when it answers. When it does not, the outcome depends on
whether it was required: under ``CI=true``, or when ``RUNBOOK_TEST_DSN`` names it explicitly, a
missing server is a failure (exit 1), because a green run must mean both server versions were tested.
Otherwise (a workstation without a local server) exit 3, which test.sh reports loudly and skips.

    python scripts/check_server.py [DSN]
"""
from __future__ import annotations

import os
import sys

import psycopg

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
EXIT_ANSWERS, EXIT_REQUIRED_MISSING, EXIT_OPTIONAL_MISSING = 0, 1, 3


def required(env: dict[str, str]) -> bool:
    return env.get("CI", "").lower() in ("true", "1", "yes") or bool(env.get("RUNBOOK_TEST_DSN"))


def server_version(dsn: str, timeout: int = 5) -> str:
    with psycopg.connect(dsn, connect_timeout=timeout) as conn:
        row = conn.execute("SELECT current_setting('server_version')").fetchone()
    return str(row[0]) if row else "unknown"


def check(dsn: str, env: dict[str, str]) -> tuple[int, str]:
    """The exit status and the one line to print."""
    from runbook_lib.connect import redact

    where = redact(dsn)
    try:
        version = server_version(dsn)
    except psycopg.Error as exc:
        reason = (str(exc).splitlines() or ["no answer"])[0]
        if required(env):
            return EXIT_REQUIRED_MISSING, (
                f"FAIL: no PostgreSQL answers at {where} ({reason}); it is required "
                "(CI=true or RUNBOOK_TEST_DSN set), so the suite cannot pass without it")
        return EXIT_OPTIONAL_MISSING, (
            f"WARNING: no PostgreSQL answers at {where} ({reason}); only the embedded PostgreSQL 18 "
            "will be tested (under CI=true this is a failure)")
    return EXIT_ANSWERS, f"PostgreSQL {version} answers at {where}"


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    dsn = argv[1] if len(argv) > 1 else env.get("RUNBOOK_TEST_DSN") or DEFAULT_DSN
    status, line = check(dsn, env)
    print(line, file=sys.stderr if status else sys.stdout)
    return status


if __name__ == "__main__":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    sys.exit(main(sys.argv))
