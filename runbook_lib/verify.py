"""Verification: compare the catalog before and after, property by property, against the plan."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from .catalog import ForeignKey, Snapshot
from .plan import Plan


@dataclass
class Comparison:
    rows: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _row(before: ForeignKey | None, after: ForeignKey | None, expected_rule: str | None,
         status: str, detail: str) -> dict[str, Any]:
    fk = before or after
    assert fk is not None
    return {
        "constraint": fk.key,
        "rule before": before.on_delete if before else None,
        "rule after": after.on_delete if after else None,
        "planned": expected_rule,
        "valid before": before.validated if before else None,
        "valid after": after.validated if after else None,
        "status": status,
        "detail": detail,
    }


def _defaults_problem(fk: ForeignKey, now: ForeignKey, want: ForeignKey) -> str | None:
    """A ghost reassignment sets the columns' defaults; every other change leaves them as they were."""
    if want.column_defaults == fk.column_defaults:
        if now.column_defaults != fk.column_defaults:
            return f"column defaults changed: {fk.column_defaults} -> {now.column_defaults}"
        return None
    if any(d is None for d in now.column_defaults):
        return f"column defaults not set to the ghost row's key: {now.column_defaults}"
    return None


def _added(after_by_key: Mapping[str, ForeignKey], expected: Mapping[str, ForeignKey],
           before_keys: set[str], absent: Iterable[str], result: Comparison) -> None:
    """FKs the plan adds must now exist as planned; FKs a rollback removes must be gone."""
    for key, want in expected.items():
        if key in before_keys:
            continue
        now = after_by_key.get(key)
        if now is None:
            result.problems.append(f"{key} was to be added but does not exist")
            result.rows.append({**_row(None, want, want.on_delete, "MISSING", "constraint not added"),
                                "rule after": None, "valid after": None})
        elif now.on_delete != want.on_delete or not now.same_shape(want) or now.validated != want.validated:
            result.problems.append(f"{key}: added as {now.definition!r}, expected ON DELETE {want.on_delete}, "
                                   f"validated={want.validated}")
            result.rows.append(_row(None, now, want.on_delete, "MISMATCH", now.definition))
        else:
            result.rows.append(_row(None, now, want.on_delete, "added as planned", now.definition))
    for key in absent:
        now = after_by_key.get(key)
        if now is not None:
            result.problems.append(f"{key} should have been removed by the rollback but exists")
            result.rows.append(_row(None, now, None, "LEFT BEHIND", now.definition))


def compare(before: Snapshot, after: Snapshot, expected: Mapping[str, ForeignKey],
            scope: Iterable[str] | None = None, absent: Iterable[str] = ()) -> Comparison:
    """Every FK of ``before`` must exist in ``after`` and equal its expected state.

    ``expected`` maps an FK key to the state it should now have (a changed copy of the original, or a
    constraint the plan adds); every other FK must be exactly as before: the same definition text,
    comment and column defaults. ``absent``: keys of added constraints a rollback must have removed.
    """
    result = Comparison()
    after_by_key = {fk.key: fk for fk in after.foreign_keys}
    keys = set(scope) if scope is not None else None
    _added(after_by_key, expected, {fk.key for fk in before.foreign_keys}, absent, result)
    for fk in before.foreign_keys:
        if keys is not None and fk.key not in keys and fk.key not in expected:
            continue
        now = after_by_key.get(fk.key)
        want = expected.get(fk.key, fk)
        if now is None:
            result.problems.append(f"{fk.key} was lost: it no longer exists")
            result.rows.append(_row(fk, None, want.on_delete, "LOST", "constraint missing"))
            continue
        differences = []
        if now.on_delete != want.on_delete:
            differences.append(f"ON DELETE {now.on_delete}, expected {want.on_delete}")
        if not now.same_shape(want):
            differences.append(f"definition changed: {fk.definition!r} -> {now.definition!r}")
        if now.delete_set_columns != want.delete_set_columns:
            differences.append("SET NULL column list changed")
        if now.validated != want.validated:
            differences.append(f"validated={now.validated}, expected {want.validated}")
        if fk.key not in expected and (now.definition != fk.definition or now.comment != fk.comment):
            differences.append(f"not planned to change, but {fk.definition!r} -> {now.definition!r}")
        defaults = _defaults_problem(fk, now, want) if now.column_defaults or fk.column_defaults else None
        if defaults is not None:
            differences.append(defaults)
        changed = fk.key in expected and want.on_delete != fk.on_delete
        if differences:
            result.problems.append(f"{fk.key}: " + "; ".join(dict.fromkeys(differences)))
            result.rows.append(_row(fk, now, want.on_delete, "MISMATCH", "; ".join(dict.fromkeys(differences))))
        else:
            result.rows.append(_row(fk, now, want.on_delete, "changed as planned" if changed else "unchanged",
                                    "all other properties preserved" if changed else ""))
    return result


def expected_after(plan: Plan, applied: Iterable[str]) -> dict[str, ForeignKey]:
    """The state each applied change should have left: the original with the planned rule."""
    done = set(applied)
    expected = {}
    for item in plan.actions:
        if item.fk.key in done and item.pending_validation:
            expected[item.fk.key] = replace(item.fk, validated=True)
        elif item.fk.key in done and item.adds:
            expected[item.fk.key] = item.fk
        elif item.fk.key in done:
            defaults = tuple(str(v) for _c, v in item.ghost_defaults) if item.ghost_defaults else item.fk.column_defaults
            expected[item.fk.key] = replace(item.fk, on_delete=item.planned, delete_set_columns=(),
                                            column_defaults=defaults)
    return expected
