"""Dead letters: records the consumer could not apply, by reference, never by value.

A dead letter names *where* the rejected record is (topic, partition, offset), *why* it was
rejected (a reason code and the use case's problems: JSON pointers and messages, which never
hold a value) and when. It does **not** copy the record: the record holds raw identifiers, and a
dead-letter topic usually outlives the source topic's retention and reaches more readers. The
raw data stays where it already was, under the source topic's retention and access control.

The sender's message id is kept only as its keyed digest (the same one the graph stores), so a
dead letter can be matched to a redelivery without the id itself, which may hold anything.

Replaying after a fix (docs/kafka.md, "Dead letters"): the referenced records are read again from
their source partition while the source topic still retains them, by rewinding the group on
that partition (``kafka-consumer-groups.sh --reset-offsets``) or by producing corrected records
with the same message ids; records already applied are no-ops (message-id deduplication).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

SCHEMA: Final = "https://idgraph.dev/schemas/events/dead-letter/v1.json"
MAX_PROBLEMS: Final = 20


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One rejected record, by reference. ``problems`` are ``pointer: message`` strings."""

    topic: str
    partition: int
    offset: int
    reason: str
    problems: tuple[str, ...]
    group: str
    message_digest: str | None = None  # keyed digest (hex) of the sender's message id
    attempt: int = 1

    @property
    def key(self) -> bytes:
        """The dead letter's Kafka key: its source partition (never the source record's key,
        which a producer may have set to an email)."""
        return f"{self.topic}/{self.partition}".encode()

    def to_json(self, now: datetime | None = None) -> bytes:
        """The dead-letter document (``docs/schemas/events/dead-letter.v1.json``)."""
        document: dict[str, Any] = {
            "schema": SCHEMA,
            "type": "dead-letter",
            "version": 1,
            "source": {"topic": self.topic, "partition": self.partition, "offset": self.offset},
            "reason": self.reason,
            "problems": list(self.problems[:MAX_PROBLEMS]),
            "consumer_group": self.group,
            "attempt": self.attempt,
            "dead_lettered_at": (now or datetime.now(UTC)).isoformat(),
        }
        if self.message_digest is not None:
            document["message_digest"] = self.message_digest
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, value: bytes) -> DeadLetter:
        """Read a dead-letter document back (for a replay)."""
        document = json.loads(value)
        source = document["source"]
        return cls(
            topic=str(source["topic"]),
            partition=int(source["partition"]),
            offset=int(source["offset"]),
            reason=str(document["reason"]),
            problems=tuple(str(p) for p in document.get("problems", [])),
            group=str(document.get("consumer_group", "")),
            message_digest=document.get("message_digest"),
            attempt=int(document.get("attempt", 1)),
        )
