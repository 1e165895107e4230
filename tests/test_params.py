"""Parameters: unknown keys and bad values are errors before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from runbook_lib.errors import ParameterError
from runbook_lib.params import load, parse_duration, validate


def test_defaults_fill_every_key() -> None:
    p = validate({"parent_table": "users"})
    assert p.parent_schema == "public" and p.dry_run is True and p.rules == {}
    assert p.backup == {"enabled": True, "dir": "backups"}
    assert p.test_user == {"commit": False, "rehearse": False, "values": {}}
    assert p.preview_user_id is None
    assert p.lock_timeout_ms == 2000


@pytest.mark.parametrize("raw, fragment", [
    ({"parent_table": "users", "dryrun": True}, "unknown parameter key(s): dryrun"),
    ({}, "'parent_table' is required"),
    ({"parent_table": "users", "dry_run": "yes"}, "'dry_run': expected true or false"),
    ({"parent_table": "users", "lock_timeout": "0s"}, "must be greater than zero"),
    ({"parent_table": "users", "lock_timeout": "soon"}, "expected a duration"),
    ({"parent_table": "users", "rules": {"billing": "DELETE"}}, "'billing' has rule 'DELETE'"),
    ({"parent_table": "users", "rules": ["billing"]}, "expected a mapping"),
    ({"parent_table": "users", "backup": {"enabled": True, "path": "x"}}, "under 'backup': path"),
    ({"parent_table": "users", "backup": {"enabled": "no"}}, "'backup.enabled'"),
    ({"parent_table": "users", "lock_retries": 0}, "at least 1"),
    ({"parent_table": 5}, "'parent_table': expected a non-empty string"),
])
def test_bad_parameters_give_one_line_naming_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ParameterError) as err:
        validate(raw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_rules_are_normalized() -> None:
    p = validate({"parent_table": "u", "rules": {"a": "set  null", "b": "Keep", "c": "no action"}})
    assert p.rules == {"a": "SET NULL", "b": "keep", "c": "NO ACTION"}


@pytest.mark.parametrize("text, seconds", [("2s", 2.0), ("500ms", 0.5), ("1min", 60.0), (3, 3.0)])
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_file_and_overrides(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("parent_table: users\nbackup: {enabled: true, dir: b}\n")
    p = load(f, ["dry_run=false", "backup.enabled=false", "rules.billing=SET NULL"])
    assert p.dry_run is False and p.backup_enabled is False and p.rules == {"billing": "SET NULL"}


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="not found"):
        load(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("parent_table: [unclosed\n")
    with pytest.raises(ParameterError, match="not valid YAML"):
        load(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n")
    with pytest.raises(ParameterError, match="mapping"):
        load(listy)


def test_shipped_parameter_files_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent / "parameters"
    files = sorted(root.rglob("*.yaml"))
    assert files
    for f in files:
        load(f)
