"""Proof of deletion: a synthetic test user, a deletion preview for any user, the proof, orphans and
an ordered delete script. Modules: columns (column-level catalog), values (candidate values),
synthesize (the test user's rows), second_user (another user's rows on the test user's), preview (the
walk along the FKs), proof (counters and key lookups), orphans, script (ordered delete), run (the
step's cycle), frames (DataFrames), common (SQL helpers, timeouts).

Everything here runs inside the caller's transaction and never commits; the caller decides (the test
user step rolls back by default). SQL is composed with ``psycopg.sql`` only; every value travels as
text through a placeholder and is cast server-side to the column's own type, so any type round-trips.

API (what notebooks, ``runbook preview`` and steps.py call)::

    new_marker() -> str
    synthesize(conn, snapshot, *, marker, values={}) -> Synthesis
        One row in every table of graph.deletion_set(snapshot), parent first, following the FK tree.
        Inside the caller's open transaction (a savepoint per insert attempt). Failures are listed in
        Synthesis.failures with the database's message; it does not raise for them.
    preview(conn, parent, user_key, *, read_only=True, rules=None, timeouts=None) -> Preview
        What ``DELETE FROM parent WHERE pk = user_key`` will do, walking the FKs with the rules the
        catalog shows now (catalog.read_foreign_keys), by key through the FK columns; an FK action
        reaches ONLY the plain table it is declared on, so inheritance children are counted once.
        Read-only: works in a READ ONLY transaction; when the connection is idle it opens its own
        READ ONLY REPEATABLE READ transaction (under ``timeouts`` when given).
        ``rules`` (FK key -> rule) previews another state, e.g. the plan's: {i.fk.key: i.planned}.
    delete_and_prove(conn, snapshot, synthesis, preview, *, strict_other_tables=False) -> Proof
        One DELETE of the parent row in a savepoint between two readings of this transaction's own
        row counters (pg_stat_xact_user_tables: deleted, updated, inserted per table, cascades and
        triggers included, other sessions never), compared per table with the preview; then key
        lookups of every previewed row. No statement reads a table in full. A failing DELETE is
        reported in the Proof (table and constraint), not raised.
    orphans(conn, preview) -> list[Orphans]
        After the delete: rows of tables outside the deletion set that the deleted rows referenced
        and that nothing references any more. Never deleted.
    parent_key_columns(conn, parent) -> tuple[str, ...]
    script_rules(snapshot, params=None) -> dict[str, str]
    ordered_delete_script(snapshot, user_key_columns, *, params=None) -> list[sql.Composed]
        Explicit UPDATE ... SET NULL / DELETE sequence for one user (children before parents);
        placeholder %(user_id)s for a one-column key, %(<column>)s per column otherwise.
    script_params(user_key_columns, user_key) -> dict[str, Any]
    prove_ordered_delete(conn, snapshot, synthesis, *, params=None) -> Proof
    run_test_user(conn, snapshot, *, marker=None, values={}, commit=False, setup=(),
                  strict_other_tables=False, timeouts=None, second_user=False) -> UserDeletionRun
        All of the above for the test user in one transaction, rolled back unless ``commit``;
        ``setup`` statements (a rehearsal's DDL: ``rehearsal_setup(plan)``) run first inside the same
        transaction; every statement under ``timeouts`` (statement_timeout, lock_timeout); with
        ``second_user`` a second user's rows hang off the test user's and their fate is proven too.
    run_test_user_retrying(conn, snapshot, *, attempts, backoff, **kwargs) -> UserDeletionRun
        The same, again after a pause when a lock was not granted within lock_timeout.
    DataFrames: synthesis_frame, preview_frame, blockers_frame, proof_frame, second_user_frame,
    orphans_frame.

Blockers: a RESTRICT / NO ACTION edge with referencing rows that the cascade does not delete blocks
for certain. When the referencing row is itself deleted by the same cascade, PostgreSQL's outcome
depends on the order in which the cascade's triggers reach the two rows (the check runs at the end of
the query that deleted the referenced row, not of the whole statement): such rows are reported as
``certain=False`` ("may block") and the proof shows what the database actually did.
"""
from __future__ import annotations

from .second_user import SecondUser, SecondUserRow, synthesize_second_user
from .columns import ColumnCatalog, TableMeta, parent_key_columns, read_column_catalog
from .common import Timeouts, set_timeouts
from .frames import (blockers_frame, orphans_frame, preview_frame, proof_frame, second_user_frame,
                     synthesis_frame)
from .orphans import Orphans, orphans
from .preview import Blocker, Detached, Preview, PreviewRow, preview
from .proof import DeleteFailure, Proof, delete_and_prove
from .run import UserDeletionRun, rehearsal_setup, run_test_user, run_test_user_retrying
from .script import ordered_delete_script, prove_ordered_delete, script_params, script_rules
from .synthesize import Synthesis, SynthesisFailure, SynthesizedRow, new_marker, synthesize

__all__ = [
    "Blocker", "ColumnCatalog", "DeleteFailure", "Detached", "Orphans", "Preview", "PreviewRow", "Proof",
    "SecondUser", "SecondUserRow", "Synthesis", "SynthesisFailure", "SynthesizedRow", "TableMeta", "Timeouts",
    "UserDeletionRun", "blockers_frame", "delete_and_prove", "new_marker", "ordered_delete_script", "orphans",
    "orphans_frame", "parent_key_columns", "preview", "preview_frame", "proof_frame", "prove_ordered_delete",
    "read_column_catalog", "rehearsal_setup", "run_test_user", "run_test_user_retrying", "script_params",
    "script_rules", "second_user_frame", "set_timeouts", "synthesis_frame", "synthesize",
    "synthesize_second_user",
]
