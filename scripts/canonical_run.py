"""The canonical run behind the notebooks' stored outputs, shared by regenerate_outputs.py and the tests.

00 to 05 run as stored (the default dry run). Then the plan is applied for real by the runner (the run
folder ``applied``, with its manifest), 06 deletes a test user on the changed database, 08 erases a
real user of it and 07 rolls that run back: each with the values ``runbook run`` would inject after its
parameter cell, so that each is checked on the path where it does its real work.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import nbformat
from papermill.parameterize import parameterize_notebook

DRY = ["00_preflight", "01_backup", "02_inspect", "03_plan", "04_apply", "05_verify"]
# 08 erases a real user of the changed database before 07 rolls the change back.
REAL = ["06_test_user_deletion", "08_erase_user", "07_rollback"]
ERASED_USER = 7
CHECKED = DRY + REAL
APPLIED = "applied"


def injected(name: str, evidence: Path) -> dict[str, Any]:
    """What 06, 08 and 07 are run with: a real (not dry) run; 08 erases one user with ``confirm``; 07
    rolls back the run folder ``applied``."""
    values: dict[str, Any] = {"dry_run": False}
    if name == "08_erase_user":
        values.update(erase_user_id=ERASED_USER, confirm=True)
    if name == "07_rollback":
        values["source_run"] = str(evidence / APPLIED)
    return values


def with_injection(stored: nbformat.NotebookNode, values: dict[str, Any]) -> nbformat.NotebookNode:
    """The stored notebook plus papermill's injected-parameters cell (which prints nothing), stored
    outputs kept: what nbval executes and compares."""
    nb = nbformat.from_dict(stored)
    for cell in nb.cells:
        cell.metadata.setdefault("tags", [])  # papermill reads every cell's tags and its own metadata
    nb.metadata.setdefault("papermill", {})
    nb = parameterize_notebook(nb, values, kernel_name="python3", language="python")
    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.outputs = []
            cell.execution_count = None
    return nb


def without_injection(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        if cell.metadata.get("tags") == []:
            del cell.metadata["tags"]
    nb.metadata.pop("papermill", None)
    return nb


def apply_for_real(dsn: str, evidence: Path) -> Path:
    """Apply the notebooks' default plan to the database, as ``runbook run`` does, in ``evidence/applied``."""
    from runbook_lib import runner

    previous = {k: os.environ.get(k) for k in ("RUNBOOK_DSN", "RUNBOOK_RUN_DIR")}
    os.environ["RUNBOOK_DSN"] = dsn
    try:
        result = runner.run(None, evidence_dir=evidence, steps="preflight,inspect,plan,apply,verify",
                            overrides=["parent_table=users", "dry_run=false", "backup.enabled=false"],
                            run_id=APPLIED)
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if not result.ok:
        raise SystemExit(f"the canonical apply failed: {runner.main_stream_line(result)}")
    return result.run_dir
