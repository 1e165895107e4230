"""Parameters: unknown keys and bad values are errors before anything runs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from runbook_lib import paramdocs
from runbook_lib.errors import ParameterError
from runbook_lib.params import load, parse_duration, validate


def test_defaults_fill_every_key() -> None:
    p = validate({"parent_table": "users"})
    assert p.parent_schema == "public" and p.dry_run is True and p.rules == {}
    assert p.backup == {"enabled": True, "mode": "full", "dir": ""}
    assert p.test_user == {"commit": False, "rehearse": False, "values": {}}
    assert p.erase["batch_rows"] == 10_000 and p.erase["orphans"] == "report"
    assert p.ghost == {"key": None, "values": {}} and p.history_schema == "cascade_runbook"
    assert "user_id" in p.owner_columns and "*_by" in p.actor_columns
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
    ({"parent_table": "users", "lock_timeout": "2000000s"}, "'lock_timeout': at most 1min"),
    ({"parent_table": "users", "lock_retries": 100000}, "'lock_retries': at most 50"),
    ({"parent_table": "users", "statement_timeout": "0"}, "'statement_timeout': must be greater than zero"),
    ({"parent_table": "users", "backup": {"mode": "snapshot"}}, "'backup.mode': expected one of full, schema"),
    ({"parent_table": "users", "erase": {"orphans": "keep"}}, "'erase.orphans': expected one of report, delete"),
    ({"parent_table": "users", "erase": {"batch_rows": 0}}, "'erase.batch_rows': must be at least 1"),
    ({"parent_table": "users", "rules": {"posts.uploader_id": "ghosted"}}, "expected one of CASCADE"),
    ({"parent_table": "users", "owner_columns": "user_id"}, "'owner_columns': expected a list of names"),
    ({"parent_table": "users", "ghost": {"key": [1, 2]}}, "'ghost.key': expected a key value"),
])
def test_bad_parameters_give_one_line_naming_the_key(raw: dict, fragment: str) -> None:
    with pytest.raises(ParameterError) as err:
        validate(raw)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_rules_are_normalized() -> None:
    p = validate({"parent_table": "u", "rules": {"a": "set  null", "b": "Keep", "c": "no action", "d": "Ghost",
                                                 "e": "set default"}})
    assert p.rules == {"a": "SET NULL", "b": "keep", "c": "NO ACTION", "d": "ghost", "e": "SET DEFAULT"}


def test_rule_overrides_keep_dotted_names_whole() -> None:
    p = load(None, ["parent_table=users", "rules.forum_topics.updater_id=SET NULL", "erase.batch_rows=500"])
    assert p.rules == {"forum_topics.updater_id": "SET NULL"} and p.erase["batch_rows"] == 500


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


def test_defaults_yaml_is_the_rendered_spec() -> None:
    root = Path(__file__).resolve().parent.parent
    shipped = (root / "parameters" / "defaults.yaml").read_text(encoding="utf-8")
    assert shipped == paramdocs.defaults_yaml(), "run scripts/build_notebooks.py to regenerate defaults.yaml"
    assert load(root / "parameters" / "defaults.yaml") == validate({"parent_table": "users"})


def test_every_notebook_declares_the_spec_defaults() -> None:
    root = Path(__file__).resolve().parent.parent / "notebooks"
    books = sorted(root.glob("*.ipynb"))
    assert len(books) >= 8
    for book in books:
        cells = json.loads(book.read_text(encoding="utf-8"))["cells"]
        params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(params) == 1, book.name
        source = "".join(params[0]["source"])
        assert source.startswith(paramdocs.parameters_cell()), book.name
        setup = "".join(cells[cells.index(params[0]) + 1]["source"])
        assert paramdocs.context_call() in setup, book.name


def test_every_notebook_parameter_cell_evaluates_to_the_spec_defaults() -> None:
    """Not only the same text: the values the cell sets are the defaults validate() fills in."""
    from runbook_lib.params import SPEC, TOP_LEVEL

    root = Path(__file__).resolve().parent.parent
    expected = validate({"parent_table": "users"}).to_dict()
    for book in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(book.read_text(encoding="utf-8"))["cells"]
        [cell] = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        names: dict[str, object] = {}
        exec("".join(cell["source"]), {}, names)  # noqa: S102 - the repository's own generated cell
        extra = {"07_rollback": {"source_run"}, "08_erase_user": {"erase_user_id", "confirm"}}.get(book.stem, set())
        assert set(names) - {"run_dir"} - extra == set(TOP_LEVEL), book.name
        assert validate({k: names[k] for k in TOP_LEVEL}).to_dict() == expected, book.name
    shipped = yaml.safe_load((root / "parameters" / "defaults.yaml").read_text(encoding="utf-8"))
    for spec in SPEC:  # every key documented once, nested ones included (preview_user_id, test_user.values)
        head, _, sub = spec.key.partition(".")
        assert (sub in shipped[head]) if sub else (head in shipped), spec.key
    assert "preview_user_id" in shipped and "values" in shipped["test_user"]
