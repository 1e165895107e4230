"""The demo: a throw-away embedded PostgreSQL, a demo database, and the whole runbook run on it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import embedded, logger

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = {
    "health": ("demo_health", ROOT / "demo" / "health_app.sql", ROOT / "parameters" / "demo_health.yaml"),
    "qa": ("demo_qa", ROOT / "demo" / "qa_marketplace.sql", ROOT / "parameters" / "demo_qa.yaml"),
    "board": ("demo_board", ROOT / "demo" / "image_board.sql", ROOT / "parameters" / "demo_board.yaml"),
}


def demo_data_dir() -> Path:
    return embedded.default_root() / "demo-data"


def _clear_leftover(pgdata: Path) -> None:
    """A crashed demo leaves its server running: stop it and start from nothing."""
    if not pgdata.exists():
        return
    embedded._drop_dead_pids(pgdata)
    tools = embedded.bin_dir()
    if tools is not None and (pgdata / "postmaster.pid").exists():
        owner = pgdata.owner()
        cmd = [str(tools / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop"]
        if os.geteuid() == 0 and owner != "root":
            cmd = ["runuser", "-u", owner, "--"] + cmd
        subprocess.run(cmd, capture_output=True, timeout=60)
        logger.info("stopped a leftover demo server in %s", pgdata)
    shutil.rmtree(pgdata, ignore_errors=True)


def load_schema(server_uri: str, database: str, schema_file: Path) -> str:
    with psycopg.connect(server_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    dsn = make_conninfo(server_uri, dbname=database)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(schema_file.read_text(encoding="utf-8"))
        # Exact row estimates (every demo table is smaller than ANALYZE's sample): stable notebook output.
        conn.execute("ANALYZE")
    return dsn


@contextmanager
def demo_server() -> Iterator[Any]:
    pgdata = demo_data_dir()
    _clear_leftover(pgdata)
    with embedded.server(pgdata) as srv:
        yield srv


def summary(run_dir: Path) -> list[str]:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    lines = [f"{s['step']:<10} {s['status']:<8} {s['seconds']:>6.2f}s" for s in manifest["steps"]]
    applied = json.loads((run_dir / "apply_result.json").read_text()) if (run_dir / "apply_result.json").exists() else {}
    changed = sum(1 for r in applied.get("results", []) if r["status"] == "applied")
    lines.append(f"foreign keys changed: {changed}")
    verdict = run_dir / "verdicts" / "test_user.json"
    if verdict.exists():
        recorded = json.loads(verdict.read_text())
        status = recorded.get("status") or ("passed" if recorded.get("ok") else "failed")
        label = {"passed": "PASS", "skipped": "SKIPPED"}.get(status, "FAIL")
        lines.append(f"test-user deletion: {label}: {recorded['message']}")
    index = run_dir / "index.html"
    lines.append(f"evidence: {index if index.exists() else run_dir / 'manifest.json'}")
    return lines


def run_demo(schema: str, evidence_dir: Path) -> int:
    from . import runner

    database, schema_file, params_file = SCHEMAS[schema]
    with demo_server() as srv:
        dsn = load_schema(srv.get_uri(), database, schema_file)
        previous = os.environ.get("RUNBOOK_DSN")
        os.environ["RUNBOOK_DSN"] = dsn
        try:
            result = runner.run(params_file, evidence_dir=evidence_dir, overrides=["dry_run=false"])
        finally:
            if previous is None:
                os.environ.pop("RUNBOOK_DSN", None)
            else:
                os.environ["RUNBOOK_DSN"] = previous
    for line in summary(result.run_dir):
        print(line)
    if not result.ok:
        print(f"runbook: {runner.main_stream_line(result)}", file=sys.stderr)
        return 1
    return 0
