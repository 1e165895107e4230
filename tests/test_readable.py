"""Output people read: the preview fits a 100-column terminal, wide tables scroll inside the page."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from runbook_lib import runner, terminal
from tests import wide_schema
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


def page_of(tmp_path: Path, hide_code: bool = False) -> str:
    nb = new_notebook()
    wide = ("<style scoped>.dataframe tbody tr th {vertical-align: top;}</style><table class=\"dataframe\"><thead>"
            "<tr><th>constraint</th></tr></thead><tbody><tr>" + "".join(f"<td>{'x' * 40}</td>" for _ in range(40))
            + "</tr></tbody></table><img src=x onerror=alert(1)><script>alert(2)</script>")
    cell = new_code_cell("plan_frame = report.plan_frame(plan)",
                         outputs=[new_output("execute_result", data={"text/html": wide}, execution_count=1)])
    nb.cells = [new_markdown_cell("# The plan\n\nEvery foreign key <b onmouseover=alert(3)>into</b> the set."), cell]
    path = tmp_path / "03_plan.ipynb"
    nbformat.write(nb, path)
    return runner.render_html(path, hide_code=hide_code).read_text()


def test_notebook_pages_wrap_long_cells_and_keep_report_markup(tmp_path: Path) -> None:
    page = page_of(tmp_path)
    assert "overflow-wrap:anywhere" in page and "table.dataframe{display:block;max-width:100%;overflow-x:auto}" in page
    assert page.index("overflow-wrap:anywhere}</style>") < page.index("</head>")
    # A heading and a DataFrame's header are markup; pandas' own style block and anything live are gone.
    assert '<h1 id="The-plan">' in page and "<th>constraint</th>" in page and "&lt;th&gt;" not in page
    body = page[page.index("<body"):]
    assert "vertical-align: top" not in body and "onerror" not in body and "onmouseover" not in body
    assert "<script>alert" not in body and "<img" not in body
    assert "plan_frame" in body  # the code cell is shown by default


def test_pages_for_auditors_leave_the_code_out(tmp_path: Path) -> None:
    body = page_of(tmp_path, hide_code=True)
    body = body[body.index("<body"):]
    assert "plan_frame" not in body and "<th>constraint</th>" in body and '<h1 id="The-plan">' in body
    assert "report.plan_frame" in (tmp_path / "03_plan.ipynb").read_text()


def too_wide(text: str) -> list[str]:
    return [line for line in text.splitlines() if len(line) > terminal.WIDTH]


def joined(text: str) -> str:
    """Wrapped lines put back together, to find a statement whole."""
    return " ".join(line.strip() for line in text.splitlines())


def test_code_wraps_only_outside_quotes() -> None:
    statement = 'ALTER TABLE "Other Schema"."a table with spaces in its name" ' + "VALIDATE CONSTRAINT x " * 8
    lines = terminal.code_lines(statement, "  ", first="fix: ")
    assert len(lines) > 1 and all(len(line) <= terminal.WIDTH for line in lines), lines
    assert '"Other Schema"."a table with spaces in its name"' in lines[0]
    assert joined("\n".join(lines)) == "fix: " + statement.strip()


def models_source(tables: list[str]) -> str:
    """SQLAlchemy models of the wide schema as its application would write them: no ondelete."""
    lines = ["from sqlalchemy import BigInteger, ForeignKey, Text",
             "from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column", "", "",
             "class Base(DeclarativeBase):", "    pass", "", "",
             "class User(Base):", '    __tablename__ = "users"',
             "    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)",
             "    email: Mapped[str] = mapped_column(Text)"]
    with_actor = dict(zip(tables, wide_schema.actor_columns(len(tables))))
    for name in tables:
        lines += ["", "", f"class {name.title().replace('_', '')}(Base):", f'    __tablename__ = "{name}"',
                  "    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)",
                  '    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))',
                  f'    {with_actor[name]}: Mapped[int | None] = mapped_column(ForeignKey("users.id"))',
                  "    free_text_description_of_what_happened: Mapped[str] = mapped_column(Text)"]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_every_command_fits_100_columns_on_a_40_table_schema(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(wide_schema.schema_sql())
    params = tmp_path / "p.yaml"
    params.write_text("parent_table: users\n")
    (tmp_path / "wide_models.py").write_text(models_source(wide_schema.table_names()))
    last = "warehouse_inventory_reservation_history_entries"
    expected = {
        "preview": ("--user-id", "1"),
        "erase": ("--user-id", "1"),
        "check": (),
        "orm-check": ("--models", "wide_models:Base"),
    }
    out = {}
    for command, extra in expected.items():
        result = runbook(command, "--params", str(params), *extra, dsn=dsn, cwd=tmp_path)
        assert result.returncode == 1, (command, result.stderr[-2000:])  # the policy is not applied yet
        assert not too_wide(result.stdout), (command, too_wide(result.stdout))
        out[command] = result.stdout
    # Cut to fit, the full statements are still there to copy, and every table is named.
    assert (f'ALTER TABLE "public"."{last}" VALIDATE CONSTRAINT "{last}_user_id_fkey"') in joined(out["check"])
    assert "80 foreign key(s) differ from the policy" in out["check"]
    assert (f'CREATE INDEX CONCURRENTLY "{last}_user_id_fk_idx" ON "public"."{last}" ("user_id")'
            in joined(out["erase"]))
    assert f"public.{last} " in out["erase"] and "public.users " in out["erase"]
    # A frame too wide for one block is cut into blocks that each start with the row's name, whole here.
    assert all(f"public.{name} " in out["preview"] for name in wide_schema.table_names())
    assert out["orm-check"].count("write: ForeignKey(") == 80, out["orm-check"][-3000:]
    assert "wide_models.py:" in out["orm-check"] and str(tmp_path) not in out["orm-check"]
