"""DataFrames of the synthesis, the preview, the blockers, the proof and the orphans, for notebooks."""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Sequence

import pandas as pd

from ..catalog import TableKey, qualname
from .second_user import SecondUser
from .common import _key_text
from .orphans import Orphans
from .preview import Preview
from .proof import Proof
from .synthesize import Synthesis


def synthesis_frame(synthesis: Synthesis) -> pd.DataFrame:
    rows = [{"table": qualname(t), "distance": synthesis.deletion_set.get(t), "status": "inserted",
             "key": _key_text(r.key), "partition": qualname(r.leaf) if r.leaf != t else "",
             "attempts": r.attempts, "error": ""} for t, r in synthesis.rows.items()]
    rows += [{"table": qualname(f.table), "distance": synthesis.deletion_set.get(f.table), "status": "FAILED",
              "key": "", "partition": "", "attempts": f.attempts,
              "error": f.reason + (f" (constraint {f.constraint})" if f.constraint else "")}
             for f in synthesis.failures]
    frame = pd.DataFrame(rows, columns=["table", "distance", "status", "key", "partition", "attempts", "error"])
    return frame.sort_values(["distance", "table"], kind="stable").reset_index(drop=True)


def preview_frame(preview: Preview) -> pd.DataFrame:
    deleted = preview.deleted_counts()
    detached = preview.detached_counts()
    blocked: dict[TableKey, int] = defaultdict(int)
    for b in preview.certain_blockers:
        blocked[b.table] += b.rows
    unindexed: dict[TableKey, list[str]] = defaultdict(list)
    for fk in preview.unindexed:
        unindexed[fk.child].append(f"{fk.name} ({', '.join(fk.columns)})")
    tables = sorted(set(deleted) | set(detached) | set(blocked) | set(unindexed))
    rows = [{"table": qualname(t), "rows deleted": deleted.get(t, 0), "rows set null/default": detached.get(t, 0),
             "rows blocking": blocked.get(t, 0), "via": ", ".join(sorted(preview.via.get(t, ()))),
             "unindexed FK": "; ".join(unindexed.get(t, []))} for t in tables]
    return pd.DataFrame(rows, columns=["table", "rows deleted", "rows set null/default", "rows blocking",
                                       "via", "unindexed FK"])


def blockers_frame(preview: Preview) -> pd.DataFrame:
    rows = [{"constraint": b.constraint, "table": qualname(b.table), "references": qualname(b.references),
             "rule": b.rule, "rows": b.rows, "blocks": "yes" if b.certain else "maybe (trigger order)",
             "sample": json.dumps(b.sample[:3])} for b in preview.blockers]
    return pd.DataFrame(rows, columns=["constraint", "table", "references", "rule", "rows", "blocks", "sample"])


def proof_frame(proof: Proof) -> pd.DataFrame:
    return pd.DataFrame(proof.counts, columns=["table", "in deletion set", "deleted", "expected deleted", "updated",
                                               "expected updated", "inserted", "status"])


def second_user_frame(second: SecondUser | None) -> pd.DataFrame:
    rows = [{"table": qualname(r.row.table), "key": _key_text(r.row.key), "owner": r.owner_fk,
             "on the test user's rows via": ", ".join(r.hangs_off), "planned": r.planned, "found": r.found}
            for r in (second.rows if second else [])]
    return pd.DataFrame(rows, columns=["table", "key", "owner", "on the test user's rows via", "planned", "found"])


def orphans_frame(found: Sequence[Orphans]) -> pd.DataFrame:
    rows = [{"table": qualname(o.table), "columns": ", ".join(o.columns), "count": o.count,
             "keys": json.dumps(o.keys[:20]), "referenced by": ", ".join(o.referenced_by)} for o in found]
    return pd.DataFrame(rows, columns=["table", "columns", "count", "keys", "referenced by"])
