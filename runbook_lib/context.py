"""The run context a notebook step works in: parameters, the run folder and the connection."""
from __future__ import annotations

import json
import os
import time
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from . import connect as connect_mod
from .catalog import Snapshot
from .errors import StepFailed
from .evidence import private_dir
from .params import Parameters, validate

RUN_DIR_ENV = "RUNBOOK_RUN_DIR"


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)


@dataclass
class RunContext:
    """A step's parameters and run folder. It holds no secret: the connection string is read from the
    environment at connect time (or, when a caller passes ``dsn``, kept in a ``Hidden`` whose repr is
    redacted), so ``ctx`` or ``vars(ctx)`` printed in a notebook cell shows no password."""

    params: Parameters
    run_dir: Path
    dsn: InitVar[str | None] = None
    _conninfo: connect_mod.Hidden | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self, dsn: str | None) -> None:
        self._conninfo = connect_mod.Hidden(dsn) if dsn is not None else None

    def conninfo(self) -> str:
        """The connection string, only for the code that connects (or hands it to pg_dump)."""
        return self._conninfo.reveal() if self._conninfo is not None else connect_mod.dsn_from_env()

    def with_run_dir(self, run_dir: Path) -> "RunContext":
        return RunContext(params=self.params, run_dir=run_dir,
                          dsn=self._conninfo.reveal() if self._conninfo is not None else None)

    @classmethod
    def open(cls, run_dir: str | os.PathLike[str] | None = None, **values: Any) -> "RunContext":
        """Validate the notebook's parameters and find (or make) the run folder.

        Under ``runbook run`` the folder is given; a notebook opened by hand gets a folder of its own
        under ``evidence/interactive`` so that every step still leaves its files somewhere.
        """
        params = validate(values)
        chosen = str(run_dir or os.environ.get(RUN_DIR_ENV, "") or "")
        if chosen:
            path = Path(chosen)
        else:
            path = Path(os.environ.get("RUNBOOK_EVIDENCE_DIR", "evidence")) / "interactive"
        private_dir(path)
        return cls(params=params, run_dir=path.resolve())

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        return connect_mod.connect(self.conninfo(), autocommit=autocommit)

    def path(self, name: str) -> Path:
        return self.run_dir / name

    def save_json(self, name: str, data: Any) -> Path:
        path = self.path(name)
        write_json(path, data)
        return path

    def load_json(self, name: str) -> Any:
        path = self.path(name)
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def save_text(self, name: str, text: str) -> Path:
        path = self.path(name)
        path.write_text(text, encoding="utf-8")
        return path

    def load_snapshot(self, name: str) -> Snapshot | None:
        data = self.load_json(name)
        return Snapshot.from_dict(data) if data is not None else None

    def verdict(self, step: str, ok: bool, message: str, **details: Any) -> str:
        """Record the step's verdict; a failing verdict raises so that papermill stops the run here."""
        line = f"{'PASS' if ok else 'FAIL'}: {step}: {message}"
        verdicts = self.path("verdicts")
        private_dir(verdicts)
        write_json(verdicts / f"{step}.json", {"step": step, "ok": ok, "message": message,
                                                "time": time.time(), **details})
        if not ok:
            raise StepFailed(line)
        return line
