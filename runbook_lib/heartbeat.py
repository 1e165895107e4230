"""A heartbeat for long statements: a VALIDATE or an index build can run for forty minutes, and a
release job's log must not fall silent for that long."""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from . import logger

SECONDS = 30.0


@contextmanager
def heartbeat(progress: Callable[[str], None] | None, label: str, every: float | None = None,
              detail: Callable[[], str | None] | None = None) -> Iterator[None]:
    """Report ``label`` as still running every ``every`` seconds (``SECONDS``) until the block ends;
    each beat adds what ``detail()`` says the statement is doing (``progress_views``), when it says."""
    interval = SECONDS if every is None else every
    if progress is None:
        yield
        return
    stop = threading.Event()
    started = time.monotonic()

    def beat() -> None:
        while not stop.wait(interval):
            line = f"... {label}: still running after {time.monotonic() - started:.0f} s"
            try:
                said = detail() if detail is not None else None
            except Exception as exc:  # noqa: BLE001 - a beat without detail beats a silent log
                logger.warning("heartbeat detail for %s failed: %s", label, exc)
                said = None
            progress(f"{line}; {said}" if said else line)

    thread = threading.Thread(target=beat, name="runbook-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
