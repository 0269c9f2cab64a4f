"""Microbench of the resolution engine's in-batch union-find (``_BatchState.find``).

Usage (from the repository root)::

    .venv/bin/python bench/union_find.py [--persons 20000] [--rounds 5] [--seed 7]

Workload: ``--persons`` person ids joined one after another the way a batch of events that each
link two persons joins them (``parent[root of the new person] = survivor``; here the survivor
is always the later person, which builds the deepest paths), then ``--rounds`` rounds of
``find`` over every person in shuffled order. Rows, same run, same data:

* ``old find``: the code before this fix, whose tuple assignment repointed the *ancestor* of each
  node on the path instead of the node itself;
* ``find``: :meth:`identity.resolution._BatchState.find` (every node on the path repointed);

each with wall seconds, CPU seconds, load before/after, and the pointer hops walked (the
deterministic figure: it does not depend on the machine). ``ratio`` = find ÷ old find.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.measure import measured, ratio
from identity.resolution import _BatchState


def _old_find(parent: dict[str, str], person: str) -> str:
    root = person
    while parent.get(root, root) != root:
        root = parent[root]
    while person != root:  # the pre-fix compression, verbatim
        person, parent[person] = parent[person], root
    return root


def _workload(
    find: Callable[[str], str], state: _BatchState, ids: list[str], rounds: int, seed: int
) -> None:
    rng = random.Random(seed)
    for a, b in itertools.pairwise(ids):
        root_a, root_b = find(a), find(b)
        if root_a != root_b:
            state.parent[root_a] = root_b
    order = ids[:]
    for _ in range(rounds):
        rng.shuffle(order)
        for person in order:
            find(person)


def _finder(state: _BatchState, new: bool, hops: list[int] | None) -> Callable[[str], str]:
    parent = state.parent
    real: Callable[[str], str] = state.find if new else (lambda p: _old_find(parent, p))
    if hops is None:
        return real

    def counting(person: str) -> str:
        node = person
        while parent.get(node, node) != node:
            node = parent[node]
            hops[0] += 1
        return real(person)

    return counting


def _run(persons: int, rounds: int, seed: int, new: bool) -> dict[str, object]:
    ids = [f"p{i}" for i in range(persons)]
    state = _BatchState()
    find = _finder(state, new, None)
    with measured() as span:
        _workload(find, state, ids, rounds, seed)
    roots = {find(p) for p in ids}
    assert roots == {ids[-1]}, roots  # noqa: S101 - a wrong root is a bug, never expected
    # The hops, in a second untimed pass over the same data (counting costs time).
    counted = _BatchState()
    hops = [0]
    _workload(_finder(counted, new, hops), counted, ids, rounds, seed)
    return {**span.as_json(), "hops": hops[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--persons", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    old = _run(args.persons, args.rounds, args.seed, new=False)
    new = _run(args.persons, args.rounds, args.seed, new=True)
    report = {
        "persons": args.persons,
        "rounds": args.rounds,
        "old_find": old,
        "find": new,
        "ratios": {
            "cpu_seconds": ratio(float(str(new["cpu_seconds"])), float(str(old["cpu_seconds"]))),
            "hops": ratio(float(str(new["hops"])), float(str(old["hops"]))),
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
