"""Parameters: load a YAML set, apply command-line overrides, and refuse anything unknown or malformed.

Every key is declared once, in ``SPEC``, with its default, its check and its documentation; the
documented ``parameters/defaults.yaml`` and the notebooks' parameter cells are generated from it
(``runbook_lib.paramdocs``). papermill only warns about parameters a notebook does not declare; the
runbook instead rejects an unknown key or a bad value before any step runs, with a one-line error
naming the key.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from .errors import ParameterError

RULES = ("CASCADE", "SET NULL", "SET DEFAULT", "RESTRICT", "NO ACTION", "keep", "ghost")
BACKUP_MODES = ("full", "schema", "restore_point")
ORPHAN_MODES = ("report", "delete")
MAX_LOCK_TIMEOUT_SECONDS = 60.0
MAX_LOCK_RETRIES = 50
MAX_STATEMENT_TIMEOUT_SECONDS = 24 * 3600.0

OWNER_COLUMNS = ("user_id", "owner_id", "account_id", "author_id", "customer_id", "member_id",
                 "person_id", "{parent}_id")
ACTOR_COLUMNS = ("creator_id", "updater_id", "editor_id", "approver_id", "reviewer_id", "assignee_id",
                 "granter_id", "revoker_id", "banner_id", "moderator_id", "sender_id", "recipient_*",
                 "receiver_id", "inviter_id", "invitee_id", "referrer_id", "verifier_id", "closer_id",
                 "deleter_id", "last_*", "*_by", "*_by_id", "*_by_user_id")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")

Check = Callable[[str, Any], Any]


@dataclass(frozen=True)
class Spec:
    """One parameter: its dotted key, default, check (returns the normalized value) and documentation."""
    key: str
    default: Any
    check: Check
    doc: str
    example: str = ""


# ---------------------------------------------------------------- checks

def parse_duration(value: object, key: str = "lock_timeout") -> float:
    """Seconds from '2s', '500ms', '1min', '1h' or a bare number of seconds."""
    if isinstance(value, bool):
        raise ParameterError(f"parameter {key!r}: expected a duration like '2s' or '500ms', got {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        number, unit = float(m.group(1)), m.group(2) or "s"
        seconds = {"ms": number / 1000, "s": number, "min": number * 60, "h": number * 3600}[unit]
    else:
        raise ParameterError(f"parameter {key!r}: expected a duration like '2s' or '500ms', got {value!r}")
    if seconds <= 0:
        # Zero means "wait forever" to PostgreSQL: exactly what the recipe forbids.
        raise ParameterError(f"parameter {key!r}: must be greater than zero, got {value!r}")
    return seconds


def duration(maximum: float) -> Check:
    def check(key: str, value: Any) -> str:
        seconds = parse_duration(value, key)
        if seconds > maximum:
            raise ParameterError(f"parameter {key!r}: at most {_seconds_text(maximum)}, got {value!r}")
        return str(value) if isinstance(value, str) else f"{value}s"
    return check


def _seconds_text(seconds: float) -> str:
    return f"{seconds / 3600:g}h" if seconds >= 3600 else f"{seconds / 60:g}min" if seconds >= 60 else f"{seconds:g}s"


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"parameter {key!r}: expected true or false, got {value!r}")
    return value


def text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ParameterError(f"parameter {key!r}: expected a non-empty string, got {value!r}")
    return value


def optional_text(key: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ParameterError(f"parameter {key!r}: expected a string, got {value!r}")
    return value


def integer(minimum: int, maximum: int | None = None) -> Check:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParameterError(f"parameter {key!r}: expected an integer, got {value!r}")
        if value < minimum:
            raise ParameterError(f"parameter {key!r}: must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise ParameterError(f"parameter {key!r}: at most {maximum}, got {value}")
        return value
    return check


def seconds(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ParameterError(f"parameter {key!r}: expected seconds >= 0, got {value!r}")
    return float(value)


def choice(*options: str) -> Check:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise ParameterError(f"parameter {key!r}: expected one of {', '.join(options)}, got {value!r}")
        return str(value)
    return check


def names(key: str, value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ParameterError(f"parameter {key!r}: expected a list of names, got {value!r}")
    return tuple(value)


def scalar_or_none(key: str, value: Any) -> Any:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, str))):
        raise ParameterError(f"parameter {key!r}: expected a key value, got {value!r}")
    return value


def key_value(key: str, value: Any) -> Any:
    """A row's key: a scalar for a one-column key, or a mapping of column -> value."""
    if isinstance(value, Mapping):
        for column, item in value.items():
            scalar_or_none(f"{key}.{column}", item)
        return dict(value)
    return scalar_or_none(key, value)


def column_values(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ParameterError(f"parameter {key!r}: expected column -> value, got {value!r}")
    return dict(value)


def table_values(key: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
        raise ParameterError(f"parameter {key!r}: expected table -> {{column: value}}, got {value!r}")
    return {str(k): dict(v) for k, v in value.items()}


def canonical_rule(rule: object) -> str | None:
    if not isinstance(rule, str):
        return None
    words = " ".join(rule.split())
    if words.lower() in ("keep", "ghost"):
        return words.lower()
    upper = words.upper()
    return upper if upper in RULES else None


def rule_map(key: str, value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ParameterError(f"parameter {key!r}: expected a mapping of name -> rule, got {value!r}")
    normalized: dict[str, str] = {}
    for name, rule in value.items():
        if not isinstance(name, str) or not name:
            raise ParameterError(f"parameter {key!r}: a key must be a table, column or constraint name, got {name!r}")
        canonical = canonical_rule(rule)
        if canonical is None:
            raise ParameterError(f"parameter {key!r}: {name!r} has rule {rule!r}; expected one of {', '.join(RULES)}")
        normalized[name] = canonical
    return normalized


# ---------------------------------------------------------------- the parameters, declared once

SPEC: tuple[Spec, ...] = (
    Spec("parent_table", None, text, "The table whose rows own everything else (required)."),
    Spec("parent_schema", "public", text, "The parent table's schema."),
    Spec("rules", {}, rule_map,
         "Overrides and decisions, by constraint name, schema.table.column, table.column, schema.table or table "
         "(the most specific match wins): CASCADE | SET NULL | SET DEFAULT | RESTRICT | NO ACTION | keep "
         "(leave the FK as it is) | ghost (reassign to the ghost row). An override always wins over the policy "
         "and is shown as such; a key that names nothing is skipped with a visible note.",
         "{forum_topics.updater_id: SET NULL, posts.uploader_id: ghost}"),
    Spec("owner_columns", OWNER_COLUMNS, names,
         "Column names that mark an ownership edge (the row exists for its owner): glob patterns, case "
         "and camelCase insensitive; {parent} stands for the parent table's name."),
    Spec("actor_columns", ACTOR_COLUMNS, names,
         "Column names that mark a reference edge (someone who acted on a row, not its owner): glob patterns "
         "as above. Nullable reference edges become SET NULL; NOT NULL ones are decisions."),
    Spec("ghost.key", None, key_value,
         "The placeholder row that `ghost` reassigns rows to: its key (a value, or column -> value for a "
         "composite key). Created with ghost.values when it does not exist.", "0"),
    Spec("ghost.values", {}, column_values,
         "Column values for creating the ghost row (columns not given take their defaults).",
         "{email: deleted-user@invalid, name: Deleted user}"),
    Spec("references", {}, rule_map,
         "Opt-in: reference columns without a foreign key (found by inspect) to constrain, as "
         "schema.table.column or table.column -> rule. The FK is added NOT VALID and validated when no "
         "orphan rows remain; rolled back like every other change.", "{legacy_uploads.user_id: CASCADE}"),
    Spec("dry_run", True, boolean, "The apply step changes nothing unless this is false."),
    Spec("lock_timeout", "2s", duration(MAX_LOCK_TIMEOUT_SECONDS),
         "How long one DDL statement may wait for its locks (at most 1min). While it waits, every later query "
         "on the same tables queues behind it: keep this short. Zero (\"wait forever\") is refused."),
    Spec("lock_retries", 5, integer(1, MAX_LOCK_RETRIES),
         "Attempts per statement (1 to 50) before the change is reported as not done (and left as it was)."),
    Spec("retry_backoff", 0.5, seconds,
         "Seconds before the first retry; doubles with each further attempt (with jitter, capped at 30 s)."),
    Spec("statement_timeout", "30s", duration(MAX_STATEMENT_TIMEOUT_SECONDS),
         "The longest any one statement of the test-user step, the preview and the erasure may run."),
    Spec("create_missing_indexes", False, boolean,
         "Opt-in: before the swaps, build the missing indexes on referencing columns with CREATE INDEX "
         "CONCURRENTLY (an INVALID index left by an interrupted build is dropped and rebuilt)."),
    Spec("expensive_cascade_rows", 100_000, integer(0),
         "An unindexed referencing table estimated above this many rows is flagged as an expensive cascade."),
    Spec("exact_count_rows", 1_000_000, integer(0),
         "Inspect counts rows exactly in tables estimated up to this size; larger ones are sampled "
         "(and the figures say so)."),
    Spec("backup.enabled", True, boolean,
         "Apply refuses to run without a verified backup of this run unless this is false (recorded)."),
    Spec("backup.mode", "full", choice(*BACKUP_MODES),
         "full: pg_dump -Fc of the database; schema: pg_dump --schema-only (everything this runbook can "
         "change, in seconds); restore_point: a named WAL restore point (only with healthy WAL archiving)."),
    Spec("backup.dir", "", optional_text,
         "Where dumps are written (private: 0700 folder, 0600 files); empty: `backups` inside the run's evidence "
         "folder."),
    Spec("test_user.commit", False, boolean, "Keep the test user's deletion (default: rolled back)."),
    Spec("test_user.rehearse", False, boolean,
         "In a dry run, prove the planned state: the plan's DDL runs inside the rolled-back test."),
    Spec("test_user.values", {}, table_values,
         "Column values the catalog cannot tell, as table -> {column: value}.", "{users: {country: NL}}"),
    Spec("preview_user_id", None, scalar_or_none,
         "A real user's key: the test-user notebook also shows what deleting that user would do (read-only)."),
    Spec("erase.batch_rows", 10_000, integer(1),
         "An erasure deletes a table's rows of the user in batches of this many when it has more."),
    Spec("erase.orphans", "report", choice(*ORPHAN_MODES),
         "Rows the erased user's rows referenced that nothing references any more: report or delete."),
    Spec("erase.orphan_columns", (), names,
         "Columns of orphan rows to list in orphans.csv for a clean-up job, as table.column.",
         "[media_asset.storage_key]"),
    Spec("erase.hash_keys", False, boolean,
         "Record the erased user's key in the evidence only as a salted hash."),
    Spec("erase.allow_unindexed", False, boolean,
         "Let an erasure batch through an unindexed FK column (each batch then scans the table)."),
    Spec("history_schema", "cascade_runbook", text,
         "Schema of the run history table (history) that vouches for runs that changed the database."),
    Spec("models", "", optional_text,
         "Optional MODULE[:ATTR] of the application's SQLAlchemy models: the plan notebook checks them.",
         "app.models:Base"),
    Spec("evidence_hide_code", False, boolean,
         "Evidence pages (the .html beside each executed notebook) leave out the code cells, for readers "
         "who want only the results; the executed .ipynb keeps them."),
)

SPEC_BY_KEY: dict[str, Spec] = {s.key: s for s in SPEC}
NESTED: tuple[str, ...] = tuple(dict.fromkeys(s.key.split(".")[0] for s in SPEC if "." in s.key))
TOP_LEVEL: tuple[str, ...] = tuple(dict.fromkeys(s.key.split(".")[0] for s in SPEC))


def defaults() -> dict[str, Any]:
    """Every key with its default, nested keys as mappings."""
    tree: dict[str, Any] = {}
    for spec in SPEC:
        head, _, sub = spec.key.partition(".")
        value = copy.deepcopy(list(spec.default) if isinstance(spec.default, tuple) else spec.default)
        if sub:
            tree.setdefault(head, {})[sub] = value
        else:
            tree[head] = value
    return tree


DEFAULTS: dict[str, Any] = defaults()


@dataclass(frozen=True)
class Parameters:
    parent_table: str
    parent_schema: str = "public"
    rules: Mapping[str, str] = field(default_factory=dict)
    owner_columns: tuple[str, ...] = OWNER_COLUMNS
    actor_columns: tuple[str, ...] = ACTOR_COLUMNS
    ghost: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["ghost"]))
    references: Mapping[str, str] = field(default_factory=dict)
    dry_run: bool = True
    lock_timeout: str = "2s"
    lock_retries: int = 5
    retry_backoff: float = 0.5
    statement_timeout: str = "30s"
    create_missing_indexes: bool = False
    expensive_cascade_rows: int = 100_000
    exact_count_rows: int = 1_000_000
    backup: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["backup"]))
    test_user: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["test_user"]))
    preview_user_id: Any = None
    erase: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULTS["erase"]))
    history_schema: str = "cascade_runbook"
    models: str = ""
    evidence_hide_code: bool = False

    @property
    def lock_timeout_seconds(self) -> float:
        return parse_duration(self.lock_timeout)

    @property
    def lock_timeout_ms(self) -> int:
        return max(1, int(round(self.lock_timeout_seconds * 1000)))

    @property
    def statement_timeout_ms(self) -> int:
        return max(1, int(round(parse_duration(self.statement_timeout, "statement_timeout") * 1000)))

    @property
    def backup_enabled(self) -> bool:
        return bool(self.backup["enabled"])

    @property
    def backup_mode(self) -> str:
        return str(self.backup["mode"])

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, dicts): what the notebooks receive and the evidence records."""
        data: dict[str, Any] = {}
        for name in TOP_LEVEL:
            value = getattr(self, name)
            if isinstance(value, Mapping):
                value = {k: list(v) if isinstance(v, tuple) else copy.deepcopy(v) for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            data[name] = value
        return data


def _merge(raw: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(map(str, raw)) - set(TOP_LEVEL))
    if unknown:
        raise ParameterError(f"unknown parameter key(s): {', '.join(unknown)} (known: {', '.join(TOP_LEVEL)})")
    merged = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key not in NESTED:
            merged[key] = value
            continue
        if value is None:
            continue
        if not isinstance(value, Mapping):
            raise ParameterError(f"parameter {key!r}: expected a mapping, got {value!r}")
        known = [s.key.split(".", 1)[1] for s in SPEC if s.key.startswith(key + ".")]
        bad = sorted(set(map(str, value)) - set(known))
        if bad:
            raise ParameterError(f"unknown parameter key(s) under {key!r}: {', '.join(bad)} "
                                 f"(known: {', '.join(known)})")
        merged[key].update(value)
    return merged


def validate(raw: Mapping[str, Any]) -> Parameters:
    """Merge ``raw`` over the defaults and check every key and value."""
    if not isinstance(raw, Mapping):
        raise ParameterError(f"parameters must be a mapping of keys to values, got {type(raw).__name__}")
    merged = _merge(raw)
    if merged["parent_table"] is None:
        raise ParameterError("parameter 'parent_table' is required")
    values: dict[str, Any] = {}
    for spec in SPEC:
        head, _, sub = spec.key.partition(".")
        given = merged[head][sub] if sub else merged[head]
        checked = spec.check(spec.key, given)
        if sub:
            values.setdefault(head, {})[sub] = checked
        else:
            values[head] = checked
    return Parameters(**values)


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as YAML so that ``false`` is a bool."""
    if "=" not in item:
        raise ParameterError(f"override {item!r}: expected key=value")
    key, _, raw = item.partition("=")
    key = key.strip()
    if not key:
        raise ParameterError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ParameterError(f"override {item!r}: value is not valid YAML ({exc.__class__.__name__})") from None
    return key, value


def apply_overrides(raw: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for item in overrides:
        key, value = parse_override(item)
        head, dot, rest = key.partition(".")
        target = data
        # rules.<name> and references.<name> take the rest of the key whole: names may hold dots.
        parts = [head, rest] if dot and head in ("rules", "references") else key.split(".")
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
