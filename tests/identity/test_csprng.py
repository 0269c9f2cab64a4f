"""Random bytes drawn a block at a time (identity.csprng): each slice handed out once, across
threads, block refills and forks."""

from __future__ import annotations

import os
import threading

import pytest

from identity import csprng
from identity.csprng import BLOCK_BYTES, random_bytes
from identity.model import new_node_id


def test_draws_across_several_blocks_never_repeat_when_taken_in_one_thread() -> None:
    draws = [random_bytes(8) for _ in range(5 * BLOCK_BYTES // 8 + 3)]
    assert all(len(d) == 8 for d in draws)
    assert len(set(draws)) == len(draws)


def test_draws_of_different_sizes_come_from_different_blocks() -> None:
    small = [random_bytes(4) for _ in range(200)]
    large = [random_bytes(12) for _ in range(200)]
    assert {len(d) for d in small} == {4}
    assert {len(d) for d in large} == {12}
    # No 4-byte draw is a piece of a 12-byte one (each size has its own block).
    joined = b"".join(large)
    assert sum(1 for d in small if d in joined) < 5  # chance matches only (~0.01 expected)


def test_threads_never_get_the_same_bytes_when_drawing_at_once() -> None:
    results: dict[int, list[bytes]] = {}
    start = threading.Barrier(4)

    def draw(index: int) -> None:
        start.wait()
        results[index] = [random_bytes(8) for _ in range(3 * BLOCK_BYTES // 8)]

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [d for draws in results.values() for d in draws]
    assert len(everything) == 4 * 3 * BLOCK_BYTES // 8
    assert len(set(everything)) == len(everything)


def test_a_forked_child_never_hands_out_what_the_parent_hands_out_next() -> None:
    random_bytes(8)  # the parent has a block with unused slices in it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next draws and leave at once
        os.write(write, b"".join(random_bytes(8) for _ in range(4)))
        os._exit(0)
    os.close(write)
    child = os.read(read, 64)
    os.close(read)
    os.waitpid(pid, 0)
    parent = b"".join(random_bytes(8) for _ in range(4))
    assert len(child) == 32
    child_draws = {child[i : i + 8] for i in range(0, 32, 8)}
    parent_draws = {parent[i : i + 8] for i in range(0, 32, 8)}
    assert child_draws.isdisjoint(parent_draws)


def test_node_ids_made_after_a_fork_differ_in_parent_and_child() -> None:
    new_node_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, new_node_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = new_node_id()
    # Time and counter may agree (the child continues the parent's counter); the random part
    # must not.
    assert child[-16:] != parent[-16:]


def test_a_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="positive size"):
        random_bytes(0)


def test_the_blocks_come_from_the_os_csprng_in_blocks_when_drawn_in_bulk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = os.urandom

    def counted(size: int) -> bytes:
        calls.append(size)
        return real(size)

    monkeypatch.setattr(os, "urandom", counted)
    monkeypatch.setattr(csprng, "_blocks", csprng._Blocks())
    draws = [random_bytes(8) for _ in range(1000)]
    assert len(set(draws)) == 1000
    assert calls == [BLOCK_BYTES] * 2  # 512 draws per block: two getrandom calls, not 1,000
