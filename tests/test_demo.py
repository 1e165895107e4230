"""The first five minutes: `runbook demo` on a machine with nothing running, and after a crash."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from runbook_lib import demo

ROOT = Path(__file__).resolve().parent.parent


def postmasters(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and str(pgdata) in " ".join(cmdline):
            found.append(proc)
    return found


@pytest.mark.slow
def test_demo_runs_everything_after_a_crashed_demo_left_its_server_running(tmp_path: Path) -> None:
    pgdata = demo.demo_data_dir()
    # A demo process killed hard: its server keeps running and its pid stays in the handle list.
    crashed = subprocess.Popen([sys.executable, "-c",
                                "import time; from runbook_lib import demo\n"
                                "with demo.demo_server():\n    print('up', flush=True); time.sleep(600)"],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert crashed.stdout is not None and crashed.stdout.readline().strip() == "up"
    os.kill(crashed.pid, signal.SIGKILL)
    crashed.wait()
    leftover = postmasters(pgdata)
    assert leftover, "the killed demo's server should still be running"

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "demo", "--evidence-dir", str(tmp_path / "ev")],
                            capture_output=True, text=True, cwd=tmp_path, timeout=900,
                            env={k: v for k, v in os.environ.items() if k != "RUNBOOK_DSN"})
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert [ln.split()[0] for ln in lines[:7]] == ["preflight", "backup", "inspect", "plan", "apply", "verify",
                                                   "test_user"]
    assert all(" passed " in ln for ln in lines[:7])
    assert any(ln.startswith("foreign keys changed: 36") for ln in lines)
    assert any(ln.startswith("test-user deletion: PASS") for ln in lines)
    index = Path(lines[-1].removeprefix("evidence: "))
    assert index.name == "index.html" and index.is_file()
    # The leftover is gone, and the demo's own server was stopped at the end.
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in leftover)
    assert not postmasters(pgdata)
    print(f"runbook demo: {seconds:.1f} s")
