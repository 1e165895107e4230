"""Smoke versions of the benchmarks in bench/: tiny scales, the safety properties only (never timing ratios).

Each runs against the suite's server (``server_dsn``): PostgreSQL 15 in CI, else the embedded 18.
"""
from __future__ import annotations

from typing import Any

from bench import availability, cascade_indexes, contention, crash, inspection_scale


def test_availability_smoke_no_client_errors_and_every_fk_changed(server_dsn: str) -> None:
    scale = availability.Scale("smoke", users=300, children=8, child_rows=20, big_rows=2_000, partitioned_rows=300,
                               logins=2, inserters=2, updaters=1, warmup_seconds=0.2, cooldown_seconds=0.2,
                               max_load_seconds=60)
    result = availability.run(server_dsn, scale, seed=7)
    rb, base = result.runbook, result.baseline
    assert not rb.recorder.errors, rb.recorder.errors[:3]
    assert rb.recorder.count > 0 and base.recorder.count > 0
    assert rb.details["failed"] == [] and rb.details["verify_ok"], rb.details["verify_problems"]
    assert rb.details["cascade_after"] == rb.details["fks"] == rb.details["fks_after"] == scale.children + 2
    assert base.details["cascade_after"] == base.details["fks"]


def test_contention_smoke_blocked_fk_left_as_it_was_then_completed(server_dsn: str) -> None:
    scale = contention.Scale("smoke", users=200, children=4, child_rows=200, lock_timeout="200ms",
                             lock_timeout_seconds=0.2, retries=2, backoff=0.05, baseline_hold_seconds=0.5)
    res = contention.run(server_dsn, scale)
    assert res.blocked_result["status"] == "failed"
    assert res.blocked_result["attempts"] == scale.retries == res.blocked_result["lock_waits"]
    assert res.first_failed == [res.fk_key]
    assert res.after_blocked == res.before  # same pg_constraint oid, definition and validity
    assert res.first_applied == res.first_total - 1 == scale.children - 1
    assert not res.load.errors, res.load.errors[:3]
    assert res.second_failed == [] and res.second_verify_ok
    assert res.second_state is not None and res.second_state.validated
    assert "ON DELETE CASCADE" in res.second_state.definition
    # A blocker on users itself: every FK gives up and is left exactly as it was; readers see no errors.
    assert res.parent_failed == res.parent_total == scale.children and res.parent_unchanged
    assert not res.parent_load.errors


def test_crash_smoke_no_fk_missing_or_half_changed_and_reruns_verify(server_dsn: str) -> None:
    scale = crash.Scale("smoke", users=200, children=4, child_rows=3_000, partitioned_rows=1_000, kills=3,
                        terminates=1, terminate_all=0)
    res = crash.run(server_dsn, scale, seed=11)
    killed = res.of("SIGKILL")
    assert len(killed) == 3
    interrupted = killed + res.of("terminate")
    for trial in interrupted + res.of("SIGKILL", interrupted=False) + res.of("terminate", interrupted=False):
        assert set(trial.states) <= {"old", "new", "new NOT VALID"}, (trial.mode, trial.delay, trial.states)
        assert sum(trial.states.values()) == scale.children + 1
        assert trial.rerun_ok and trial.final_all_new, (trial.mode, trial.delay, trial.rerun_note)


def test_inspection_smoke_information_schema_and_catalog_agree(server_dsn: str) -> None:
    scale = inspection_scale.Scale("smoke", tables=24, partitioned=3, is_timeout_seconds=60)
    res = inspection_scale.run(server_dsn, scale)
    assert res.is_seconds is not None
    assert res.agree, (res.is_pairs, res.catalog_pairs)
    assert res.referencing_tables == 24 and res.plan_changes == 24


def test_cascade_indexes_smoke_indexed_flags_right(server_dsn: str) -> None:
    scale = cascade_indexes.Scale("smoke", users=20, owned=200, others=200, side_owned=100, projects=5,
                                  tasks_per_project=20)
    res: Any = cascade_indexes.run(server_dsn, scale)
    expected = cascade_indexes.expected_indexed()
    assert res.apply_ok
    assert {k: res.indexed_before.get(k) for k in expected} == expected
    assert res.flags_unindexed == {k for k, v in expected.items() if not v}
    assert all(res.indexed_after.get(k) for k in expected)
    assert res.unindexed_rows == res.indexed_rows == scale.owned_total
