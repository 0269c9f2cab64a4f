"""The resolution engine's in-batch union-find (``_BatchState.find``): right roots, and path
compression that points every node of the path at the root (the old code repointed the node's
ancestor instead, leaving the node itself one hop further away: correct but slower)."""

from __future__ import annotations

import random

from identity.resolution import _BatchState


def _chain(length: int) -> _BatchState:
    """p0 -> p1 -> ... -> p<length-1> (the root)."""
    state = _BatchState()
    for i in range(length - 1):
        state.parent[f"p{i}"] = f"p{i + 1}"
    return state


def test_find_points_every_node_of_the_path_at_the_root_when_compressing() -> None:
    state = _chain(6)

    assert state.find("p0") == "p5"

    # Each node on the path, the one asked about included, is now one step from the root.
    assert {f"p{i}": state.parent[f"p{i}"] for i in range(5)} == dict.fromkeys(
        (f"p{i}" for i in range(5)), "p5"
    )


def test_find_of_a_root_or_an_unknown_person_is_itself_and_adds_no_pointer() -> None:
    state = _chain(3)
    assert state.find("p2") == "p2"
    assert state.find("p_new") == "p_new"
    assert "p_new" not in state.parent
    assert state.parent.get("p2", "p2") == "p2"


def test_find_gives_the_same_roots_as_a_naive_walk_under_random_unions() -> None:
    rng = random.Random(20)
    state = _BatchState()
    naive: dict[str, str] = {}

    def naive_root(person: str) -> str:
        while naive.get(person, person) != person:
            person = naive[person]
        return person

    persons = [f"p{i}" for i in range(300)]
    for _ in range(600):
        a, b = rng.sample(persons, 2)
        root_a, root_b = state.find(a), state.find(b)
        assert (root_a, root_b) == (naive_root(a), naive_root(b))
        if root_a != root_b:
            state.parent[root_b] = root_a
            naive[root_b] = root_a
    for person in persons:
        assert state.find(person) == naive_root(person)
        # After a find, the person points straight at its root (or is the root).
        assert state.parent.get(person, person) == naive_root(person)
