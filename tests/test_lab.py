"""`runbook lab` serves copies of the notebooks, and a DBA's session driven through the Jupyter server's
API (REST and the kernel's websocket) is kept apart and sealed like a release run."""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.conftest import sql_file

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api(port: int, token: str, path: str, method: str = "GET", body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read() or b"null")


async def execute_cells(port: int, token: str, kernel_id: str, sources: list[str]) -> list[dict[str, Any]]:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws = await websocket_connect(HTTPRequest(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels", headers={"Authorization": f"token {token}"}))
    results = []
    for source in sources:
        msg_id = uuid.uuid4().hex
        ws.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": source, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        stdout, reply, idle = "", None, False
        # The reply (shell) and the output (iopub) arrive in no fixed order: wait for both.
        while reply is None or not idle:
            raw = await asyncio.wait_for(ws.read_message(), timeout=300)
            assert raw is not None, "kernel channel closed"
            msg = json.loads(raw)
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                stdout += msg["content"]["text"]
            if msg["msg_type"] == "execute_reply":
                reply = msg["content"]
            if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True
        results.append({"status": reply["status"], "stdout": stdout, "error": reply.get("evalue")})
        if reply["status"] != "ok":
            break
    ws.close()
    return results


def repository_notebooks() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((ROOT / "notebooks").iterdir())}


def run_notebook(port: int, token: str, path: str, override: str = "") -> list[dict[str, Any]]:
    """Open ``path`` in a new session (a kernel of its own) and run its code cells in order (``override``
    runs right after the parameter cell, as a DBA editing it would); the session ends after."""
    session = api(port, token, "/api/sessions", "POST",
                  {"path": path, "type": "notebook", "kernel": {"name": "python3"}})
    notebook = api(port, token, f"/api/contents/{path}")["content"]
    sources = [c["source"] for c in notebook["cells"] if c["cell_type"] == "code"]
    if override:
        sources.insert(1, override)
    try:
        return asyncio.run(execute_cells(port, token, session["kernel"]["id"], sources))
    finally:
        api(port, token, f"/api/sessions/{session['id']}", "DELETE")


def run_ok(port: int, token: str, path: str, override: str = "") -> str:
    """Run a notebook that must pass every cell; its whole printed output."""
    results = run_notebook(port, token, path, override)
    assert [r["status"] for r in results] == ["ok"] * len(results), (path, results[-1])
    return "".join(r["stdout"] for r in results)


def refused(port: int, token: str, path: str, override: str) -> str:
    """Run a notebook that must stop with an error; the error's text."""
    results = run_notebook(port, token, path, override)
    assert results[-1]["status"] == "error", (path, results[-1])
    return str(results[-1]["error"])


@contextmanager
def lab_server(tmp_path: Path, dsn: str) -> Iterator[tuple[int, str, Path]]:
    """``runbook lab`` on a free port: (port, token, the folder of the working copies)."""
    port, token = free_port(), uuid.uuid4().hex
    env = dict(os.environ, RUNBOOK_DSN=dsn, JUPYTER_TOKEN=token, RUNBOOK_EVIDENCE_DIR=str(tmp_path / "ev"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "rt"), JUPYTER_CONFIG_DIR=str(tmp_path / "cfg"))
    env.pop("RUNBOOK_RUN_DIR", None)
    lab = subprocess.Popen([sys.executable, "-m", "runbook_lib.cli", "lab", "--port", str(port), "--no-browser"],
                           env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                api(port, token, "/api/status")
                break
            except OSError:
                assert lab.poll() is None, lab.stderr.read() if lab.stderr else ""
                assert time.monotonic() < deadline, "JupyterLab did not answer"
                time.sleep(0.5)
        [copies] = list((tmp_path / "ev").glob("lab-*"))
        yield port, token, copies
    finally:
        lab.terminate()  # `runbook lab` passes it on to JupyterLab, which shuts its kernels down
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
        time.sleep(1)
        leftovers = subprocess.run(["pgrep", "-f", f"--port={port}"], capture_output=True, text=True).stdout
        assert not leftovers.strip(), f"JupyterLab still running: {leftovers}"


STEPS = ("00_preflight", "01_backup", "02_inspect", "03_plan", "04_apply", "05_verify", "06_test_user_deletion")


def users_from_00_to_06(port: int, token: str, copies: Path) -> Path:
    """The DBA's dry run for ``users``, one notebook after the other: one folder, sealed at the end."""
    printed = {step: run_ok(port, token, f"{step}.ipynb") for step in STEPS}
    [users] = list(copies.glob("*-public.users-*"))
    assert all(f"run folder: {users.name}" in out for out in printed.values())
    assert "PASS: plan: 16 change(s) planned" in printed["03_plan"]
    assert "DROP CONSTRAINT" in (users / "plan.sql").read_text() and "memberships" in (users / "plan.sql").read_text()
    assert "SKIPPED: test_user: dry run" in printed["06_test_user_deletion"]
    assert f"ALL RUN STEPS PASSED, 1 SKIPPED: evidence sealed in {users}" in printed["06_test_user_deletion"]
    manifest = json.loads((users / "manifest.json").read_text())
    assert manifest["kind"] == "by hand"
    assert [(s["step"], s["status"]) for s in manifest["steps"]] == [
        ("preflight", "passed"), ("backup", "passed"), ("inspect", "passed"), ("plan", "passed"),
        ("apply", "passed"), ("verify", "passed"), ("test_user", "skipped")]
    assert "ALL RUN STEPS PASSED, 1 SKIPPED" in (users / "index.html").read_text()
    verified = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "verify-evidence", str(users)],
                              capture_output=True, text=True)
    assert verified.returncode == 0 and f"evidence verifies: {users}" in verified.stdout, verified.stderr
    return users


def goals_in_a_new_session(port: int, token: str, copies: Path, users: Path) -> None:
    """02 and 03 for another parent table: a folder of its own, its own plan, and no snapshot but its own."""
    goals_table = 'parent_table = "nutrition_goals"'
    run_ok(port, token, "02_inspect.ipynb", goals_table)
    [goals] = list(copies.glob("*-public.nutrition_goals-*"))
    snapshot = goals / "snapshot_before.json"
    own = snapshot.read_bytes()

    snapshot.write_bytes((users / "snapshot_before.json").read_bytes())  # the other parent's snapshot
    assert refused(port, token, "03_plan.ipynb", goals_table) == (
        f"snapshot_before.json in {goals} is a copy of the one in run folder {users.name}; "
        "run the step that makes it in this folder")
    snapshot.write_bytes(own.replace(b"nutrition_goal_targets_goal_id_fkey", b"edited_fkey"))  # edited by hand
    assert refused(port, token, "03_plan.ipynb", goals_table) == (
        f"snapshot_before.json in {goals} changed after its step wrote it (sha256 differs); run that step again")
    assert not (goals / "plan.sql").exists()

    snapshot.write_bytes(own)
    assert "PASS: plan: 1 change(s) planned" in run_ok(port, token, "03_plan.ipynb", goals_table)
    assert "nutrition_goal_targets" in (goals / "plan.sql").read_text()
    assert "memberships" not in (goals / "plan.sql").read_text()
    assert json.loads((users / "plan.json").read_text())["parent"] == ["public", "users"]
    assert json.loads((goals / "plan.json").read_text())["parent"] == ["public", "nutrition_goals"]
    assert sorted(p.name for p in copies.iterdir() if p.is_dir()) == sorted([users.name, goals.name])

    # Other folder parameters for the same parent: not the same folder, and the notebook says so.
    printed = run_ok(port, token, "03_plan.ipynb", goals_table + "\nexact_count_rows = 10")
    assert f"parameters differ from run folder {goals.name} (exact_count_rows): new run folder" in printed
    assert len(list(copies.glob("*-public.nutrition_goals-*"))) == 2


def saving_leaves_the_repository_as_it_was(port: int, token: str, copies: Path, before: dict[str, str]) -> None:
    model = api(port, token, "/api/contents/03_plan.ipynb")
    model["content"]["cells"][0]["source"] += "\n\nproduction output: users 42, 43"
    api(port, token, "/api/contents/03_plan.ipynb", "PUT",
        {"type": "notebook", "format": "json", "content": model["content"]})
    assert "production output" in (copies / "03_plan.ipynb").read_text()
    assert repository_notebooks() == before


@pytest.mark.slow
def test_a_dba_session_in_the_lab_is_kept_apart_sealed_and_leaves_the_repository_alone(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    repository_before = repository_notebooks()
    with lab_server(tmp_path, dsn) as (port, token, copies):
        contents = api(port, token, "/api/contents")
        assert {"03_plan.ipynb", "07_rollback.ipynb", "GUIDE.md"} <= {item["name"] for item in contents["content"]}
        users = users_from_00_to_06(port, token, copies)
        goals_in_a_new_session(port, token, copies, users)
        saving_leaves_the_repository_as_it_was(port, token, copies, repository_before)
