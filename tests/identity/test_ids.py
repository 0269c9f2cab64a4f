"""Opaque ids: node ids unique and time-ordered (also across a fork), person ids random."""

from __future__ import annotations

import os

from identity.model import new_node_id, new_person_id


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
