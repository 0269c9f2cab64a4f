"""Dead-letter replay: apply the records that dead letters point at again, after a fix.

A dead letter holds a reference, never the record (:mod:`stream.dead_letters`), so a replay
reads each referenced record again **from its source partition** (``assign`` + ``seek`` on a
consumer that joins no group and commits nothing there) and applies it through the worker's own
path (:meth:`stream.worker.StreamWorker.apply`): the same validation, the same use cases, the
same message ids. What the order gives:

* a record applied before (by a redelivery, or a producer that resent it) is a ``duplicate``;
* a record that still cannot be applied gets a **new** dead letter with ``attempt`` + 1;
* a record the source topic no longer retains is counted ``expired`` (only its producer can
  resend it) and a letter that is not a dead-letter document is counted ``unreadable``;
* a letter for a record this run has replayed already is counted ``repeated`` and not replayed
  again. Dead letters are written at least once: a worker batch redelivered after a crash (or a
  lost offset commit) writes its letters a second time, identical but for the time and group.
  Replaying both copies would apply nothing new, and a record that still fails would get two new
  letters, so the copies would multiply with every replay.

The dead-letter topic is read by its own consumer group (``<group>.dlq-replay``) whose offsets
are committed after each batch of letters has been applied and any new letters acknowledged:
a replay that is stopped or killed resumes where it stopped, and letters replayed twice are
harmless (message ids). A run stops at the end offsets the dead-letter topic had when it
started, so it never replays the letters it writes itself.

The main group's committed offsets on the source topics are never touched.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import structlog
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from stream.dead_letters import DeadLetter
from stream.worker import BatchReport, StreamWorker

log = structlog.get_logger("idgraph.stream.replay")


@dataclass(slots=True)
class ReplayReport:
    """What a replay did (counts only)."""

    letters: int = 0
    skipped: int = 0  # letters whose reason was not asked for
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0  # records that failed again (new letters, attempt + 1)
    expired: int = 0  # records the source topic no longer holds
    unreadable: int = 0  # letters that are not dead-letter documents
    repeated: int = 0  # letters for a source record this run replayed already

    def as_dict(self) -> dict[str, int]:
        """The counts, for the command's JSON summary."""
        return dataclasses.asdict(self)


class DeadLetterReplay:
    """Replays the dead letters of one worker's dead-letter topic; see the module docstring."""

    def __init__(
        self,
        worker: StreamWorker,
        *,
        reasons: Collection[str] = (),
        batch_size: int = 100,
        fetch_timeout_s: float = 10.0,
    ) -> None:
        self._worker = worker
        self._reasons = frozenset(reasons)
        self._batch = batch_size
        self._fetch_timeout = fetch_timeout_s
        config = worker.config
        self._letters = Consumer(
            {
                **config.consumer_config(),
                "group.id": f"{config.group_id}.dlq-replay",
                "client.id": f"idgraph-replay-{config.group_id}",
            }
        )
        # Reads source records by offset; it joins no group and commits nothing.
        self._source = Consumer(
            {
                **config.consumer_config(),
                "group.id": f"{config.group_id}.dlq-fetch",
                "client.id": f"idgraph-replay-fetch-{config.group_id}",
            }
        )

    def run(self) -> ReplayReport:
        """Replay every letter up to the topic's current end; returns the counts."""
        report = ReplayReport()
        topic = self._worker.config.dead_letter_topic
        ends = self._end_offsets(topic)
        starts = {p: self._start(topic, p) for p in ends}
        self._letters.assign([TopicPartition(topic, p, starts[p]) for p in sorted(ends)])
        remaining = {p for p, end in ends.items() if starts[p] < end}
        replayed: set[tuple[str, int, int]] = set()  # source records of this run's letters
        try:
            while remaining:
                messages = self._letters.consume(self._batch, 1.0)
                batch: list[tuple[Message, DeadLetter]] = []
                done: dict[int, int] = {}
                for message in messages:
                    error = message.error()
                    partition, offset = message.partition(), message.offset()
                    if error is not None or partition is None or offset is None:
                        continue
                    if partition not in remaining or offset >= ends[partition]:
                        continue
                    done[partition] = max(offset, done.get(partition, -1))
                    if offset + 1 >= ends[partition]:
                        remaining.discard(partition)
                    report.letters += 1
                    letter = _letter(message)
                    if letter is None:
                        report.unreadable += 1
                    elif self._reasons and letter.reason not in self._reasons:
                        report.skipped += 1
                    elif (source := (letter.topic, letter.partition, letter.offset)) in replayed:
                        report.repeated += 1
                    else:
                        replayed.add(source)
                        batch.append((message, letter))
                self._replay([letter for _, letter in batch], report)
                if done:
                    self._letters.commit(
                        offsets=[TopicPartition(topic, p, o + 1) for p, o in done.items()],
                        asynchronous=False,
                    )
        finally:
            self._letters.close()
            self._source.close()
        return report

    def _replay(self, letters: Sequence[DeadLetter], report: ReplayReport) -> None:
        if not letters:
            return
        records: list[Message] = []
        attempts: dict[tuple[str, int, int], int] = {}
        for letter in letters:
            record = self._fetch(letter)
            if record is None:
                report.expired += 1
                log.warning(
                    "dead_letter_source_expired",
                    topic=letter.topic,
                    partition=letter.partition,
                    offset=letter.offset,
                )
                continue
            records.append(record)
            attempts[(letter.topic, letter.partition, letter.offset)] = letter.attempt + 1
        if not records:
            return
        batch, dead, _last = self._worker.apply(records)
        again = [
            dataclasses.replace(d, attempt=attempts.get((d.topic, d.partition, d.offset), 2))
            for d in dead
        ]
        self._worker.dead_letter(again, BatchReport())
        report.applied += batch.applied
        report.duplicates += batch.duplicates
        report.dead_letters += len(again)

    def _fetch(self, letter: DeadLetter) -> Message | None:
        """The record a letter points at, or None when the topic no longer holds it."""
        low, high = self._source.get_watermark_offsets(
            TopicPartition(letter.topic, letter.partition), timeout=self._fetch_timeout
        )
        if not low <= letter.offset < high:
            return None
        self._source.assign([TopicPartition(letter.topic, letter.partition, letter.offset)])
        deadline = time.monotonic() + self._fetch_timeout
        try:
            while time.monotonic() < deadline:
                message = self._source.poll(0.5)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return None
                    continue
                if message.offset() == letter.offset:
                    return message
                # A compacted topic may skip the offset: the record is gone.
                return None
            return None
        finally:
            self._source.unassign()

    def _end_offsets(self, topic: str) -> dict[int, int]:
        metadata = self._letters.list_topics(topic, timeout=self._fetch_timeout)
        partitions = metadata.topics[topic].partitions
        return {
            p: self._letters.get_watermark_offsets(
                TopicPartition(topic, p), timeout=self._fetch_timeout
            )[1]
            for p in partitions
        }

    def _start(self, topic: str, partition: int) -> int:
        (committed,) = self._letters.committed(
            [TopicPartition(topic, partition)], timeout=self._fetch_timeout
        )
        if committed.offset >= 0:
            return int(committed.offset)
        low, _high = self._letters.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=self._fetch_timeout
        )
        return int(low)


def _letter(message: Message) -> DeadLetter | None:
    value = message.value()
    if value is None:
        return None
    try:
        return DeadLetter.from_json(value)
    except (ValueError, KeyError, TypeError):
        return None
