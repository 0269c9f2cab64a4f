"""``idgraph consume``: the stream worker's command line (docs/kafka.md).

Registered into the ``idgraph`` command through the ``idgraph.commands`` entry-point group
(pyproject.toml), so the CLI shell finds it without importing this package by name.
"""

from __future__ import annotations

import json
import signal
import sys
from datetime import timedelta
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from identity.errors import IdGraphError
from identity.outbound import (
    AUDIENCE_MEMBERSHIP,
    CONSENT_CHANGED,
    PERSON_ERASED,
    PERSON_MERGED,
    PERSON_SPLIT,
)
from stream.metrics import StreamMetrics

if TYPE_CHECKING:
    from stream.worker import StreamWorker

log = structlog.get_logger("idgraph.stream")

DEFAULT_TOPIC = "idgraph.ingest"
DEFAULT_DLQ = "idgraph.ingest.dlq"
DEFAULT_CONSENT_TOPIC = "idgraph.consent.changed"
DEFAULT_ERASURE_TOPIC = "idgraph.person.erased"
DEFAULT_MERGE_TOPIC = "idgraph.person.merged"
DEFAULT_SPLIT_TOPIC = "idgraph.person.split"
DEFAULT_AUDIENCE_TOPIC = "idgraph.audience.membership.changed"


def _client_config(pairs: list[str]) -> dict[str, str]:
    config: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"expected KEY=VALUE, got {pair[:60]!r}", param_hint="--kafka-config"
            )
        config[key.strip()] = value
    return config


def consume(
    bootstrap_servers: Annotated[
        str,
        typer.Option(
            "--bootstrap-servers",
            "-b",
            envvar="IDGRAPH_KAFKA_BOOTSTRAP_SERVERS",
            help="Kafka brokers, host:port[,host:port].",
        ),
    ] = "127.0.0.1:9092",
    topics: Annotated[
        list[str] | None,
        typer.Option(
            "--topic",
            "-t",
            envvar="IDGRAPH_KAFKA_TOPICS",
            help="Ingest topic to read (repeat for several). Records: the API's identify shape "
            "or Segment/RudderStack identify/track (docs/kafka.md). Default: idgraph.ingest "
            "(none when only consent-signal or DSR topics are named).",
        ),
    ] = None,
    consent_topics: Annotated[
        list[str] | None,
        typer.Option(
            "--consent-signal-topic",
            envvar="IDGRAPH_KAFKA_CONSENT_SIGNAL_TOPICS",
            help="Consent-signal topic to read (repeat for several). Records: the body of POST "
            "/v1/consent (decisions, tcf, gpp) plus optional `gpc` and `message_id`; applied "
            "one by one as that endpoint does, audited as stream:<group> (docs/kafka.md).",
        ),
    ] = None,
    dsr_topics: Annotated[
        list[str] | None,
        typer.Option(
            "--dsr-topic",
            envvar="IDGRAPH_KAFKA_DSR_TOPICS",
            help="Data-subject-request topic to read (repeat for several). Records: the body of "
            "POST /v1/dsr; accepted (idempotent by request_id) into the DSR queue that "
            "`idgraph serve` works off (docs/kafka.md).",
        ),
    ] = None,
    dsr_owner: Annotated[
        str,
        typer.Option(
            "--dsr-owner",
            envvar="IDGRAPH_KAFKA_DSR_OWNER",
            help="Owner of requests from DSR topics: API keys of this consumer see them.",
        ),
    ] = "stream",
    group: Annotated[
        str,
        typer.Option(
            "--group",
            "-g",
            envvar="IDGRAPH_KAFKA_GROUP",
            help="Consumer group: run more workers with the same group to share partitions.",
        ),
    ] = "idgraph-ingest",
    dead_letter_topic: Annotated[
        str,
        typer.Option(
            "--dead-letter-topic",
            envvar="IDGRAPH_KAFKA_DEAD_LETTER_TOPIC",
            help="Where records that cannot be applied go, by reference (never their values).",
        ),
    ] = DEFAULT_DLQ,
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="The `source` of records that name none (always for Segment-shaped ones).",
        ),
    ] = "kafka",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            max=10_000,
            help="Most records per poll; one poll is one graph transaction.",
        ),
    ] = 500,
    poll_timeout: Annotated[
        float,
        typer.Option("--poll-timeout", min=0.01, help="Seconds one poll waits for records."),
    ] = 1.0,
    max_retry_seconds: Annotated[
        float,
        typer.Option(
            "--max-retry-seconds",
            min=0,
            help="How long a batch is retried while the store is unavailable before the worker "
            "exits non-zero (nothing committed; the batch is redelivered on restart).",
        ),
    ] = 300.0,
    dedup_days: Annotated[
        float | None,
        typer.Option(
            "--dedup-days",
            min=0.01,
            help="How long applied message ids are remembered (a redelivery within this window "
            "is a no-op); overrides IDGRAPH_MESSAGE_ID_WINDOW_DAYS (default 7) for this process. "
            "Keep it above the topics' retention if producers may resend.",
        ),
    ] = None,
    publish: Annotated[
        bool,
        typer.Option(
            "--publish/--no-publish",
            help="Relay the graph's event outbox (consent changes, erasures, merges, splits, "
            "audience membership) to Kafka. One member "
            "of the group publishes at a time. Needs IDGRAPH_OUTBOUND_EVENTS=true on every "
            "idgraph process for events to be written.",
        ),
    ] = True,
    consent_topic: Annotated[
        str, typer.Option("--consent-topic", help="Topic of consent.changed events.")
    ] = DEFAULT_CONSENT_TOPIC,
    erasure_topic: Annotated[
        str, typer.Option("--erasure-topic", help="Topic of person.erased events.")
    ] = DEFAULT_ERASURE_TOPIC,
    merge_topic: Annotated[
        str,
        typer.Option(
            "--merge-topic",
            help="Topic of person.merged events (earlier events name the merged ids).",
        ),
    ] = DEFAULT_MERGE_TOPIC,
    split_topic: Annotated[
        str,
        typer.Option(
            "--split-topic",
            help="Topic of person.split events (an unlink gave part of a person new ids).",
        ),
    ] = DEFAULT_SPLIT_TOPIC,
    audience_topic: Annotated[
        str,
        typer.Option(
            "--audience-topic",
            help="Topic of audience.membership.changed events (members by their owner's "
            "per-consumer pseudonym).",
        ),
    ] = DEFAULT_AUDIENCE_TOPIC,
    audience_interval: Annotated[
        float,
        typer.Option(
            "--audience-interval",
            min=0,
            help="Seconds between audience-membership passes of the publishing member (each "
            "walks every audience through the policy engine, audited); 0: no audience events.",
        ),
    ] = 300.0,
    replay_dead_letters: Annotated[
        bool,
        typer.Option(
            "--replay-dead-letters",
            help="Re-apply the records the dead letters of --dead-letter-topic point at (read "
            "again from their source partitions, by reference), then exit. Name the same topics "
            "as the run that wrote them. Applied records are no-ops (message ids); records "
            "that fail again get a new letter (attempt + 1). Resumable: its own group "
            "<group>.dlq-replay.",
        ),
    ] = False,
    replay_reasons: Annotated[
        list[str] | None,
        typer.Option(
            "--replay-reason",
            help="With --replay-dead-letters: only letters of this reason (repeat), e.g. "
            "invalid-batch after a policy fix. Other letters are skipped and not replayed later.",
        ),
    ] = None,
    create_topics: Annotated[
        bool,
        typer.Option(
            "--create-topics",
            help="Create missing topics (ingest, consent-signal, DSR, dead-letter, consent, "
            "erasure) and exit.",
        ),
    ] = False,
    partitions: Annotated[
        int,
        typer.Option("--partitions", min=1, help="Partitions of topics made by --create-topics."),
    ] = 3,
    replication_factor: Annotated[
        int,
        typer.Option(
            "--replication-factor", min=1, help="Replicas of topics --create-topics makes."
        ),
    ] = 1,
    metrics_port: Annotated[
        int,
        typer.Option(
            "--metrics-port",
            min=0,
            max=65535,
            help="Serve Prometheus /metrics (lag, batch sizes, dead letters, commit latency) on "
            "this port; 0: off.",
        ),
    ] = 0,
    metrics_host: Annotated[
        str, typer.Option("--metrics-host", help="Address the /metrics server binds.")
    ] = "127.0.0.1",
    kafka_config: Annotated[
        list[str] | None,
        typer.Option(
            "--kafka-config",
            "-X",
            help="Any librdkafka setting as KEY=VALUE (repeat), e.g. security.protocol=SASL_SSL.",
        ),
    ] = None,
    exit_when_idle: Annotated[
        float,
        typer.Option(
            "--exit-when-idle",
            min=0,
            help="Exit after this many seconds without records once every assigned partition "
            "is read to its end (catch-up runs, benches); 0: run until SIGTERM.",
        ),
    ] = 0.0,
) -> None:
    """Consume identify/track records, consent signals and DSR requests from Kafka into the
    graph, exactly once per record.

    Each poll is validated, normalized and PII-scanned like the API's input and applied in one
    graph transaction; offsets are committed only after that commit. Records that cannot be
    applied go to the dead-letter topic by reference. SIGTERM finishes the batch, commits and
    leaves the group. Store, keys and policies come from the IDGRAPH_* settings, as for
    `idgraph serve`.
    """
    # The Kafka client is an optional extra (`pip install '.[kafka]'`): `make run` installs
    # runtime dependencies only, so `idgraph` must start without it and say what is missing.
    try:
        from stream.wiring import build_stream, create_missing_topics, serve_metrics
        from stream.worker import WorkerConfig
    except ModuleNotFoundError as exc:
        typer.echo(
            f"idgraph consume needs the Kafka client ({exc.name} is not installed): "
            "pip install '.[kafka]'",
            err=True,
        )
        raise typer.Exit(2) from None

    try:
        config = WorkerConfig(
            bootstrap_servers=bootstrap_servers,
            group_id=group,
            topics=tuple(topics or ([] if consent_topics or dsr_topics else [DEFAULT_TOPIC])),
            consent_topics=tuple(consent_topics or []),
            dsr_topics=tuple(dsr_topics or []),
            dsr_owner=dsr_owner,
            dead_letter_topic=dead_letter_topic,
            source=source,
            batch_size=batch_size,
            poll_timeout_s=poll_timeout,
            max_retry_s=max_retry_seconds,
            dedup_window=timedelta(days=dedup_days or 7.0),  # the settings' window wins if unset
            client_config=_client_config(kafka_config or []),
            audience_interval_s=audience_interval,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--topic") from exc
    publish_topics = {
        CONSENT_CHANGED: consent_topic,
        PERSON_ERASED: erasure_topic,
        PERSON_MERGED: merge_topic,
        PERSON_SPLIT: split_topic,
        AUDIENCE_MEMBERSHIP: audience_topic,
    }
    if create_topics:
        made = create_missing_topics(
            config,
            [*config.subscriptions, dead_letter_topic, *publish_topics.values()],
            partitions,
            replication_factor,
        )
        typer.echo(json.dumps({"created": made}))
        return
    metrics = StreamMetrics()
    if replay_dead_letters:
        from stream.replay import DeadLetterReplay

        try:
            with build_stream(config, dedup_days, metrics, None) as worker:
                replayed = DeadLetterReplay(
                    worker, reasons=replay_reasons or (), batch_size=min(batch_size, 500)
                ).run()
        except IdGraphError as exc:
            typer.echo(f"idgraph consume: {exc}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(json.dumps(replayed.as_dict(), sort_keys=True))
        return
    if metrics_port:
        serve_metrics(metrics, metrics_host, metrics_port)
    try:
        with build_stream(
            config, dedup_days, metrics, publish_topics if publish else None
        ) as worker:
            _stop_on_signals(worker)
            summary = worker.run(idle_exit_s=exit_when_idle or None)
    except IdGraphError as exc:
        typer.echo(f"idgraph consume: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(json.dumps(summary, sort_keys=True))


def _stop_on_signals(worker: StreamWorker) -> None:
    def handler(signum: int, _frame: FrameType | None) -> None:
        log.info("stream_stopping", signal=signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def register(app: typer.Typer) -> None:
    """Add ``consume`` to the ``idgraph`` command (the ``idgraph.commands`` entry point)."""
    app.command("consume")(consume)


def main() -> None:  # pragma: no cover - `python -m stream`
    """Run ``consume`` on its own (``python -m stream --help``)."""
    typer.run(consume)
    sys.exit(0)
