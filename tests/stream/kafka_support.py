"""Reading topics back in the stream tests."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from confluent_kafka import Consumer


def read_all(bootstrap: str, topic: str, expect: int, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the start, as (key, decoded JSON value, headers) tuples;
    waits until ``expect`` records arrived, then one more second for any extra."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    settle: float | None = None
    try:
        while time.monotonic() < deadline:
            for message in consumer.consume(500, 0.5):
                if message.error() is None:
                    value = message.value()
                    records.append(
                        (
                            message.key(),
                            json.loads(value) if value is not None else None,
                            dict(message.headers() or []),
                        )
                    )
            if len(records) >= expect:
                settle = settle or time.monotonic() + 1.0
                if time.monotonic() >= settle:
                    break
    finally:
        consumer.close()
    return records
