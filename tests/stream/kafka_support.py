"""Writing records to topics and reading topics back in the stream tests."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

# Seconds; a net for a broker that stopped answering, never an assertion about speed.
READ_NET_S = 300.0


def produce(
    bootstrap: str,
    topic: str,
    values: list[bytes],
    *,
    keys: list[bytes] | None = None,
    headers: list[Any] | None = None,
) -> None:
    """Write ``values`` to ``topic`` in order (with their ``keys``/``headers`` when given), acked by
    all replicas; waits out a full local queue instead of failing."""
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for index, value in enumerate(values):
        key = keys[index] if keys is not None else None
        header = headers[index] if headers is not None else None
        while True:
            try:
                producer.produce(topic, value=value, key=key, headers=header)
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(60) == 0


def identify_record(email: str, message_id: str | None = None, **fields: Any) -> bytes:
    """An ingest record with one email identifier, its ``message_id`` and any other ``fields``."""
    body: dict[str, Any] = {"identifiers": [{"type": "email", "value": email}]}
    if message_id is not None:
        body["message_id"] = message_id
    body.update(fields)
    return json.dumps(body).encode()


def read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = READ_NET_S) -> list[Any]:
    """Every record of ``topic`` from the start, as (key, decoded JSON value, headers) tuples.

    Reads until at least ``expect`` records arrived *and* every partition was read to its end
    (librdkafka's partition EOF), so a record that was already written is never missed and an
    extra one shows up in the caller's comparison; a quiet spell of a second (what this waited
    for before) let a slow fetch on a loaded broker pass for "nothing more". Partitions are
    assigned directly, without a group rebalance to wait for. After ``timeout_s`` it returns what
    it has, and the caller's assertion shows it."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        partitions = _partitions(consumer, topic, deadline)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        at_end: set[int] = set()
        while time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                error = message.error()
                if error is None:
                    at_end.discard(message.partition())
                    value = message.value()
                    records.append(
                        (
                            message.key(),
                            json.loads(value) if value is not None else None,
                            dict(message.headers() or []),
                        )
                    )
                elif error.code() == KafkaError._PARTITION_EOF:
                    at_end.add(message.partition() or 0)
            if len(records) >= expect and at_end >= set(partitions):
                break
    finally:
        consumer.close()
    return records


def _partitions(consumer: Consumer, topic: str, deadline: float) -> list[int]:
    """The topic's partition numbers (metadata can lag a topic created a moment ago)."""
    while True:
        described = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if described is not None and described.error is None and described.partitions:
            return sorted(described.partitions)
        if time.monotonic() > deadline:
            raise AssertionError(f"no metadata for topic {topic}")
        time.sleep(0.2)
