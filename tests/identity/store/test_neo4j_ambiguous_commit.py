"""A commit whose outcome the driver cannot know, on a live Neo4j: nothing lost, nothing twice,
and the audit says what landed.

Group commit writes several callers' batches in one transaction; when that transaction fails it
writes each batch again alone, which is right only if the failed transaction wrote nothing. A
lost connection *during* COMMIT breaks that premise: the server may have committed, and the
driver can only say so (``IncompleteCommit``). A TCP proxy between the service and the live
Neo4j makes that happen for real: it passes one COMMIT to the server, waits for the server's
answer (which carries the committed transaction's bookmark: the commit happened), and then cuts
the connection instead of passing the answer on; or it never passes the COMMIT on and cuts
(the server rolls the transaction back).

The store settles the doubt (the commit token on the writer lock node, read under the same
lock once the transaction in doubt has ended): a commit that landed returns its outcomes, so the
service appends the ``consent.recorded`` entries of the consent records it stored (it used to
answer 503 ``commit-outcome-unknown``, and the client's resend, a message-id duplicate, stored
nothing and audited nothing: consent records without their entries); one that rolled back is
written again.

Runs in `make test-neo4j` (a throwaway local Neo4j, NEO4J_URI set); skipped with the reason
otherwise, like the other live Neo4j tests.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from neo4j import GraphDatabase

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.group_commit import GroupCommitter
from identity.model import Outcome
from services.inputs import IdentifyRequest
from tests.conftest import POLICY_DIR, open_neo4j_test_store
from tests.support.neo4j_env import SKIP_REASON, live_neo4j_settings

pytestmark = pytest.mark.neo4j

# A Bolt COMMIT message: a chunk of 2 bytes (struct marker B0, signature 12), then the end marker.
_COMMIT = b"\x00\x02\xb0\x12\x00\x00"
# The server's SUCCESS to a COMMIT carries the new bookmark; no answer inside a transaction does.
_BOOKMARK = b"bookmark"
LONG_LINGER = 3600.0  # the group's writer waits for the second batch: its arrival ends the wait


class _CommitCutter:
    """A TCP proxy to Neo4j that, once armed, cuts the connection of the next COMMIT right after
    the server answered it (so the transaction is committed and the driver never hears it)."""

    def __init__(self, host: str, port: int) -> None:
        self._upstream = (host, port)
        # Never pass the armed COMMIT on: cut the connection instead (the server rolls back).
        self.drop_commit = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._armed = threading.Event()
        self.cut = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self) -> None:
        """Cut the next COMMIT's connection (once)."""
        self._armed.set()

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                _close(sock)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._upstream)
            with self._lock:
                self._sockets += [client, upstream]
            committing = threading.Event()
            threading.Thread(
                target=self._to_server, args=(client, upstream, committing), daemon=True
            ).start()
            threading.Thread(
                target=self._to_client, args=(upstream, client, committing), daemon=True
            ).start()

    def _to_server(self, client: socket.socket, upstream: socket.socket, committing: Any) -> None:
        tail = b""
        while data := _recv(client):
            seen = tail + data
            if _COMMIT in seen and self._armed.is_set() and not self.cut.is_set():
                with self._lock:
                    if self._armed.is_set():
                        self._armed.clear()
                        committing.set()
                if committing.is_set() and self.drop_commit:
                    # What came before the COMMIT goes on; the COMMIT never reaches the server.
                    with suppress(OSError):
                        upstream.sendall(data[: max(seen.find(_COMMIT) - len(tail), 0)])
                    _close(client)
                    _close(upstream)
                    self.cut.set()
                    return
            tail = seen[-(len(_COMMIT) - 1) :]
            try:
                upstream.sendall(data)
            except OSError:
                break
        _close(upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket, committing: Any) -> None:
        tail = b""
        while data := _recv(upstream):
            seen = tail + data
            if committing.is_set() and _BOOKMARK in seen:
                # Committed on the server; the driver gets a closed socket instead of the answer.
                _close(client)
                _close(upstream)
                self.cut.set()
                return
            tail = seen[-(len(_BOOKMARK) - 1) :]
            try:
                client.sendall(data)
            except OSError:
                break
        _close(client)


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _close(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


def _where() -> dict[str, str]:
    return live_neo4j_settings() or pytest.skip(SKIP_REASON)


@contextmanager
def _service_behind_cutter(tmp_path: Path) -> Iterator[tuple[Any, _CommitCutter]]:
    """The real container on the live Neo4j (emptied), its graph reached through the cutter."""
    where = _where()
    open_neo4j_test_store(wipe=True).close()
    address = urlsplit(where["uri"])
    with ExitStack() as stack:
        cutter = _CommitCutter(address.hostname or "127.0.0.1", address.port or 7687)
        stack.callback(cutter.close)
        container = build_container(
            Settings(
                env="test",
                data_dir=tmp_path / "data",
                policy_dir=POLICY_DIR,
                store_url=f"bolt://127.0.0.1:{cutter.port}",
                neo4j_user=where["user"],
                neo4j_password=where["password"],
                neo4j_database=where["database"],
            )
        )
        stack.callback(container.close)
        yield container, cutter


def _count(query: str) -> int:
    where = _where()
    with GraphDatabase.driver(where["uri"], auth=(where["user"], where["password"])) as driver:
        records, _, _ = driver.execute_query(query, database_=where["database"])
        return int(records[0]["n"])


def _batch(name: str, *, message_ids: bool) -> list[IdentifyRequest]:
    return [
        IdentifyRequest.model_validate(
            {
                "identifiers": [{"type": "cookie_id", "value": f"ck-cut-{name}-{k}"}],
                "source": "web",
                "events": [{"name": "purchase"}],
                **({"message_id": f"msg-cut-{name}-{k}"} if message_ids else {}),
            }
        )
        for k in range(2)
    ]


def _outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - compared by the test
        return exc


GPC = b"Sec-GPC: 1 (the request that carried it)"


def _consent_entries(container: Any) -> int:
    return sum(e.action == "consent.recorded" for e in container.audit.entries())


def _group_through_cutter(container: Any, cutter: _CommitCutter) -> list[Any]:
    """Two batches (GPC opt-outs: consent records) written in one group transaction whose
    COMMIT goes through the armed cutter; each caller's result or exception."""
    service = container.ingest
    # The service's own committer, with a linger no test outlasts: the first batch's writer
    # waits for the second one, and both go in one transaction (one COMMIT).
    service._batch_group = GroupCommitter(
        service._ingest_batches, max_group=8, linger_s=LONG_LINGER
    )
    # One client sends message ids (a repeat is then recognised), one does not.
    with_ids, without_ids = _batch("ids", message_ids=True), _batch("bare", message_ids=False)
    arrivals = [service.announce_batch(), service.announce_batch()]
    cutter.arm()
    calls = [
        partial(service.ingest, batch, actor="t", gpc_proof=GPC, arrival=arrival)
        for batch, arrival in zip((with_ids, without_ids), arrivals, strict=True)
    ]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(_outcome, calls, timeout=120))


def _written_once_and_audited(container: Any, results: list[Any]) -> int:
    """Each caller got its outcomes (new persons, consent records stored), the graph holds each
    of the 4 events once, and every consent record has exactly one ``consent.recorded`` entry.
    Returns how many consent records there are."""
    for result in results:
        assert not isinstance(result, Exception), result
        assert [o.outcome for o in result] == [Outcome.CREATED, Outcome.CREATED]
        assert all(o.consents_recorded for o in result)
    assert _count("MATCH (:Identifier) RETURN count(*) AS n") == 4
    assert _count("MATCH (:Person) RETURN count(*) AS n") == 4
    assert _count("MATCH (f:Fact {kind: 'event'}) RETURN count(f) AS n") == 4
    consents = _count("MATCH (c:Consent) RETURN count(c) AS n")
    assert consents >= 4
    assert _consent_entries(container) == consents
    return consents


def test_a_group_whose_commit_answer_is_lost_returns_what_landed_and_audits_it_once(
    tmp_path: Path,
) -> None:
    with _service_behind_cutter(tmp_path) as (container, cutter):
        results = _group_through_cutter(container, cutter)

        assert cutter.cut.is_set()
        # The commit landed: each caller gets its outcomes, as if the answer had arrived; the
        # shared transaction committed once; each consent record it stored is audited once.
        consents = _written_once_and_audited(container, results)

        # A client that resends anyway (message ids): recognised, nothing written or audited.
        again = container.ingest.ingest(_batch("ids", message_ids=True), actor="t", gpc_proof=GPC)
        assert [o.outcome for o in again] == [Outcome.DUPLICATE, Outcome.DUPLICATE]
        assert _count("MATCH (f:Fact {kind: 'event'}) RETURN count(f) AS n") == 4
        assert _count("MATCH (c:Consent) RETURN count(c) AS n") == consents
        assert _consent_entries(container) == consents
        assert container.audit.verify().ok


def test_a_group_whose_commit_never_reached_the_server_is_written_once_and_audited(
    tmp_path: Path,
) -> None:
    with _service_behind_cutter(tmp_path) as (container, cutter):
        cutter.drop_commit = True
        results = _group_through_cutter(container, cutter)

        assert cutter.cut.is_set()
        # Rolled back on the server: written again (one transaction), nothing twice.
        _written_once_and_audited(container, results)
        assert container.ingest._batch_group.groups == 1  # settled inside the store's write
