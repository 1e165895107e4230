"""Candidate values for a column: from CHECKs, partition bounds, the type itself; text input forms."""
from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from .columns import Column, ColumnCatalog
from .common import Text


_STRING_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_NUMBER_LITERAL = re.compile(r"(?<![\w.'\"])(-?\d+(?:\.\d+)?)(?![\w.'\"])")
_BOUND = re.compile(r"(?:FROM|IN) \(\s*('(?:[^']|'')*'|[-\w.]+)")


def _literals(definition: str) -> list[str]:
    """Candidate values mentioned in a CHECK: quoted strings, numbers and their successors."""
    found = [m.group(1).replace("''", "'") for m in _STRING_LITERAL.finditer(definition)]
    unquoted = _STRING_LITERAL.sub("''", definition)
    for m in _NUMBER_LITERAL.finditer(unquoted):
        text = m.group(1)
        found.append(text)
        try:
            found.append(str(int(text) + 1) if "." not in text else str(float(text) + 1))
        except ValueError:
            pass
    return found


def _bound_values(bounds: Iterable[str]) -> list[str]:
    values = []
    for bound in bounds:
        m = _BOUND.search(bound)
        if not m:
            continue
        token = m.group(1)
        if token.startswith("'"):
            values.append(token[1:-1].replace("''", "'"))
        elif token.upper() not in ("MINVALUE", "MAXVALUE", "NULL"):
            values.append(token)
    return values


def _fit(text: str, limit: int | None) -> str:
    return text if limit is None or len(text) <= limit else text[:limit]


def _email(local: str, limit: int | None) -> str:
    domain = "@example.invalid"
    if limit is not None and len(local) + len(domain) > limit:
        local = local[: max(1, limit - len(domain))]
    return _fit(local + domain, limit)


def _pg_array(items: Sequence[Any]) -> str:
    def one(item: Any) -> str:
        if item is None:
            return "NULL"
        text = _as_text(item) or ""
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return "{" + ",".join(one(i) for i in items) + "}"


def _as_text(value: Any) -> Text:
    """A parameter-supplied value in PostgreSQL's text input form."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return _pg_array(list(value))
    return str(value)


_GEOMETRY = {"point": "(0,0)", "line": "{1,-1,0}", "lseg": "[(0,0),(1,1)]", "box": "(1,1),(0,0)",
             "path": "[(0,0),(1,1)]", "polygon": "((0,0),(1,1),(1,0))", "circle": "<(0,0),1>"}
_FIXED = {
    "bool": ["true", "false"], "uuid": [], "json": ["{}", "[]", '{"test": true}'],
    "jsonb": ["{}", "[]", '{"test": true}'], "xml": ["<test/>"], "bytea": ["\\x00"],
    "date": ["2024-01-15", "2000-01-01", "2099-12-31"],
    "timestamp": ["2024-01-15 12:00:00", "2000-01-01 00:00:00", "2099-12-31 00:00:00"],
    "timestamptz": ["2024-01-15 12:00:00+00", "2000-01-01 00:00:00+00", "2099-12-31 00:00:00+00"],
    "time": ["12:00:00", "00:00:00"], "timetz": ["12:00:00+00"], "interval": ["1 day", "1 hour", "0"],
    "inet": ["192.0.2.1", "::1"], "cidr": ["192.0.2.0/24"], "macaddr": ["08:00:2b:01:02:03"],
    "macaddr8": ["08:00:2b:01:02:03:04:05"], "tsvector": ["test"], "tsquery": ["test"],
    "money": ["1.00", "0"], "pg_lsn": ["0/0"], "varbit": ["1", "0"],
}


def _type_candidates(cat: ColumnCatalog, col: Column, marker: str, *, depth: int = 0) -> list[str]:
    """Sensible values of the column's type, most likely to pass a CHECK first."""
    base = cat.base(col.type_oid)
    limit = cat.max_length(col)
    if base.typtype == "e":
        return list(base.labels)
    if base.category == "A" and base.elem in cat.types and depth == 0:
        elem = cat.types[base.elem]
        inner = Column(col.name, col.attnum, elem.oid, -1, True, False, "", "")
        first = _type_candidates(cat, inner, marker, depth=1)[:2]
        return ["{}"] + [_pg_array([v]) for v in first]
    if base.typtype == "r":
        return ["empty"]
    if base.typtype == "m":
        return ["{}"]
    if base.name == "uuid":
        return [str(uuid.uuid4())]
    if base.name == "bit":
        n = limit or 1
        return ["0" * n, "1" * n]
    if base.name in _FIXED:
        return list(_FIXED[base.name])
    if base.name in _GEOMETRY:
        return [_GEOMETRY[base.name]]
    if base.name == "numeric":
        typmod = col.typmod if col.typmod >= 0 else next(
            (d.typmod for d in cat.domains(col.type_oid) if d.typmod >= 0), -1)
        if typmod >= 4 and ((typmod - 4) >> 16) - ((typmod - 4) & 0xFFFF) <= 0:
            return ["0.1", "0", "0.5"]
        return ["1", "0", "2", "10", "100", "0.5", "-1"]
    if base.category == "N":
        return ["1", "0", "2", "10", "100", "1000", "-1"]
    if base.category == "S":
        candidates = []
        if "mail" in col.name.lower():
            candidates.append(_email(marker, limit))
        candidates.append(_fit(marker, limit))
        candidates.extend(_fit(v, limit) for v in ("A", "a", "x", "0", "1", "test"))
        if base.name == "bpchar" and limit:
            candidates.extend(["A" * limit, "0" * limit])
        return candidates
    return []


@dataclass
class _Cand:
    kind: str  # value | null | default | unique
    text: Text = None


@dataclass
class _ColumnPlan:
    column: Column
    candidates: list[_Cand]
    fixed: bool = False
    index: int = 0
    bump: int = 0

    @property
    def current(self) -> _Cand:
        return self.candidates[self.index]

    def advance(self) -> bool:
        if self.fixed or self.index + 1 >= len(self.candidates):
            return False
        self.index += 1
        return True


def _dedupe(cands: list[_Cand]) -> list[_Cand]:
    seen: set[tuple[str, Text]] = set()
    out = []
    for c in cands:
        if (c.kind, c.text) not in seen:
            seen.add((c.kind, c.text))
            out.append(c)
    return out
