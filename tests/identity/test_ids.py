"""Opaque ids: node ids unique and time-ordered (also across a fork), person ids random."""

from __future__ import annotations

import os
import re
import time

from identity.model import new_fact_id, new_node_id, new_person_id


def test_node_ids_are_unique_and_increase() -> None:
    ids = [new_node_id() for _ in range(50_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)


def test_neighbouring_node_ids_share_no_random_bits() -> None:
    # Issue 22: with a per-process salt, an erased node's id was recomputed from its neighbours.
    ids = [new_node_id() for _ in range(2_000)]
    # The last 12 hex digits were one salt for the whole process; now they are fresh per id.
    assert len({i[-12:] for i in ids}) == len(ids)


def test_a_forked_process_gets_its_own_salt() -> None:
    parent = new_node_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report one id and leave at once
        os.write(write, new_node_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 100).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child[-16:] != parent[-16:]


def test_person_ids_are_random_and_unordered() -> None:
    ids = [new_person_id() for _ in range(1_000)]
    assert len(set(ids)) == len(ids)
    assert ids != sorted(ids)


def test_node_and_fact_ids_keep_their_shape_time_and_counter_fields() -> None:
    # The ids are built by one hex conversion of packed bytes: the same string as the format
    # n_{millis:012x}{counter:06x}{16 random hex} (f_: {counter:04x}, 8 random hex).
    before = time.time_ns() // 1_000_000
    nodes = [new_node_id() for _ in range(3)]
    facts = [new_fact_id() for _ in range(3)]
    after = time.time_ns() // 1_000_000
    for node in nodes:
        assert re.fullmatch(r"n_[0-9a-f]{34}", node)
        assert before <= int(node[2:14], 16) <= after
    for fact in facts:
        assert re.fullmatch(r"f_[0-9a-f]{24}", fact)
        assert before <= int(fact[2:14], 16) <= after
    # Consecutive ids of this process: the counter field counts up (modulo its width).
    first, second = int(nodes[0][14:20], 16), int(nodes[1][14:20], 16)
    assert second == (first + 1) % 0x1000000
    first, second = int(facts[0][14:18], 16), int(facts[1][14:18], 16)
    assert second == (first + 1) % 0x10000
