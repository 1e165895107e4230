"""The fixed text of a generated Alembic revision: its header and the helpers it carries.

A revision must run years after it was written, on a machine without the runbook: everything it
needs (the transaction per FK, the lock_timeout retries, the state check that makes a rerun resume)
is written into the file itself and uses only Alembic and SQLAlchemy.
"""
from __future__ import annotations

HEADER = '''"""{title}

Revision ID: {revision}
Revises: {down_revision}
Create Date: {create_date}

Foreign keys onto the ON DELETE rules of the cascade runbook's plan for parent {parent}.
upgrade(): one foreign key per transaction, outside Alembic's own transaction: SET LOCAL
lock_timeout, one atomic ALTER TABLE (DROP CONSTRAINT and ADD CONSTRAINT ... NOT VALID, so the
constraint is never missing), retried with backoff while another session holds a lock (SQLSTATE
55P03); then VALIDATE CONSTRAINT in a transaction of its own, which blocks neither reads nor writes.
Each block first checks the constraint's definition: one already changed is skipped (a rerun after
an interruption resumes; a database the runbook already migrated is left as it is) and one that
differs from both texts stops the migration, leaving it untouched.
downgrade(): every changed foreign key back to its exact original definition.
Offline (alembic upgrade --sql): the same statements as plain SQL, each swap between BEGIN and
COMMIT; run it with psql, and rerun a block that fails on lock_timeout.
"""
import random
import time

import sqlalchemy as sa
from alembic import op

revision = {revision_literal}
down_revision = {down_literal}
branch_labels = None
depends_on = None
'''

HELPERS = '''
ATTEMPTS = {attempts}
BACKOFF_SECONDS = {backoff}
LOCK_TIMEOUT = {lock_timeout}
NO_STATEMENT_TIMEOUT = "SET LOCAL statement_timeout = 0"
_DEFINITION = sa.text(
    "SELECT pg_catalog.pg_get_constraintdef(c.oid) FROM pg_catalog.pg_constraint c"
    " JOIN pg_catalog.pg_class t ON t.oid = c.conrelid"
    " JOIN pg_catalog.pg_namespace n ON n.oid = t.relnamespace"
    " WHERE c.contype = 'f' AND c.conparentid = 0"
    " AND n.nspname = :schema AND t.relname = :table AND c.conname = :name")


def _run(bind, statement):
    # Sent as written: no bind-parameter parsing of the colons and percent signs names may hold.
    bind.exec_driver_sql(statement, execution_options={{"no_parameters": True}})


def _definition(bind, constraint):
    # An empty search_path makes pg_get_constraintdef qualify every name (local to this transaction).
    _run(bind, "SELECT pg_catalog.set_config('search_path', '', true)")
    schema, table, name = constraint
    return bind.execute(_DEFINITION, {{"schema": schema, "table": table, "name": name}}).scalar()


def _state(bind, constraint, before, after):
    """todo, done, or an error when the constraint is neither as it was nor as it will be."""
    current = _definition(bind, constraint)
    if (after is None and current is None) or (after is not None and current in (after, after + " NOT VALID")):
        return "done"
    if (before is None and current is None) or (before is not None and current in (before, before + " NOT VALID")):
        return "todo"
    raise RuntimeError(f"{{'.'.join(constraint)}} is {{current!r}}, neither {{before!r}} nor {{after!r}}: "
                       "changed since this revision was written; left as it is")


def _sqlstate(exc):
    orig = getattr(exc, "orig", None)
    return getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)


def _transaction(bind, body, *, scan=False):
    """body(bind) in one transaction under lock_timeout; lock waits retried with backoff."""
    for attempt in range(1, ATTEMPTS + 1):
        _run(bind, "BEGIN")
        try:
            _run(bind, LOCK_TIMEOUT)
            if scan:  # VALIDATE blocks no reads or writes: a statement_timeout would only abort it
                _run(bind, NO_STATEMENT_TIMEOUT)
            result = body(bind)
            _run(bind, "COMMIT")
            return result
        except BaseException as exc:
            _run(bind, "ROLLBACK")
            if not isinstance(exc, sa.exc.DBAPIError) or _sqlstate(exc) != "55P03" or attempt == ATTEMPTS:
                raise
        time.sleep(min(30.0, BACKOFF_SECONDS * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2))


def _statements(statements):
    return lambda bind: [_run(bind, statement) for statement in statements]


def _offline(statements, *, transaction=True):
    impl = op.get_context().impl
    lines = (["BEGIN", LOCK_TIMEOUT] if transaction else []) + list(statements)
    for line in lines + (["COMMIT"] if transaction else []):
        impl.static_output(line + impl.command_terminator)


def _in_one_transaction(statements):
    """Statements that need no state check (the ghost row: inserted unless it exists)."""
    if op.get_context().as_sql:
        _offline(statements)
    else:
        _transaction(op.get_bind(), _statements(statements))


def _change(constraint, *, before, after, swap, validate=None, copies=(), cleanup=()):
    """One foreign key from definition `before` to `after` (None: no such constraint).

    copies: per partition, a NOT VALID copy and its VALIDATE (a partitioned table before
    PostgreSQL 18), each in a transaction of its own; the swap then takes them over unscanned.
    cleanup: drops those copies (before starting, and when the swap cannot be done).
    Runs inside an autocommit block: each transaction here is its own, begun and committed explicitly.
    """
    if op.get_context().as_sql:
        for add, check in copies:
            _offline([add])
            _offline([check], transaction=False)
        _offline(swap)
        if validate is not None:
            _offline([validate], transaction=False)
        return
    bind = op.get_bind()
    if _transaction(bind, lambda b: _state(b, constraint, before, after)) == "todo":
        try:
            for statement in cleanup:  # copies an interrupted run left behind
                _transaction(bind, _statements([statement]))
            for add, check in copies:
                _transaction(bind, _statements([add]))
                _transaction(bind, _statements([check]), scan=True)
            _transaction(bind, lambda b: _state(b, constraint, before, after) == "todo" and _statements(swap)(b))
        except Exception:
            for statement in cleanup:
                _transaction(bind, _statements([statement]))
            raise
    if validate is not None:
        _transaction(bind, lambda b: _definition(b, constraint) == after + " NOT VALID"
                     and _statements([validate])(b), scan=True)
'''
