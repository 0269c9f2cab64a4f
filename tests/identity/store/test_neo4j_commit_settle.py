"""How a COMMIT in doubt is settled from the writer lock node (no server needed: the rule).

The live end-to-end cases (a real connection cut after and before the server commits) are in
``test_neo4j_ambiguous_commit.py``; this pins the decision they rely on, including the case the
live test cannot reach: too many commits since, where it must stay unknown rather than guess.
"""

from __future__ import annotations

from identity.store.neo4j import COMMIT_TOKENS_KEPT, commit_landed


def test_a_commit_is_known_to_have_landed_when_its_token_is_on_the_lock_node() -> None:
    # Took sequence 7, two more writers committed after it: its token is third newest.
    assert commit_landed("mine", 7, 9, ["b", "a", "mine", "x"]) is True


def test_a_commit_is_known_to_have_rolled_back_when_its_slot_holds_another_token() -> None:
    # Its sequence went to the next writer (it never committed): the slot is someone else's.
    assert commit_landed("mine", 7, 9, ["b", "a", "x"]) is False


def test_a_commit_is_known_to_have_rolled_back_when_nobody_committed_since() -> None:
    assert commit_landed("mine", 7, 6, ["x", "y"]) is False
    assert commit_landed("mine", 1, 0, []) is False  # the very first write of the database


def test_a_commit_stays_unknown_when_its_slot_is_past_the_kept_tokens() -> None:
    kept = [f"t{i}" for i in range(COMMIT_TOKENS_KEPT)]
    assert commit_landed("mine", 7, 7 + COMMIT_TOKENS_KEPT, kept) is None
    assert commit_landed("mine", 7, 7 + COMMIT_TOKENS_KEPT - 1, kept) is False
