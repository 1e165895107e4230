"""`runbook check`: the CI guard fails the day a new table forgets its ondelete, and passes once the
database is as the policy wants."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from tests.conftest import sql_file
from tests.toolchain_support import fk_state, runbook, runbook_apply, write_params

RULES = {"billing": "SET NULL"}


def test_check_fails_on_a_new_plain_reference_and_passes_once_applied(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    params = write_params(tmp_path, rules=RULES)
    before = fk_state(dsn)
    pending = runbook(dsn, "check", "--params", str(params), cwd=tmp_path)
    assert pending.returncode == 1, pending.stderr
    assert "public.appointments.appointments_user_id_fkey: ON DELETE NO ACTION, the policy wants CASCADE" in pending.stdout
    assert pending.stdout.strip().splitlines()[-1].startswith("16 foreign key(s) differ from the policy")
    assert fk_state(dsn) == before  # read-only

    runbook_apply(dsn, params, tmp_path / "evidence" / "first")
    clean = runbook(dsn, "check", "--params", str(params), cwd=tmp_path)
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout.startswith("every foreign key into the deletion set of public.users has the rule")

    # The application's next migration adds a table the way people write it.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.sleep_logs (id bigserial PRIMARY KEY, "
                     "user_id bigint NOT NULL REFERENCES users, slept_at timestamptz NOT NULL)")
    new = runbook(dsn, "check", "--params", str(params), cwd=tmp_path)
    assert new.returncode == 1
    lines = new.stdout.strip().splitlines()
    assert all(len(line) <= 100 for line in lines), lines
    fix = next(n for n, line in enumerate(lines) if line.startswith("    fix: "))
    assert " ".join(line.strip() for line in lines[:fix]) == (
        "public.sleep_logs.sleep_logs_user_id_fkey: ON DELETE NO ACTION, the policy wants CASCADE "
        "(ownership: user_id is named like an owner (distance 1 from public.users))")
    # The DDL is wrapped at spaces only: put back together, it is the statement to run.
    assert " ".join(line.strip() for line in lines[fix:-1]) == (
        'fix: ALTER TABLE "public"."sleep_logs" DROP CONSTRAINT "sleep_logs_user_id_fkey", '
        'ADD CONSTRAINT "sleep_logs_user_id_fkey" FOREIGN KEY ("user_id") REFERENCES "public"."users" '
        '("id") ON UPDATE NO ACTION ON DELETE CASCADE NOT VALID; '
        'ALTER TABLE "public"."sleep_logs" VALIDATE CONSTRAINT "sleep_logs_user_id_fkey"')
    assert lines[-1].startswith("1 foreign key(s) differ from the policy and 0 decision(s) are open")

    runbook_apply(dsn, params, tmp_path / "evidence" / "second")
    assert runbook(dsn, "check", "--params", str(params), cwd=tmp_path).returncode == 0


def test_check_lists_open_decisions(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("db_self_ref_not_null.sql"))
    result = runbook(dsn, "check", "--params", str(write_params(tmp_path, parent_table="nodes")), cwd=tmp_path)
    assert result.returncode == 1
    assert any(line.startswith("decision needed: public.nodes.root_id") for line in result.stdout.splitlines())


def test_check_bad_input_is_one_line_and_exit_2(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(sql_file("edge_cases.sql"))
    result = runbook(dsn, "check", "--params", str(write_params(tmp_path, parent_table="no_such_table")), cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"runbook: error: parent table public.no_such_table does not exist in database "
        f"{psycopg.conninfo.conninfo_to_dict(dsn)['dbname']}"]
