"""The work of each step, callable from a notebook or a test: every step is a function of the context."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg

from . import backup as backup_mod
from . import backup_choice, history, vouch
from . import catalog, deletion, execute, logger, render, samples
from . import references as references_mod
from . import indexes as indexes_mod
from .catalog import Snapshot, qualname
from .context import RunContext
from .errors import ApplyError, ParameterError, VerificationFailed
from .plan import Plan, make_plan
from .preflight import Check, PreflightResult, preflight
from .verify import Comparison, compare, expected_after

SNAPSHOT_BEFORE = "snapshot_before.json"
SNAPSHOT_AFTER = "snapshot_after.json"
# Preflight lives in its own module; the notebooks call it as a step like the others.
__all__ = ["Check", "PreflightResult", "preflight"]


# ---------------------------------------------------------------- backup
def backup(ctx: RunContext, progress: execute.Progress | None = None) -> backup_mod.BackupRecord:
    if not ctx.params.backup_enabled:
        record = backup_mod.BackupRecord(enabled=False, reason="backup turned off in the parameters")
        ctx.save_json("backup.json", record.to_dict())
        return record
    mode, folder = ctx.params.backup_mode, ctx.backup_dir()
    with ctx.connect() as conn:
        why = backup_choice.why(mode, backup_choice.assess(conn, folder))
    record = backup_mod.take(ctx.connect, ctx.conninfo(), mode=mode, folder=folder, run_id=ctx.run_dir.name,
                             why=why, progress=progress)
    ctx.save_json("backup.json", record.to_dict())
    return record


# ---------------------------------------------------------------- inspect and plan
def survey(conn: Any, params: Any) -> Snapshot:
    """The catalog's snapshot, plus what it cannot say alone: reference columns without an FK and
    sampled facts for the edges whose owner it cannot judge."""
    snap = catalog.inspect(conn, params.parent_schema, params.parent_table)
    snap = replace(snap, references=references_mod.find(conn, snap, params))
    return replace(snap, facts=samples.facts(conn, snap, params))


def inspect(ctx: RunContext, *, save_as: str = SNAPSHOT_BEFORE) -> Snapshot:
    with ctx.connect() as conn:
        snap = survey(conn, ctx.params)
    ctx.save_json(save_as, snap.to_dict())
    return snap


def snapshot_before(ctx: RunContext) -> Snapshot:
    """The run's inspected snapshot; a notebook opened on its own inspects now."""
    snap = ctx.load_snapshot(SNAPSHOT_BEFORE)
    return snap if snap is not None else inspect(ctx)


def pending(ctx: RunContext) -> set[str]:
    # This run's own journal is left out: plan, apply and verify must all see the same set. Only the
    # journals of runs the database's history records are read.
    with ctx.connect() as conn:
        known = history.known_runs(conn, ctx.params.history_schema)
    return execute.pending_validations(ctx.run_dir.parent, exclude=ctx.run_dir, only=known)


def plan(ctx: RunContext) -> Plan:
    the_plan = make_plan(snapshot_before(ctx), ctx.params, pending(ctx))
    ctx.save_json("plan.json", the_plan.to_dict())
    header = history.script_lines(ctx.params.history_schema) if the_plan.actions else []
    ctx.save_text("plan.sql", "\n".join(header) + the_plan.forward_script())
    ctx.save_text("rollback.sql", the_plan.rollback_script())
    for note in the_plan.notes:
        logger.warning("%s", note)
    return the_plan


# ---------------------------------------------------------------- apply
@dataclass
class ApplyOutcome:
    dry_run: bool
    results: list[execute.StepResult] = field(default_factory=list)
    indexes: list[indexes_mod.IndexResult] = field(default_factory=list)
    statements: list[dict[str, Any]] = field(default_factory=list)
    backup_note: str = ""

    @property
    def failed(self) -> list[execute.StepResult]:
        return [r for r in self.results if r.status == "failed"]

    def frame(self) -> pd.DataFrame:
        if self.dry_run:
            return pd.DataFrame(self.statements)
        return pd.DataFrame([r.to_dict() for r in self.results])

    def index_frame(self) -> pd.DataFrame:
        return pd.DataFrame([r.to_dict() for r in self.indexes])


def index_plans(ctx: RunContext, the_plan: Plan) -> list[indexes_mod.IndexPlan]:
    """The indexes the opt-in step would build: one per unindexed FK into the deletion set."""
    if not ctx.params.create_missing_indexes:
        return []
    return indexes_mod.missing(i.fk for i in the_plan.items)


def apply(ctx: RunContext, progress: execute.Progress | None = None) -> ApplyOutcome:
    the_plan = make_plan(snapshot_before(ctx), ctx.params, pending(ctx))
    wanted_indexes = index_plans(ctx, the_plan)
    if ctx.params.dry_run:
        statements = [{"constraint": p.fk.key, "transaction": "none (CONCURRENTLY)",
                       "sql": render.text(p.statement)} for p in wanted_indexes]
        outcome = ApplyOutcome(dry_run=True, statements=statements + execute.dry_run_statements(the_plan))
        ctx.save_json("apply_result.json", {"dry_run": True, "statements": outcome.statements, "results": []})
        return outcome
    if the_plan.decisions:
        raise ApplyError(f"apply refused: {len(the_plan.decisions)} open decision(s); close each with a rule: "
                         + "; ".join(the_plan.decision_lines()))
    record = ctx.load_json("backup.json")
    if not the_plan.actions and not wanted_indexes:
        outcome = ApplyOutcome(dry_run=False, backup_note="nothing to change: no statement executed")
        ctx.save_json("apply_result.json", {"dry_run": False, "backup": outcome.backup_note, "results": []})
        return outcome
    if ctx.params.backup_enabled:
        problem = backup_mod.check_record(record, ctx.params.backup_mode)
        if problem is not None:
            raise ApplyError(f"apply refused: {problem}; run the backup step first "
                             "(or turn backup off in the parameters)")
        note = backup_mod.describe(record)
    else:
        note = "backup turned off in the parameters: applying without a backup"
    executor = execute.Executor(
        ctx.connect, lock_timeout_ms=ctx.params.lock_timeout_ms, attempts=ctx.params.lock_retries,
        backoff=ctx.params.retry_backoff, journal=execute.Journal(ctx.path("apply_journal.jsonl")))
    lock_conn = ctx.connect()
    built: list[indexes_mod.IndexResult] = []
    try:
        with execute.run_lock(lock_conn):
            _record_start(ctx, lock_conn, the_plan)
            # Indexes first: the validations that follow, and every cascade after, use them.
            built = indexes_mod.create(ctx.connect, wanted_indexes, lock_timeout_ms=ctx.params.lock_timeout_ms,
                                       attempts=ctx.params.lock_retries, backoff=ctx.params.retry_backoff,
                                       journal=executor.journal.write, progress=progress)
            results = execute.apply_plan(executor, the_plan, progress, execute.lock_guard(lock_conn))
    finally:
        executor.close()
        lock_conn.close()
    for index in built:
        if index.status == "failed":
            results.append(execute.StepResult(constraint=index.constraint, direction="index", status="failed",
                                              error=f"index {index.index}: {index.detail}"))
    _record_end(ctx, results)
    outcome = ApplyOutcome(dry_run=False, results=results, backup_note=note, indexes=built)
    ctx.save_json("apply_result.json", {"dry_run": False, "backup": note,
                                        "results": [r.to_dict() for r in results],
                                        "indexes": [i.to_dict() for i in built]})
    return outcome


def _record_start(ctx: RunContext, conn: Any, the_plan: Plan) -> None:
    """Before the first change: the database records this run and the hashes of the files a rollback
    of it will read (the plan and the snapshot), so that an edited folder is refused later."""
    if not ctx.path("plan.json").exists():
        ctx.save_json("plan.json", the_plan.to_dict())
    try:
        history.record_start(conn, ctx.params.history_schema, run_id=ctx.run_dir.name, kind="apply",
                             parent=qualname(the_plan.parent), hashes=history.folder_hashes(ctx.run_dir))
    except Exception as exc:  # noqa: BLE001 - any failure to record means nothing is changed
        raise ApplyError(f"apply refused: cannot record the run in {ctx.params.history_schema}."
                         f"{history.TABLE}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
                         "set history_schema to a schema this role may create or write") from None


def _record_end(ctx: RunContext, results: list[execute.StepResult]) -> None:
    changed = [r.constraint for r in results if r.status in ("applied", "already")]
    status = "failed" if any(r.status == "failed" for r in results) else "applied"
    with ctx.connect() as conn:
        history.record_end(conn, ctx.params.history_schema, ctx.run_dir.name, status=status, changed=changed)


# ---------------------------------------------------------------- verify
@dataclass
class VerifyOutcome:
    comparison: Comparison
    replan: Plan
    dry_run: bool

    @property
    def problems(self) -> list[str]:
        problems = list(self.comparison.problems)
        if not self.dry_run and self.replan.actions:
            problems.append("re-planning still finds changes: "
                            + ", ".join(i.fk.key for i in self.replan.actions))
        return problems

    @property
    def ok(self) -> bool:
        return not self.problems

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.comparison.rows)


def applied_keys(ctx: RunContext) -> list[str]:
    data = ctx.load_json("apply_result.json") or {}
    return [r["constraint"] for r in data.get("results", []) if r["status"] in ("applied", "already")]


def verify(ctx: RunContext) -> VerifyOutcome:
    before = ctx.load_snapshot(SNAPSHOT_BEFORE)
    if before is None:
        raise VerificationFailed("no snapshot from before the change in this run: run the inspect step first")
    after = inspect(ctx, save_as=SNAPSHOT_AFTER)
    pending_keys = pending(ctx)
    the_plan = make_plan(before, ctx.params, pending_keys)
    dry_run = ctx.params.dry_run
    expected = {} if dry_run else expected_after(the_plan, [i.fk.key for i in the_plan.actions])
    comparison = compare(before, after, expected)
    replan = make_plan(after, ctx.params, pending_keys)
    outcome = VerifyOutcome(comparison=comparison, replan=replan, dry_run=dry_run)
    ctx.save_json("verify.json", {"ok": outcome.ok, "problems": outcome.problems, "rows": comparison.rows,
                                  "replan_changes": [i.fk.key for i in replan.actions]})
    return outcome


# ---------------------------------------------------------------- rollback
@dataclass
class RollbackOutcome:
    source: Path
    results: list[execute.StepResult]
    comparison: Comparison

    @property
    def ok(self) -> bool:
        return not any(r.status == "failed" for r in self.results) and self.comparison.ok


def rollback(ctx: RunContext, source_run: str | Path,
             progress: execute.Progress | None = None) -> RollbackOutcome:
    """Restore every FK the source run changed to its exact original definition."""
    source = Path(source_run).resolve()
    the_plan = vouch.rollback_plan(ctx, source)
    before = ctx.with_run_dir(source).load_snapshot(SNAPSHOT_BEFORE)
    if before is None:  # rollback_plan refuses such a folder; this keeps the type checker honest
        raise VerificationFailed(f"{source} holds no snapshot from before its change")
    items = the_plan.items
    ctx.save_text("rollback.sql", the_plan.rollback_script())
    executor = execute.Executor(
        ctx.connect, lock_timeout_ms=ctx.params.lock_timeout_ms, attempts=ctx.params.lock_retries,
        backoff=ctx.params.retry_backoff, journal=execute.Journal(ctx.path("rollback_journal.jsonl")))
    lock_conn = ctx.connect()
    start = time.perf_counter()
    try:
        with execute.run_lock(lock_conn):
            results = execute.rollback_plan(executor, the_plan, progress, execute.lock_guard(lock_conn))
    finally:
        executor.close()
        lock_conn.close()
    with ctx.connect() as conn:
        history.record_rollback(conn, ctx.params.history_schema, run_id=ctx.run_dir.name, source=source.name,
                                parent=qualname(the_plan.parent), hashes=history.folder_hashes(source),
                                restored=[r.constraint for r in results if r.status != "failed"])
    after = inspect(ctx, save_as="snapshot_after_rollback.json")
    # After a rollback, every FK the run changed must be back to its exact original definition text.
    comparison = compare(before, after, {}, scope=[i.fk.key for i in items],
                         absent=[i.fk.key for i in items if i.adds])
    ctx.save_json("rollback_result.json", {
        "source_run": str(source), "seconds": round(time.perf_counter() - start, 3),
        "results": [r.to_dict() for r in results], "rows": comparison.rows, "problems": comparison.problems})
    return RollbackOutcome(source=source, results=results, comparison=comparison)


# ---------------------------------------------------------------- test-user deletion
@dataclass
class TestUserOutcome:
    skipped: str | None = None
    rehearsal: bool = False
    run: deletion.UserDeletionRun | None = None
    script: list[str] = field(default_factory=list)
    script_proof: deletion.Proof | None = None

    @property
    def ok(self) -> bool:
        if self.skipped is not None:
            return True
        return (self.run is not None and self.run.ok
                and (self.script_proof is None or self.script_proof.ok))

    @property
    def message(self) -> str:
        if self.skipped is not None:
            return f"skipped: {self.skipped}"
        assert self.run is not None
        text = self.run.message
        if self.script_proof is not None and not self.script_proof.ok:
            text += f"; the ordered delete script: {self.script_proof.message}"
        if self.rehearsal:
            text = "rehearsal of the plan (rolled back): " + text
        return text


def test_user(ctx: RunContext) -> TestUserOutcome:
    """Create a test user with rows everywhere, delete it, prove that nothing of it remains."""
    settings = ctx.params.test_user
    rehearse = bool(settings["rehearse"])
    if ctx.params.dry_run and not rehearse:
        outcome = TestUserOutcome(skipped="dry run: nothing was applied, so the deletion would only show what "
                                          "the plan is about to fix; set test_user.rehearse to prove the planned "
                                          "state inside a rolled-back transaction")
        ctx.save_json("test_user.json", {"ok": True, "skipped": outcome.skipped})
        return outcome
    with ctx.connect() as conn:
        snap = catalog.inspect(conn, ctx.params.parent_schema, ctx.params.parent_table)
        setup: list[Any] = []
        if ctx.params.dry_run and rehearse:
            setup = deletion.rehearsal_setup(make_plan(snap, ctx.params))
        timeouts = deletion.Timeouts(ctx.params.statement_timeout, ctx.params.lock_timeout)
        with contextlib.ExitStack() as held:
            if setup:
                # A rehearsal takes the apply's locks: never while another run is changing the database.
                held.enter_context(execute.run_lock(held.enter_context(ctx.connect())))
            run = deletion.run_test_user_retrying(
                conn, snap, attempts=ctx.params.lock_retries, backoff=ctx.params.retry_backoff,
                values=settings.get("values") or {}, commit=bool(settings["commit"]) and not ctx.params.dry_run,
                setup=setup, timeouts=timeouts, second_user=True)
            key_columns = deletion.parent_key_columns(conn, snap.parent)
            statements = deletion.ordered_delete_script(snap, key_columns, params=ctx.params)
            script_proof = None
            # The explicit script is proven on a test user of its own, on the database as it is now (or, in a
            # rehearsal, as the plan leaves it: its SET DEFAULT updates need the ghost row and column defaults).
            with conn.transaction(force_rollback=True):
                deletion.set_timeouts(conn, timeouts)
                for statement in setup:
                    conn.execute(statement)
                synthesis = deletion.synthesize(conn, snap, marker=deletion.new_marker(),
                                                values=settings.get("values") or {})
                if snap.parent in synthesis.rows:
                    script_proof = deletion.prove_ordered_delete(conn, snap, synthesis, params=ctx.params)
    outcome = TestUserOutcome(rehearsal=bool(setup), run=run, script=[render.text(s) for s in statements],
                              script_proof=script_proof)
    ctx.save_text("delete_script.sql", "-- Ordered delete for one user, children before parents "
                  "(placeholders: %(user_id)s)\n" + "\n".join(s + ";" for s in outcome.script) + "\n")
    ctx.save_json("test_user.json", {
        "ok": outcome.ok, "message": outcome.message, "rehearsal": outcome.rehearsal,
        "committed": run.committed, "proof": run.proof.to_dict() if run.proof else None,
        "synthesis_failures": [str(f) for f in run.synthesis.failures],
        "orphans": [{"table": qualname(o.table), "columns": list(o.columns), "count": o.count, "keys": o.keys,
                     "referenced_by": o.referenced_by} for o in run.orphans],
        "script_proof": script_proof.to_dict() if script_proof else None, "notes": run.notes,
        "second_user": [{"table": qualname(r.row.table), "key": r.row.key, "owner": r.owner_fk,
                        "via": list(r.hangs_off), "planned": r.planned, "found": r.found}
                       for r in (run.second_user.rows if run.second_user else [])]})
    return outcome


def preview_user(ctx: RunContext, user_id: Any) -> deletion.Preview:
    """Read-only: what deleting one real user would remove, set to NULL, or be blocked by."""
    with ctx.connect() as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", [ctx.params.parent_schema, ctx.params.parent_table]).fetchone()
        if not row or not row[0]:
            raise catalog.CatalogError(f"parent table {ctx.params.parent_schema}.{ctx.params.parent_table} "
                                       "does not exist")
        parent = (ctx.params.parent_schema, ctx.params.parent_table)
        try:
            found = deletion.preview(conn, parent, user_id, timeouts=deletion.Timeouts(
                ctx.params.statement_timeout, ctx.params.lock_timeout))
        except psycopg.errors.DataError as exc:
            # The key is cast to the key column's type by the server: a value it cannot read is bad input.
            raise ParameterError(f"user id {user_id!r} is not a key of {qualname(parent)}: "
                                 f"{str(exc).splitlines()[0]}") from None
    if not found.found:
        raise catalog.CatalogError(f"no row of {qualname(parent)} has the key {user_id!r}")
    return found


def preview_unprotected(ctx: RunContext, user_id: Any) -> list[references_mod.UserReference]:
    """Read-only: the user's rows in reference columns no FK protects, which no cascade will reach."""
    parent = (ctx.params.parent_schema, ctx.params.parent_table)
    with ctx.connect() as conn:
        return references_mod.user_rows(conn, parent, catalog.parent_key(conn, parent), user_id, ctx.params)


def models_frame(ctx: RunContext, the_plan: Plan) -> pd.DataFrame:
    """The application's SQLAlchemy models (parameter ``models``) against the planned rules, as
    ``runbook orm-check`` reports them: each disagreement with its file, line and fix."""
    import os

    from . import orm_check

    models = orm_check.load(ctx.params.models, search=[os.environ.get("RUNBOOK_WORKDIR", os.getcwd())])
    with ctx.connect() as conn:
        row = conn.execute("SELECT current_schema()").fetchone()
    models = replace(models, default_schema=str(row[0]) if row and row[0] else "public")
    findings = orm_check.check(models, the_plan)
    return pd.DataFrame([f.to_dict() for f in findings], columns=["where", "model", "constraint", "problem", "fix"])
