"""The backup: ``pg_dump -Fc``, proven readable with ``pg_restore --list``, sized and hashed.

pg_dump must be at least as new as the server (and pg_restore as new as the archive): the newest
client found, among the PATH's and the embedded wheel's, that satisfies that is used.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import embedded, logger
from .connect import libpq_params
from .errors import BackupError

_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
_ENV_FOR = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER",
            "password": "PGPASSWORD", "dbname": "PGDATABASE", "sslmode": "PGSSLMODE",
            "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT", "sslkey": "PGSSLKEY",
            "passfile": "PGPASSFILE", "service": "PGSERVICE", "options": "PGOPTIONS",
            "connect_timeout": "PGCONNECT_TIMEOUT", "application_name": "PGAPPNAME"}


@dataclass(frozen=True)
class Tool:
    path: str
    major: int
    version: str


def tool_version(path: str) -> Tool | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION.search(out)
    if not m:
        return None
    return Tool(path=path, major=int(m.group(1)), version=out.strip().split(")")[-1].strip())


def candidates(name: str) -> list[Tool]:
    paths: list[str] = []
    if (found := shutil.which(name)) is not None:
        paths.append(found)
    wheel = embedded.bin_dir()
    if wheel is not None and (wheel / name).exists():
        paths.append(str(wheel / name))
    tools = [t for p in dict.fromkeys(paths) if (t := tool_version(p)) is not None]
    return sorted(tools, key=lambda t: t.major, reverse=True)


def choose_tool(name: str, server_major: int) -> Tool:
    tools = candidates(name)
    for tool in tools:
        if tool.major >= server_major:
            return tool
    found = ", ".join(f"{t.version} at {t.path}" for t in tools) or "none"
    raise BackupError(f"no {name} at least as new as the server (PostgreSQL {server_major}); found: {found}")


def child_env(dsn: str) -> dict[str, str]:
    """The connection for a client tool as PG* variables: a password never appears on a command line."""
    env = dict(os.environ)
    env.pop("RUNBOOK_DSN", None)
    if dsn:
        for key, value in libpq_params(dsn).items():
            if key in _ENV_FOR:
                env[_ENV_FOR[key]] = value
    return env


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BackupRecord:
    enabled: bool
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    pg_dump: str | None = None
    pg_restore: str | None = None
    toc_entries: int | None = None
    verified: bool = False
    seconds: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_backup(dsn: str, server_major: int, target: Path) -> BackupRecord:
    dump = choose_tool("pg_dump", server_major)
    restore = choose_tool("pg_restore", dump.major)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        raise BackupError(f"backup file already exists, refusing to overwrite: {target}")
    env = child_env(dsn)
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    proc = subprocess.run([dump.path, "--format=custom", "--no-password", f"--file={partial}"],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        detail = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"pg_dump failed (exit {proc.returncode}): {detail}")
    partial.rename(target)
    listing = subprocess.run([restore.path, "--list", str(target)], capture_output=True, text=True)
    if listing.returncode != 0:
        detail = (listing.stderr.strip().splitlines() or ["no message"])[-1]
        raise BackupError(f"pg_restore --list cannot read the backup {target}: {detail}")
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    if entries == 0:
        raise BackupError(f"the backup {target} lists no entries")
    record = BackupRecord(
        enabled=True, path=str(target.resolve()), size=target.stat().st_size, sha256=sha256_file(target),
        pg_dump=f"{dump.version} ({dump.path})", pg_restore=f"{restore.version} ({restore.path})",
        toc_entries=entries, verified=True, seconds=round(time.perf_counter() - started, 3),
    )
    logger.info("backup %s: %d bytes, %d entries, sha256 %s", target, record.size, entries, record.sha256)
    return record


def check_record(record: dict[str, Any] | None) -> str | None:
    """Why ``record`` does not prove a usable backup (None when it does, or when backup is off)."""
    if record is None:
        return "no backup was made in this run"
    if not record.get("enabled", False):
        return None
    if not record.get("verified"):
        return "the backup of this run was not verified"
    path = Path(record.get("path") or "")
    if not path.is_file():
        return f"the backup file of this run is missing: {path}"
    if path.stat().st_size != record.get("size") or sha256_file(path) != record.get("sha256"):
        return f"the backup file of this run does not match its recorded sha256: {path}"
    return None
