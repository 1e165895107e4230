"""`runbook lab` serves copies of the notebooks; notebooks run through the Jupyter server's API work unedited."""
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
from pathlib import Path
from typing import Any

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
    """Open ``path`` in a kernel and run its code cells in order (``override`` runs right after the
    parameter cell, as a DBA editing it would)."""
    session = api(port, token, "/api/sessions", "POST",
                  {"path": path, "type": "notebook", "kernel": {"name": "python3"}})
    notebook = api(port, token, f"/api/contents/{path}")["content"]
    sources = [c["source"] for c in notebook["cells"] if c["cell_type"] == "code"]
    if override:
        sources.insert(1, override)
    return asyncio.run(execute_cells(port, token, session["kernel"]["id"], sources))


@pytest.mark.slow
def test_lab_works_on_copies_and_keeps_each_parent_table_in_its_own_folder(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    repository_before = repository_notebooks()
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
        contents = api(port, token, "/api/contents")
        assert {"03_plan.ipynb", "07_rollback.ipynb", "GUIDE.md"} <= {item["name"] for item in contents["content"]}
        results = run_notebook(port, token, "03_plan.ipynb")
        assert [r["status"] for r in results] == ["ok"] * len(results), results[-1]
        assert "PASS: plan: 16 change(s) planned" in results[-1]["stdout"]
        [users] = list(copies.glob("*-public.users-*"))
        assert f"run folder: {users.name}" in results[0]["stdout"] + results[1]["stdout"]
        assert "DROP CONSTRAINT" in (users / "plan.sql").read_text()

        # Another parent table in the same lab: a folder of its own, and the plan of that table.
        results = run_notebook(port, token, "03_plan.ipynb", 'parent_table = "nutrition_goals"')
        assert [r["status"] for r in results] == ["ok"] * len(results), results[-1]
        assert "PASS: plan: 1 change(s) planned" in results[-1]["stdout"]
        [goals] = list(copies.glob("*-public.nutrition_goals-*"))
        assert "nutrition_goal_targets" in (goals / "plan.sql").read_text()
        assert "memberships" not in (goals / "plan.sql").read_text()

        # Saving through the Jupyter API writes the copy; the repository's notebooks stay as they were.
        model = api(port, token, "/api/contents/03_plan.ipynb")
        model["content"]["cells"][0]["source"] += "\n\nproduction output: users 42, 43"
        api(port, token, "/api/contents/03_plan.ipynb", "PUT",
            {"type": "notebook", "format": "json", "content": model["content"]})
        assert "production output" in (copies / "03_plan.ipynb").read_text()
        assert repository_notebooks() == repository_before
    finally:
        lab.terminate()  # `runbook lab` passes it on to JupyterLab, which shuts its kernels down
        try:
            lab.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(lab.pid, signal.SIGKILL)
        time.sleep(1)
        leftovers = subprocess.run(["pgrep", "-f", f"--port={port}"], capture_output=True, text=True).stdout
        assert not leftovers.strip(), f"JupyterLab still running: {leftovers}"
