"""Concurrent writes keep the graph whole: on SQLite always, on the live Neo4j in `make test-neo4j`.

Many threads call the real API (or the real engine) at once with events that share identifiers.
Whatever the interleaving: no 500, one person per connected cluster, no identifier without its
person and no person without identifiers, no link between two persons, ``max_per_person`` never
exceeded, and every acknowledged link present. The checks read the graph only through the store
port, so the same test judges both backends (Neo4j: the writer lock of identity/store/neo4j.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from identity.model import IdentityEvent, MemberScan, Outcome
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.auditing.log import SqliteAuditLog
from privacy.dsr.erasure import ErasureService
from privacy.keys.vault import Vault
from tests.conftest import T0, Api, Ids

WORKERS = 16  # threads posting at once (the app's thread pool serves them concurrently)


def _identify(api: Api, identifiers: list[tuple[str, str]]) -> Any:
    return api.client.post(
        "/v1/identify",
        json={
            "identifiers": [{"type": t, "value": v} for t, v in identifiers],
            "source": "web",
        },
        headers=api.ingest,
    )


def _all_at_once(calls: Sequence[Callable[[], Any]]) -> list[Any]:
    """Run ``calls`` on WORKERS threads, all released together; their results in order."""
    go = threading.Event()

    def run(call: Callable[[], Any]) -> Any:
        go.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(WORKERS) as pool:
        futures = [pool.submit(run, call) for call in calls]
        go.set()
        return [future.result() for future in futures]


def _clusters(store: GraphStore, policy: IdentityPolicy) -> dict[str, dict[str, Any]]:
    """Every person's cluster, after checking the graph-wide invariants."""

    def read(tx: GraphTransaction) -> dict[str, dict[str, Any]]:
        persons: list[str] = []
        cursor = ""
        while (page := tx.member_page(MemberScan(), cursor, 500)).scanned:
            persons += [row.person_id for row in page.rows]
            cursor = page.last_person_id
        found: dict[str, dict[str, Any]] = {}
        counts = tx.type_counts(persons)
        for person_id in persons:
            cluster = tx.cluster(person_id)
            nodes = {n.node_id for n in cluster.nodes}
            assert nodes, f"{person_id} holds no identifier"
            for link in cluster.links:
                assert {link.a, link.b} <= nodes, f"a link leaves {person_id}'s cluster"
            for identifier_type, count in counts.get(person_id, {}).items():
                limit = policy.types[identifier_type].max_per_person
                assert count <= limit, f"{person_id} holds {count} {identifier_type} (max {limit})"
            found[person_id] = {"nodes": nodes, "counts": counts.get(person_id, {})}
        return found

    clusters = store.read(read)
    stats = store.stats()
    assert stats.persons == len(clusters)
    # Every identifier node is in exactly one person's cluster: none orphaned, none shared.
    all_nodes = [n for c in clusters.values() for n in c["nodes"]]
    assert len(all_nodes) == len(set(all_nodes)) == stats.identifiers
    return clusters


def _idfa(i: int) -> str:
    return f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}"


def _person(api: Api, identifier_type: str, value: str) -> str | None:
    response = api.client.post(
        "/v1/resolve",
        json={"identifier": {"type": identifier_type, "value": value}},
        headers=api.resolve,
    )
    assert response.status_code in (200, 404), response.text
    return response.json()["person_id"] if response.status_code == 200 else None


def test_concurrent_identify_calls_sharing_an_email_end_as_one_person(api: Api) -> None:
    calls = [
        partial(_identify, api, [("email", "shared@conc.shop.de"), ("cookie_id", f"ck-{i}")])
        for i in range(50)
    ]
    responses = _all_at_once(calls)

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    clusters = _clusters(api.container.store, api.container.identity_policy)
    assert len(clusters) == 1
    (cluster,) = clusters.values()
    assert cluster["counts"] == {"email": 1, "cookie_id": 50}
    assert sorted(r.json()["outcome"] for r in responses).count("created") == 1


def test_fifty_persons_merge_into_one_through_one_email_sent_concurrently(api: Api) -> None:
    for i in range(50):
        assert _identify(api, [("cookie_id", f"m-{i}"), ("anonymous_id", f"a-{i}")]).is_success
    assert len(_clusters(api.container.store, api.container.identity_policy)) == 50

    responses = _all_at_once(
        [
            partial(_identify, api, [("email", "hub@conc.shop.de"), ("cookie_id", f"m-{i}")])
            for i in range(50)
        ]
    )

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    clusters = _clusters(api.container.store, api.container.identity_policy)
    assert len(clusters) == 1
    (cluster,) = clusters.values()
    assert cluster["counts"] == {"email": 1, "cookie_id": 50, "anonymous_id": 50}
    hub = _person(api, "email", "hub@conc.shop.de")
    assert hub is not None
    assert {_person(api, "anonymous_id", f"a-{i}") for i in range(50)} == {hub}


def test_a_ring_of_pairwise_links_sent_concurrently_closes_into_one_person(api: Api) -> None:
    for i in range(50):
        assert _identify(api, [("cookie_id", f"r-{i}")]).is_success

    responses = _all_at_once(
        [
            partial(_identify, api, [("cookie_id", f"r-{i}"), ("cookie_id", f"r-{(i + 1) % 50}")])
            for i in range(50)
        ]
    )

    assert [r.status_code for r in responses] == [200] * 50, [r.text for r in responses]
    clusters = _clusters(api.container.store, api.container.identity_policy)
    assert len(clusters) == 1
    assert next(iter(clusters.values()))["counts"] == {"cookie_id": 50}


def test_max_per_person_holds_and_every_acknowledged_link_is_present_under_concurrency(
    api: Api,
) -> None:
    # idfa allows 10 per person: 30 concurrent events each bring one more to the same person.
    responses = _all_at_once(
        [
            partial(_identify, api, [("email", "cap@conc.shop.de"), ("idfa", _idfa(i))])
            for i in range(30)
        ]
    )

    assert [r.status_code for r in responses] == [200] * 30, [r.text for r in responses]
    refused = sum(len(r.json()["refused"]) for r in responses)
    clusters = _clusters(api.container.store, api.container.identity_policy)
    assert len(clusters) == 1
    (cluster,) = clusters.values()
    assert cluster["counts"] == {"email": 1, "idfa": 10}
    assert refused == 20  # each refusal acknowledged as such; every other idfa was linked
    person = _person(api, "email", "cap@conc.shop.de")
    linked = [i for i, r in enumerate(responses) if not r.json()["refused"]]
    assert {_person(api, "idfa", _idfa(i)) for i in linked} == {person}


def test_erasure_racing_ingest_of_the_same_person_leaves_a_consistent_graph(
    store: GraphStore,
    engine: ResolutionEngine,
    vault: Vault,
    ids: Ids,
    policy: IdentityPolicy,
    tmp_path: Path,
) -> None:
    audit = SqliteAuditLog(tmp_path / "audit.sqlite3")
    service = ErasureService(store, vault, engine.keyring, audit)
    email = ids("email", "ann@erase.conc.shop.de")
    engine.ingest([IdentityEvent((email, ids("customer_id", "C-ANN")), "web", T0)])
    outcomes: list[tuple[str, Outcome, str | None]] = []
    lock = threading.Lock()

    def ingest(thread: int) -> None:
        for i in range(15):
            cookie = f"ck-race-{thread}-{i}"
            event = IdentityEvent(
                (email, ids("cookie_id", cookie)), "web", T0 + timedelta(seconds=i)
            )
            (outcome,) = engine.ingest([event])
            with lock:
                outcomes.append((cookie, outcome.outcome, outcome.person_id))

    calls: list[Callable[[], Any]] = [partial(ingest, t) for t in range(4)]
    calls.insert(2, partial(service.erase, [email], "race-1", "cli"))
    _all_at_once(calls)
    audit.close()

    assert engine.resolve(email) is None
    after: list[str] = []
    for cookie, outcome, person_id in outcomes:
        found = engine.resolve(ids("cookie_id", cookie))
        if outcome is Outcome.CREATED:  # after the erasure: the email was refused
            assert found == person_id
            after.append(found or "")
        else:  # before: linked to Ann and erased with her
            assert outcome is Outcome.LINKED
            assert found is None
    clusters = _clusters(store, policy)
    assert set(clusters) == set(after)
    assert all(c["counts"] == {"cookie_id": 1} for c in clusters.values())
    assert store.read(lambda tx: tx.pending_erasures()) == []
