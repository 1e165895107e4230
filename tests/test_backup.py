"""The backup step: each mode, private files, safe names, the child's environment, apply's check."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import psycopg
import pytest

from runbook_lib import backup, backup_choice, embedded, restore_point, steps
from runbook_lib.context import RunContext
from runbook_lib.errors import ApplyError, BackupError
from runbook_lib.params import validate
from tests.conftest import create_database, drop_database, sql_file
from tests.test_cli import runbook, write_params

# A realistic schema with data in every table, so that a data dump and a schema dump differ.
SCHEMA = sql_file("edge_cases.sql")


def make_ctx(dsn: str, run_dir: Path, **backup_values: Any) -> RunContext:
    run_dir.mkdir(parents=True, exist_ok=True)
    params = validate({"parent_table": "users", "dry_run": False, "rules": {"billing": "SET NULL"},
                       "backup": {"enabled": True, **backup_values}})
    return RunContext(params=params, run_dir=run_dir, dsn=dsn)


def listing(path: Path) -> list[str]:
    tool = backup.choose_tool("pg_restore", 15)
    out = subprocess.run([tool.path, "--list", str(path)], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line and not line.startswith(";")]


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# ---------------------------------------------------------------- file names (no server needed)
@pytest.mark.parametrize("name", ["app", "x/../../../tmp/evil", "..", ".hidden", "-rf", "a..b", "ä ö/ü", "", "/"])
def test_safe_file_name_keeps_only_plain_characters_and_never_climbs(name: str) -> None:
    safe = backup.safe_file_name(name)
    assert safe and all(c.isascii() and (c.isalnum() or c in "._-") for c in safe)
    assert ".." not in safe and not safe.startswith((".", "-"))
    folder = Path("/srv/backups")
    assert (folder / f"{safe}.dump").resolve().parent == folder


def test_names_that_clean_up_alike_still_get_different_files() -> None:
    assert backup.safe_file_name("a/b") != backup.safe_file_name("a_b")
    assert backup.safe_file_name("a/b").startswith("a_b-")


# ---------------------------------------------------------------- the child's environment
def test_pg_dump_sees_the_connection_and_locale_but_no_other_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNBOOK_EVIDENCE_KEY", "hmac-key-not-for-pg_dump")
    monkeypatch.setenv("RUNBOOK_DSN", "postgresql://u:pw@h/db")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "cloud-secret")
    monkeypatch.setenv("PGSSLMODE", "prefer")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    env = backup.child_env("host=db.example.com port=5433 dbname=app user=migrator password=S3cret "
                           "sslmode=require application_name=x")
    assert env["PGPASSWORD"] == "S3cret" and env["PGHOST"] == "db.example.com" and env["PGPORT"] == "5433"
    assert env["PGDATABASE"] == "app" and env["PGUSER"] == "migrator" and env["PGSSLMODE"] == "require"
    assert env["LC_ALL"] == "C.UTF-8" and env["PATH"] == os.environ["PATH"]
    allowed = set(backup.LIBPQ_ENV.values()) | {"PATH", "HOME", "LANG", "LANGUAGE", "TZ", "PGSERVICEFILE",
                                                 "PGSYSCONFDIR", "PGLOCALEDIR", "PGTZ", "PGDATESTYLE", "PGGEQO",
                                                 "KRB5CCNAME", "KRB5_CONFIG", "KRB5_KTNAME", "LD_LIBRARY_PATH",
                                                 "SSL_CERT_FILE", "SSL_CERT_DIR"}
    assert all(k in allowed or k.startswith("LC_") for k in env), sorted(env)
    assert "RUNBOOK_EVIDENCE_KEY" not in env and "RUNBOOK_DSN" not in env and "AWS_SECRET_ACCESS_KEY" not in env
    # the tool's own run for --version sees even less
    assert not any(k.startswith(("PG", "RUNBOOK", "AWS")) for k in backup.base_env())


def test_a_secret_with_no_environment_variable_is_refused_not_put_on_a_command_line() -> None:
    with pytest.raises(BackupError, match="sslpassword"):
        backup.child_env("host=h dbname=d sslpassword=key-secret")


# ---------------------------------------------------------------- full and schema dumps
def test_full_and_schema_dumps_are_readable_hashed_private_and_in_the_run_folder(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(SCHEMA)
    old_umask = os.umask(0)  # the most permissive umask a job could run with
    try:
        full = steps.backup(make_ctx(dsn, tmp_path / "ev" / "run-full"))
        schema = steps.backup(make_ctx(dsn, tmp_path / "ev" / "run-schema", mode="schema"))
    finally:
        os.umask(old_umask)
    for record, run in ((full, "run-full"), (schema, "run-schema")):
        path = Path(record.path or "")
        assert path.parent == tmp_path / "ev" / run / "backups"
        assert mode_of(path) == 0o600 and mode_of(path.parent) == 0o700
        assert record.verified and record.sha256 == backup.sha256_file(path) and record.size == path.stat().st_size
        assert record.why and record.why.startswith(f"backup.mode {record.mode} from the parameters")
        saved = json.loads((tmp_path / "ev" / run / "backup.json").read_text())
        assert saved["mode"] == record.mode and saved["sha256"] == record.sha256
    assert full.mode == "full" and schema.mode == "schema" and schema.path and schema.path.endswith(".schema.dump")
    full_list, schema_list = listing(Path(full.path or "")), listing(Path(schema.path or ""))
    assert any(" TABLE DATA " in line for line in full_list)
    assert not any(" TABLE DATA " in line for line in schema_list)
    # every definition the runbook can change is in the schema dump
    assert any("FK CONSTRAINT public memberships memberships_owner_fk" in line for line in schema_list)
    assert any("COMMENT public CONSTRAINT memberships_owner_fk" in line for line in schema_list)
    assert schema.toc_entries == len(schema_list) and full.toc_entries == len(full_list)


def test_the_dump_file_is_private_while_pg_dump_is_still_writing_it(
        make_db: Any, server_version: int, tmp_path: Path) -> None:
    """pg_dump opens its file before it locks the tables: held up by a lock, the file can be seen."""
    dsn = make_db(SCHEMA)
    target = backup.dump_path(tmp_path / "backups", "run1", "app", "full")
    partial = target.with_name(target.name + ".partial")
    errors: list[BaseException] = []

    def dump() -> None:
        try:
            backup.make_dump(dsn, server_version // 10000, target)
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread
            errors.append(exc)

    old_umask = os.umask(0)
    try:
        with psycopg.connect(dsn) as blocker:
            blocker.execute("LOCK TABLE public.users IN ACCESS EXCLUSIVE MODE")
            worker = threading.Thread(target=dump)
            worker.start()
            deadline = time.monotonic() + 30
            while not partial.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            assert partial.exists(), "pg_dump did not create its file"
            assert mode_of(partial) == 0o600
            blocker.rollback()
            worker.join(60)
    finally:
        os.umask(old_umask)
    assert not errors, errors
    assert mode_of(target) == 0o600 and not partial.exists()


def test_a_database_named_to_climb_out_writes_its_dump_inside_the_backup_folder(
        server_dsn: str, tmp_path: Path) -> None:
    name = f"rb_{uuid.uuid4().hex[:6]}/../../../../../escape"
    dsn = create_database(server_dsn, SCHEMA, name=name)
    try:
        run_dir = tmp_path / "a" / "b" / "c" / "run1"
        record = steps.backup(make_ctx(dsn, run_dir))
    finally:
        drop_database(server_dsn, dsn)
    folder = run_dir / "backups"
    assert [p.name for p in folder.iterdir()] == [Path(record.path or "").name]
    assert Path(record.path or "").parent == folder
    assert not list(tmp_path.rglob("escape*")) and not list(Path(tempfile.gettempdir()).glob("escape*"))


def test_an_existing_folder_open_to_others_is_refused_at_preflight_and_by_the_backup(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(SCHEMA)
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o755)
    ctx = make_ctx(dsn, tmp_path / "run1", dir=str(shared))
    checks = {c.check: c for c in steps.preflight(ctx).checks}
    assert checks["backup folder"].status == "fail" and "mode 0755" in checks["backup folder"].detail
    with pytest.raises(BackupError, match="open to other users"):
        steps.backup(ctx)
    assert list(shared.iterdir()) == []


def test_preflight_shows_the_size_the_estimate_and_the_recommended_mode(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(SCHEMA)
    checks = {c.check: c for c in steps.preflight(make_ctx(dsn, tmp_path / "run1", mode="schema")).checks}
    with psycopg.connect(dsn) as conn:
        size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    assert checks["database size"].detail.startswith(f"{size:,} bytes; a full dump would be at most")
    # a small database: a full dump is recommended, so asking for schema is flagged for the DBA
    assert checks["backup mode"].status == "warn" and "recommended: full" in checks["backup mode"].detail
    assert checks["disk room"].status == "ok" and checks["pg_dump"].status == "ok"


def _assessment(table_bytes: int, free: int, archive: restore_point.ArchiveStatus) -> backup_choice.Assessment:
    return backup_choice.Assessment(database_bytes=table_bytes * 2, table_bytes=table_bytes, free_bytes=free,
                                    probe=Path("/"), archive=archive)


def _archive(mode: str = "on", failed: bool = False) -> restore_point.ArchiveStatus:
    return restore_point.ArchiveStatus(
        archive_mode=mode, archive_command="cp %p /a/%f", archive_library="", wal_level="replica",
        in_recovery=False, may_create=True, archived_count=3, last_archived_wal="0" * 24,
        last_archived_time=1.0, failed_count=1 if failed else 0, last_failed_wal="1" * 24 if failed else None,
        last_failed_time=2.0 if failed else None)


def test_the_recommendation_follows_size_room_and_archiving() -> None:
    rate = backup_choice.FULL_DUMP_BYTES_PER_SECOND
    assert _assessment(10**6, 10**9, _archive("off")).recommend().mode == "full"
    too_slow = int(rate * backup_choice.FULL_DUMP_MAX_SECONDS * 2)
    assert _assessment(too_slow, 10**15, _archive()).recommend().mode == "restore_point"
    assert _assessment(too_slow, 10**15, _archive("off")).recommend().mode == "schema"
    no_room = _assessment(10**9, 10**8, _archive(failed=True)).recommend()
    assert no_room.mode == "schema" and "archiver is failing" in no_room.reason


def test_the_disk_room_is_ok_for_the_bound_a_warning_for_a_usual_dump_and_a_failure_below() -> None:
    bound = 10**9
    assert _assessment(bound, bound, _archive()).room("full")[0] == "ok"
    status, detail = _assessment(bound, bound // 2, _archive()).room("full")
    assert status == "warn" and "enough if it compresses as usual" in detail
    status, detail = _assessment(bound, bound // 10, _archive("off")).room("full")
    assert status == "fail" and "would not fit" in detail and "backup.mode schema" in detail
    assert _assessment(bound, bound // 10, _archive("off")).room("schema")[0] == "ok"
    assert _assessment(bound, 1024, _archive("off")).room("schema")[0] == "fail"


# ---------------------------------------------------------------- apply's check
def test_apply_accepts_only_a_verified_backup_of_the_chosen_mode_from_this_run(make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(SCHEMA)
    ctx = make_ctx(dsn, tmp_path / "run1", mode="schema")
    record = steps.backup(ctx).to_dict()
    assert backup.check_record(record, "schema") is None
    assert "of mode schema, the parameters ask for full" in (backup.check_record(record, "full") or "")
    steps.inspect(ctx)
    wrong_mode = make_ctx(dsn, tmp_path / "run1")  # same run folder, parameters now ask for full
    with pytest.raises(ApplyError, match="mode schema, the parameters ask for full"):
        steps.apply(wrong_mode)
    Path(record["path"]).write_bytes(b"not the dump")
    assert "does not match its recorded sha256" in (backup.check_record(record, "schema") or "")
    Path(record["path"]).unlink()
    assert "missing" in (backup.check_record(record, "schema") or "")


# ---------------------------------------------------------------- restore points
def test_restore_point_without_archiving_is_refused_in_one_line_exit_2_and_nothing_written(
        make_db: Any, tmp_path: Path) -> None:
    dsn = make_db(SCHEMA)
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SHOW archive_mode").fetchone() == ("off",)
    params = write_params(tmp_path, backup={"enabled": True, "mode": "restore_point"})
    result = runbook("run", "--params", str(params), "--evidence-dir", str(tmp_path / "ev"), dsn=dsn, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "runbook: error: backup.mode restore_point refused: WAL archiving is off (archive_mode = off); "
        "backup.mode restore_point needs it: use backup.mode full or schema"]
    assert not (tmp_path / "ev").exists()
    ctx = make_ctx(dsn, tmp_path / "run1", mode="restore_point")
    checks = {c.check: c for c in steps.preflight(ctx).checks}
    assert checks["WAL archiving"].status == "fail" and "archive_mode = off" in checks["WAL archiving"].detail
    with pytest.raises(BackupError, match="WAL archiving is off"):
        steps.backup(ctx)


@pytest.fixture(scope="module")
def archiving_server() -> Iterator[str]:
    """An embedded server restarted with archive_mode = on, archiving into a folder of its data dir."""
    root = embedded.default_root()
    root.mkdir(parents=True, exist_ok=True)
    pgdata = Path(tempfile.mkdtemp(prefix="archiving-", dir=root))
    pgdata.rmdir()
    with embedded.server(pgdata, keep=True) as srv:
        with psycopg.connect(srv.get_uri(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET archive_mode = 'on'")
            conn.execute("ALTER SYSTEM SET archive_command = 'mkdir -p archive && cp %p archive/%f'")
    with embedded.server(pgdata) as srv:  # archive_mode takes a restart
        yield srv.get_uri()


def test_a_restore_point_is_made_archived_recorded_and_accepted_by_apply(
        archiving_server: str, tmp_path: Path) -> None:
    dsn = create_database(archiving_server, SCHEMA)
    try:
        ctx = make_ctx(dsn, tmp_path / "ev" / "20260101T000000Z-abc123", mode="restore_point")
        checks = {c.check: c for c in steps.preflight(ctx).checks}
        assert checks["WAL archiving"].status == "ok" and "archive_mode = on" in checks["WAL archiving"].detail
        record = steps.backup(ctx)
        assert record.verified and record.mode == "restore_point" and record.path is None
        assert record.restore_point == "cascade-runbook-20260101T000000Z-abc123"
        assert record.timeline == 1 and record.wal_file and record.lsn and record.created_at
        with psycopg.connect(dsn) as conn:
            archived = conn.execute("SELECT last_archived_wal FROM pg_stat_archiver").fetchone()[0]  # type: ignore[index]
            in_file = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", [record.lsn]).fetchone()[0]  # type: ignore[index]
        assert archived[:24] >= record.wal_file == in_file
        saved = json.loads(ctx.path("backup.json").read_text())
        assert saved["lsn"] == record.lsn and saved["archive"]["before"]["archive_mode"] == "on"
        assert backup.check_record(saved, "restore_point") is None
        steps.inspect(ctx)
        outcome = steps.apply(ctx)
        assert not outcome.failed and outcome.results
        assert outcome.backup_note.startswith(f"verified restore point {record.restore_point} at LSN {record.lsn}")
    finally:
        drop_database(archiving_server, dsn)


def test_a_failing_archiver_refuses_the_restore_point(archiving_server: str) -> None:
    dsn = create_database(archiving_server)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET archive_command = 'false'")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
            conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 30
            while restore_point.status(conn).last_failed_time is None and time.monotonic() < deadline:
                time.sleep(0.2)
            found = restore_point.status(conn)
            assert found.failing
            with pytest.raises(BackupError, match="the WAL archiver is failing"):
                restore_point.require_archiving(conn)
            conn.execute("ALTER SYSTEM RESET archive_command")
            conn.execute("ALTER SYSTEM SET archive_command = 'mkdir -p archive && cp %p archive/%f'")
            conn.execute("SELECT pg_reload_conf()")
            deadline = time.monotonic() + 60
            while restore_point.status(conn).failing and time.monotonic() < deadline:
                time.sleep(0.2)
            assert restore_point.status(conn).problem() is None
    finally:
        drop_database(archiving_server, dsn)
