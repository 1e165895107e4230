"""Whose files are these? A run folder's identity, and the checks that keep two runs' files apart.

Every run folder holds ``identity.json``: the server (``pg_control_system()``'s system identifier),
the database and the parent table the folder belongs to, and the sha256 of every file a step wrote
there. A step that reads a file back (the snapshot taken before, the backup record) first checks that
the file is the one a step of this folder wrote: a file copied in from another folder, edited by
hand, or left by a run against another database or parent table is refused with one line.

A notebook opened by hand (no ``run_dir``) gets an interactive folder of its own, named by database,
parent table and UTC time; the notebooks that follow for the same server, database and parent table
continue in it, and one for another parent table starts a new one.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import logger
from .backup import sha256_file
from .errors import RunbookError
from .markup import safe_name

IDENTITY = "identity.json"
# In an evidence folder: the interactive folder that notebooks opened by hand continue in.
CURRENT = "interactive-current.json"


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


def _read(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else None


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)


def recorded(run_dir: Path) -> Identity | None:
    data = _read(run_dir / IDENTITY)
    if data is None:
        return None
    return Identity(str(data["system_identifier"]), str(data["database"]), str(data["parent"]))


def establish(run_dir: Path, ident: Identity) -> None:
    """Claim ``run_dir`` for ``ident``; a folder already claimed for another one is refused."""
    have = recorded(run_dir)
    if have is None:
        _write(run_dir / IDENTITY, {**asdict(ident), "files": {},
                                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return
    if have != ident:
        raise ForeignFile(f"run folder {run_dir} belongs to {have.describe()}, not to {ident.describe()}: "
                          "use a new run folder")


def record_write(run_dir: Path, name: str) -> None:
    """Note the hash of a file a step just wrote (only in a folder that has an identity)."""
    path = run_dir / IDENTITY
    data = _read(path)
    if data is None:
        return
    data.setdefault("files", {})[name] = sha256_file(run_dir / name)
    _write(path, data)


def check_read(run_dir: Path, name: str) -> None:
    """Refuse a file that no step of this folder wrote, or that changed since."""
    data = _read(run_dir / IDENTITY)
    if data is None:
        return
    want = data.get("files", {}).get(name)
    if want is None:
        owner = Identity(data["system_identifier"], data["database"], data["parent"])
        raise ForeignFile(f"{name} in {run_dir} was not written by a step of this run ({owner.describe()}); "
                          "run the step that makes it in this folder")
    if sha256_file(run_dir / name) != want:
        raise ForeignFile(f"{name} in {run_dir} changed after its step wrote it (sha256 differs); "
                          "run that step again")


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


def interactive_folder(base: Path, ident: Identity) -> Path:
    """The folder a notebook opened by hand continues in: the current one when it belongs to the same
    server, database and parent table, else a new one (which becomes the current one)."""
    base.mkdir(parents=True, exist_ok=True)
    pointer = _read(base / CURRENT)
    if pointer is not None:
        name = str(pointer.get("run_dir", ""))
        # The pointer names a folder of this base, never a path: an edited pointer cannot lead elsewhere.
        current = base / (name if name == safe_name(name) and name not in ("", ".", "..") else "_")
        # A sealed folder (it has its manifest) is finished: the next notebook starts a new one.
        if current.is_dir() and recorded(current) == ident and not (current / "manifest.json").exists():
            return current.resolve()
    folder = base / folder_name(ident)
    suffix = 1
    while folder.exists():
        suffix += 1
        folder = base / f"{folder_name(ident)}-{suffix}"
    folder.mkdir(parents=True)
    establish(folder, ident)
    _write(base / CURRENT, {"run_dir": folder.name})
    logger.info("interactive run folder %s for %s", folder, ident.describe())
    return folder.resolve()
