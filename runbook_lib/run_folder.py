"""Whose files are these? A run folder's identity, and the checks that keep two runs' files apart.

Every run folder holds ``identity.json``: the server (``pg_control_system()``'s system identifier),
the database and the parent table the folder belongs to, and the sha256 of every file a step wrote
there. A step that reads a file back (the snapshot taken before, the backup record) first checks that
the file is the one a step of this folder wrote: a file copied in from another folder, edited by
hand, or left by a run against another database or parent table is refused with one line.

The identity also holds the parameters that shape what the steps write and read back
(``FOLDER_KEYS``): the rules, the owner and actor columns, the opt-in references, the ghost row, the
counting and flagging thresholds, the opt-in index builds and the history schema. Keys that only say
how a step runs (``dry_run``, lock and statement timeouts, retries, backup settings, the test user,
the preview user, erasure settings, the models to check) are left out: a DBA who plans with
``dry_run: true`` and then applies with ``dry_run: false`` stays in one folder. (Apply checks the
backup record against ``backup.mode`` itself.) A folder whose identity has no parameters (written
before they were recorded) is taken as matching any.

A notebook opened by hand (no ``run_dir``) gets an interactive folder of its own, named by database,
parent table and UTC time; the notebooks that follow for the same server, database, parent table and
parameters continue in it. One for another parent table, or with other folder parameters, starts a
new folder (and says why): the steps before it must then run again in that folder, so a plan is never
made from a snapshot or preflight taken under other rules. A folder given by ``run_dir`` (``runbook
run``) is never switched: other parameters there are refused.
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import logger
from .backup import sha256_file
from .errors import RunbookError
from .evidence import write_json
from .markup import safe_name
from .params import Parameters

# The parameters a folder's files depend on (dotted keys of params.SPEC); see the module's docstring.
FOLDER_KEYS = ("rules", "owner_columns", "actor_columns", "references", "ghost.key", "ghost.values",
               "exact_count_rows", "expensive_cascade_rows", "create_missing_indexes", "history_schema")

IDENTITY = "identity.json"
# In an evidence folder: the interactive folder that notebooks opened by hand continue in.
CURRENT = "interactive-current.json"


class NewRunFolder(UserWarning):
    """A notebook opened by hand left the current run folder because its folder parameters differ."""


class ForeignFile(RunbookError):
    """A file in the run folder does not belong to this run (other server, database, parent or run)."""


@dataclass(frozen=True)
class Identity:
    system_identifier: str
    database: str
    parent: str  # schema.table

    def describe(self) -> str:
        return f"database {self.database} (system id {self.system_identifier}), parent table {self.parent}"


def identity_from(server: dict[str, Any], parent_schema: str, parent_table: str) -> Identity:
    return Identity(str(server["system_identifier"]), str(server["database"]),
                    f"{parent_schema}.{parent_table}")


def folder_parameters(params: Parameters) -> dict[str, Any]:
    """The values of ``FOLDER_KEYS``, as plain JSON data (so a recorded copy compares equal)."""
    data = params.to_dict()
    picked: dict[str, Any] = {}
    for key in FOLDER_KEYS:
        head, _, sub = key.partition(".")
        picked[key] = data[head][sub] if sub else data[head]
    normal: dict[str, Any] = json.loads(json.dumps(picked, sort_keys=True, default=str))
    return normal


def differing(recorded_params: dict[str, Any] | None, params: dict[str, Any]) -> list[str]:
    """The folder keys whose values differ (none when the folder recorded no parameters)."""
    if recorded_params is None:
        return []
    return [key for key in FOLDER_KEYS if recorded_params.get(key) != params.get(key)]


def recorded_parameters(run_dir: Path) -> dict[str, Any] | None:
    data = _read(run_dir / IDENTITY)
    found = data.get("parameters") if data is not None else None
    return found if isinstance(found, dict) else None


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def recorded(run_dir: Path) -> Identity | None:
    data = _read(run_dir / IDENTITY)
    if data is None:
        return None
    return Identity(str(data["system_identifier"]), str(data["database"]), str(data["parent"]))


def establish(run_dir: Path, ident: Identity, parameters: dict[str, Any]) -> None:
    """Claim ``run_dir`` for ``ident`` and ``parameters`` (see ``folder_parameters``); a folder already
    claimed for another server, database or parent table, or with other folder parameters, is refused."""
    have = recorded(run_dir)
    if have is None:
        write_json(run_dir / IDENTITY, {**asdict(ident), "parameters": parameters, "files": {},
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return
    if have != ident:
        raise ForeignFile(f"run folder {run_dir} belongs to {have.describe()}, not to {ident.describe()}: "
                          "use a new run folder")
    keys = differing(recorded_parameters(run_dir), parameters)
    if keys:
        raise ForeignFile(f"run folder {run_dir} was made with other parameters ({', '.join(keys)} differ): "
                          "use the folder's parameters or a new run folder")


def record_write(run_dir: Path, name: str) -> None:
    """Note the hash of a file a step just wrote (only in a folder that has an identity)."""
    path = run_dir / IDENTITY
    data = _read(path)
    if data is None:
        return
    data.setdefault("files", {})[name] = sha256_file(run_dir / name)
    write_json(path, data)


def check_read(run_dir: Path, name: str, parameters: dict[str, Any] | None) -> None:
    """Refuse a file that no step of this folder wrote, that changed since, or that was written under
    other folder parameters than the reading step's (``None``: another run's folder, read as it is)."""
    data = _read(run_dir / IDENTITY)
    if data is None:
        return
    keys = differing(recorded_parameters(run_dir), parameters) if parameters is not None else []
    if keys:
        raise ForeignFile(f"{name} in {run_dir} was written under other parameters ({', '.join(keys)} differ "
                          "from this step's): run every step with the same parameters, or use a new run folder")
    want = data.get("files", {}).get(name)
    digest = sha256_file(run_dir / name)
    if want == digest:
        return
    source = _copied_from(run_dir, name, digest)
    if source is not None:
        raise ForeignFile(f"{name} in {run_dir} is a copy of the one in run folder {source}; "
                          "run the step that makes it in this folder")
    if want is None:
        owner = Identity(data["system_identifier"], data["database"], data["parent"])
        raise ForeignFile(f"{name} in {run_dir} was not written by a step of this run ({owner.describe()}); "
                          "run the step that makes it in this folder")
    raise ForeignFile(f"{name} in {run_dir} changed after its step wrote it (sha256 differs); "
                      "run that step again")


def _copied_from(run_dir: Path, name: str, digest: str) -> str | None:
    """The sibling run folder whose step wrote exactly this file, if one did (only to say so)."""
    for identity in sorted(run_dir.parent.glob(f"*/{IDENTITY}")):
        other = identity.parent
        if other.resolve() == run_dir.resolve():
            continue
        try:
            recorded_files = (_read(identity) or {}).get("files", {})
        except (OSError, ValueError):
            continue  # an unreadable neighbour says nothing about this file
        if isinstance(recorded_files, dict) and recorded_files.get(name) == digest:
            return other.name
    return None


def check_snapshot(run_dir: Path, name: str, database: str, parent: tuple[str, str],
                   expected_parent: tuple[str, str]) -> None:
    """A snapshot must be of this folder's database and of the parent table the parameters name."""
    if parent != expected_parent:
        raise ForeignFile(f"{name} in {run_dir} is of parent table {'.'.join(parent)}, but the parameters "
                          f"name {'.'.join(expected_parent)}: inspect again in a run folder of its own")
    have = recorded(run_dir)
    if have is not None and have.database != database:
        raise ForeignFile(f"{name} in {run_dir} is of database {database}, but this run is on "
                          f"{have.database}: inspect again")


def folder_name(ident: Identity, now: float | None = None) -> str:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    return safe_name(f"{ident.database}-{ident.parent}", limit=120) + f"-{stamp}"


def interactive_folder(base: Path, ident: Identity, parameters: dict[str, Any]) -> Path:
    """The folder a notebook opened by hand continues in: the current one when it belongs to the same
    server, database, parent table and folder parameters, else a new one (which becomes the current
    one)."""
    base.mkdir(parents=True, exist_ok=True)
    pointer = _read(base / CURRENT)
    current: Path | None = None
    if pointer is not None:
        name = str(pointer.get("run_dir", ""))
        # The pointer names a folder of this base, never a path: an edited pointer cannot lead elsewhere.
        current = base / (name if name == safe_name(name) and name not in ("", ".", "..") else "_")
        # A sealed folder (it has its manifest) is finished: the next notebook starts a new one.
        if current.is_dir() and recorded(current) == ident and not (current / "manifest.json").exists():
            keys = differing(recorded_parameters(current), parameters)
            if not keys:
                return current.resolve()
        else:
            current = None
    folder = base / folder_name(ident)
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = base / f"{folder_name(ident)}-{suffix}"
    folder.mkdir(parents=True)
    establish(folder, ident, parameters)
    write_json(base / CURRENT, {"run_dir": folder.name})
    if current is not None:
        # Same database and parent table, other parameters: the DBA must see that the earlier steps'
        # files stay behind (a warning shows in the notebook under the set-up cell).
        note = (f"parameters differ from run folder {current.name} ({', '.join(keys)}): new run folder "
                f"{folder.name}; run the steps from 00_preflight again in it")
        logger.warning("%s", note)
        warnings.warn(note, NewRunFolder, stacklevel=3)
    logger.info("interactive run folder %s for %s", folder, ident.describe())
    return folder.resolve()
