"""CI cannot go green without the server it was told to test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECK = ROOT / "scripts" / "check_server.py"


def closed_port_dsn() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The socket is closed again: nothing listens on that port now.
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def run_check(dsn: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("CI", "RUNBOOK_TEST_DSN")}
    return subprocess.run([sys.executable, str(CHECK), dsn], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, check=False)


def test_missing_server_under_ci_is_a_failure() -> None:
    done = run_check(closed_port_dsn(), CI="true")
    assert done.returncode == 1
    assert done.stderr.startswith("FAIL: no PostgreSQL answers at postgresql://postgres@127.0.0.1:")
    assert "required" in done.stderr


def test_missing_server_named_by_runbook_test_dsn_is_a_failure() -> None:
    dsn = closed_port_dsn()
    assert run_check(dsn, RUNBOOK_TEST_DSN=dsn).returncode == 1


def test_missing_optional_server_is_a_loud_warning_not_a_pass() -> None:
    done = run_check(closed_port_dsn())
    assert done.returncode == 3
    assert done.stderr.startswith("WARNING: no PostgreSQL answers")


def test_answering_server_prints_its_version(server_dsn: str, server_version: int) -> None:
    done = run_check(server_dsn, CI="true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"PostgreSQL {server_version // 10000}")


def test_test_script_stops_before_any_test_when_the_required_server_is_down() -> None:
    env = {k: v for k, v in os.environ.items() if k != "RUNBOOK_TEST_DSN"}
    env.update(CI="true", RUNBOOK_TEST_DSN=closed_port_dsn(), RUNBOOK_VENV=sys.prefix)
    done = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), "-k", "nothing_matches_this"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "== FAIL: the required PostgreSQL" in done.stderr
    assert "== type check" not in done.stdout and "== tests against" not in done.stdout
