"""Small holes closed: a preview key the server cannot read, and journals of runs nobody recorded."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runbook_lib import steps
from runbook_lib.context import RunContext
from tests.conftest import sql_file
from tests.test_cli import runbook, write_params
from tests.test_resume import KEY, swap_to_validate


def test_a_preview_key_of_the_wrong_type_is_one_line_and_exit_2(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = write_params(tmp_path)
    for bad in ("1; x", "1 OR 1=1", "99999999999999999999999"):
        result = runbook("preview", "--params", str(params), "--user-id", bad, dsn=dsn, cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("runbook: error: user id") and "Traceback" not in result.stderr
        assert "public.users" in lines[0]


def test_a_journal_no_recorded_run_wrote_is_not_trusted(make_db: Any, tmp_path: Path) -> None:
    """A journal dropped beside the runs cannot make the next run validate (or skip) anything."""
    dsn = make_db(sql_file("edge_cases.sql"))
    params, _before, _item = swap_to_validate(dsn)
    planted = tmp_path / "ev" / "planted"
    planted.mkdir(parents=True)
    (planted / "apply_journal.jsonl").write_text(
        json.dumps({"event": "start", "constraint": KEY, "validate_pending": True}) + "\n")
    ctx = RunContext(params=params, run_dir=tmp_path / "ev" / "next", dsn=dsn)
    ctx.run_dir.mkdir()
    assert steps.pending(ctx) == set()
    steps.inspect(ctx)
    planned = steps.plan(ctx).item(KEY)
    assert planned is not None and not planned.pending_validation and planned.change
