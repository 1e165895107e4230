"""``runbook lab``: JupyterLab on a working copy of the notebooks, never on the repository's own.

The repository's ``notebooks/`` carry the canonical stored outputs that nbval compares against; a DBA
who saves a notebook run against production must not write table names, counts or user ids into
them. Each ``runbook lab`` copies the notebooks (outputs cleared) into a new folder of the evidence
folder, ``lab-<UTC time>/``, serves that folder, and keeps the evidence of the notebooks run there
beside them (one run folder per database and parent table, see run_folder).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import nbformat

from . import logger
from .run_folder import FOLDER_KEYS

GUIDE = """# Running the runbook by hand

These are working copies of the runbook's notebooks; saving them changes nothing in the repository.

1. Open each notebook in order, `00_preflight` to `06_test_user_deletion`, and run all its cells.
   Keep the parameter cell the same in every notebook. Only keys that say how a step runs may change
   between notebooks: `dry_run` (false for the real apply), timeouts, retries, `backup`, `test_user`,
   `preview_user_id`.
2. The set-up cell of each notebook prints its run folder: the notebooks for the same database, parent
   table and folder parameters ({keys}) continue in the same folder. Another parent table, or other
   folder parameters, start a new one (a warning under the set-up cell says so): run the steps from
   `00_preflight` again there.
3. A step refuses, in one line, a file of its folder that another database, parent table or run wrote,
   that was written under other folder parameters, or that was changed by hand: run the step that
   makes it again, with the folder's parameters.
4. The last cell of `06_test_user_deletion` seals the run folder: `manifest.json` and `index.html`, as
   `runbook run` writes them (a dry run reads "ALL RUN STEPS PASSED, 1 SKIPPED": the test user is
   skipped); `runbook verify-evidence FOLDER` checks it. The next notebook starts a new folder.
5. `07_rollback` restores what a run changed: set `source_run` to that run's folder.
""".format(keys=", ".join(f"`{key}`" for key in FOLDER_KEYS))


def prepare_copies(evidence_dir: Path, notebooks: Path) -> Path:
    """A new folder ``lab-<UTC time>`` under ``evidence_dir`` with the step notebooks, outputs cleared."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    folder = evidence_dir / f"lab-{stamp}"
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = evidence_dir / f"lab-{stamp}-{suffix}"
    folder.mkdir(parents=True)
    for source in sorted(notebooks.glob("*.ipynb")):
        nb = nbformat.read(source, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nbformat.write(nb, folder / source.name)
    (folder / "GUIDE.md").write_text(GUIDE, encoding="utf-8")
    logger.info("working copies of %s in %s", notebooks, folder)
    return folder.resolve()


def run_lab(*, demo: bool, port: int | None = None, open_browser: bool = True,
            evidence_dir: Path | None = None, announce: Callable[[str], None] = logger.info) -> int:
    """JupyterLab on fresh copies of the notebooks; the kernels inherit the connection (RUNBOOK_DSN or
    libpq's own)."""
    from .demo import SCHEMAS, demo_server, load_schema
    from .runner import notebooks_dir

    base = evidence_dir or Path(os.environ.get("RUNBOOK_EVIDENCE_DIR", "evidence"))
    folder = prepare_copies(base.resolve(), notebooks_dir())
    announce(f"working copies of the notebooks (the repository's notebooks/ stay untouched): {folder}")
    args = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={folder}"]
    if port is not None:
        args.append(f"--port={port}")
    if not open_browser:
        args.append("--no-browser")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        args.append("--allow-root")  # containers and CI machines often run as root
    # The notebooks' run folders go beside the copies, inside this lab folder.
    env = dict(os.environ, RUNBOOK_EVIDENCE_DIR=str(folder))
    if not demo:
        return _serve(args, env)
    with demo_server() as srv:
        database, schema_file, _ = SCHEMAS["health"]
        env["RUNBOOK_DSN"] = load_schema(srv.get_uri(), database, schema_file)
        return _serve(args, env)


def _serve(args: list[str], env: dict[str, str]) -> int:
    """Run JupyterLab until it ends; a SIGTERM to this process ends JupyterLab (and its kernels) too."""
    lab = subprocess.Popen(args, env=env)

    def stop(signum: int, _frame: object) -> None:
        lab.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return lab.wait()
    except KeyboardInterrupt:
        lab.terminate()
        return lab.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
