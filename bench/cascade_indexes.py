"""Cascade speed and indexes: deleting one user who owns ~1M rows, referencing columns unindexed vs indexed.

The FKs are moved onto CASCADE by the runbook, then one user is deleted (in a transaction rolled back,
so both measurements see the same data) with the referencing columns unindexed, then again after
``CREATE INDEX`` on them. The snapshot must report every unindexed referencing column in the deletion
set: ``ForeignKey.indexed`` is False exactly for those. An index counts only if the FK columns lead it,
in order: ``(created_day, user_id)`` must not count, ``(user_id, created_day)`` must; an INVALID index
(left by a failed concurrent build) must not count either.

    python -m bench.cascade_indexes [--scale small|full] [--dsn DSN | --embedded]
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import psycopg
from psycopg import sql

from bench import common

PLAIN = ("notes", "photos", "messages", "sessions")
OTHER_LEAD = "visits"        # index on (created_day, user_id): does not count
USER_LEAD = "orders"         # index on (user_id, created_day): counts
INVALID = "devices"          # an INVALID index on (user_id): does not count
PROJECTS = "projects"        # indexed on user_id; owns tasks
TASKS = "tasks"              # project_id unindexed: one scan of tasks per deleted project


@dataclass(frozen=True)
class Scale:
    name: str
    users: int
    owned: int          # rows of user 1 in each plain child
    others: int         # rows of other users in each child
    side_owned: int     # rows of user 1 in visits / orders / devices
    projects: int       # projects of user 1
    tasks_per_project: int
    delete_timeout_seconds: float = 600.0

    @property
    def owned_total(self) -> int:
        return (len(PLAIN) * self.owned + 3 * self.side_owned + self.projects
                + self.projects * self.tasks_per_project)


SCALES = {
    "small": Scale("small", users=50, owned=1_000, others=1_000, side_owned=500, projects=20, tasks_per_project=50),
    "full": Scale("full", users=10_000, owned=160_000, others=160_000, side_owned=60_000, projects=500,
                  tasks_per_project=400),
}


def _table(conn: psycopg.Connection[Any], name: str, owned: int, others: int, users: int) -> None:
    t = sql.Identifier(name)
    conn.execute(sql.SQL("CREATE TABLE {} (id bigint PRIMARY KEY, user_id bigint NOT NULL, created_day int "
                         "NOT NULL, body text)").format(t))
    conn.execute(sql.SQL("INSERT INTO {} SELECT g, CASE WHEN g <= %s THEN 1 ELSE 2 + g %% (%s - 1) END, "
                         "g %% 365, 'x' FROM generate_series(1, %s) AS g").format(t),
                 [owned, users, owned + others])
    conn.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} FOREIGN KEY (user_id) REFERENCES users (id)").format(
        t, sql.Identifier(f"{name}_user_id_fkey")))


def build(dsn: str, scale: Scale) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE users (id bigint PRIMARY KEY, email text)")
        conn.execute("INSERT INTO users SELECT g, 'u' || g FROM generate_series(1, %s) AS g", [scale.users])
        for name in PLAIN:
            _table(conn, name, scale.owned, scale.others, scale.users)
        for name in (OTHER_LEAD, USER_LEAD, INVALID):
            _table(conn, name, scale.side_owned, scale.side_owned, scale.users)
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (created_day, user_id)").format(
            sql.Identifier(f"{OTHER_LEAD}_day_user_idx"), sql.Identifier(OTHER_LEAD)))
        conn.execute(sql.SQL("CREATE INDEX {} ON {} (user_id, created_day)").format(
            sql.Identifier(f"{USER_LEAD}_user_day_idx"), sql.Identifier(USER_LEAD)))
        try:
            # user_id repeats: the unique build fails and leaves the index behind, INVALID.
            conn.execute(sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY {} ON {} (user_id)").format(
                sql.Identifier(f"{INVALID}_user_id_idx"), sql.Identifier(INVALID)))
        except psycopg.errors.UniqueViolation:
            pass
        # projects of user 1 (and as many of others), each owning tasks; tasks.project_id unindexed.
        conn.execute("CREATE TABLE projects (id bigint PRIMARY KEY, user_id bigint NOT NULL "
                     "REFERENCES users (id), name text)")
        conn.execute("INSERT INTO projects SELECT g, CASE WHEN g <= %s THEN 1 ELSE 2 + g %% (%s - 1) END, 'p' "
                     "FROM generate_series(1, %s) AS g", [scale.projects, scale.users, 2 * scale.projects])
        conn.execute("CREATE INDEX projects_user_id_idx ON projects (user_id)")
        conn.execute("CREATE TABLE tasks (id bigint PRIMARY KEY, project_id bigint NOT NULL, title text)")
        conn.execute("INSERT INTO tasks SELECT g, 1 + (g - 1) / %s, 't' FROM generate_series(1, %s) AS g",
                     [scale.tasks_per_project, 2 * scale.projects * scale.tasks_per_project])
        conn.execute("ALTER TABLE tasks ADD CONSTRAINT tasks_project_id_fkey FOREIGN KEY (project_id) "
                     "REFERENCES projects (id)")
        conn.execute("VACUUM ANALYZE")


def expected_indexed() -> dict[str, bool]:
    keys = {f"public.{n}.{n}_user_id_fkey": False for n in PLAIN + (OTHER_LEAD, INVALID)}
    keys[f"public.{USER_LEAD}.{USER_LEAD}_user_id_fkey"] = True
    keys["public.projects.projects_user_id_fkey"] = True
    keys["public.tasks.tasks_project_id_fkey"] = False
    return keys


def _warm(conn: psycopg.Connection[Any]) -> None:
    for name in PLAIN + (OTHER_LEAD, USER_LEAD, INVALID, PROJECTS, TASKS, "users"):
        conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()


def timed_delete(dsn: str, timeout_seconds: float) -> tuple[float | None, int]:
    """Delete user 1 in a transaction that is rolled back; seconds (None on timeout) and rows gone."""
    with psycopg.connect(dsn) as conn:
        _warm(conn)
        conn.rollback()
        try:
            with conn.transaction(force_rollback=True):
                conn.execute("SELECT set_config('statement_timeout', %s, true)", [f"{int(timeout_seconds * 1000)}ms"])
                before = _owned_rows(conn)
                started = time.perf_counter()
                conn.execute("DELETE FROM users WHERE id = 1")
                seconds = time.perf_counter() - started
                gone = before - _owned_rows(conn)
        except psycopg.errors.QueryCanceled:
            return None, 0
    return seconds, gone


def _owned_rows(conn: psycopg.Connection[Any]) -> int:
    total = 0
    for name in PLAIN + (OTHER_LEAD, USER_LEAD, INVALID, PROJECTS):
        row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE user_id = 1").format(sql.Identifier(name))).fetchone()
        total += int(row[0]) if row else 0
    row = conn.execute("SELECT count(*) FROM tasks t WHERE EXISTS (SELECT 1 FROM projects p WHERE p.id = t.project_id "
                       "AND p.user_id = 1)").fetchone()
    return total + (int(row[0]) if row else 0)


def index_missing(dsn: str, fks: Sequence[Any]) -> list[str]:
    """CREATE INDEX on the FK columns, in order, of each unindexed FK; the names created."""
    made = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for fk in fks:
            name = f"{fk.table}_{'_'.join(fk.columns)}_bench_idx"
            conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
                sql.Identifier(name), sql.Identifier(fk.schema, fk.table),
                sql.SQL(", ").join(sql.Identifier(c) for c in fk.columns)))
            made.append(name)
        conn.execute("ANALYZE")
    return made


@dataclass
class Result:
    server_version: str
    scale: Scale
    build_seconds: float
    apply_ok: bool
    flags_unindexed: set[str]
    indexed_before: dict[str, bool]
    indexed_after: dict[str, bool]
    unindexed_seconds: float | None
    unindexed_rows: int
    indexed_seconds: float | None
    indexed_rows: int
    created: list[str] = field(default_factory=list)


def run(admin_dsn: str, scale: Scale) -> Result:
    from runbook_lib import catalog
    from runbook_lib.plan import make_plan

    with common.scratch_database(admin_dsn, "bench_cascade") as dsn, \
            common.evidence_root("bench-cascade") as root:
        started = time.perf_counter()
        build(dsn, scale)
        build_seconds = time.perf_counter() - started
        with psycopg.connect(dsn, autocommit=True) as conn:
            snap = catalog.inspect(conn, "public", "users")
        the_plan = make_plan(snap, common.runbook_params())
        flagged = {i.fk.key for i in the_plan.items if any("not indexed" in f for f in i.flags)}
        indexed_before = {fk.key: fk.indexed for fk in snap.foreign_keys}
        applied = common.run_runbook(dsn, root / "run")
        unindexed_s, unindexed_rows = timed_delete(dsn, scale.delete_timeout_seconds)
        with psycopg.connect(dsn, autocommit=True) as conn:
            snap2 = catalog.inspect(conn, "public", "users")
        created = index_missing(dsn, [fk for fk in snap2.foreign_keys if not fk.indexed])
        with psycopg.connect(dsn, autocommit=True) as conn:
            snap3 = catalog.inspect(conn, "public", "users")
        indexed_s, indexed_rows = timed_delete(dsn, scale.delete_timeout_seconds)
    return Result(common.server_version(admin_dsn)[1], scale, build_seconds,
                  not applied.failed and bool(applied.verify_ok), flagged, indexed_before,
                  {fk.key: fk.indexed for fk in snap3.foreign_keys}, unindexed_s, unindexed_rows,
                  indexed_s, indexed_rows, created)


def report(res: Result) -> common.Targets:
    s = res.scale
    expected = expected_indexed()

    def secs(x: float | None) -> str:
        return common.fmt_s(x) if x is not None else f"> {s.delete_timeout_seconds:.0f} s (timeout)"

    ratio = (f"{res.unindexed_seconds / res.indexed_seconds:.1f}x"
             if res.unindexed_seconds is not None and res.indexed_seconds else "-")
    common.print_table(
        f"Cascade speed and indexes ({s.name}: user 1 owns ~{s.owned_total:,} rows in {len(expected)} tables, "
        f"{s.projects} projects with {s.tasks_per_project} tasks each; PostgreSQL {res.server_version})",
        ["figure", "unindexed", "indexed", "unindexed / indexed"],
        [("DELETE FROM users WHERE id = 1 (cascades)", secs(res.unindexed_seconds), secs(res.indexed_seconds), ratio),
         ("rows removed with it", f"{res.unindexed_rows:,}", f"{res.indexed_rows:,}", "-")])
    common.print_table(
        "Indexed flags in the snapshot (an index counts only when the FK columns lead it, in order)",
        ["foreign key", "index present", "expected", "snapshot before", "plan flags 'not indexed'",
         "after CREATE INDEX"],
        [(k, {f"public.{OTHER_LEAD}.{OTHER_LEAD}_user_id_fkey": "(created_day, user_id)",
              f"public.{USER_LEAD}.{USER_LEAD}_user_id_fkey": "(user_id, created_day)",
              f"public.{INVALID}.{INVALID}_user_id_fkey": "(user_id) INVALID",
              "public.projects.projects_user_id_fkey": "(user_id)"}.get(k, "none"),
          expected[k], res.indexed_before.get(k), k in res.flags_unindexed, res.indexed_after.get(k))
         for k in sorted(expected)])
    t = common.Targets()
    t.check("runbook moved the FKs onto CASCADE and verified", res.apply_ok, "")
    t.check("snapshot: indexed is False exactly for the unindexed FKs",
            {k: res.indexed_before.get(k) for k in expected} == expected,
            f"wrong: {[k for k in expected if res.indexed_before.get(k) != expected[k]]}")
    t.check("plan flags exactly the unindexed FKs", res.flags_unindexed == {k for k, v in expected.items() if not v},
            f"{sorted(res.flags_unindexed)}")
    t.check("after CREATE INDEX every FK counts as indexed", all(res.indexed_after.get(k) for k in expected),
            f"created {len(res.created)} indexes")
    t.check("both deletes removed every owned row", res.unindexed_rows == res.indexed_rows == s.owned_total,
            f"{res.unindexed_rows:,} / {res.indexed_rows:,} of {s.owned_total:,}")
    return t


def main(argv: Sequence[str] | None = None) -> int:
    args = common.parser(__doc__.splitlines()[0]).parse_args(argv)
    with common.server(args) as admin:
        print(common.machine_line(admin))
        result = run(admin, SCALES[args.scale])
        print(f"built the database in {result.build_seconds:.1f} s")
        return report(result).report()


if __name__ == "__main__":
    sys.exit(main())
