"""The end of a run done by hand: the same manifest and index page as ``runbook run`` writes.

A DBA who runs the notebooks one by one ends in the interactive run folder with every step's files and
verdict; ``seal`` turns that folder into evidence that ``runbook verify-evidence`` checks like any
other: the manifest (every file's sha256, the server, the parameters, each step's status from its
verdict) and ``index.html``. A sealed folder is finished: the next notebook opened by hand starts a
new one.
"""
from __future__ import annotations

import calendar
import json
import time
from pathlib import Path
from typing import Any

from . import catalog, index_page, runner
from .context import RunContext


def step_statuses(run_dir: Path) -> list[runner.StepStatus]:
    """Each runbook step as its verdict recorded it; steps before the last one done with no verdict
    are ``not run`` (so the run does not pass)."""
    found = {step: runner.verdict_status(run_dir, step) for step in runner.STEPS}
    done = [step for step, status in found.items() if status is not None]
    if not done:
        return []
    last = list(runner.STEPS).index(done[-1])
    return [runner.StepStatus(step=step, status=found[step] or "not run")
            for step in list(runner.STEPS)[:last + 1]]


def seal(ctx: RunContext) -> str:
    """Write the manifest and index page of a folder run by hand; the line to show."""
    with ctx.connect() as conn:
        ident = catalog.server_identity(conn)
    created = json.loads((ctx.run_dir / "identity.json").read_text(encoding="utf-8")).get("created")
    started = calendar.timegm(time.strptime(created, "%Y-%m-%dT%H:%M:%SZ")) if created else time.time()
    result = runner.RunResult(run_dir=ctx.run_dir, steps=step_statuses(ctx.run_dir))
    params: dict[str, Any] = runner.notebook_parameters(ctx.params)
    runner.finish(ctx.run_dir, result, params=params, ident=ident, dsn=ctx.dsn, started=started,
                  kind="by hand")
    return f"{index_page.headline([s.status for s in result.steps])}: evidence sealed in {ctx.run_dir}"
