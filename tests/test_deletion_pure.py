"""The proof's comparison of row counters with the preview, without a server: what each difference
between the two means, and which table it names."""
from __future__ import annotations

from runbook_lib.deletion.columns import ColumnCatalog
from runbook_lib.deletion.proof import Expected, Proof, compare_counters

USERS, POSTS, COMMENTS, AUDIT = ("public", "users"), ("public", "posts"), ("public", "comments"), ("public", "audit")
CAT = ColumnCatalog({}, {}, {1: (USERS, USERS, "r"), 2: (POSTS, POSTS, "r"), 3: (COMMENTS, COMMENTS, "r"),
                             4: (AUDIT, AUDIT, "r")})
# the preview: the user, 2 posts, 3 comments deleted; 1 other user's post detached (SET NULL); 1 more
# post referenced through SET NULL that the cascade also deletes (its update may come first, or not)
WANT = Expected(deleted={USERS: 1, POSTS: 2, COMMENTS: 3}, updated={POSTS: 1}, maybe_updated={POSTS: 1},
                tables={USERS, POSTS, COMMENTS})
# earlier work of the same transaction (the synthetic rows), seen in both readings
BEFORE = {1: (1, 0, 0), 2: (2, 0, 0), 3: (3, 0, 0), 4: (0, 0, 0)}


def prove(after: dict[int, tuple[int, int, int]]) -> Proof:
    proof = Proof(True, "", "DELETE")
    compare_counters(CAT, BEFORE, after, WANT, proof)
    return proof


def test_exactly_the_preview_passes_whichever_order_the_set_null_and_the_delete_came_in() -> None:
    for post_updates in (1, 2):
        proof = prove({1: (1, 0, 1), 2: (2, post_updates, 2), 3: (3, 0, 3), 4: (0, 0, 0)})
        assert proof.others_changed == [] and proof.mismatches == [] and proof.side_effects == {}
        assert {c["table"] for c in proof.counts} == {"public.users", "public.posts", "public.comments"}
        assert next(c for c in proof.counts if c["table"] == "public.posts")["expected updated"] == "1..2"


def test_one_more_row_deleted_names_the_table() -> None:
    proof = prove({1: (1, 0, 1), 2: (2, 1, 2), 3: (3, 0, 4), 4: (0, 0, 0)})
    assert proof.others_changed == ["public.comments: 1 row(s) deleted that the preview did not list "
                                    "(rows not of this user changed)"]
    row = next(c for c in proof.counts if c["table"] == "public.comments")
    assert row["status"] == "CHANGED BEYOND THE PREVIEW"


def test_an_update_beyond_the_detached_rows_names_the_table() -> None:
    proof = prove({1: (1, 1, 1), 2: (2, 1, 2), 3: (3, 0, 3), 4: (0, 0, 0)})
    assert [c.split(":")[0] for c in proof.others_changed] == ["public.users"]


def test_fewer_rows_than_the_preview_is_a_mismatch() -> None:
    proof = prove({1: (1, 0, 1), 2: (2, 0, 1), 3: (3, 0, 3), 4: (0, 0, 0)})
    assert proof.mismatches == ["public.posts: 1 row(s) deleted, the preview said 2",
                                "public.posts: 0 row(s) detached, the preview said 1"]


def test_inserts_outside_the_deletion_set_are_side_effects_inside_it_a_change() -> None:
    proof = prove({1: (1, 0, 1), 2: (2, 1, 2), 3: (3, 0, 3), 4: (2, 0, 0)})
    assert proof.side_effects == {AUDIT: 2} and proof.others_changed == []
    proof = prove({1: (1, 0, 1), 2: (3, 1, 2), 3: (3, 0, 3), 4: (0, 0, 0)})
    assert proof.others_changed == ["public.posts: 1 row(s) inserted (rows not of this user changed)"]


def test_a_table_first_touched_by_the_statement_counts_from_zero() -> None:
    proof = prove({1: (1, 0, 1), 2: (2, 1, 2), 3: (3, 0, 3), 4: (0, 0, 0), 5: (0, 0, 7)})
    assert len(proof.others_changed) == 1
    assert proof.others_changed[0].endswith(": 7 row(s) deleted that the preview did not list "
                                            "(rows not of this user changed)")


def test_layered_order_takes_ready_nodes_by_key_and_breaks_cycles_where_told() -> None:
    from runbook_lib.graph import layered_order

    # c waits for a and b; b waits for a; d and e wait for each other.
    waits = {"c": {"a", "b"}, "b": {"a"}, "d": {"e"}, "e": {"d"}}
    picked: list[set[str]] = []

    def on_cycle(remaining: set[str]) -> str:
        picked.append(set(remaining))
        return max(remaining)

    assert layered_order("abcde", waits, key=lambda n: n, on_cycle=on_cycle) == ["a", "b", "c", "e", "d"]
    assert picked == [{"d", "e"}]
    assert layered_order("abc", waits, key=lambda n: -ord(n), on_cycle=min) == ["a", "b", "c"]
