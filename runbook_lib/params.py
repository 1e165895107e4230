"""Parameters: load a YAML set, apply command-line overrides, and refuse anything unknown or malformed.

papermill only warns about parameters a notebook does not declare; the runbook instead rejects an
unknown key or a bad value before any step runs, with a one-line error naming the key.
"""
from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from .errors import ParameterError

RULES = ("CASCADE", "SET NULL", "RESTRICT", "NO ACTION", "keep")

DEFAULTS: dict[str, Any] = {
    "parent_table": None,
    "parent_schema": "public",
    "rules": {},
    "dry_run": True,
    "lock_timeout": "2s",
    "lock_retries": 5,
    "retry_backoff": 0.5,
    "create_missing_indexes": False,
    "backup": {"enabled": True, "dir": "backups"},
    "test_user": {"commit": False, "rehearse": False, "values": {}},
    "preview_user_id": None,
}

_NESTED_KEYS: dict[str, dict[str, type]] = {
    "backup": {"enabled": bool, "dir": str},
    "test_user": {"commit": bool, "rehearse": bool, "values": dict},
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min)?\s*$")


def parse_duration(value: object, key: str = "lock_timeout") -> float:
    """Seconds from '2s', '500ms', '1min' or a bare number of seconds."""
    if isinstance(value, bool):
        raise ParameterError(f"parameter {key!r}: expected a duration like '2s' or '500ms', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        number, unit = float(m.group(1)), m.group(2) or "s"
        seconds = number / 1000 if unit == "ms" else number * 60 if unit == "min" else number
    else:
        raise ParameterError(f"parameter {key!r}: expected a duration like '2s' or '500ms', got {value!r}")
    if seconds <= 0:
        # A zero lock_timeout means "wait forever" to PostgreSQL: exactly what the recipe forbids.
        raise ParameterError(f"parameter {key!r}: must be greater than zero, got {value!r}")
    return seconds


@dataclass(frozen=True)
class Parameters:
    parent_table: str
    parent_schema: str = "public"
    rules: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = True
    lock_timeout: str = "2s"
    lock_retries: int = 5
    retry_backoff: float = 0.5
    create_missing_indexes: bool = False
    backup: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["backup"]))
    test_user: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["test_user"]))
    preview_user_id: Any = None

    @property
    def lock_timeout_seconds(self) -> float:
        return parse_duration(self.lock_timeout)

    @property
    def lock_timeout_ms(self) -> int:
        return max(1, int(round(self.lock_timeout_seconds * 1000)))

    @property
    def backup_enabled(self) -> bool:
        return bool(self.backup["enabled"])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rules"] = dict(self.rules)
        data["backup"] = dict(self.backup)
        data["test_user"] = dict(self.test_user)
        return data


def _check_type(key: str, value: object, expected: type) -> None:
    if expected is bool and not isinstance(value, bool):
        raise ParameterError(f"parameter {key!r}: expected true or false, got {value!r}")
    if expected is str and (not isinstance(value, str) or not value):
        raise ParameterError(f"parameter {key!r}: expected a non-empty string, got {value!r}")
    if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ParameterError(f"parameter {key!r}: expected an integer, got {value!r}")
    if expected is dict and (not isinstance(value, Mapping)
                             or not all(isinstance(v, Mapping) for v in value.values())):
        raise ParameterError(f"parameter {key!r}: expected table -> {{column: value}}, got {value!r}")


def validate(raw: Mapping[str, Any]) -> Parameters:
    """Merge ``raw`` over the defaults and check every key and value."""
    if not isinstance(raw, Mapping):
        raise ParameterError(f"parameters must be a mapping of keys to values, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise ParameterError(
            f"unknown parameter key(s): {', '.join(map(str, unknown))} (known: {', '.join(DEFAULTS)})"
        )
    merged: dict[str, Any] = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key in _NESTED_KEYS:
            if not isinstance(value, Mapping):
                raise ParameterError(f"parameter {key!r}: expected a mapping, got {value!r}")
            bad = sorted(set(value) - set(_NESTED_KEYS[key]))
            if bad:
                raise ParameterError(
                    f"unknown parameter key(s) under {key!r}: {', '.join(map(str, bad))} "
                    f"(known: {', '.join(_NESTED_KEYS[key])})"
                )
            for sub, sub_value in value.items():
                _check_type(f"{key}.{sub}", sub_value, _NESTED_KEYS[key][sub])
            merged[key].update(value)
        else:
            merged[key] = value

    if merged["parent_table"] is None:
        raise ParameterError("parameter 'parent_table' is required")
    _check_type("parent_table", merged["parent_table"], str)
    _check_type("parent_schema", merged["parent_schema"], str)
    _check_type("dry_run", merged["dry_run"], bool)
    _check_type("create_missing_indexes", merged["create_missing_indexes"], bool)
    _check_type("lock_retries", merged["lock_retries"], int)
    if merged["lock_retries"] < 1:
        raise ParameterError(f"parameter 'lock_retries': must be at least 1, got {merged['lock_retries']}")
    backoff = merged["retry_backoff"]
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ParameterError(f"parameter 'retry_backoff': expected seconds >= 0, got {backoff!r}")
    parse_duration(merged["lock_timeout"])
    preview_user = merged["preview_user_id"]
    if preview_user is not None and (isinstance(preview_user, bool) or not isinstance(preview_user, (int, str))):
        raise ParameterError(f"parameter 'preview_user_id': expected a key value, got {preview_user!r}")
    rules = merged["rules"]
    if rules is None:
        rules = {}
    if not isinstance(rules, Mapping):
        raise ParameterError(f"parameter 'rules': expected a mapping of name -> rule, got {rules!r}")
    normalized: dict[str, str] = {}
    for name, rule in rules.items():
        if not isinstance(name, str) or not name:
            raise ParameterError(f"parameter 'rules': a key must be a table or constraint name, got {name!r}")
        canonical = _canonical_rule(rule)
        if canonical is None:
            raise ParameterError(
                f"parameter 'rules': {name!r} has rule {rule!r}; expected one of {', '.join(RULES)}"
            )
        normalized[name] = canonical
    return Parameters(
        parent_table=merged["parent_table"],
        parent_schema=merged["parent_schema"],
        rules=normalized,
        dry_run=merged["dry_run"],
        lock_timeout=str(merged["lock_timeout"]),
        lock_retries=merged["lock_retries"],
        retry_backoff=float(backoff),
        create_missing_indexes=merged["create_missing_indexes"],
        backup=merged["backup"],
        test_user=merged["test_user"],
        preview_user_id=merged["preview_user_id"],
    )


def _canonical_rule(rule: object) -> str | None:
    if not isinstance(rule, str):
        return None
    text = " ".join(rule.split())
    if text.lower() == "keep":
        return "keep"
    upper = text.upper()
    return upper if upper in RULES else None


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML so that ``false`` is a bool."""
    if "=" not in item:
        raise ParameterError(f"override {item!r}: expected key=value")
    key, _, text = item.partition("=")
    key = key.strip()
    if not key:
        raise ParameterError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as exc:
        raise ParameterError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return key, value


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for item in overrides:
        key, value = parse_override(item)
        parts = key.split(".")
        target = data
        for part in parts[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise ParameterError(f"override {item!r}: {part!r} is not a mapping")
            target = nested
        target[parts[-1]] = value
    return data


def read_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ParameterError(f"parameter file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ParameterError(f"parameter file {p} is not valid YAML{where}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(f"parameter file {p} must hold a mapping of keys to values")
    return data


def load(path: str | Path | None = None, overrides: list[str] | None = None, **values: Any) -> Parameters:
    raw: dict[str, Any] = read_file(path) if path else {}
    raw.update(values)
    return validate(apply_overrides(raw, overrides or []))
