"""The run context a notebook step works in: parameters, the run folder and the connection."""
from __future__ import annotations

import json
import os
import re
import time
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from . import catalog
from . import connect as connect_mod
from . import run_folder
from .catalog import Snapshot
from .errors import StepFailed
from .evidence import private_dir, write_json
from .params import Parameters, validate

RUN_DIR_ENV = "RUNBOOK_RUN_DIR"
_LABEL = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIPPED"}
_STATUS_WORD = re.compile(r"^(PASS|FAIL|SKIPPED|skipped):\s*")


@dataclass
class RunContext:
    """A step's parameters and run folder. It holds no secret: the connection string is read from the
    environment at connect time (or, when a caller passes ``dsn``, kept in a ``Hidden`` whose repr is
    redacted), so ``ctx`` or ``vars(ctx)`` printed in a notebook cell shows no password."""

    params: Parameters
    run_dir: Path
    dsn: InitVar[str | None] = None
    by_hand: bool = False  # a notebook opened by hand, in an interactive run folder
    # Off only for another run's folder read by a rollback: its files were written under that run's
    # parameters; their hashes and the database's history vouch for them.
    own_folder: bool = True
    _conninfo: connect_mod.Hidden | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, dsn: str | None) -> None:
        self._conninfo = connect_mod.Hidden(dsn) if dsn is not None else None

    def conninfo(self) -> str:
        """The connection string, only for the code that connects (or hands it to pg_dump)."""
        return self._conninfo.reveal() if self._conninfo is not None else connect_mod.dsn_from_env()

    def backup_dir(self) -> Path:
        """By default ``backups`` inside the run folder; ``runbook run`` passes a given folder as an absolute
        path, a relative one (a notebook run by hand) is taken beside the run folder, never inside
        notebooks/."""
        text = str(self.params.backup["dir"] or "")
        if not text:
            return self.run_dir / "backups"
        given = Path(text).expanduser()
        return given if given.is_absolute() else (self.run_dir.parent / given).resolve()

    def with_run_dir(self, run_dir: Path) -> "RunContext":
        """This context reading another run's folder (a rollback's source)."""
        return RunContext(params=self.params, run_dir=run_dir, own_folder=False,
                          dsn=self._conninfo.reveal() if self._conninfo is not None else None)

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str] | None = None, **values: Any) -> "RunContext":
        """Validate the notebook's parameters and find (or make) the run folder.

        Under ``runbook run`` the folder is given; a notebook opened by hand gets a folder under the
        evidence folder, named by database, parent table and time (see run_folder). Either way the
        folder is claimed for this server, database, parent table and the parameters its files depend
        on (``run_folder.FOLDER_KEYS``): a given folder of another one is refused, and a notebook opened
        by hand with other such parameters starts a new folder (with a warning saying why).
        """
        params = validate(values)
        dsn = connect_mod.dsn_from_env()
        with connect_mod.connect(dsn, autocommit=True) as conn:
            ident = run_folder.identity_from(catalog.server_identity(conn), params.parent_schema,
                                             params.parent_table)
        folder_params = run_folder.folder_parameters(params)
        chosen = str(run_dir or os.environ.get(RUN_DIR_ENV, "") or "")
        if chosen:
            path = Path(chosen)
            private_dir(path)
            run_folder.establish(path, ident, folder_params)
        else:
            base = private_dir(Path(os.environ.get("RUNBOOK_EVIDENCE_DIR", "evidence")))
            path = private_dir(run_folder.interactive_folder(base, ident, folder_params))
        # The connection string stays in the environment: nothing a cell can print holds it.
        return cls(params=params, run_dir=path.resolve(), by_hand=not chosen)

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        return connect_mod.connect(self.conninfo(), autocommit=autocommit)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def save_json(self, name: str, data: Any) -> Path:
        path = self.path(name)
        write_json(path, data)
        run_folder.record_write(self.run_dir, name)
        return path

    def load_json(self, name: str) -> Any:
        path = self.path(name)
        if not path.exists():
            return None
        run_folder.check_read(self.run_dir, name,
                              run_folder.folder_parameters(self.params) if self.own_folder else None)
        return json.loads(path.read_text(encoding="utf-8"))

    def save_text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        run_folder.record_write(self.run_dir, name)
        return path

    def load_snapshot(self, name: str) -> Snapshot | None:
        data = self.load_json(name)
        if data is None:
            return None
        snap = Snapshot.from_dict(data)
        run_folder.check_snapshot(self.run_dir, name, snap.database, snap.parent,
                                  (self.params.parent_schema, self.params.parent_table))
        return snap

    def verdict(self, step: str, ok: bool, message: str, *, skipped: bool = False, **details: Any) -> str:
        """Record the step's verdict; a failing verdict raises so that papermill stops the run here.

        A skipped step is recorded as skipped, not as passed: the summary must not count it as proof.
        """
        status = "failed" if not ok else "skipped" if skipped else "passed"
        # Messages that carry their own status word would read "PASS: PASS: ..." otherwise.
        message = _STATUS_WORD.sub("", message, count=1)
        line = f"{_LABEL[status]}: {step}: {message}"
        verdicts = self.path("verdicts")
        private_dir(verdicts)
        write_json(verdicts / f"{step}.json", {"step": step, "ok": ok, "status": status, "message": message,
                                                "time": time.time(), **details})
        if not ok:
            raise StepFailed(line)
        return line
