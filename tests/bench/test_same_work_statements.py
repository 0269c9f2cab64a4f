"""The same-work floor of ``bench/ingest.py`` writes in the store's own statement forms (stop 46).

The real path's bulk writes are multi-row ``INSERT``s and set-based ``UPDATE ... FROM (VALUES
...)`` statements (``storage.sqlite.insert_rows`` / ``run_with_rows``); a floor that ran one
``executemany`` step per row paid a per-row overhead the real path does not (its facts insert
cost ~2.8x the real path's CPU for the same rows at 1M identifiers) and so flattered the ratio.
These tests count the statements the floor runs (SQLite's trace callback sees every step of an
``executemany`` as a statement) and check that the rows written are still the right ones.

The trace callback reports a statement again at the start of every trigger program it runs
(the store's audience triggers fire per row), always with the same expanded text (values
included), so statements are counted as distinct texts: two executions that insert or update
different rows bind different values.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench import ingest

PERSONS = 400
SEED = 20261206
WRITES = (
    "INSERT INTO persons",
    "INSERT INTO identifiers",
    "INSERT INTO links",
    "INSERT INTO facts",
    "INSERT INTO seen_messages",
    "INSERT INTO data_keys",
    "UPDATE identifiers",
    "UPDATE persons",
    "DELETE FROM persons",
)


def _write_kind(statement: str) -> str | None:
    text = " ".join(statement.split())
    return next((kind for kind in WRITES if text.startswith(kind)), None)


def _millis(timestamp: str) -> int:
    return int(datetime.fromisoformat(timestamp).timestamp() * 1000)


@pytest.fixture
def floor_run(tmp_path: Path) -> dict[str, Any]:
    """The floor's two batches over a generated file: the statements run and the stored rows.

    Two batches, so that the second touches identifiers and persons the first one wrote
    (second events, bridging events of split persons, conflict events that merge persons)."""
    data = tmp_path / ingest.DATA_FILE
    summary = ingest.write_data(data, PERSONS, SEED, attributes=3)
    ingest.create_key(tmp_path)
    events = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    half = len(events) // 2
    floor = ingest._SameWork(tmp_path, "NORMAL")
    statements: set[tuple[str, bytes]] = set()

    def traced(statement: str) -> None:
        kind = _write_kind(statement)
        if kind is not None:
            statements.add((kind, hashlib.sha256(statement.encode()).digest()))

    floor.graph.set_trace_callback(traced)
    floor.vault.set_trace_callback(traced)
    try:
        floor.batch(events[:half], 1)
        floor.batch(events[half:], half + 1)
        floor.graph.set_trace_callback(None)
        floor.vault.set_trace_callback(None)
        keyed = floor.keyed
        graph = sqlite3.connect(tmp_path / "same-work" / "graph.sqlite3")
        try:
            stored = floor.counts()
            identifiers = {
                bytes(digest): (first, last, person)
                for digest, first, last, person in graph.execute(
                    "SELECT digest, first_seen, last_seen, person FROM identifiers"
                )
            }
            persons = dict(graph.execute("SELECT pk, last_seen FROM persons"))
            broken_keys = graph.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            graph.close()
    finally:
        floor.close()

    def digest(kind: str, value: str) -> bytes:
        mac = keyed.copy()
        mac.update(f"{kind}:{value}".encode())
        return mac.digest()

    return {
        "summary": summary,
        "events": events,
        "half": half,
        "statements": statements,
        "stored": stored,
        "identifiers": identifiers,
        "persons": persons,
        "broken_keys": broken_keys,
        "digest": digest,
    }


def test_the_same_work_floor_writes_many_rows_per_statement_when_a_batch_holds_hundreds(
    floor_run: dict[str, Any],
) -> None:
    runs = Counter(kind for kind, _ in floor_run["statements"])
    stored = floor_run["stored"]
    rows = {
        "INSERT INTO identifiers": stored["identifiers"],
        "INSERT INTO facts": stored["facts"],
        "INSERT INTO seen_messages": stored["seen_messages"],
        "INSERT INTO links": stored["links"],
    }
    for kind, count in rows.items():
        assert count >= PERSONS, (kind, count)
        # insert_rows sends a batch's n rows as at most n.bit_length() statements (power-of-two
        # row counts); one executemany step per row would be `count` statements.
        assert 1 <= runs[kind] <= 2 * count.bit_length(), (kind, runs[kind], count)
    # Every person's email and phone anchor gets a data key, stored in the key file the same way.
    assert 1 <= runs["INSERT INTO data_keys"] <= 2 * (2 * PERSONS).bit_length()
    # The second batch's updates of rows the first wrote are set-based too.
    for kind in ("UPDATE identifiers", "UPDATE persons"):
        assert 1 <= runs[kind] <= 2 * 2 * PERSONS.bit_length(), (kind, runs[kind])
    assert runs["DELETE FROM persons"] <= 1  # the absorbed persons of the batch, in one IN list


def test_the_same_work_floor_stores_the_rows_of_the_file_when_written_set_based(
    floor_run: dict[str, Any],
) -> None:
    summary, stored = floor_run["summary"], floor_run["stored"]
    assert summary.split_persons > 0
    assert summary.conflict_events > 0
    assert stored["identifiers"] == summary.distinct_identifiers
    # The kept raw values (email, phone) of every person, and every trait.
    assert stored["facts"] == 2 * PERSONS + summary.attribute_values
    assert stored["seen_messages"] == summary.events
    # A star per person, and one more link per conflict event (the floor merges those).
    assert stored["links"] == 3 * PERSONS + summary.conflict_events
    assert floor_run["broken_keys"] == []
    identifiers, persons = floor_run["identifiers"], floor_run["persons"]
    # Absorbed persons were deleted, survivors kept: every person holds an identifier, and
    # every identifier's person exists.
    assert set(persons) == {person for _, _, person in identifiers.values()}

    # An identifier written by the first batch and named again in the second has the second
    # batch's latest time as its last_seen (the set-based UPDATE matched its own row).
    events, half, digest = floor_run["events"], floor_run["half"], floor_run["digest"]
    first_batch = {
        (item["type"], item["value"]) for event in events[:half] for item in event["identifiers"]
    }
    later: dict[bytes, int] = {}
    for event in events[half:]:
        for item in event["identifiers"]:
            if (item["type"], item["value"]) in first_batch:
                key = digest(item["type"], item["value"])
                later[key] = max(later.get(key, 0), _millis(event["timestamp"]))
    assert later  # second events and bridges of persons the first batch created
    for key, at in later.items():
        assert identifiers[key][1] == at
    # A person is last seen no earlier than any of its identifiers (the persons' set-based
    # UPDATE moved the persons the second batch touched).
    latest: dict[int, int] = {}
    for _, last, person in identifiers.values():
        latest[person] = max(latest.get(person, 0), last)
    assert all(persons[person] >= last for person, last in latest.items())


class _RecordedDraws:
    """bench/ingest.py's ``os`` with its ``urandom`` draws recorded (the draws stay real)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def urandom(self, size: int) -> bytes:
        self.sizes.append(size)
        return os.urandom(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def test_the_floor_draws_a_batchs_data_keys_and_nonces_in_one_call_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The vault draws a batch's data keys and wrap nonces in one call each; the floor drew two
    # per key (a getrandom syscall each: ~4 s more kernel CPU than the real path at 1M, which
    # flattered the real path's ratio).
    data = tmp_path / ingest.DATA_FILE
    ingest.write_data(data, PERSONS, SEED)
    ingest.create_key(tmp_path)
    events = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    floor = ingest._SameWork(tmp_path, "NORMAL")
    draws = _RecordedDraws()
    monkeypatch.setattr(ingest, "os", draws)
    try:
        floor.batch(events, 1)
    finally:
        monkeypatch.undo()
        floor.close()
    with sqlite3.connect(tmp_path / "same-work" / "vault-keys.sqlite3") as conn:
        keys = conn.execute("SELECT count(*) FROM data_keys").fetchone()[0]
    assert keys > PERSONS  # one per sealed identifier: many keys in this one batch
    # the data keys, their wrap nonces, the sealed values' nonces: one draw each
    assert len(draws.sizes) == 3
    assert 32 * keys in draws.sizes
    assert ingest.NONCE_BYTES * keys in draws.sizes
