"""Crash anywhere: SIGKILL the runbook process, or drop its server connection, at random moments of apply.

Kill mode: apply runs in a child Python process (``python -c`` calling ``steps.apply``) whose run folder
lies in one evidence folder per database, and is killed with SIGKILL at a random moment of its apply.
Afterwards every FK must exist with its old definition or its new one (the new one followed by
`` NOT VALID`` only where the swap committed and VALIDATE had not run) — never missing, never
half-changed — and a rerun (a new run folder in the same evidence folder, so that
``execute.pending_validations`` finds the killed run's journal) must complete and verify.
Terminate mode: the same, with ``pg_terminate_backend`` of apply's working backend (application_name
``cascade-runbook``) from another connection; terminate-all also ends the backend holding the run's
advisory lock.

    python -m bench.crash [--scale small|full] [--dsn DSN | --embedded]
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import psycopg
from psycopg import sql

from bench import common

ROOT = Path(__file__).resolve().parent.parent
CHILD_DSN_ENV = "BENCH_CHILD_DSN"
LOCK_TIMEOUT = "2s"

# The child: inspect, say so, apply. The DSN comes through the environment, never the command line.
CHILD_CODE = """
import os, sys
from pathlib import Path
from bench import common
from runbook_lib import steps
ctx = common.run_context(os.environ["BENCH_CHILD_DSN"], Path(sys.argv[1]), lock_timeout=sys.argv[2])
steps.inspect(ctx)
sys.stdout.write("APPLY\\n"); sys.stdout.flush()
outcome = steps.apply(ctx)
sys.stdout.write("DONE %d\\n" % len(outcome.failed)); sys.stdout.flush()
"""


@dataclass(frozen=True)
class Scale:
    name: str
    users: int
    children: int
    child_rows: int
    partitioned_rows: int
    kills: int
    terminates: int
    terminate_all: int


SCALES = {
    "small": Scale("small", users=500, children=6, child_rows=3_000, partitioned_rows=3_000, kills=3,
                   terminates=2, terminate_all=1),
    "full": Scale("full", users=20_000, children=12, child_rows=150_000, partitioned_rows=150_000, kills=20,
                  terminates=10, terminate_all=3),
}


def build(dsn: str, scale: Scale) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)")
        conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, %s) AS g", [scale.users])
        names = [f"child_{i:02d}" for i in range(scale.children)]
        for name in names:
            t = sql.Identifier(name)
            conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, user_id bigint NOT NULL, "
                                 "payload text)").format(t))
            conn.execute(sql.SQL("INSERT INTO {} SELECT g, 1 + g %% %s, md5(g::text) "
                                 "FROM generate_series(1, %s) AS g").format(t), [scale.users, scale.child_rows])
            conn.execute(sql.SQL("ALTER TABLE {} ADD FOREIGN KEY (user_id) REFERENCES users (id)").format(t))
        conn.execute("COMMENT ON CONSTRAINT child_00_user_id_fkey ON child_00 IS 'owned rows'")
        conn.execute("CREATE TABLE activity (user_id bigint NOT NULL REFERENCES users (id), payload text) "
                     "PARTITION BY HASH (user_id)")
        for r in range(2):
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF activity FOR VALUES WITH "
                                 "(MODULUS 2, REMAINDER {})").format(sql.Identifier(f"activity_p{r}"),
                                                                     sql.Literal(r)))
        conn.execute("INSERT INTO activity SELECT 1 + g %% %s, 'a' FROM generate_series(1, %s) AS g",
                     [scale.users, scale.partitioned_rows])
        conn.execute("VACUUM ANALYZE")


def classify(states: dict[str, common.FkState], old: dict[str, common.FkState],
             new: dict[str, common.FkState]) -> Counter[str]:
    """old | new | new NOT VALID (swap committed, VALIDATE not yet run) | missing | HALF-CHANGED."""
    seen: Counter[str] = Counter()
    for key, was in old.items():
        now = states.get(key)
        if now is None:
            seen["missing"] += 1
        elif now.definition == was.definition and now.validated == was.validated:
            seen["old"] += 1
        elif now.definition == new[key].definition and now.validated:
            seen["new"] += 1
        elif now.definition == new[key].definition + " NOT VALID" and not now.validated:
            seen["new NOT VALID"] += 1
        else:
            seen["HALF-CHANGED"] += 1
    for key in states.keys() - old.keys():
        seen["unexpected extra FK"] += 1
    return seen


@dataclass
class Trial:
    mode: str
    delay: float
    interrupted: bool  # False when apply had finished before the kill/terminate landed
    states: Counter[str]
    apply_error: str | None = None
    rerun_tries: int = 0
    rerun_ok: bool = False
    rerun_pending_validated: int = 0
    rerun_note: str = ""
    final_all_new: bool = False


@dataclass
class Result:
    server_version: str
    scale: Scale
    apply_seconds: float
    trials: list[Trial] = field(default_factory=list)

    def of(self, mode: str, interrupted: bool = True) -> list[Trial]:
        return [t for t in self.trials if t.mode == mode and t.interrupted == interrupted]


def _child_apply(dsn: str, run_dir: Path) -> subprocess.Popen[str]:
    env = dict(os.environ, **{CHILD_DSN_ENV: dsn})
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.Popen([sys.executable, "-c", CHILD_CODE, str(run_dir), LOCK_TIMEOUT], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_line(proc: subprocess.Popen[str], word: str, timeout: float = 120) -> bool:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return False
        if line.startswith(word):
            return True
    return False


def _runbook_backends(dsn: str, include_lock_holder: bool) -> list[int]:
    from runbook_lib.execute import ADVISORY_LOCK_KEY

    with psycopg.connect(dsn, autocommit=True, application_name="bench-terminator") as conn:
        rows = conn.execute(
            "SELECT a.pid, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' "
            "AND l.granted AND l.classid = %s AND l.objid = %s) FROM pg_stat_activity a "
            "WHERE a.datname = current_database() AND a.application_name = 'cascade-runbook'",
            [(ADVISORY_LOCK_KEY >> 32) & 0xFFFFFFFF, ADVISORY_LOCK_KEY & 0xFFFFFFFF]).fetchall()
    return [int(pid) for pid, holder in rows if include_lock_holder or not holder]


def _terminate(dsn: str, pids: list[int]) -> int:
    with psycopg.connect(dsn, autocommit=True, application_name="bench-terminator") as conn:
        done = 0
        for pid in pids:
            row = conn.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()
            done += bool(row and row[0])
    return done


def _rerun(dsn: str, evidence: Path, trial: Trial, new: dict[str, common.FkState]) -> None:
    """A new run folder in the same evidence folder; a second try after the dead run's backends are gone."""
    for attempt in range(1, 3):
        trial.rerun_tries = attempt
        try:
            run = common.run_runbook(dsn, evidence / f"rerun-{attempt}", lock_timeout=LOCK_TIMEOUT)
            pending = [r for r in run.outcome.results if r.validated and r.status == "already"]
            trial.rerun_pending_validated = len(pending)
            trial.rerun_ok = not run.failed and bool(run.verify_ok)
            if not trial.rerun_ok:
                trial.rerun_note = f"failed {run.failed}; verify {run.verify_problems[:2]}"
        except Exception as exc:  # noqa: BLE001 - reported, then retried once
            trial.rerun_note = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            trial.rerun_ok = False
        if trial.rerun_ok:
            break
        _wait_for_no_runbook_backends(dsn)
    final = common.fk_states(dsn)
    trial.final_all_new = all(final.get(k) is not None and final[k].definition == v.definition
                              and final[k].validated for k, v in new.items())


def _wait_for_no_runbook_backends(dsn: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _runbook_backends(dsn, include_lock_holder=True):
        time.sleep(0.1)


def run(admin_dsn: str, scale: Scale, seed: int = 1, keep_evidence: bool = False) -> Result:
    rng = random.Random(seed)
    template = common.unique_name("bench_crash_tpl")
    dsn_t = common.create_database(admin_dsn, template)
    try:
        build(dsn_t, scale)
        old = common.fk_states(dsn_t)
        with common.evidence_root("bench-crash", keep=keep_evidence) as root:
            # Calibration: one whole apply in a child process gives the window and the new definitions.
            with common.scratch_database(admin_dsn, "bench_crash", template=template) as dsn:
                proc = _child_apply(dsn, root / "calibration" / "run")
                _wait_line(proc, "APPLY")
                started = time.perf_counter()
                proc.wait(timeout=600)
                apply_seconds = time.perf_counter() - started
                if proc.returncode != 0:
                    raise RuntimeError(f"calibration apply failed: {proc.stderr.read() if proc.stderr else ''}")
                new = common.fk_states(dsn)
            result = Result(common.server_version(admin_dsn)[1], scale, apply_seconds)
            for mode, wanted in (("SIGKILL", scale.kills), ("terminate", scale.terminates),
                                 ("terminate-all", scale.terminate_all)):
                got = 0
                # In-process apply skips the child's teardown: its window is a little shorter.
                window = apply_seconds if mode == "SIGKILL" else apply_seconds * 0.7
                for number in range(wanted * 6):
                    if got >= wanted:
                        break
                    trial = _one_trial(admin_dsn, template, root / f"{mode}-{number:02d}", mode,
                                       rng.uniform(0.0, window), old, new)
                    result.trials.append(trial)
                    got += trial.interrupted
    finally:
        common.drop_database(admin_dsn, template)
    return result


def _one_trial(admin_dsn: str, template: str, evidence: Path, mode: str, delay: float,
               old: dict[str, common.FkState], new: dict[str, common.FkState]) -> Trial:
    with common.scratch_database(admin_dsn, "bench_crash", template=template) as dsn:
        trial = Trial(mode=mode, delay=delay, interrupted=False, states=Counter())
        if mode == "SIGKILL":
            proc = _child_apply(dsn, evidence / "killed")
            if not _wait_line(proc, "APPLY"):
                raise RuntimeError(f"child did not reach apply: {proc.stderr.read() if proc.stderr else ''}")
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                trial.interrupted = True
            proc.wait(timeout=60)
        else:
            from runbook_lib import steps

            ctx = common.run_context(dsn, evidence / "terminated", lock_timeout=LOCK_TIMEOUT)
            steps.inspect(ctx)
            box: dict[str, Any] = {}

            def work() -> None:
                try:
                    box["outcome"] = steps.apply(ctx)
                except Exception as exc:  # noqa: BLE001 - what apply raised is part of the figures
                    box["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

            thread = threading.Thread(target=work, daemon=True)
            thread.start()
            time.sleep(delay)
            deadline = time.monotonic() + 5
            while thread.is_alive() and time.monotonic() < deadline:
                pids = _runbook_backends(dsn, include_lock_holder=(mode == "terminate-all"))
                if pids and _terminate(dsn, pids):
                    trial.interrupted = True
                    break
                time.sleep(0.005)
            thread.join(timeout=300)
            trial.apply_error = box.get("error")
            if "outcome" in box and box["outcome"].failed:
                trial.apply_error = "; ".join(r.error or r.constraint for r in box["outcome"].failed)
        trial.states = classify(common.fk_states(dsn), old, new)
        _rerun(dsn, evidence, trial, new)
        return trial


def report(res: Result) -> common.Targets:
    s = res.scale
    rows = []
    t = common.Targets()
    for mode in ("SIGKILL", "terminate", "terminate-all"):
        hit = res.of(mode)
        late = res.of(mode, interrupted=False)
        states: Counter[str] = Counter()
        for trial in hit:
            states.update(trial.states)
        bad = states["missing"] + states["HALF-CHANGED"] + states["unexpected extra FK"]
        reruns_ok = sum(1 for x in hit if x.rerun_ok and x.final_all_new)
        second = sum(1 for x in hit if x.rerun_tries > 1)
        errors = Counter((x.apply_error or "")[:90] for x in hit if x.apply_error)
        rows.append((mode, len(hit), len(late), states["old"], states["new"], states["new NOT VALID"],
                     states["missing"], states["HALF-CHANGED"], f"{reruns_ok}/{len(hit)}", second,
                     sum(x.rerun_pending_validated for x in hit)))
        wanted = {"SIGKILL": s.kills, "terminate": s.terminates, "terminate-all": s.terminate_all}[mode]
        t.check(f"{mode}: at least {wanted} interruptions", len(hit) >= wanted, f"{len(hit)}")
        t.check(f"{mode}: no FK missing or half-changed", bad == 0, f"{dict(states)}")
        t.check(f"{mode}: every rerun completes and verifies", reruns_ok == len(hit),
                f"{reruns_ok}/{len(hit)}; notes: {[x.rerun_note for x in hit if x.rerun_note][:2]}")
        for err, n in errors.most_common(3):
            print(f"{mode}: apply reported ({n}x): {err}")
        for x in hit:
            if x.rerun_note:
                print(f"{mode} at {x.delay:.2f}s: first rerun: {x.rerun_note}")
    common.print_table(
        f"Crash anywhere ({s.name}: {s.children} children of {s.child_rows:,} rows + partitioned "
        f"{s.partitioned_rows:,}; uninterrupted apply {common.fmt_s(res.apply_seconds)}; "
        f"PostgreSQL {res.server_version})",
        ["mode", "interrupted", "finished first", "FKs old", "FKs new", "new NOT VALID", "missing",
         "half-changed", "rerun verifies", "rerun needed 2nd try", "pending validated by rerun"], rows)
    return t


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--keep-evidence", action="store_true")
    args = p.parse_args(argv)
    with common.server(args) as admin:
        print(common.machine_line(admin))
        return report(run(admin, SCALES[args.scale], args.seed, args.keep_evidence)).report()


if __name__ == "__main__":
    sys.exit(main())
