"""One exception hierarchy for everything the runbook reports as a failure.

Each error renders as a single line (``str(err)``) that names the problem, so that the command line
can print it as is; the fields carry the table, constraint and SQLSTATE for code that needs them.
"""
from __future__ import annotations


class RunbookError(Exception):
    """Root of every error the runbook raises on purpose."""

    def __init__(
        self,
        message: str,
        *,
        table: str | None = None,
        constraint: str | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.table = table
        self.constraint = constraint
        self.sqlstate = sqlstate

    def __str__(self) -> str:
        return self.message.splitlines()[0] if self.message else type(self).__name__


class ParameterError(RunbookError):
    """The parameters are malformed: an unknown key, a wrong type or a bad value."""


class ConnectionFailed(RunbookError):
    """The server could not be reached or refused the login."""


class CatalogError(RunbookError):
    """The catalog does not hold what the parameters name (e.g. the parent table is missing)."""


class PlanError(RunbookError):
    """The plan cannot be made as asked (e.g. an override that would break every delete)."""


class PreflightFailed(RunbookError):
    """A precondition for changing the database does not hold."""


class BackupError(RunbookError):
    """The backup could not be made or could not be proven readable."""


class ApplyError(RunbookError):
    """A change could not be applied; the constraint is left exactly as it was."""


class VerificationFailed(RunbookError):
    """The database does not show what the plan said it would."""


class EvidenceError(RunbookError):
    """The evidence folder is incomplete, or a file in it does not match its recorded hash."""


class StepFailed(RunbookError):
    """A notebook step reached a failing verdict."""
