"""Regenerate the notebooks' stored outputs from a canonical run against a fresh demo database.

    .venv/bin/python scripts/regenerate_outputs.py

Run it after an intended change to what a notebook shows, review the diff, commit. The canonical
server is the embedded PostgreSQL 18; the run is the one in scripts/canonical_run.py: 00 to 05 as a
dry run, then a real apply, 06 deleting a test user on the changed database, 08 erasing a real user
and 07 rolling the apply back. Stored outputs are sanitized with notebooks/nbval_sanitize.cfg, so they hold no paths and no
secrets.
"""
from __future__ import annotations

import os
import re
import sys
import tempfile
from pathlib import Path

import nbformat
from nbconvert.preprocessors import ExecutePreprocessor
from nbval.plugin import get_sanitize_patterns

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from build_notebooks import main as build_sources  # noqa: E402
from canonical_run import CHECKED, REAL, apply_for_real, injected, with_injection, without_injection  # noqa: E402

from runbook_lib import demo, embedded  # noqa: E402

SANITIZE = ROOT / "notebooks" / "nbval_sanitize.cfg"


def sanitize(text: str, patterns: list[tuple[str, str]]) -> str:
    for regex, replace in patterns:
        text = re.sub(regex, replace, text)
    return text


def sanitize_outputs(nb: nbformat.NotebookNode, patterns: list[tuple[str, str]]) -> None:
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output["text"] = sanitize(output["text"], patterns)
            for key, value in output.get("data", {}).items():
                if isinstance(value, str):
                    output["data"][key] = sanitize(value, patterns)


def main() -> int:
    build_sources()
    # Sections marked compare-only normalize text for nbval's comparison; stored outputs keep it.
    kept = re.split(r"^\[compare-only[^\]]*\]$", SANITIZE.read_text(), maxsplit=1, flags=re.MULTILINE)[0]
    patterns = get_sanitize_patterns(kept)
    with embedded.server() as srv, tempfile.TemporaryDirectory() as tmp:
        database, schema_file, _ = demo.SCHEMAS["health"]
        dsn = demo.load_schema(srv.get_uri(), database, schema_file)
        os.environ["RUNBOOK_DSN"] = dsn
        os.environ["RUNBOOK_RUN_DIR"] = str(Path(tmp) / "run")
        evidence = Path(tmp) / "ev"
        for name in CHECKED:
            if name == REAL[0]:
                apply_for_real(dsn, evidence)
            path = ROOT / "notebooks" / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            if name in REAL:
                nb = with_injection(nb, injected(name, evidence))
            ExecutePreprocessor(timeout=600, kernel_name="python3", record_timing=False).preprocess(
                nb, {"metadata": {"path": str(path.parent)}})
            sanitize_outputs(nb, patterns)
            nbformat.write(without_injection(nb), path)
            print(f"regenerated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
