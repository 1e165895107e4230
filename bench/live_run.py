"""The whole default run on a big database under live traffic, against a control period and the baseline.

A generated database (``users``, a dozen children, one ``events`` child of millions of rows, one
partitioned child) gets concurrent clients reading users, inserting into the children and updating
users, while, each on a fresh copy of the same database:

* **control** — nothing but the clients, for as long as the runbook's run took;
* **runbook** — ``runbook run -p dry_run=false`` as a release job runs it: every step, notebooks and all,
  the test-user proof included (backup off: its cost is measured by its own benchmark);
* **baseline** — the usual one-transaction migration (DROP and ADD of every FK, see ``bench.availability``).

Reported for each: the clients' longest wait and p99 over the whole phase, and for the runbook step by step
(a step's window starts when its executed notebook appears in the run folder); then the ratios against
the control. The run must exit 0 with zero client errors.

    python -m bench.live_run [--scale small|medium|full] [--dsn DSN | --embedded]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

from bench import availability, common

RUN_STEPS = ["preflight", "inspect", "plan", "apply", "verify", "test_user"]

SCALES = {
    "small": availability.Scale("small", users=2_000, children=12, child_rows=200, big_rows=50_000,
                                partitioned_rows=2_000, inserters=2, updaters=1, logins=1),
    "medium": availability.Scale("medium", users=50_000, children=12, child_rows=20_000, big_rows=1_000_000,
                                 partitioned_rows=100_000, inserters=2, updaters=1, logins=1),
    "full": availability.Scale("full", users=50_000, children=12, child_rows=20_000, big_rows=10_000_000,
                               partitioned_rows=200_000, inserters=2, updaters=1, logins=1),
}


def _watch(run_root: Path, seen: dict[str, float], stop: threading.Event) -> None:
    """Record when each executed notebook first appears: the start of its step."""
    while not stop.is_set():
        for path in run_root.glob("*/*.ipynb"):
            seen.setdefault(path.stem, time.time())
        stop.wait(0.1)


def run_cli(dsn: str, evidence: Path, params_file: Path) -> tuple[int, str, dict[str, float], float, float]:
    """``runbook run`` as a subprocess; returns exit code, stderr tail, step start times, start and end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["RUNBOOK_DSN"] = dsn
    seen: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_watch, args=(evidence, seen, stop), daemon=True)
    watcher.start()
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "runbook_lib.cli", "run", "--params", str(params_file),
                           "--evidence-dir", str(evidence), "--steps", ",".join(RUN_STEPS)],
                          capture_output=True, text=True, env=env, timeout=7200)
    ended = time.time()
    stop.set()
    watcher.join()
    return proc.returncode, (proc.stderr.strip().splitlines() or [""])[-1], seen, started, ended


def windows(seen: dict[str, float], started: float, ended: float) -> list[tuple[str, float, float]]:
    """(step notebook, start, end) in order; each step ends where the next begins."""
    ordered = sorted(seen.items(), key=lambda kv: kv[1])
    out = []
    for i, (name, begin) in enumerate(ordered):
        end = ordered[i + 1][1] if i + 1 < len(ordered) else ended
        out.append((name, begin, end))
    return out


def in_window(rec: common.LatencyRecorder, start: float, end: float) -> list[float]:
    with rec._lock:  # noqa: SLF001 - the bench reads its own recorder
        return [s for _, t, s in rec.samples if start <= t <= end]


def p99(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def phase(admin: str, template: str, scale: availability.Scale, name: str, work: Any) -> dict[str, Any]:
    dsn = common.create_database(admin, common.unique_name(f"bench_live_{name}"), template=template)
    try:
        load = common.Load(dsn, availability.load_specs(scale), max_seconds=7200)
        load.start()
        time.sleep(scale.warmup_seconds)
        result = work(dsn)
        time.sleep(scale.cooldown_seconds)
        rec = load.stop()
        return {"name": name, "recorder": rec, **result}
    finally:
        common.drop_database(admin, common.db_name(dsn))


def main(argv: Sequence[str] | None = None) -> int:
    parser = common.parser(__doc__.splitlines()[0], scales=sorted(SCALES))
    parser.add_argument("--regenerate", action="store_true", help="rebuild the template database")
    args = parser.parse_args(argv)
    scale = SCALES[args.scale]
    targets = common.Targets()
    with common.server(args) as admin, common.evidence_root("bench-live") as root:
        template = f"bench_live_tpl_{scale.name}"
        built = availability.ensure_template(admin, scale, template, regenerate=args.regenerate)
        print(common.machine_line(admin))
        print(f"scale {scale.spec}; template built in {built:.1f} s")
        params_file = root / "params.json"
        params_file.write_text(json.dumps({"parent_table": "users", "dry_run": False, "backup": {"enabled": False},
                                           "lock_timeout": "2s"}))

        def runbook(dsn: str) -> dict[str, Any]:
            code, last, seen, started, ended = run_cli(dsn, root / "evidence", params_file)
            return {"code": code, "last": last, "windows": windows(seen, started, ended),
                    "seconds": ended - started, "start": started, "end": ended}

        run = phase(admin, template, scale, "runbook", runbook)

        def control(dsn: str) -> dict[str, Any]:
            started = time.time()
            time.sleep(run["seconds"])
            return {"seconds": run["seconds"], "start": started, "end": time.time()}

        ctl = phase(admin, template, scale, "control", control)

        def baseline(dsn: str) -> dict[str, Any]:
            fks = common_fks(dsn)
            started = time.time()
            attempts, errors = availability.baseline_migration(dsn, fks)
            return {"seconds": time.time() - started, "start": started, "end": time.time(), "attempts": attempts}

        base = phase(admin, template, scale, "baseline", baseline)
        report(run, ctl, base, targets)
    return targets.report()


def common_fks(dsn: str) -> list[Any]:
    import psycopg

    from runbook_lib import catalog

    with psycopg.connect(dsn) as conn:
        snap = catalog.inspect(conn, "public", "users")
    return list(snap.foreign_keys)


def report(run: dict[str, Any], ctl: dict[str, Any], base: dict[str, Any], targets: common.Targets) -> None:
    rows = []
    for ph in (ctl, run, base):
        samples = in_window(ph["recorder"], ph["start"], ph["end"])
        rows.append([ph["name"], common.fmt_s(ph["seconds"]), common.fmt_s(max(samples, default=0.0)),
                     common.fmt_s(p99(samples)), len(samples), len(ph["recorder"].errors)])
    common.print_table("whole phase", ["phase", "duration", "longest wait", "p99", "queries", "client errors"], rows)
    ctl_samples = in_window(ctl["recorder"], ctl["start"], ctl["end"])
    ctl_max, ctl_p99 = max(ctl_samples, default=0.0), p99(ctl_samples)
    step_rows = []
    for name, begin, end in run["windows"]:
        samples = in_window(run["recorder"], begin, end)
        step_rows.append([name, common.fmt_s(end - begin), common.fmt_s(max(samples, default=0.0)),
                          common.fmt_s(p99(samples)), common.fmt_ratio(max(samples, default=0.0), ctl_max),
                          common.fmt_ratio(p99(samples), ctl_p99)])
    common.print_table("runbook, step by step (ratios against the whole control period)",
                       ["step", "duration", "longest wait", "p99", "longest / control", "p99 / control"], step_rows)
    run_samples = in_window(run["recorder"], run["start"], run["end"])
    base_samples = in_window(base["recorder"], base["start"], base["end"])
    targets.check("runbook run exits 0", run["code"] == 0, f"exit {run['code']}: {run['last'][:240]}")
    targets.check("zero client errors during the run", not run["recorder"].errors,
                  f"{len(run['recorder'].errors)} errors")
    targets.check("longest wait within 1.5x of the control", max(run_samples, default=0.0) <= 1.5 * max(ctl_max, 0.001),
                  f"{common.fmt_s(max(run_samples, default=0.0))} vs {common.fmt_s(ctl_max)}")
    targets.check("p99 within 1.5x of the control", p99(run_samples) <= 1.5 * max(ctl_p99, 0.001),
                  f"{common.fmt_s(p99(run_samples))} vs {common.fmt_s(ctl_p99)}")
    print(f"baseline: longest wait {common.fmt_s(max(base_samples, default=0.0))}, "
          f"{len(base['recorder'].errors)} client errors, {base['attempts']} attempt(s)")


if __name__ == "__main__":
    sys.exit(main())
