"""identity.bounded.BoundedMap: bounded, least-recently-used, batch calls, validity generation."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from identity.bounded import BoundedMap


def test_a_hit_refreshes_its_entry_when_the_map_is_full() -> None:
    cache: BoundedMap[str, int] = BoundedMap(3)
    cache.put_many([("a", 1), ("b", 2), ("c", 3)])
    assert cache.get_many(["a"]) == {"a": 1}  # "a" is now the most recently used
    cache.put_many([("d", 4)])
    assert cache.keys() == ["c", "a", "d"]  # "b" went, not "a"
    assert cache.get("b") is None
    assert cache.get("a") == 1


def test_put_refreshes_an_existing_key_when_it_is_stored_again() -> None:
    cache: BoundedMap[str, int] = BoundedMap(2)
    cache.put_many([("a", 1), ("b", 2)])
    cache.put_many([("a", 10), ("c", 3)])
    assert cache.keys() == ["a", "c"]
    assert cache.get_many(["a", "b", "c"]) == {"a": 10, "c": 3}


def test_a_batch_larger_than_the_map_keeps_its_last_entries() -> None:
    cache: BoundedMap[int, int] = BoundedMap(3)
    assert cache.put_many((i, i * i) for i in range(10))
    assert cache.keys() == [7, 8, 9]
    assert len(cache) == 3


def test_misses_are_absent_and_values_may_be_falsy() -> None:
    cache: BoundedMap[str, object] = BoundedMap(4)
    cache.put_many([("none", None), ("zero", 0), ("empty", ())])
    assert cache.get_many(["none", "zero", "empty", "missing"]) == {
        "none": None,
        "zero": 0,
        "empty": (),
    }


def test_drop_forgets_the_keys_and_ignores_unknown_ones() -> None:
    cache: BoundedMap[str, int] = BoundedMap(4)
    cache.put_many([("a", 1), ("b", 2), ("c", 3)])
    cache.drop(["b", "zzz"])
    assert cache.keys() == ["a", "c"]
    assert "b" not in cache
    assert "a" in cache


def test_a_map_of_size_zero_holds_nothing() -> None:
    cache: BoundedMap[str, int] = BoundedMap(0)
    assert not cache.put_many([("a", 1)])
    assert cache.get_many(["a"]) == {}
    assert len(cache) == 0


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="size"):
        BoundedMap(-1)


def test_a_newer_generation_empties_the_map_when_a_call_names_it() -> None:
    cache: BoundedMap[str, int] = BoundedMap(4)
    assert cache.put_many([("a", 1)], generation=3)
    assert cache.get_many(["a"], generation=3) == {"a": 1}
    assert cache.get_many(["a"], generation=4) == {}  # a shred happened: nothing from before
    assert len(cache) == 0


def test_entries_read_under_an_older_generation_are_not_stored() -> None:
    cache: BoundedMap[str, int] = BoundedMap(4)
    cache.get_many([], generation=5)
    # A caller that read the state at 4, then loaded a value, must not store it: generation 5
    # may have withdrawn exactly that value.
    assert not cache.put_many([("a", 1)], generation=4)
    assert "a" not in cache
    assert cache.put_many([("b", 2)], generation=5)
    # An older reader does not roll the map back, and still gets the newer entries.
    assert cache.get_many(["b"], generation=4) == {"b": 2}
    assert cache.put_many([("c", 3)], generation=6)  # newer: emptied first, then stored
    assert cache.keys() == ["c"]


def test_advance_drops_only_the_changed_keys_when_the_map_saw_the_generation_before() -> None:
    cache: BoundedMap[str, int] = BoundedMap(4)
    cache.put_many([("a", 1), ("b", 2)], generation=7)
    cache.advance(8, ["a"])
    assert cache.keys() == ["b"]
    assert cache.put_many([("c", 3)], generation=8)
    # Generation 9 was made by a change this map never heard of: everything goes.
    cache.advance(10, ["b"])
    assert cache.keys() == []
    assert not cache.put_many([("d", 4)], generation=9)


def test_clear_with_a_generation_refuses_older_entries_afterwards() -> None:
    cache: BoundedMap[str, int] = BoundedMap(4)
    cache.put_many([("a", 1)], generation=1)
    cache.clear(generation=2)
    assert len(cache) == 0
    assert not cache.put_many([("a", 1)], generation=1)
    cache.clear(generation=0)  # never rolls back
    assert not cache.put_many([("a", 1)], generation=1)


def test_concurrent_batches_keep_the_bound_and_every_answer_consistent() -> None:
    cache: BoundedMap[int, int] = BoundedMap(50)
    errors: list[str] = []
    start = threading.Barrier(4)

    def work(offset: int) -> None:
        start.wait()
        for round_ in range(200):
            keys = [(offset * 1000 + round_ * 7 + i) % 120 for i in range(20)]
            cache.put_many((k, -k) for k in keys)
            for key, value in cache.get_many(keys).items():
                if value != -key:
                    errors.append(f"{key} -> {value}")
            cache.drop(keys[:3])

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 50
    assert len(cache.keys()) == len(set(cache.keys()))


_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.lists(st.integers(0, 9), max_size=5)),
        st.tuples(st.just("get"), st.lists(st.integers(0, 9), max_size=5)),
        st.tuples(st.just("drop"), st.lists(st.integers(0, 9), max_size=3)),
    ),
    max_size=40,
)


@given(size=st.integers(0, 5), ops=_OPS)
def test_the_map_behaves_like_a_reference_lru_when_driven_by_any_sequence(
    size: int, ops: list[tuple[str, list[int]]]
) -> None:
    cache: BoundedMap[int, str] = BoundedMap(size)
    model: list[int] = []  # keys, least recently used first; value of k is always f"v{k}"
    for op, keys in ops:
        if op == "put":
            cache.put_many((k, f"v{k}") for k in keys)
            if size:
                for k in keys:
                    if k in model:
                        model.remove(k)
                    model.append(k)
                del model[: max(0, len(model) - size)]
        elif op == "get":
            expected = {k: f"v{k}" for k in keys if k in model}
            assert cache.get_many(keys) == expected
            for k in keys:
                if k in model:
                    model.remove(k)
                    model.append(k)
        else:
            cache.drop(keys)
            model = [k for k in model if k not in keys]
        assert cache.keys() == model
