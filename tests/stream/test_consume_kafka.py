"""``idgraph consume`` on a real broker: end to end, dead letters, SIGKILL, rebalance, erasure.

The worker runs in-process (end to end, dead letters, erasure) or as the real ``idgraph consume``
command in child processes (SIGKILL, rebalance), on the real SQLite store of a temp data dir.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from identity import outbound
from identity.hashing import Keyring
from privacy.dsr.erasure import ErasureService
from stream.metrics import StreamMetrics
from stream.worker import StreamWorker, WorkerConfig
from tests.conftest import POLICY_DIR

from .conftest import TopicFactory
from .kafka_support import identify_record, produce, read_all

pytestmark = pytest.mark.kafka
# Seconds; a net for a hang while waiting on a condition, never an assertion about speed (CI
# runs on two loaded cores, and each consumer child imports the whole service first).
WAIT_NET_S = 600
# How long a frozen broker is left frozen while the worker should go on without it (a net for
# a worker that waits for it, never an assertion about speed: going on takes a second or two).
FROZEN_NET_S = 60

from bootstrap.container import Container  # noqa: E402
from tests.support.containers import opened_container  # noqa: E402


def _env(data_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "IDGRAPH_ENV": "test",
        "IDGRAPH_DATA_DIR": str(data_dir),
        "IDGRAPH_POLICY_DIR": str(POLICY_DIR),
        "IDGRAPH_DEFAULT_REGION": "GB",
        "IDGRAPH_OUTBOUND_EVENTS": "true",
        "IDGRAPH_LOG_LEVEL": "warning",
    }


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with opened_container(tmp_path / "data", outbound_events=True) as built:
        yield built


def _identify(email: str, message_id: str | None = None, *, page_view: bool = False) -> bytes:
    events = {"events": [{"name": "page_view"}]} if page_view else {}
    return identify_record(email, message_id, source="web", **events)


def _worker(
    container: Container,
    bootstrap: str,
    topics: list[str],
    dlq: str,
    *,
    publish: dict[str, str] | None = None,
    batch_size: int = 100,
    group: str | None = None,
    poll_timeout_s: float = 0.5,
    client_config: dict[str, str] | None = None,
    wrap_ingest: Callable[[Any], Any] = lambda ingest: ingest,
) -> tuple[StreamWorker, StreamMetrics]:
    """A worker on the container's ingest (``wrap_ingest`` may put a test double's hook around
    the real one) and its metrics."""
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers=bootstrap,
        group_id=group or f"g-{topics[0]}",
        topics=tuple(topics),
        dead_letter_topic=dlq,
        source="sdk",
        batch_size=batch_size,
        poll_timeout_s=poll_timeout_s,
        client_config=client_config or {},
    )
    worker = StreamWorker(
        config,
        wrap_ingest(container.ingest.with_metrics(metrics)),
        container.store,
        container.engine.message_digest,
        metrics,
        publish_topics=publish,
    )
    return worker, metrics


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    # The group coordinator can answer NOT_COORDINATOR or be loading right after a member was
    # killed, and a loaded broker can let the request time out; those are retriable, so the
    # probe retries them (until a net that only catches a broker that stopped answering).
    deadline = time.monotonic() + WAIT_NET_S
    while True:
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        try:
            offsets = consumer.committed(
                [TopicPartition(topic, p) for p in range(partitions)], timeout=30
            )
            return sum(max(0, tp.offset) for tp in offsets)
        except KafkaException as exc:
            error = exc.args[0]
            transient = error.retriable() or error.code() == KafkaError._TIMED_OUT
            if not transient or time.monotonic() > deadline:
                raise
            time.sleep(0.25)
        finally:
            consumer.close()


def test_records_of_every_shape_are_resolved_and_their_offsets_committed(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("ingest", 3), new_topic("dlq")
    segment_identify = {
        "type": "identify",
        "messageId": "seg-1",
        "anonymousId": "anon-7",
        "traits": {"email": "ann@e2e.example"},
    }
    segment_track = {
        "type": "track",
        "event": "Page View",
        "anonymousId": "anon-7",
        "messageId": "seg-2",
    }
    produce(
        kafka_bootstrap,
        topic,
        [
            _identify("ann@e2e.example", "api-1"),
            json.dumps(segment_identify).encode(),
            json.dumps(segment_track).encode(),
        ],
        keys=[b"ann", b"ann", b"ann"],
    )
    worker, metrics = _worker(container, kafka_bootstrap, [topic], dlq)
    summary = worker.run(idle_exit_s=3)
    assert (summary["records"], summary["applied"], summary["dead_letters"]) == (3, 3, 0)
    person = container.links.resolve(("email", "ann@e2e.example"))
    assert person == container.links.resolve(("anonymous_id", "anon-7"))
    # The email kept in the vault (keep_raw) and the track call's page view.
    assert container.store.stats().facts == 2
    assert _committed(kafka_bootstrap, worker.config.group_id, topic, 3) == 3
    assert metrics.records.labels(topic, "applied")._value.get() == 3
    # A second group member starting from the committed offsets finds nothing to do.
    again, _ = _worker(container, kafka_bootstrap, [topic], dlq)
    assert again.run(idle_exit_s=2)["records"] == 0


def test_the_idle_exit_waits_for_records_a_slow_fetch_has_not_returned_yet(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    """A catch-up run (``--exit-when-idle``) leaves only when it has read every assigned
    partition to its end. The broker here holds each fetch for 4 s (it waits for more bytes
    than there are), as a loaded broker may be slow to answer: a quiet spell alone would make
    the run exit 0 with its backlog unread (what a 3 s idle exit could do in CI)."""
    topic, dlq = new_topic("slow-fetch"), new_topic("dlq")
    produce(kafka_bootstrap, topic, [_identify("fi@slow.example", "s-1")])
    worker, _ = _worker(
        container,
        kafka_bootstrap,
        [topic],
        dlq,
        poll_timeout_s=0.2,
        client_config={"fetch.min.bytes": "100000000", "fetch.wait.max.ms": "4000"},
    )
    summary = worker.run(idle_exit_s=0.5)
    assert (summary["records"], summary["applied"]) == (1, 1)
    assert _committed(kafka_bootstrap, f"g-{topic}", topic, 1) == 1


def test_a_poison_record_is_dead_lettered_by_reference_and_its_partition_keeps_flowing(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    produce(
        kafka_bootstrap,
        topic,
        [
            _identify("bo@poison.example", "p-1"),
            b'{"identifiers": [{"type": "email", "value": "secret-not-an-email"}], "x": 1',
            _identify("secret-not-an-email", "p-3"),
            json.dumps({"identifiers": [{"type": "shoe_size", "value": "secret-44"}]}).encode(),
            _identify("cy@poison.example", "p-5"),
        ],
    )
    worker, metrics = _worker(container, kafka_bootstrap, [topic], dlq, batch_size=2)
    summary = worker.run(idle_exit_s=3)
    assert (summary["applied"], summary["dead_letters"]) == (2, 3)
    assert container.links.resolve(("email", "cy@poison.example")) is not None
    letters = read_all(kafka_bootstrap, dlq, expect=3)
    assert [doc["source"]["offset"] for _, doc, _ in letters] == [1, 2, 3]
    assert next(doc["reason"] for _, doc, _ in letters) == "not-json"
    assert all(key == f"{topic}/0".encode() for key, _, _ in letters)
    assert "#/identifiers/0" in letters[1][1]["problems"][0]
    raw = json.dumps([doc for _, doc, _ in letters])
    assert "secret" not in raw
    assert "p-3" not in raw  # the message id only as its keyed digest
    assert letters[1][1]["message_digest"] == container.engine.message_digest("sdk", "p-3").hex()
    assert _committed(kafka_bootstrap, worker.config.group_id, topic, 1) == 5
    assert metrics.dead_letters.labels(topic, "not-json")._value.get() == 1


def test_a_redelivered_batch_is_a_no_op(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    produce(
        kafka_bootstrap, topic, [_identify(f"r{i}@redo.example", page_view=True) for i in range(5)]
    )
    first, _ = _worker(container, kafka_bootstrap, [topic], dlq)
    assert first.run(idle_exit_s=3)["applied"] == 5
    # Another group reads the same records again (as after a crash before the offset commit):
    # the records' own coordinates are their message ids, so nothing is applied twice.
    second, _ = _worker(container, kafka_bootstrap, [topic], dlq, group="another-group")
    summary = second.run(idle_exit_s=3)
    assert (summary["records"], summary["duplicates"], summary["applied"]) == (5, 5, 0)
    assert container.store.stats().facts == 10  # per person: the kept email, one page view


class _IngestDouble:
    """The real ingest use case, every call passed through (subclasses hook some)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def events(self, requests: Any, pointers: Any = None) -> Any:
        return self._inner.events(requests, pointers)

    def commit(self, events: Any, actor: str) -> Any:
        return self._inner.commit(events, actor)

    def record_consent(self, submission: Any, *, actor: str) -> Any:
        return self._inner.record_consent(submission, actor=actor)

    def retry_consent_audit(self, error: Any) -> None:
        self._inner.retry_consent_audit(error)


class _FreezingIngest(_IngestDouble):
    """The real ingest use case; freezes the broker (SIGSTOP) once the first batch's graph commit
    returned, i.e. just before the worker commits that batch's offsets, and notes the second."""

    def __init__(self, inner: Any, broker_pid: int) -> None:
        super().__init__(inner)
        self._pid = broker_pid
        self.commits = 0
        self.frozen = threading.Event()
        self.second_applied = threading.Event()

    def commit(self, events: Any, actor: str) -> Any:
        outcomes = self._inner.commit(events, actor)
        self.commits += 1
        if self.commits == 1:
            os.kill(self._pid, signal.SIGSTOP)
            self.frozen.set()
        elif self.commits == 2:
            self.second_applied.set()
        return outcomes


def test_the_next_batch_is_applied_while_the_broker_has_not_answered_the_offset_commit(
    kafka_bootstrap: str, kafka_broker_pid: int, new_topic: TopicFactory, container: Container
) -> None:
    # The offsets of a batch are committed after its graph commit without waiting for the
    # broker's answer (a lost commit only redelivers the batch, a no-op by message id): waiting
    # was a broker round trip per batch with the worker idle. The broker is frozen between the
    # first batch's graph commit and its offset commit; the second batch, fetched already,
    # must still be applied. (Waiting for the answer, the worker sat in the commit until the
    # broker came back: socket.timeout.ms is raised so that is longer than this test's net.)
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    produce(
        kafka_bootstrap, topic, [_identify(f"f{i}@freeze.example", f"frz-{i}") for i in range(4)]
    )
    frozen: list[_FreezingIngest] = []

    def freezing(inner: Any) -> _FreezingIngest:
        frozen.append(_FreezingIngest(inner, kafka_broker_pid))
        return frozen[0]

    worker, _ = _worker(
        container,
        kafka_bootstrap,
        [topic],
        dlq,
        batch_size=2,
        client_config={"socket.timeout.ms": "300000"},
        wrap_ingest=freezing,
    )
    (ingest,) = frozen
    summary: dict[str, float] = {}
    runner = threading.Thread(target=lambda: summary.update(worker.run(max_batches=2)))
    runner.start()
    try:
        assert ingest.frozen.wait(WAIT_NET_S)
        applied = ingest.second_applied.wait(FROZEN_NET_S)
    finally:
        os.kill(kafka_broker_pid, signal.SIGCONT)
    runner.join(WAIT_NET_S)
    assert applied, "the second batch waited for the broker's answer to the first offset commit"
    assert (summary["records"], summary["applied"]) == (4, 4)
    # Before it left, the worker had the last offsets confirmed: nothing is redelivered.
    assert _committed(kafka_bootstrap, f"g-{topic}", topic, 1) == 4


class _OverlapIngest(_IngestDouble):
    """The real ingest use case, whose first graph commit waits (at most ``net_s``) until the
    next poll's records are being validated, and says whether they were."""

    def __init__(self, inner: Any, net_s: float) -> None:
        super().__init__(inner)
        self._net_s = net_s
        self.validations = 0
        self.next_validated = threading.Event()
        self.overlapped: bool | None = None

    def events(self, requests: Any, pointers: Any = None) -> Any:
        self.validations += 1
        if self.validations == 2:
            self.next_validated.set()
        return self._inner.events(requests, pointers)

    def commit(self, events: Any, actor: str) -> Any:
        if self.overlapped is None:
            self.overlapped = self.next_validated.wait(self._net_s)
        return self._inner.commit(events, actor)


def test_the_next_poll_is_validated_while_a_batch_commits_and_batches_commit_in_order(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    # Pipelined: a batch's graph commit runs on a writer thread while the main thread polls and
    # validates the next batch (without that, the second validation could only start once the
    # first commit returned, and the first commit would wait out its net). Offsets are still
    # committed after each graph commit, in order: every record applied, all offsets committed.
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    produce(
        kafka_bootstrap, topic, [_identify(f"p{i}@pipe.example", f"pipe-{i}") for i in range(6)]
    )
    wrapped: list[_OverlapIngest] = []

    def overlapping(inner: Any) -> _OverlapIngest:
        wrapped.append(_OverlapIngest(inner, FROZEN_NET_S))
        return wrapped[0]

    worker, _ = _worker(
        container, kafka_bootstrap, [topic], dlq, batch_size=2, wrap_ingest=overlapping
    )
    summary = worker.run(idle_exit_s=3)

    (ingest,) = wrapped
    assert ingest.overlapped is True
    assert (summary["records"], summary["applied"]) == (6, 6)
    assert summary["batches"] >= 3  # of 2 records at most
    assert _committed(kafka_bootstrap, f"g-{topic}", topic, 1) == 6
    for i in range(6):
        assert container.links.resolve(("email", f"p{i}@pipe.example")) is not None


def test_an_erasure_is_published_once_after_it_completes(
    kafka_bootstrap: str, new_topic: TopicFactory, container: Container
) -> None:
    topic, dlq = new_topic("ingest"), new_topic("dlq")
    consent_topic, erasure_topic = new_topic("consent", 3), new_topic("erasure", 3)
    publish = {
        outbound.CONSENT_CHANGED: consent_topic,
        outbound.PERSON_ERASED: erasure_topic,
        outbound.PERSON_MERGED: erasure_topic,
        outbound.PERSON_SPLIT: erasure_topic,
        outbound.AUDIENCE_MEMBERSHIP: consent_topic,
    }
    produce(kafka_bootstrap, topic, [_identify("di@erase.example", "e-1")])
    worker, _metrics = _worker(container, kafka_bootstrap, [topic], dlq, publish=publish)
    worker.run(idle_exit_s=2)
    person = container.links.resolve(("email", "di@erase.example"))
    assert person is not None
    keyring: Keyring = container.keyring
    ErasureService(
        container.store, container.vault, keyring, container.audit, outbound_events=True
    ).erase([container.engine.policy.normalize("email", "di@erase.example", None)], "r-1", "cli")
    for _ in range(2):  # two more runs: the second must publish nothing new
        again, _ = _worker(container, kafka_bootstrap, [topic], dlq, publish=publish)
        again.run(idle_exit_s=2)
    erased = read_all(kafka_bootstrap, erasure_topic, expect=1)
    assert [(doc["type"], doc["person_id"]) for _, doc, _ in erased] == [("person.erased", person)]
    assert container.store.read(lambda tx: tx.outbound_page(10)) == []
    # Re-ingesting the erased email does not bring the person back (suppression list).
    produce(kafka_bootstrap, topic, [_identify("di@erase.example", "e-2")])
    again, _ = _worker(container, kafka_bootstrap, [topic], dlq, publish=publish)
    again.run(idle_exit_s=2)
    assert container.links.resolve(("email", "di@erase.example")) is None


# -- the real command in child processes -------------------------------------------------------


def _consume_command(
    bootstrap: str, topic: str, dlq: str, group: str, data_dir: Path, *extra: str
) -> list[str]:
    return [
        sys.executable, "-m", "stream",
        "--bootstrap-servers", bootstrap, "--topic", topic, "--dead-letter-topic", dlq,
        "--group", group, "--no-publish", "--poll-timeout", "0.2",
        # A killed member's partitions move after its session times out: the broker's minimum.
        "--kafka-config", "session.timeout.ms=6000", *extra,
    ]  # fmt: skip


def _prepare_store(data_dir: Path) -> None:
    # Creates the data dir, its development hash key and the schema before the children start.
    with opened_container(data_dir, outbound_events=True):
        pass


def _stats(data_dir: Path) -> tuple[int, int]:
    with opened_container(data_dir, outbound_events=True) as built:
        stats = built.store.stats()
    return stats.persons, stats.facts


def _kill_mid_batch(
    bootstrap: str, topic: str, dlq: str, data_dir: Path, records: int, kills: int
) -> None:
    rng = random.Random(17)
    group = f"g-kill-{topic}"
    killed = 0
    for _ in range(kills):
        child = subprocess.Popen(
            _consume_command(bootstrap, topic, dlq, group, data_dir, "--batch-size", "50"),
            env=_env(data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            # Wait for the first commit of this run, then kill at a random moment while it works.
            deadline = time.monotonic() + WAIT_NET_S
            start = _committed(bootstrap, group, topic, 1)
            while time.monotonic() < deadline and child.poll() is None:
                if _committed(bootstrap, group, topic, 1) > start:
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.4))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(30)
        killed += 1
        # On a quiet machine a run can drain the topic before its kill lands: every kill still
        # hit a consumer that had committed and was working, so stop there instead of failing.
        if _committed(bootstrap, group, topic, 1) >= records:
            break
    finish = subprocess.run(
        _consume_command(bootstrap, topic, dlq, group, data_dir, "--exit-when-idle", "4"),
        env=_env(data_dir),
        capture_output=True,
        text=True,
        timeout=WAIT_NET_S,
        check=False,
    )
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert _committed(bootstrap, group, topic, 1) == records
    assert 1 <= killed <= kills


@pytest.mark.parametrize(
    ("records", "kills"),
    [
        pytest.param(600, 2, id="2-kills"),
        pytest.param(3000, 10, id="10-kills", marks=pytest.mark.slow),
    ],
)
def test_sigkill_mid_batch_loses_nothing_and_applies_nothing_twice(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path, records: int, kills: int
) -> None:
    topic, dlq = new_topic("kill"), new_topic("dlq")
    data_dir = tmp_path / "data"
    _prepare_store(data_dir)
    # No message ids: the records' coordinates are what makes a redelivery harmless here.
    produce(
        kafka_bootstrap,
        topic,
        [_identify(f"k{i}@kill.example", page_view=True) for i in range(records)],
    )
    _kill_mid_batch(kafka_bootstrap, topic, dlq, data_dir, records, kills)
    # Every record is one new person with two facts (the email kept in the vault, one page
    # view): a lost record is a missing person, a doubled one an extra page view.
    assert _stats(data_dir) == (records, 2 * records)


def _assigned_members(bootstrap: str, group: str) -> int:
    """Members of a stable group that own at least one partition (0 while it rebalances, or
    when the coordinator did not answer this time)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    (future,) = admin.describe_consumer_groups([group]).values()
    try:
        description = future.result(timeout=30)
    except KafkaException as exc:
        if exc.args[0].retriable() or exc.args[0].code() == KafkaError._TIMED_OUT:
            return 0
        raise
    if description.state != ConsumerGroupState.STABLE:
        return 0
    return sum(1 for m in description.members if m.assignment.topic_partitions)


def _wait_for(
    condition: Callable[[], bool], what: str, children: list[subprocess.Popen[str]]
) -> None:
    """Wait until ``condition()`` holds; fail at once when a child exits, and after the net
    (only for a hang: a slow machine just waits longer)."""
    deadline = time.monotonic() + WAIT_NET_S
    while not condition():
        for child in children:
            assert child.poll() is None, f"a consumer exited with {child.returncode} before {what}"
        assert time.monotonic() < deadline, f"no {what} within {WAIT_NET_S} s"
        time.sleep(0.2)


def test_two_consumers_share_the_partitions_through_a_rebalance(
    kafka_bootstrap: str, new_topic: TopicFactory, tmp_path: Path
) -> None:
    records = 3000
    half = records // 2
    topic, dlq = new_topic("rebalance", 4), new_topic("dlq")
    data_dir = tmp_path / "data"
    _prepare_store(data_dir)
    values = [
        _identify(f"r{i}@rebalance.example", f"m-{i}", page_view=True) for i in range(records)
    ]
    keys = [f"k{i}".encode() for i in range(records)]
    produce(kafka_bootstrap, topic, values[:half], keys=keys[:half])
    group = f"g-rebalance-{topic}"
    # No idle exit: the members run until the test stops them (SIGTERM: finish the batch,
    # commit, leave, print the summary). An idle exit raced with the second member's start-up:
    # at high load the first could drain the first half and leave before the second had joined.
    command = _consume_command(kafka_bootstrap, topic, dlq, group, data_dir, "--batch-size", "10")
    outputs = [tmp_path / "first.out", tmp_path / "second.out"]
    children: list[subprocess.Popen[str]] = []
    try:
        with outputs[0].open("w") as out:
            children.append(subprocess.Popen(command, env=_env(data_dir), stdout=out, text=True))
        # The second joins while the first owns every partition: a rebalance. A quiet machine
        # can drain the first half before the second is up, so the second half is produced
        # only once both members own partitions, and both then get partitions with work on them.
        _wait_for(lambda: _committed(kafka_bootstrap, group, topic, 4) > 0, "commit", children)
        with outputs[1].open("w") as out:
            children.append(subprocess.Popen(command, env=_env(data_dir), stdout=out, text=True))
        # Counting members is not enough: a member is listed as soon as it joins, before the
        # rebalance hands it partitions; the second half must land on partitions it owns.
        _wait_for(
            lambda: _assigned_members(kafka_bootstrap, group) == 2, "shared assignment", children
        )
        produce(kafka_bootstrap, topic, values[half:], keys=keys[half:])
        _wait_for(
            lambda: _committed(kafka_bootstrap, group, topic, 4) >= records, "full commit", children
        )
        for child in children:
            child.send_signal(signal.SIGTERM)
        codes = [child.wait(timeout=WAIT_NET_S) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert codes == [0, 0]
    summaries = [json.loads(out.read_text().strip().splitlines()[-1]) for out in outputs]
    assert all(s["applied"] > 0 for s in summaries), summaries  # both took part
    assert sum(s["applied"] for s in summaries) == records
    assert _committed(kafka_bootstrap, group, topic, 4) == records
    assert _stats(data_dir) == (records, 2 * records)
