"""The backup, in the mode the parameters choose, proven usable before apply may change anything.

``full`` is ``pg_dump -Fc`` of the database; ``schema`` is ``pg_dump --schema-only -Fc``: every
definition this runbook can change, in seconds whatever the data size. Both are proven readable with
``pg_restore --list``, sized and hashed. ``restore_point`` is a named WAL restore point (see
``restore_point.py``). A dump is written with a private umask into a private folder, under a file name
made safe from the database's name, by a pg_dump that sees only the variables libpq needs.

pg_dump must be at least as new as the server (and pg_restore as new as the archive): the newest
client found, among the PATH's and the embedded wheel's, that satisfies that is used.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import psycopg

from . import embedded, logger, progress_views
from . import restore_point as restore_point_mod
from .connect import libpq_params
from .errors import BackupError
from .heartbeat import heartbeat

MODES = ("full", "schema", "restore_point")
DUMP_MODES = ("full", "schema")
_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")
# Every connection keyword libpq reads from the environment, and the variable it reads.
LIBPQ_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "dbname": "PGDATABASE", "user": "PGUSER",
    "password": "PGPASSWORD", "passfile": "PGPASSFILE", "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING", "service": "PGSERVICE", "options": "PGOPTIONS",
    "application_name": "PGAPPNAME", "sslmode": "PGSSLMODE", "requiressl": "PGREQUIRESSL",
    "sslnegotiation": "PGSSLNEGOTIATION", "sslcompression": "PGSSLCOMPRESSION", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslcertmode": "PGSSLCERTMODE", "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL", "sslcrldir": "PGSSLCRLDIR", "sslsni": "PGSSLSNI", "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION", "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME", "gsslib": "PGGSSLIB", "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT", "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# Environment-only libpq variables (no connection keyword), and what a client tool needs to run.
_LIBPQ_ONLY = ("PGSERVICEFILE", "PGSYSCONFDIR", "PGLOCALEDIR", "PGTZ", "PGDATESTYLE", "PGGEQO")
# The loader's and OpenSSL's locations are not secrets, and a client built elsewhere may need them.
_BASE_ENV = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR")
_KERBEROS = ("KRB5CCNAME", "KRB5_CONFIG", "KRB5_KTNAME")


@dataclass(frozen=True)
class Tool:
    path: str
    major: int
    version: str


def tool_version(path: str) -> Tool | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=True,
                             env=base_env()).stdout
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


# ---------------------------------------------------------------- what a child process may see
def base_env() -> dict[str, str]:
    """PATH, HOME (libpq's ~/.pgpass and ~/.postgresql), locale, library and certificate locations:
    nothing of the runbook's own, nothing of anyone else's."""
    return {k: v for k, v in os.environ.items() if k in _BASE_ENV or k.startswith("LC_")}


def child_env(dsn: str) -> dict[str, str]:
    """The environment of pg_dump: ``base_env``, libpq's own variables, and the connection as PG*
    variables, so that a password never appears on a command line and no other secret is inherited."""
    passed = set(LIBPQ_ENV.values()) | set(_LIBPQ_ONLY) | set(_KERBEROS)
    env = base_env()
    env.update({k: v for k, v in os.environ.items() if k in passed})
    if dsn:
        params = libpq_params(dsn)
        unpassable = sorted(k for k in params if k not in LIBPQ_ENV and "password" in k)
        if unpassable:
            raise BackupError(f"the connection's {', '.join(unpassable)} has no libpq environment variable and "
                              "would have to be shown on pg_dump's command line; use a service file instead")
        env.update({LIBPQ_ENV[k]: v for k, v in params.items() if k in LIBPQ_ENV})
    return env


# ---------------------------------------------------------------- where the dump goes
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_file_name(name: str, *, keep: int = 40) -> str:
    """A file name part from any text (a database name may hold ``/``, ``..``, anything): only
    ``[A-Za-z0-9._-]``, never ``..``, never a leading dot or dash, and a short hash of the real name
    so that two names that clean up alike still differ."""
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    cleaned = re.sub(r"\.{2,}", "_", _UNSAFE.sub("_", name))[:keep].lstrip(".-")
    return f"{cleaned or 'db'}-{digest}"


def dump_path(folder: Path, run_id: str, database: str, mode: str) -> Path:
    suffix = ".schema.dump" if mode == "schema" else ".dump"
    target = folder / f"{safe_file_name(run_id)}_{safe_file_name(database)}{suffix}"
    if target.resolve().parent != folder.resolve():
        raise BackupError(f"backup file name for database {database!r} leaves the backup folder {folder}")
    return target


def folder_problem(folder: Path) -> str | None:
    """Why ``folder`` cannot hold a private backup (None when it can, or when it does not exist yet)."""
    if folder.is_symlink():
        return f"backup folder {folder} is a symbolic link; give its real path"
    if not folder.exists():
        return None
    info = folder.stat()
    if not stat.S_ISDIR(info.st_mode):
        return f"backup folder {folder} is not a folder"
    if info.st_uid != os.geteuid():
        return f"backup folder {folder} belongs to another user (uid {info.st_uid})"
    if info.st_mode & 0o077:
        return (f"backup folder {folder} is open to other users (mode {stat.S_IMODE(info.st_mode):04o}); "
                "make it private (chmod 700) or leave backup.dir empty")
    return None


def private_folder(folder: Path) -> Path:
    """``folder``, created 0700 when missing; an existing one must already be private and ours."""
    problem = folder_problem(folder)
    if problem is not None:
        raise BackupError(problem)
    if not folder.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir(mode=0o700)
        os.chmod(folder, 0o700)  # mkdir's mode is narrowed by the umask, never widened: make it exact
    return folder


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------- the record
@dataclass
class BackupRecord:
    enabled: bool
    mode: str | None = None
    why: str | None = None
    path: str | None = None
    size: int | None = None
    sha256: str | None = None
    pg_dump: str | None = None
    pg_restore: str | None = None
    toc_entries: int | None = None
    restore_point: str | None = None
    lsn: str | None = None
    timeline: int | None = None
    wal_file: str | None = None
    created_at: str | None = None
    archive: dict[str, Any] | None = None
    verified: bool = False
    seconds: float | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        if not self.enabled:
            return f"backup turned off ({self.reason})"
        if self.mode == "restore_point":
            return (f"restore point {self.restore_point} at LSN {self.lsn}, timeline {self.timeline}, "
                    f"archived in {self.wal_file}")
        return f"{self.mode} dump {self.path}: {self.size:,} bytes, {self.toc_entries} entries, sha256 {self.sha256}"


# ---------------------------------------------------------------- taking it
def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no message"])[-1]


def make_dump(dsn: str, server_major: int, target: Path, *, mode: str = "full",
              progress: Callable[[str], None] | None = None) -> BackupRecord:
    """pg_dump into ``target`` (its folder made private), then prove it readable and hash it; while
    pg_dump works, ``progress`` hears how large the file has grown."""
    if mode not in DUMP_MODES:
        raise BackupError(f"not a dump mode: {mode}")
    dump = choose_tool("pg_dump", server_major)
    restore = choose_tool("pg_restore", dump.major)
    private_folder(target.parent)
    if target.exists():
        raise BackupError(f"backup file already exists, refusing to overwrite: {target}")
    started = time.perf_counter()
    partial = target.with_name(target.name + ".partial")
    argv = [dump.path, "--format=custom", "--no-password", f"--file={partial}"]
    if mode == "schema":
        argv.append("--schema-only")
    # umask 077: the file is private from the moment pg_dump creates it, not after a chmod.
    with heartbeat(progress, f"pg_dump ({mode})", detail=progress_views.file_size(partial)):
        proc = subprocess.run(argv, env=child_env(dsn), capture_output=True, text=True, umask=0o077)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BackupError(f"pg_dump failed (exit {proc.returncode}): {_last_line(proc.stderr)}")
    os.chmod(partial, 0o600)
    partial.rename(target)
    listing = subprocess.run([restore.path, "--list", str(target)], env=base_env(), capture_output=True,
                             text=True)
    if listing.returncode != 0:
        raise BackupError(f"pg_restore --list cannot read the backup {target}: {_last_line(listing.stderr)}")
    entries = sum(1 for line in listing.stdout.splitlines() if line and not line.startswith(";"))
    if entries == 0:
        raise BackupError(f"the backup {target} lists no entries")
    record = BackupRecord(
        enabled=True, mode=mode, path=str(target.resolve()), size=target.stat().st_size,
        sha256=sha256_file(target), pg_dump=f"{dump.version} ({dump.path})",
        pg_restore=f"{restore.version} ({restore.path})", toc_entries=entries, verified=True,
        seconds=round(time.perf_counter() - started, 3))
    logger.info("backup %s: %d bytes, %d entries, sha256 %s", target, record.size, entries, record.sha256)
    return record


def make_restore_point(conn: psycopg.Connection[Any], run_id: str) -> BackupRecord:
    started = time.perf_counter()
    point = restore_point_mod.create(conn, run_id)
    if not point.archived:
        raise BackupError(f"restore point {point.name} at LSN {point.lsn} was made, but its WAL file "
                          f"{point.wal_file} was not archived within {restore_point_mod.ARCHIVE_WAIT_SECONDS:.0f} s "
                          f"({point.archive['after']['last_archived_wal'] or 'nothing'} archived so far)")
    return BackupRecord(enabled=True, mode="restore_point", restore_point=point.name, lsn=point.lsn,
                        timeline=point.timeline, wal_file=point.wal_file, created_at=point.created_at,
                        archive=point.archive, verified=True, seconds=round(time.perf_counter() - started, 3))


def take(connect: Callable[[], psycopg.Connection[Any]], dsn: str, *, mode: str, folder: Path, run_id: str,
         why: str, progress: Callable[[str], None] | None = None) -> BackupRecord:
    """The backup of ``mode`` for run ``run_id``; ``connect`` gives an autocommit connection."""
    with connect() as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int / 10000, "
                           "current_database()").fetchone()
        assert row is not None
        major, database = int(row[0]), str(row[1])
        record = make_restore_point(conn, run_id) if mode == "restore_point" else None
    if record is None:  # no connection of ours stays open while pg_dump works
        record = make_dump(dsn, major, dump_path(folder, run_id, database, mode), mode=mode, progress=progress)
    record.why = why
    return record


# ---------------------------------------------------------------- apply's check
def check_record(record: dict[str, Any] | None, mode: str | None = None) -> str | None:
    """Why ``record`` does not prove a usable backup of ``mode`` (None when it does, or when backup is off)."""
    if record is None:
        return "no backup was made in this run"
    if not record.get("enabled", False):
        return None
    taken = record.get("mode") or "full"
    if mode is not None and taken != mode:
        return f"the backup of this run is of mode {taken}, the parameters ask for {mode}"
    if not record.get("verified"):
        return "the backup of this run was not verified"
    if taken == "restore_point":
        if not (record.get("restore_point") and record.get("lsn") and record.get("wal_file")):
            return "the restore point of this run is not recorded (name, LSN and WAL file)"
        return None
    path = Path(record.get("path") or "")
    if not path.is_file():
        return f"the backup file of this run is missing: {path}"
    if path.stat().st_size != record.get("size") or sha256_file(path) != record.get("sha256"):
        return f"the backup file of this run does not match its recorded sha256: {path}"
    return None


def describe(record: dict[str, Any]) -> str:
    """One line for apply's result: which verified backup stands behind the change."""
    if record.get("mode") == "restore_point":
        return (f"verified restore point {record['restore_point']} at LSN {record['lsn']} "
                f"(timeline {record['timeline']}, archived in {record['wal_file']})")
    return f"verified {record.get('mode') or 'full'} backup {record['path']} (sha256 {record['sha256'][:12]}…)"
