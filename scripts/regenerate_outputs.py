"""Regenerate the notebooks' stored outputs from a canonical run against a fresh demo database.

    .venv/bin/python scripts/regenerate_outputs.py

Run it after an intended change to what a notebook shows, review the diff, commit. The canonical
server is the embedded PostgreSQL 18; the run is the default dry run (nothing is applied). Stored
outputs are sanitized with notebooks/nbval_sanitize.cfg, so they hold no paths and no secrets.
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

from runbook_lib import demo, embedded  # noqa: E402

CHECKED = ["00_preflight", "01_backup", "02_inspect", "03_plan", "04_apply", "05_verify", "06_test_user_deletion"]
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
        os.environ["RUNBOOK_DSN"] = demo.load_schema(srv.get_uri(), database, schema_file)
        os.environ["RUNBOOK_RUN_DIR"] = str(Path(tmp) / "run")
        for name in CHECKED:
            path = ROOT / "notebooks" / f"{name}.ipynb"
            nb = nbformat.read(path, as_version=4)
            ExecutePreprocessor(timeout=600, kernel_name="python3", record_timing=False).preprocess(
                nb, {"metadata": {"path": str(path.parent)}})
            sanitize_outputs(nb, patterns)
            nbformat.write(nb, path)
            print(f"regenerated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
