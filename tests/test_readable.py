"""Output people read: the preview fits a 100-column terminal, wide tables scroll inside the page."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from runbook_lib import runner
from tests.conftest import sql_file
from tests.test_cli import runbook


@pytest.mark.slow
def test_preview_fits_100_columns(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\n")
    result = runbook("preview", "--params", str(params), "--user-id", "1", dsn=dsn, cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr
    assert "public.nutrition_goals" in result.stdout, result.stdout
    too_wide = [line for line in result.stdout.splitlines() if len(line) > 100]
    assert not too_wide, too_wide


def test_notebook_pages_scroll_wide_tables_inside_the_page(tmp_path: Path) -> None:
    nb = new_notebook()
    wide = "<table class=\"dataframe\"><tr>" + "".join(f"<td>{'x' * 40}</td>" for _ in range(40)) + "</tr></table>"
    cell = new_code_cell("plan", outputs=[new_output("execute_result", data={"text/html": wide},
                                                     execution_count=1)])
    nb.cells = [cell]
    path = tmp_path / "03_plan.ipynb"
    nbformat.write(nb, path)
    page = runner.render_html(path).read_text()
    assert "table.dataframe{display:block;max-width:100%;overflow-x:auto}" in page
    assert page.index("overflow-x:auto}</style>") < page.index("</head>")
