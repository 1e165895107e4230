"""Inspection at scale: 2,000+ tables referencing the parent (some partitioned).

Times ``catalog.inspect`` + ``plan.make_plan`` next to the information_schema verification query that
migration guides give (table_constraints ⋈ key_column_usage ⋈ referential_constraints ⋈
constraint_column_usage, filtered on the referenced table), in the same run, the latter under a
statement timeout. Also checks that both name the same foreign keys when the query answers.

    python -m bench.inspection_scale [--scale small|full] [--dsn DSN | --embedded] [--is-timeout 120]
"""
from __future__ import annotations

import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Sequence

import psycopg
from psycopg import sql

from bench import common

# The verification query a migration guide for this change gives, with the table a parameter.
INFORMATION_SCHEMA_QUERY = """
SELECT
    tc.table_name,
    kcu.column_name,
    rc.delete_rule,
    tc.constraint_name
FROM information_schema.table_constraints AS tc
JOIN information_schema.key_column_usage AS kcu
  ON tc.constraint_name = kcu.constraint_name
JOIN information_schema.referential_constraints AS rc
  ON rc.constraint_name = tc.constraint_name
JOIN information_schema.constraint_column_usage AS ccu
  ON ccu.constraint_name = tc.constraint_name
WHERE tc.constraint_type = 'FOREIGN KEY'
  AND ccu.table_name = %s
ORDER BY tc.table_name
"""


@dataclass(frozen=True)
class Scale:
    name: str
    tables: int
    partitioned: int  # of which partitioned (two partitions each)
    is_timeout_seconds: float = 120.0


SCALES = {
    "small": Scale("small", tables=60, partitioned=6, is_timeout_seconds=60.0),
    "full": Scale("full", tables=2_050, partitioned=60),
}


def build(dsn: str, scale: Scale, batch: int = 100) -> None:
    """``users`` and ``scale.tables`` tables with an FK to it, every n-th one partitioned."""
    every = max(1, scale.tables // max(1, scale.partitioned)) if scale.partitioned else 0
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
        conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, 100) AS g")
        made = 0
        for start in range(0, scale.tables, batch):
            with conn.transaction():
                for i in range(start, min(scale.tables, start + batch)):
                    name = f"t_{i:04d}"
                    t = sql.Identifier(name)
                    if every and i % every == 0 and made < scale.partitioned:
                        made += 1
                        conn.execute(sql.SQL("CREATE TABLE {} (id bigint NOT NULL, user_id bigint REFERENCES "
                                             "users (id), note text) PARTITION BY HASH (id)").format(t))
                        for r in range(2):
                            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES WITH "
                                                 "(MODULUS 2, REMAINDER {})").format(
                                sql.Identifier(f"{name}_p{r}"), t, sql.Literal(r)))
                    else:
                        conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, user_id bigint "
                                             "REFERENCES users (id), note text)").format(t))
                        if i % 2 == 0:
                            conn.execute(sql.SQL("CREATE INDEX ON {} (user_id)").format(t))
        conn.execute("ANALYZE")


@dataclass
class Result:
    server_version: str
    scale: Scale
    referencing_tables: int
    fks_in_snapshot: int
    plan_changes: int
    inspect_seconds: list[float]
    plan_seconds: list[float]
    read_one_seconds: float
    is_seconds: float | None  # None: hit the timeout
    is_rows: int | None
    is_pairs: set[tuple[str, str]] | None
    catalog_pairs: set[tuple[str, str]]
    build_seconds: float = 0.0

    @property
    def inspect_and_plan(self) -> float:
        return statistics.median(a + b for a, b in zip(self.inspect_seconds, self.plan_seconds))

    @property
    def first_inspect_and_plan(self) -> float:
        return self.inspect_seconds[0] + self.plan_seconds[0]

    @property
    def agree(self) -> bool | None:
        return None if self.is_pairs is None else self.is_pairs == self.catalog_pairs


def information_schema_query(dsn: str, timeout_seconds: float, parent: str = "users"
                             ) -> tuple[float | None, list[tuple[Any, ...]]]:
    with psycopg.connect(dsn, application_name="bench-information-schema") as conn:
        started = time.perf_counter()
        try:
            with conn.transaction():
                conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{int(timeout_seconds * 1000)}ms"])
                rows = conn.execute(INFORMATION_SCHEMA_QUERY, [parent]).fetchall()
        except psycopg.errors.QueryCanceled:
            return None, []
        return time.perf_counter() - started, rows


def measure(dsn: str, scale: Scale, repeats: int = 3) -> Result:
    from runbook_lib import catalog
    from runbook_lib.plan import make_plan

    params = common.runbook_params()
    inspect_s: list[float] = []
    plan_s: list[float] = []
    with psycopg.connect(dsn, autocommit=True, application_name="bench-inspect") as conn:
        for _ in range(repeats):
            t0 = time.perf_counter()
            snap = catalog.inspect(conn, "public", "users")
            t1 = time.perf_counter()
            the_plan = make_plan(snap, params)
            t2 = time.perf_counter()
            inspect_s.append(t1 - t0)
            plan_s.append(t2 - t1)
        # The re-read apply does inside every swap transaction, at this catalog size.
        fk = the_plan.changes[len(the_plan.changes) // 2].fk
        t0 = time.perf_counter()
        for _ in range(5):
            catalog.read_one(conn, snap.server_version_num, fk.schema, fk.table, fk.name)
        read_one = (time.perf_counter() - t0) / 5
        partitions = {r[0] for r in conn.execute(
            "SELECT c.relname::text FROM pg_class c WHERE c.relispartition").fetchall()}
    into_users = [f for f in snap.foreign_keys if f.parent == ("public", "users")]
    catalog_pairs = {(f.table, f.name) for f in into_users}
    is_seconds, rows = information_schema_query(dsn, scale.is_timeout_seconds)
    # information_schema also lists each partition's clone of a partitioned table's FK: left out here.
    is_pairs = {(r[0], r[3]) for r in rows if r[0] not in partitions} if is_seconds is not None else None
    return Result(common.server_version(dsn)[1], scale, len({f.table for f in into_users}), len(snap.foreign_keys),
                  len(the_plan.changes), inspect_s, plan_s, read_one, is_seconds,
                  len(rows) if is_seconds is not None else None, is_pairs, catalog_pairs)


def run(admin_dsn: str, scale: Scale) -> Result:
    with common.scratch_database(admin_dsn, "bench_inspect") as dsn:
        started = time.perf_counter()
        build(dsn, scale)
        built = time.perf_counter() - started
        result = measure(dsn, scale)
        result.build_seconds = built
    return result


def report(res: Result) -> common.Targets:
    s = res.scale
    is_text = (common.fmt_s(res.is_seconds) if res.is_seconds is not None
               else f"> {s.is_timeout_seconds:.0f} s (statement timeout)")
    ratio = (f"{res.is_seconds / res.inspect_and_plan:.0f}x faster" if res.is_seconds is not None
             else f"> {s.is_timeout_seconds / res.inspect_and_plan:.0f}x faster")
    common.print_table(
        f"Inspection at scale ({s.name}: {res.referencing_tables:,} tables referencing users, {s.partitioned} "
        f"partitioned; PostgreSQL {res.server_version})",
        ["figure", "value"],
        [
            ("catalog.inspect (median of 3 / first)",
             f"{common.fmt_s(statistics.median(res.inspect_seconds))} / {common.fmt_s(res.inspect_seconds[0])}"),
            ("plan.make_plan (median of 3)", common.fmt_s(statistics.median(res.plan_seconds))),
            ("inspect + plan (median of 3 / first)",
             f"{common.fmt_s(res.inspect_and_plan)} / {common.fmt_s(res.first_inspect_and_plan)}"),
            ("FKs in snapshot / planned changes", f"{res.fks_in_snapshot:,} / {res.plan_changes:,}"),
            ("information_schema verification query", is_text),
            ("information_schema rows", "-" if res.is_rows is None else f"{res.is_rows:,}"),
            ("runbook vs information_schema", ratio),
            ("FK sets agree (information_schema, partitions' clones left out)",
             "not compared (query timed out)" if res.agree is None else ("yes" if res.agree else "NO")),
            ("catalog.read_one (re-read in each swap transaction)", common.fmt_s(res.read_one_seconds)),
            ("  x planned changes (apply's total re-read cost)",
             common.fmt_s(res.read_one_seconds * res.plan_changes)),
        ])
    t = common.Targets()
    t.check("inspect + plan under one second", res.inspect_and_plan < 1.0 and res.first_inspect_and_plan < 1.0,
            f"median {common.fmt_s(res.inspect_and_plan)}, first {common.fmt_s(res.first_inspect_and_plan)}")
    t.check("ahead of the information_schema query",
            res.is_seconds is None or res.is_seconds > res.inspect_and_plan, f"{is_text} vs "
            f"{common.fmt_s(res.inspect_and_plan)}")
    if res.agree is not None:
        t.check("information_schema and catalog agree on the FKs", bool(res.agree),
                f"only in information_schema: {sorted((res.is_pairs or set()) - res.catalog_pairs)[:3]}, "
                f"only in catalog: {sorted(res.catalog_pairs - (res.is_pairs or set()))[:3]}")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--is-timeout", type=float, default=None, help="seconds for the information_schema query")
    args = p.parse_args(argv)
    scale = SCALES[args.scale]
    if args.is_timeout:
        scale = Scale(scale.name, scale.tables, scale.partitioned, args.is_timeout)
    with common.server(args) as admin:
        print(common.machine_line(admin))
        result = run(admin, scale)
        print(f"built the catalog in {result.build_seconds:.1f} s")
        return report(result).report()


if __name__ == "__main__":
    sys.exit(main())
