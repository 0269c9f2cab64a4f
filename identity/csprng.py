"""Random bytes from the OS CSPRNG for ids, drawn a block at a time.

Why blocks: every ``os.urandom`` call releases the GIL around its ``getrandom`` system call.
A bulk batch makes ~40,000 ids (persons, nodes, facts) on the thread that commits it while
another thread reads and validates the next batch; each release let that thread take the GIL,
and the committing thread then waited for it to be handed back (up to the switch interval):
at 100k identifiers ~126,000 such releases were ~15 % of the commit thread's time under
cProfile (stop 40). One ``getrandom`` per block of ids removes all but a few hundred of them.

Why it is as good as a call per id (the ids' privacy properties rest on it, see
:func:`identity.model.new_node_id`): the kernel's CSPRNG output is computationally
indistinguishable from independent random bits, whether taken as one string or many, so the
slices of one block are as independent of each other as separate draws (the argument
``privacy.audit_refs`` makes for its references). Each slice is handed out once:

* **threads**: every thread has its own blocks (:class:`threading.local`), so no two threads
  can take the same slice and no lock is needed (a lock shared by the bulk reader and writer
  would bring back the hand-overs this module removes);
* **signal handlers**: a slice is taken by one ``next()`` on a C iterator, which a handler
  running between two bytecodes cannot split; a handler that refills meanwhile only makes the
  interrupted draw drop the rest of its block, never reuse it;
* **fork**: a child process drops every block it inherited (``os.register_at_fork``), so parent
  and child never hand out the same bytes.

Unused bytes of a block stay in the process's memory until used or dropped (4 KiB per size per
thread): no more exposure than the ids themselves, which the process holds anyway, and nothing
that a reader of the process's memory could not get from the keys it also holds.
Key material and AES-GCM nonces are not drawn here: they keep their own ``os.urandom`` calls
(one per batch already).
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from typing import Any

BLOCK_BYTES = 4096  # one getrandom call per 4 KiB of ids (e.g. 512 node ids)


class _Blocks(threading.local):
    """This thread's current block per draw size: an iterator over its unused slices."""

    def __init__(self) -> None:
        self.by_size: dict[int, Iterator[tuple[Any, ...]]] = {}


_blocks = _Blocks()


def _forget_inherited_blocks() -> None:
    # In a forked child: the parent may still hand out the rest of these blocks.
    global _blocks  # noqa: PLW0603 - replaced whole, so no thread can reach the old blocks
    _blocks = _Blocks()


os.register_at_fork(after_in_child=_forget_inherited_blocks)


def random_bytes(size: int) -> bytes:
    """``size`` bytes from the OS CSPRNG, never handed out before in this process (see the
    module docstring for why a block per many calls is as good as a call each)."""
    by_size = _blocks.by_size
    draw: bytes
    try:
        (draw,) = next(by_size[size])
    except (KeyError, StopIteration):
        if size < 1:
            raise ValueError("random_bytes needs a positive size") from None
        block = by_size[size] = struct.iter_unpack(
            f"{size}s", os.urandom(size * max(1, BLOCK_BYTES // size))
        )
        (draw,) = next(block)
    return draw
