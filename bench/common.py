"""Shared helpers of the benchmarks: the server, throw-away databases, client load, figures and targets.

SQL is composed with ``psycopg.sql`` only (names through ``sql.Identifier``, values as placeholders).
Only ``print_table`` and ``Targets.report`` print: they are the benchmarks' own report output.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN_ENV = "RUNBOOK_BENCH_DSN"
CLIENT_APP = "bench-client"


# ---------------------------------------------------------------- command line and server
def parser(description: str, scales: Sequence[str] = ("small", "full")) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--scale", choices=tuple(scales), default="full")
    p.add_argument("--dsn", default=os.environ.get(DSN_ENV, DEFAULT_DSN),
                   help=f"server to use (default: ${DSN_ENV}, else {DEFAULT_DSN})")
    p.add_argument("--embedded", action="store_true",
                   help="use a throw-away embedded PostgreSQL 18 instead of --dsn")
    p.add_argument("--seed", type=int, default=20240501)
    return p


@contextmanager
def server(args: argparse.Namespace) -> Iterator[str]:
    """The admin DSN of the server the benchmark runs on (an embedded one lives for the block)."""
    if not args.embedded:
        yield str(args.dsn)
        return
    from runbook_lib import embedded

    with embedded.server() as srv:
        yield str(srv.get_uri())


def server_version(dsn: str) -> tuple[int, str]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('server_version_num')::int, "
                           "current_setting('server_version')").fetchone()
        assert row is not None
        return int(row[0]), str(row[1])


def db_dsn(admin_dsn: str, name: str) -> str:
    return make_conninfo(admin_dsn, dbname=name)


def db_name(dsn: str) -> str:
    return str(conninfo_to_dict(dsn).get("dbname", ""))


def unique_name(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def database_exists(admin_dsn: str, name: str) -> bool:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def create_database(admin_dsn: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)))
    return db_dsn(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(admin_dsn: str, prefix: str, template: str | None = None,
                     keep: bool = False) -> Iterator[str]:
    name = unique_name(prefix)
    dsn = create_database(admin_dsn, name, template)
    try:
        yield dsn
    finally:
        if not keep:
            drop_database(admin_dsn, name)


@contextmanager
def evidence_root(prefix: str, keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------- the state of foreign keys
@dataclass(frozen=True)
class FkState:
    oid: int
    definition: str
    validated: bool


_FK_STATE = sql.SQL("""
SELECT n.nspname::text || '.' || t.relname::text || '.' || c.conname::text, c.oid::int8,
       pg_get_constraintdef(c.oid), c.convalidated
FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace
JOIN pg_class r ON r.oid = c.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace
WHERE c.contype = 'f' AND c.conparentid = 0 AND rn.nspname = %s AND r.relname = %s
""")


def fk_states(dsn: str, parent: str = "users", schema: str = "public") -> dict[str, FkState]:
    """Each FK into ``parent`` straight from pg_constraint (not through the library)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('search_path', '', true)")
            rows = conn.execute(_FK_STATE, [schema, parent]).fetchall()
    return {key: FkState(int(oid), str(definition), bool(valid)) for key, oid, definition, valid in rows}


# ---------------------------------------------------------------- running the runbook
def runbook_params(**values: Any) -> Any:
    from runbook_lib.params import validate

    raw: dict[str, Any] = {"parent_table": "users", "dry_run": False, "backup": {"enabled": False},
                           "lock_timeout": "2s"}
    raw.update(values)
    return validate(raw)


def run_context(dsn: str, run_dir: Path, **values: Any) -> Any:
    from runbook_lib.context import RunContext

    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(params=runbook_params(**values), run_dir=run_dir.resolve(), dsn=dsn)


@dataclass
class RunbookRun:
    outcome: Any
    inspect_seconds: float
    apply_seconds: float
    verify_ok: bool | None = None
    verify_problems: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[str]:
        return [r.constraint for r in self.outcome.failed]


def run_runbook(dsn: str, run_dir: Path, *, verify: bool = True, **values: Any) -> RunbookRun:
    """inspect, apply (not dry) and verify, as the notebooks do, timing each."""
    from runbook_lib import steps

    ctx = run_context(dsn, run_dir, **values)
    t0 = time.perf_counter()
    steps.inspect(ctx)
    t1 = time.perf_counter()
    outcome = steps.apply(ctx)
    t2 = time.perf_counter()
    run = RunbookRun(outcome=outcome, inspect_seconds=t1 - t0, apply_seconds=t2 - t1)
    if verify:
        checked = steps.verify(ctx)
        run.verify_ok = checked.ok
        run.verify_problems = list(checked.problems)
    return run


# ---------------------------------------------------------------- latency and load
class LatencyRecorder:
    """Thread-safe record of each query's latency and of every error a client saw."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.samples: list[tuple[str, float, float]] = []  # (kind, started at (time.time()), seconds)
        self.errors: list[tuple[str, str]] = []

    def record(self, kind: str, started: float, seconds: float) -> None:
        with self._lock:
            self.samples.append((kind, started, seconds))

    def error(self, kind: str, message: str) -> None:
        with self._lock:
            self.errors.append((kind, message))

    def max_overlapping(self, start: float, end: float, inside: bool = True) -> float:
        """The longest sample whose run overlapped [start, end] (wall clock), or the longest of the others."""
        with self._lock:
            values = [s for _, t, s in self.samples if ((t <= end and t + s >= start) == inside)]
        return max(values, default=0.0)

    def latencies(self, kind: str | None = None) -> list[float]:
        with self._lock:
            return sorted(s for k, _, s in self.samples if kind is None or k == kind)

    @property
    def count(self) -> int:
        return len(self.samples)

    def max(self, kind: str | None = None) -> float:
        values = self.latencies(kind)
        return values[-1] if values else 0.0

    def percentile(self, q: float, kind: str | None = None) -> float:
        values = self.latencies(kind)
        if not values:
            return 0.0
        index = min(len(values) - 1, max(0, int(round(q / 100.0 * len(values) + 0.5)) - 1))
        return values[index]


Op = Callable[[psycopg.Connection[Any], random.Random], None]


@dataclass
class ClientSpec:
    kind: str
    op: Op
    threads: int = 1
    think_seconds: float = 0.002


class Load:
    """Client threads running their operation in a loop, bounded in time and count, stopping by themselves.

    Each query runs with no statement timeout, so a query that waits behind a lock shows as one long
    latency sample (the longest wait a client saw).
    """

    def __init__(self, dsn: str, specs: Sequence[ClientSpec], *, max_seconds: float = 300.0,
                 max_ops_per_thread: int = 1_000_000, seed: int = 1) -> None:
        self.dsn = dsn
        self.specs = list(specs)
        self.max_seconds = max_seconds
        self.max_ops = max_ops_per_thread
        self.seed = seed
        self.recorder = LatencyRecorder()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._ready = threading.Barrier(sum(s.threads for s in self.specs) + 1)

    def _client(self, spec: ClientSpec, number: int) -> None:
        rng = random.Random(self.seed * 1000 + number)
        deadline = time.monotonic() + self.max_seconds
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, application_name=CLIENT_APP)
        except psycopg.Error as exc:
            self.recorder.error(spec.kind, f"connect: {exc}".splitlines()[0])
        try:
            self._ready.wait(timeout=60)
        except threading.BrokenBarrierError:
            pass
        ops = 0
        while conn is not None and not self._stop.is_set() and ops < self.max_ops and time.monotonic() < deadline:
            wall = time.time()
            started = time.perf_counter()
            try:
                spec.op(conn, rng)
                self.recorder.record(spec.kind, wall, time.perf_counter() - started)
            except psycopg.Error as exc:
                self.recorder.record(spec.kind, wall, time.perf_counter() - started)
                self.recorder.error(spec.kind, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
                if conn.closed or conn.broken:
                    try:
                        conn = psycopg.connect(self.dsn, autocommit=True, application_name=CLIENT_APP)
                    except psycopg.Error:
                        conn = None
            ops += 1
            if spec.think_seconds:
                self._stop.wait(spec.think_seconds)
        if conn is not None:
            conn.close()

    def start(self) -> None:
        number = 0
        for spec in self.specs:
            for _ in range(spec.threads):
                number += 1
                t = threading.Thread(target=self._client, args=(spec, number), daemon=True,
                                     name=f"client-{spec.kind}-{number}")
                t.start()
                self._threads.append(t)
        self._ready.wait(timeout=60)

    def stop(self) -> LatencyRecorder:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=self.max_seconds + 30)
        return self.recorder


# ---------------------------------------------------------------- report output
def fmt_s(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(num: float, den: float) -> str:
    if den <= 0:
        return "inf" if num > 0 else "-"
    ratio = num / den
    if 0 < ratio < 1:
        return f"1/{1 / ratio:.1f}"
    return f"{ratio:.1f}x"


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")


class Targets:
    def __init__(self) -> None:
        self.items: list[tuple[str, bool, str]] = []

    def check(self, name: str, ok: bool, detail: str) -> bool:
        self.items.append((name, bool(ok), detail))
        return bool(ok)

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.items)

    def report(self) -> int:
        print_table("Targets", ["target", "result", "figures"],
                    [(n, "met" if ok else "MISSED", d) for n, ok, d in self.items])
        return 0 if self.ok else 1


def machine_line(admin_dsn: str) -> str:
    _, version = server_version(admin_dsn)
    mem = "?"
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            kib = int(fh.readline().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    return f"machine: {os.cpu_count()} cores, {mem} RAM; PostgreSQL {version}"
