"""The test user's whole cycle in one call: synthesize, preview, delete, prove, list orphans."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import psycopg
from psycopg import sql

from ..catalog import Snapshot, qualname
from ..plan import Plan
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

    @property
    def ok(self) -> bool:
        return self.proof is not None and self.proof.ok and self.synthesis.parent in self.synthesis.rows

    @property
    def message(self) -> str:
        if self.proof is None:
            return f"FAIL: {self.synthesis.message}"
        text = self.proof.message
        if self.synthesis.failures:
            text += f" (tables without a test row: {', '.join(qualname(f.table) for f in self.synthesis.failures)})"
        return text


def run_test_user(conn: psycopg.Connection[Any], snapshot: Snapshot, *, marker: str | None = None,
                  values: Mapping[str, Mapping[str, Any]] | None = None, commit: bool = False,
                  setup: Sequence[sql.Composed | sql.SQL] = (), strict_other_tables: bool = False,
                  timeouts: Timeouts | None = None) -> UserDeletionRun:
    """Synthesize, preview, delete, prove and list orphans in one transaction, rolled back unless
    ``commit``. ``setup`` runs first in the same transaction (e.g. a rehearsal's DDL: it takes the
    apply's locks until the transaction ends). ``timeouts`` bound every statement, the setup's lock
    waits included: the transaction lasts as long as the work on the test user's rows, no longer."""
    with conn.transaction(force_rollback=not commit):
        set_timeouts(conn, timeouts)
        for statement in setup:
            conn.execute(statement)
        synthesis = synthesize(conn, snapshot, marker=marker or new_marker(), values=values)
        if snapshot.parent not in synthesis.rows:
            return UserDeletionRun(synthesis, None, None, [], False)
        the_preview = preview(conn, snapshot.parent, synthesis.user_key)
        proof = delete_and_prove(conn, snapshot, synthesis, the_preview, strict_other_tables=strict_other_tables)
        found = orphans(conn, the_preview) if proof.failure is None else []
    return UserDeletionRun(synthesis, the_preview, proof, found, committed=commit)


def rehearsal_setup(the_plan: Plan) -> list[sql.Composed]:
    """The plan's changes as a rehearsal runs them inside the test user's transaction: the ghost row
    first (when a rule reassigns to it, its SET DEFAULT needs the row to exist), then the DDL."""
    ghost = [the_plan.ghost_row.statement()] if the_plan.ghost_row is not None else []
    return ghost + [s for item in the_plan.changes for s in item.rehearsal()]
