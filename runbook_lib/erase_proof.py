"""The proof of an erasure, without keeping any of the erased data.

Three facts, each from the database: the transactions' own counters (``pg_stat_xact_user_tables``,
summed over the batches and the final transaction) equal the preview's deleted and detached counts per
table; a lookup by key finds none of the predicted rows any more; and no table outside the preview was
deleted from or updated (rows a trigger inserted, such as an audit log's, are reported, not failures).
"""
from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from . import logger
from .erase import Erasure
from .erase_plan import Identity, chunks, key_match
from .model import qualname


@dataclass
class EraseProof:
    ok: bool
    message: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    survivors: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    inserted: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "message": self.message, "tables": self.rows, "survivors": self.survivors,
                "problems": self.problems, "inserted_by_triggers": self.inserted, "seconds": self.seconds}


def survivors(conn: psycopg.Connection[Any], erasure: Erasure) -> dict[str, int]:
    """Predicted rows still found by key, per table (every lookup goes through the key's index)."""
    preview = erasure.plan.preview
    left: dict[str, int] = {}
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table, rows in sorted(preview.deleted.items()):
            columns = preview.catalog.meta(table).identity_columns or (tuple(preview.user_key)
                                                                         if table == preview.parent else ())
            if not columns:
                continue
            ids: list[Identity] = sorted(rows, key=lambda i: tuple("" if v is None else v for v in i))
            found = 0
            for part in chunks(ids):
                cond, values = key_match(preview, table, None, columns, part)
                row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE {}").format(
                    sql.Identifier(*table), cond), values).fetchone()
                found += int(row[0]) if row else 0
            if found:
                left[qualname(table)] = found
    return left


def prove(conn: psycopg.Connection[Any], erasure: Erasure) -> EraseProof:
    started = time.perf_counter()
    want_del, want_upd = erasure.expected
    orphan_del: dict[str, int] = defaultdict(int)
    if erasure.orphans_deleted:
        for o in erasure.orphans:
            orphan_del[qualname(o.table)] += 1
    got_del, got_upd = erasure.totals("deleted"), erasure.totals("updated")
    inserted = erasure.totals("inserted")
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for table in sorted(set(want_del) | set(want_upd) | set(got_del) | set(got_upd) | set(orphan_del)):
        wd = want_del.get(table, 0) + orphan_del.get(table, 0)
        wu = want_upd.get(table, 0)
        gd, gu = got_del.get(table, 0), got_upd.get(table, 0)
        expected = table in want_del or table in want_upd or table in orphan_del
        within = gd == wd and wu <= gu <= wu + erasure.maybe_updated.get(table, 0)
        status = "as previewed" if within else ("NOT IN THE PREVIEW" if not expected else "MISMATCH")
        if status != "as previewed":
            problems.append(f"{table}: {gd} deleted / {gu} updated, the preview said {wd} / {wu}"
                            + ("" if expected else " (a table the erasure must not touch)"))
        rows.append({"table": table, "expected deleted": wd, "deleted": gd, "expected detached": wu,
                     "detached": gu, "orphans deleted": orphan_del.get(table, 0), "status": status})
    left = survivors(conn, erasure) if erasure.done else {}
    problems += [f"{t}: {n} predicted row(s) still present" for t, n in left.items()]
    if erasure.failure:
        problems.insert(0, erasure.failure)
    elif not erasure.done:
        problems.insert(0, "the final transaction did not run")
    ok = not problems
    total = sum(got_del.values())
    if ok:
        message = (f"PASS: {total} row(s) deleted in {len(erasure.transactions)} transaction(s), "
                   f"{sum(got_upd.values())} detached, each table as previewed, no predicted row left")
        if inserted:
            message += "; rows inserted by triggers: " + ", ".join(f"{t} +{n}" for t, n in sorted(inserted.items()))
    else:
        message = "FAIL: " + "; ".join(problems)
    logger.info("erase proof: %s", message)
    return EraseProof(ok, message, rows, left, problems, inserted, round(time.perf_counter() - started, 4))
