"""Live progress of ``runbook run``, ``rollback`` and ``erase``: timestamped lines while the steps run.

A release job's log must not stay silent through a forty-minute VALIDATE: each step says when it
starts and ends, and every line a step's notebook prints (apply and rollback print one per foreign
key as it is done, erase one per transaction) is passed on as it appears, through papermill's own logger.
"""
from __future__ import annotations

import logging
import time
from typing import TextIO

LOGGER = logging.getLogger("runbook_lib.progress")
# papermill logs each executed cell and, with log_output, every line the cell prints.
_SOURCES = ("runbook_lib.progress", "papermill")


class _EachLine(logging.Formatter):
    """A timestamp on every line: papermill passes on several printed lines as one record."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = self.formatTime(record, self.datefmt)
        return "\n".join(f"{stamp}Z {line}" for line in record.getMessage().rstrip("\n").splitlines() or [""])


def _formatter() -> logging.Formatter:
    formatter = _EachLine(datefmt="%Y-%m-%dT%H:%M:%S")
    formatter.converter = time.gmtime  # release-job logs compare times across machines: UTC
    return formatter


def enable(stream: TextIO) -> None:
    """Write progress lines to ``stream`` (the command line's stderr)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter())
    for name in _SOURCES:
        source = logging.getLogger(name)
        source.setLevel(logging.INFO)
        source.addHandler(handler)
        source.propagate = False


def step_started(step: str, notebook: str) -> None:
    LOGGER.info("step %s: started (%s)", step, notebook)


def step_finished(step: str, status: str, seconds: float) -> None:
    LOGGER.info("step %s: %s after %.1fs", step, status, seconds)
