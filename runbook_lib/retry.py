"""Backing off after a lock wait: the delay before the next attempt, shared by apply and erase."""
from __future__ import annotations

import random

import psycopg
from psycopg import errors as pgerrors

MAX_BACKOFF_SECONDS = 30.0

# A transaction that gave up waiting for a lock (lock_timeout) or was picked as a deadlock's victim
# was rolled back whole: trying it again later is safe.
LOCK_WAITS: tuple[type[psycopg.Error], ...] = (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected)


def backoff_delay(first: float, attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1-based): ``first``, doubling, capped, with jitter."""
    base = min(MAX_BACKOFF_SECONDS, first * (2 ** (attempt - 1)))
    return base * random.uniform(0.8, 1.2)
