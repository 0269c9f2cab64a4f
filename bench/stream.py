"""Stream-ingest benchmark: ``idgraph consume`` beside the bulk-file path on the same events.

Usage (from the repository root)::

    .venv/bin/python bench/stream.py                       # 20k identifiers (5k persons)
    .venv/bin/python bench/stream.py --identifiers 4000 --json /tmp/stream.json
    KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python bench/stream.py   # a running broker

The parent generates one deterministic JSONL file (bench/ingest.py's generator, not timed),
starts a local broker from tools/kafka-server on a free port (unless ``KAFKA_BOOTSTRAP`` names
one), produces every line of the file to a fresh topic (not timed) and runs each mode in its own
subprocess, so that peak RSS is per mode:

* ``bulk`` (the baseline): the code path of ``idgraph ingest FILE``, one transaction per
  ``--batch-size`` events;
* ``consume``: the stream worker of ``idgraph consume`` on the topic, one transaction per poll of
  ``--batch-size`` records, offsets committed after each, until the topic is drained. Timed from
  the first record polled to the last batch committed (start-up excluded in both modes).

Both build their collaborators with the one bootstrap, on fresh SQLite stores with the same hash
key, PII scan on. Figures: wall and CPU seconds, identifiers/s, the ratio consume/bulk (goal
>= 0.8), peak RSS (goal for the consumer < 512 MiB) and the load average before and after.
Exits 1 if a mode did not apply every event, 2 if a mode failed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import KEY_FILE, create_key, write_data  # noqa: E402

GOAL_RATIO = 0.8
GOAL_RSS_MIB = 512
KAFKA_SERVER = ROOT / "tools" / "kafka-server" / "kafka_server.py"


def _settings(work: Path, mode: str) -> Any:
    from bootstrap.settings import Settings

    return Settings(
        env="test",
        data_dir=work / mode,
        store_url=None,
        hash_keys=None,
        hash_key_file=work / KEY_FILE,
        policy_dir=ROOT / "policies",
    )


def _usage() -> dict[str, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": usage.ru_utime + usage.ru_stime, "rss_kib": float(usage.ru_maxrss)}


def run_bulk(data: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """``idgraph ingest FILE``: the bulk-file use case."""
    from bootstrap.container import build_container
    from services.bulk import ingest_file

    container = build_container(_settings(work, "bulk"))
    try:
        cpu0, start = _usage()["cpu"], time.perf_counter()
        report = ingest_file(container.ingest, data, actor="cli", batch_size=batch_size)
        seconds, cpu = time.perf_counter() - start, _usage()["cpu"] - cpu0
        stats = container.store.stats()
    finally:
        container.close()
    return {
        "mode": "bulk",
        "events": report.events,
        "rejected": report.rejected_rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_kib": _usage()["rss_kib"],
        "persons": stats.persons,
        "identifiers": stats.identifiers,
    }


def run_consume(bootstrap: str, topic: str, work: Path, batch_size: int) -> dict[str, Any]:
    """The stream worker of ``idgraph consume`` until the topic is drained."""
    from bootstrap.container import build_container
    from stream.metrics import StreamMetrics
    from stream.worker import StreamWorker, WorkerConfig

    container = build_container(_settings(work, "consume"))
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers=bootstrap,
        group_id=f"bench-{topic}",
        topics=(topic,),
        dead_letter_topic=f"{topic}.dlq",
        source="bench",
        batch_size=batch_size,
        poll_timeout_s=0.5,
    )
    try:
        worker = StreamWorker(
            config,
            container.ingest.with_metrics(metrics),
            container.store,
            container.engine.message_digest,
            metrics,
        )
        cpu0 = _usage()["cpu"]
        summary = worker.run(idle_exit_s=5)
        cpu = _usage()["cpu"] - cpu0
        stats = container.store.stats()
    finally:
        container.close()
    return {
        "mode": "consume",
        "events": summary["applied"],
        "rejected": summary["dead_letters"],
        "seconds": summary["seconds"],
        # CPU of the whole run includes the idle wait at the end (a poll loop, nearly free).
        "cpu_seconds": cpu,
        "peak_rss_kib": _usage()["rss_kib"],
        "persons": stats.persons,
        "identifiers": stats.identifiers,
        "batches": summary["batches"],
    }


def _produce(bootstrap: str, data: Path, partitions: int) -> str:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    topic = f"bench-{int(time.time())}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(topic, partitions, 1), NewTopic(f"{topic}.dlq", 1, 1)])
    for future in futures.values():
        future.result(timeout=60)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "acks": "all"})
    with data.open("rb") as handle:
        for line in handle:
            if not line.strip():
                continue
            while True:
                try:
                    producer.produce(topic, value=line.rstrip(b"\n"))
                    break
                except BufferError:
                    producer.poll(0.1)
    if producer.flush(120):
        raise SystemExit("bench: the broker did not take every record")
    return topic


def _run_mode(argv: list[str]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise SystemExit(2)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def orchestrate(args: argparse.Namespace) -> int:
    """Generate, produce, run both modes, print the figures, in a work directory (events, graph,
    keys, the broker's data) removed at the end: stop 33 found dozens left in /tmp."""
    with tempfile.TemporaryDirectory(prefix="idgraph-bench-stream-", dir=args.tmp_dir) as tmp:
        return _orchestrate_in(Path(tmp), args)


def _orchestrate_in(work: Path, args: argparse.Namespace) -> int:
    data = work / "events.jsonl"
    write_data(data, max(1, args.identifiers // 4), seed=17)
    create_key(work)
    broker_dir: Path | None = None
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP")
    if not bootstrap:
        broker_dir = work / "kafka"
        start = [sys.executable, str(KAFKA_SERVER), "start", "--data-dir", str(broker_dir)]
        started = subprocess.run(
            [*start, "--port", "0"], capture_output=True, text=True, check=False
        )
        if started.returncode != 0:
            sys.stderr.write(started.stderr)
            return 2
        bootstrap = started.stdout.strip().splitlines()[-1]
    load_before = os.getloadavg()
    try:
        topic = _produce(bootstrap, data, args.partitions)
        common = ["--work-dir", str(work), "--batch-size", str(args.batch_size)]
        bulk = _run_mode(["--mode", "bulk", "--data", str(data), *common])
        consume = _run_mode(
            ["--mode", "consume", "--bootstrap", bootstrap, "--topic", topic, *common]
        )
    finally:
        if broker_dir is not None:
            subprocess.run(
                [sys.executable, str(KAFKA_SERVER), "stop", "--data-dir", str(broker_dir)],
                capture_output=True, check=False,
            )  # fmt: skip
    load_after = os.getloadavg()
    ids = bulk["identifiers"]
    bulk_rate = ids / bulk["seconds"]
    consume_rate = consume["identifiers"] / consume["seconds"] if consume["seconds"] else 0.0
    ratio = consume_rate / bulk_rate
    rss_mib = consume["peak_rss_kib"] / 1024
    figures = {
        "identifiers": ids,
        "events": bulk["events"],
        "batch_size": args.batch_size,
        "partitions": args.partitions,
        "bulk": bulk,
        "consume": consume,
        "bulk_identifiers_per_s": round(bulk_rate, 1),
        "consume_identifiers_per_s": round(consume_rate, 1),
        "ratio": round(ratio, 3),
        "goal_ratio": GOAL_RATIO,
        "ratio_met": ratio >= GOAL_RATIO,
        "consume_rss_mib": round(rss_mib, 1),
        "goal_rss_mib": GOAL_RSS_MIB,
        "rss_met": rss_mib < GOAL_RSS_MIB,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }
    print(f"stream bench: {bulk['events']} events, {ids} identifiers, batch {args.batch_size}")
    for mode, rate in (("bulk", bulk_rate), ("consume", consume_rate)):
        m = figures[mode]
        print(
            f"  {mode:8s} {m['seconds']:8.2f} s wall {m['cpu_seconds']:8.2f} s CPU "
            f"{rate:10.0f} ids/s  peak RSS {m['peak_rss_kib'] / 1024:6.0f} MiB"
        )
    print(
        f"  ratio consume/bulk {ratio:.2f} (goal >= {GOAL_RATIO}: "
        f"{'met' if figures['ratio_met'] else 'NOT met'}); consumer RSS {rss_mib:.0f} MiB "
        f"(goal < {GOAL_RSS_MIB}: {'met' if figures['rss_met'] else 'NOT met'})"
    )
    print(
        f"  load average before {load_before[0]:.2f}, after {load_after[0]:.2f}, "
        f"{os.cpu_count()} CPUs"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    complete = (
        consume["events"] == bulk["events"] and not consume["rejected"] and not bulk["rejected"]
    )
    return 0 if complete else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--tmp-dir", type=Path, help="where the work directory goes")
    parser.add_argument("--mode", choices=["bulk", "consume"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "bulk":
        print(json.dumps(run_bulk(args.data, args.work_dir, args.batch_size)))
        return 0
    if args.mode == "consume":
        print(json.dumps(run_consume(args.bootstrap, args.topic, args.work_dir, args.batch_size)))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
