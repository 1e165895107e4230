"""A second synthetic user whose rows hang off the test user's rows (a comment by someone
else on the test user's post, a post uploaded by someone else that the test user approved), so that
the test-user step shows and proves what the test user's deletion does to another user's rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import psycopg
from psycopg import sql

from .. import logger
from ..catalog import ForeignKey, Snapshot, TableKey, qualname
from .common import _identity_match, _key_text, _table
from .preview import Preview
from .synthesize import Synthesis, SynthesisFailure, SynthesizedRow, _Synthesizer


@dataclass
class SecondUserRow:
    row: SynthesizedRow
    owner_fk: str        # the FK that makes the row the other user's
    hangs_off: tuple[str, ...]  # the FKs that tie it to the test user's rows
    planned: str = ""    # what the preview says the delete does to it: deleted, detached or kept
    found: str = ""      # what a key lookup shows after the delete: gone or there

    @property
    def ok(self) -> bool:
        return self.found == ("gone" if self.planned == "deleted" else "there")


@dataclass
class SecondUser:
    marker: str
    user: SynthesizedRow | None
    rows: list[SecondUserRow] = field(default_factory=list)
    failures: list[SynthesisFailure] = field(default_factory=list)
    user_found: str = ""

    @property
    def tables(self) -> set[TableKey]:
        return {r.row.table for r in self.rows}

    @property
    def problems(self) -> list[str]:
        found = [f"{qualname(r.row.table)} {_key_text(r.row.key)} (another user's row, via "
                 f"{', '.join(r.hangs_off)}): the preview said {r.planned}, the database shows it {r.found}"
                 for r in self.rows if r.found and not r.ok]
        if self.user is not None and self.user_found == "gone":
            found.append(f"the other user {_key_text(self.user.key)} was deleted with the test user")
        return found

    @property
    def summary(self) -> str:
        """Per planned fate, how many of the other user's rows and in which tables (details: the frame)."""
        tables: dict[str, list[str]] = {}
        for r in self.rows:
            tables.setdefault(r.planned or "?", []).append(qualname(r.row.table))
        return ", ".join(f"{len(names)} {fate} ({', '.join(sorted(set(names)))})"
                         for fate, names in sorted(tables.items()))


def _owner_and_links(fks: list[ForeignKey], table: TableKey, parent: TableKey,
                     test_rows: Mapping[TableKey, SynthesizedRow]) -> tuple[ForeignKey, list[ForeignKey]] | None:
    """The FK that owns a row of ``table`` (a NOT NULL one to the parent first) and the other FKs
    through which such a row can hang off the test user's rows; None when there are none."""
    to_parent = sorted((fk for fk in fks if fk.child == table and fk.parent == parent),
                       key=lambda f: (f.nullable, f.key))
    if not to_parent:
        return None
    owner = to_parent[0]
    links = [fk for fk in fks if fk.child == table and fk.key != owner.key and fk.parent in test_rows
             and not set(fk.columns) & set(owner.columns) and fk.parent != table]
    return (owner, links) if links else None


def synthesize_second_user(conn: psycopg.Connection[Any], snapshot: Snapshot, synthesis: Synthesis, *,
                          marker: str, values: Mapping[str, Mapping[str, Any]] | None = None) -> SecondUser:
    """A second user, and one row of theirs in each table of the deletion set that has an FK to the
    parent (the owner) and another FK to a table where the test user has a row, pointing there."""
    synth = _Synthesizer(conn, snapshot, marker, values or {})
    synth.result.rows = dict(synthesis.rows)  # links() ties the new rows to the test user's rows
    parent = snapshot.parent
    fixed, _later, problem = synth.links(parent, set())
    outcome = synth.insert(synth.cat.meta(parent), fixed) if problem is None else SynthesisFailure(parent, problem)
    if isinstance(outcome, SynthesisFailure):
        return SecondUser(marker, None, failures=[outcome])
    found = SecondUser(marker, outcome)
    for table in sorted(synth.dset, key=lambda t: (synth.dset[t], t)):
        pair = _owner_and_links(synth.fks, table, parent, synthesis.rows) if table != parent else None
        if pair is None or table not in synth.cat.tables:
            continue
        owner, links = pair
        fixed, _later, problem = synth.links(table, set())
        if problem is not None:
            found.failures.append(SynthesisFailure(table, problem))
            continue
        for col, ref in zip(owner.columns, owner.ref_columns):
            fixed[col] = outcome.values.get(ref)
        row = synth.insert(synth.cat.meta(table), fixed)
        if isinstance(row, SynthesisFailure):
            found.failures.append(row)
            continue
        found.rows.append(SecondUserRow(row, owner.key, tuple(fk.key for fk in links)))
    logger.info("second user %s: %d row(s) on the test user's rows%s", marker, len(found.rows),
                "; could not fill " + "; ".join(str(f) for f in found.failures) if found.failures else "")
    return found


def plan_second_user(second: SecondUser, preview_: Preview) -> None:
    """What the preview says the test user's deletion does to each of the other user's rows."""
    for r in second.rows:
        if r.row.identity in preview_.deleted.get(r.row.table, {}):
            r.planned = "deleted"
        elif any(d.table == r.row.table and r.row.identity in d.rows for d in preview_.detached.values()):
            r.planned = "detached"
        else:
            r.planned = "kept"


def _exists(conn: psycopg.Connection[Any], preview_: Preview, row: SynthesizedRow) -> bool:
    cat = preview_.catalog
    cond, params = _identity_match(cat, cat.meta(row.table), "t", [row.identity])
    found = conn.execute(sql.SQL("SELECT EXISTS (SELECT 1 FROM {} AS t WHERE {})").format(_table(row.table), cond),
                         params).fetchone()
    return bool(found and found[0])


def check_second_user(conn: psycopg.Connection[Any], second: SecondUser, preview_: Preview) -> list[str]:
    """After the delete: key lookups of the other user's rows against the preview's plan for them."""
    for r in second.rows:
        if not r.row.identity_columns and r.planned != "deleted":
            r.found = "there"  # keyless and updated: its place moved; the counters prove it
            continue
        r.found = "there" if _exists(conn, preview_, r.row) else "gone"
    if second.user is not None:
        second.user_found = "there" if _exists(conn, preview_, second.user) else "gone"
    return second.problems


