"""The test user's whole cycle in one call: synthesize (and a second user's rows on the test user's),
preview, delete, prove, list orphans."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import Snapshot, qualname
from ..plan import Plan
from .second_user import SecondUser, check_second_user, plan_second_user, synthesize_second_user
from .common import Timeouts, set_timeouts
from .orphans import Orphans, orphans
from .preview import Preview, preview
from .proof import Proof, delete_and_prove
from .synthesize import Synthesis, new_marker, synthesize


@dataclass
class UserDeletionRun:
    synthesis: Synthesis
    preview: Preview | None
    proof: Proof | None
    orphans: list[Orphans]
    committed: bool
    second_user: SecondUser | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.proof is not None and self.proof.ok and self.synthesis.parent in self.synthesis.rows

    @property
    def message(self) -> str:
        if self.proof is None:
            return f"FAIL: {self.synthesis.message}"
        text = self.proof.message
        if self.second_user is not None and self.second_user.rows:
            text += f"; another user's rows on the test user's: {self.second_user.summary}"
        if self.synthesis.failures:
            text += f" (tables without a test row: {', '.join(qualname(f.table) for f in self.synthesis.failures)})"
        return text


def _prove_with_second_user(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis,
                           values: Mapping[str, Mapping[str, Any]] | None, strict: bool,
                           notes: list[str]) -> UserDeletionRun | None:
    """The proof with a second user's rows hanging off the test user's; None (and the second user
    rolled back) when there are none, or when they block the delete as the plan says they should."""
    with conn.transaction() as savepoint:
        other = synthesize_second_user(conn, snapshot, synthesis, marker=new_marker(), values=values)
        if not other.rows:
            notes.append("second user: no row of another user could hang off the test user's rows"
                         + "".join(f"; {f}" for f in other.failures))
            raise psycopg.Rollback(savepoint)
        the_preview = preview(conn, snapshot.parent, synthesis.user_key)
        blocked = sorted({qualname(b.table) for b in the_preview.certain_blockers if b.table in other.tables})
        if blocked:
            notes.append(f"second user: another user's rows in {', '.join(blocked)} keep the test user from being "
                         "deleted, as the rules say; proven without them")
            raise psycopg.Rollback(savepoint)
        plan_second_user(other, the_preview)
        proof = delete_and_prove(conn, snapshot, synthesis, the_preview, strict_other_tables=strict)
        found = orphans(conn, the_preview) if proof.failure is None else []
        problems = check_second_user(conn, other, the_preview) if proof.failure is None else []
        if problems:
            proof.ok = False
            proof.mismatches.extend(problems)
            proof.message = (proof.message if proof.message.startswith("FAIL") else f"FAIL: {proof.action}") \
                + "; " + "; ".join(problems)
        return UserDeletionRun(synthesis, the_preview, proof, found, False, other, notes)
    return None


def run_test_user(conn: psycopg.Connection[Any], snapshot: Snapshot, *, marker: str | None = None,
                  values: Mapping[str, Mapping[str, Any]] | None = None, commit: bool = False,
                  setup: Sequence[sql.Composed | sql.SQL] = (), strict_other_tables: bool = False,
                  timeouts: Timeouts | None = None, second_user: bool = False) -> UserDeletionRun:
    """Synthesize, preview, delete, prove and list orphans in one transaction, rolled back unless
    ``commit``. ``setup`` runs first in the same transaction (e.g. a rehearsal's DDL: it takes the
    apply's locks until the transaction ends). ``timeouts`` bound every statement, the setup's lock
    waits included: the transaction lasts as long as the work on the test user's rows, no longer.
    ``second_user``: a second user's rows hang off the test user's, and their fate is proven too."""
    with conn.transaction(force_rollback=not commit):
        set_timeouts(conn, timeouts)
        for statement in setup:
            conn.execute(statement)
        synthesis = synthesize(conn, snapshot, marker=marker or new_marker(), values=values)
        if snapshot.parent not in synthesis.rows:
            return UserDeletionRun(synthesis, None, None, [], False)
        notes: list[str] = []
        if second_user:
            done = _prove_with_second_user(conn, snapshot, synthesis, values, strict_other_tables, notes)
            if done is not None:
                done.committed = commit
                return done
        the_preview = preview(conn, snapshot.parent, synthesis.user_key)
        proof = delete_and_prove(conn, snapshot, synthesis, the_preview, strict_other_tables=strict_other_tables)
        found = orphans(conn, the_preview) if proof.failure is None else []
    return UserDeletionRun(synthesis, the_preview, proof, found, committed=commit, notes=notes)


def run_test_user_retrying(conn: psycopg.Connection[Any], snapshot: Snapshot, *, attempts: int, backoff: float,
                           **kwargs: Any) -> UserDeletionRun:
    """``run_test_user`` again, after a pause that grows, when a lock was not granted within
    lock_timeout (the whole transaction is rolled back each time, so no lock is held while waiting);
    the last attempt's error propagates."""
    for attempt in range(1, attempts + 1):
        try:
            run = run_test_user(conn, snapshot, **kwargs)
        except psycopg.errors.LockNotAvailable as exc:
            if attempt == attempts:
                raise
            delay = backoff * attempt
            logger.warning("test user: a lock was not granted within lock_timeout (%s); attempt %d of %d, "
                           "again in %.1fs", exc.diag.message_primary, attempt, attempts, delay)
            time.sleep(delay)
            continue
        if attempt > 1:
            run.notes.append(f"lock_timeout: done at attempt {attempt} of {attempts}")
        return run
    raise AssertionError("unreachable")


def rehearsal_setup(the_plan: Plan) -> list[sql.Composed]:
    """The plan's changes as a rehearsal runs them inside the test user's transaction: the ghost row
    first (when a rule reassigns to it, its SET DEFAULT needs the row to exist), then the DDL."""
    ghost = [the_plan.ghost_row.statement()] if the_plan.ghost_row is not None else []
    return ghost + [s for item in the_plan.changes for s in item.rehearsal()]
