"""Stream-ingest benchmark: ``idgraph consume`` beside the bulk-file path on the same events.

Usage (from the repository root)::

    .venv/bin/python bench/stream.py                       # 20k identifiers, 3 rounds
    .venv/bin/python bench/stream.py --identifiers 4000 --rounds 5 --json /tmp/stream.json
    KAFKA_BOOTSTRAP=127.0.0.1:9092 .venv/bin/python bench/stream.py   # a running broker

The parent generates one deterministic JSONL file (bench/ingest.py's generator, not timed) and
one hash key, starts a local broker from tools/kafka-server on a free port (unless
``KAFKA_BOOTSTRAP`` names one) and produces every line of the file once to a fresh topic (not
timed). Then ``--rounds`` rounds (default 3), each running both modes, each mode in its own
subprocess (so that peak RSS is per mode) on a fresh store (``round-N/<mode>`` of the work
directory, deleted once the mode is done; the disk is synced before each mode, untimed):

* ``bulk`` (the baseline): the code path of ``idgraph ingest FILE``, one transaction per
  ``--batch-size`` events; timed around ``ingest_file``;
* ``consume``: the stream worker of ``idgraph consume`` on the topic, one transaction per poll of
  ``--batch-size`` records, offsets committed after each, until the topic is drained. Each
  round's consumer is a fresh group (``bench-<topic>-rN``), so it starts at the beginning of the
  topic (the worker's ``auto.offset.reset`` is ``earliest``) and reads every record; a round
  whose consumer applied fewer events than the bulk path fails the run. Timed from the first
  record polled to the last batch committed (the worker's own span), and its CPU over the same
  span (from the start of the first batch to the end of the last): start-up, the group join, the
  idle wait that tells the worker the topic is drained (``IDLE_EXIT_S``) and leaving the group
  are outside both, and reported apart as ``run_cpu_seconds``.

Rounds alternate the order (consume first in odd rounds, bulk first in even ones), so both modes
see the same drift of the machine's load. Per round: wall and CPU seconds of each mode, the
ratio consume/bulk of identifiers per second, and the CPU ratio (consume CPU per identifier over
bulk CPU per identifier; above 1 the consumer spends more). Figures of record: the **median
round's ratio** (goal >= 0.8) with the rounds' spread (lowest, highest), the same for the CPU
ratio, the largest peak RSS of the consumer over the rounds (goal < 512 MiB) and the load average
before and after. In ``--json``: ``ratio`` (the median), ``ratio_spread``, ``cpu_ratio``,
``cpu_ratio_spread``, ``ratios`` (as the other benches: ``<key>``, ``<key>_median``, ``_min``,
``_max`` and ``rounds``), ``rounds`` (every round), and ``bulk``/``consume``: each mode's median
seconds and CPU seconds over the rounds with its largest peak RSS (so their quotient is not
always the median ratio). Exits 1 if a round's mode did not apply every event, 2 if a mode
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import KEY_FILE, create_key, write_data  # noqa: E402
from bench.ingest import round_order as rotated  # noqa: E402
from bench.measure import children_cpu_seconds, peak_rss_kib  # noqa: E402

GOAL_RATIO = 0.8
GOAL_RSS_MIB = 512
KAFKA_SERVER = ROOT / "tools" / "kafka-server" / "kafka_server.py"
MODES = ("bulk", "consume")
# Seconds without records (every assigned partition read to its end) before the worker leaves.
IDLE_EXIT_S = 5.0
# The ``ratios`` keys judged per round: their median, lowest and highest round.
THROUGHPUT_KEY = "consume_identifiers_per_second_over_bulk"
CPU_KEY = "consume_cpu_per_identifier_over_bulk"
RUN_CPU_KEY = "consume_run_cpu_per_identifier_over_bulk"


def _settings(work: Path, store_dir: Path) -> Any:
    from bootstrap.settings import Settings

    return Settings(
        env="test",
        data_dir=store_dir,
        store_url=None,
        hash_keys=None,
        hash_key_file=work / KEY_FILE,
        policy_dir=ROOT / "policies",
    )


def _cpu() -> float:
    """CPU seconds of this process and of the processes it waited for: a large bulk file is
    read by a process of its own (services.bulk_reader), whose CPU is part of the bulk path's."""
    return time.process_time() + children_cpu_seconds()


def run_bulk(data: Path, work: Path, store_dir: Path, batch_size: int) -> dict[str, Any]:
    """``idgraph ingest FILE``: the bulk-file use case."""
    from bootstrap.container import build_container
    from services.bulk import ingest_file

    container = build_container(_settings(work, store_dir), scanner_on_demand=True)
    try:
        cpu0, start = _cpu(), time.perf_counter()
        report = ingest_file(container.ingest, data, actor="cli", batch_size=batch_size)
        seconds, cpu = time.perf_counter() - start, _cpu() - cpu0
        stats = container.store.stats()
    finally:
        container.close()
    return {
        "mode": "bulk",
        "events": report.events,
        "rejected": report.rejected_rows,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_kib": float(peak_rss_kib(report.reader_peak_rss_kib)),
        "persons": stats.persons,
        "identifiers": stats.identifiers,
    }


def run_consume(
    bootstrap: str, topic: str, group: str, work: Path, store_dir: Path, batch_size: int
) -> dict[str, Any]:
    """The stream worker of ``idgraph consume`` until the topic is drained."""
    from confluent_kafka import Message

    from bootstrap.container import build_container
    from stream.metrics import StreamMetrics
    from stream.worker import BatchReport, StreamWorker, WorkerConfig

    class SpanWorker(StreamWorker):
        """The worker, with the process' CPU seconds at the start of its first batch and at
        the end of its last: the CPU of the span the worker's ``seconds`` times."""

        cpu_first: float | None = None
        cpu_last: float | None = None

        def prepare(self, messages: Sequence[Message]) -> Any:
            if self.cpu_first is None:
                self.cpu_first = _cpu()
            return super().prepare(messages)

        def finish_in_flight(self) -> BatchReport | None:
            report = super().finish_in_flight()
            if report is not None:
                self.cpu_last = _cpu()
            return report

    container = build_container(_settings(work, store_dir))
    metrics = StreamMetrics()
    config = WorkerConfig(
        bootstrap_servers=bootstrap,
        group_id=group,
        topics=(topic,),
        dead_letter_topic=f"{topic}.dlq",
        source="bench",
        batch_size=batch_size,
        poll_timeout_s=0.5,
    )
    try:
        worker = SpanWorker(
            config,
            container.ingest.with_metrics(metrics),
            container.store,
            container.engine.message_digest,
            metrics,
        )
        cpu0 = _cpu()
        summary = worker.run(idle_exit_s=IDLE_EXIT_S)
        run_cpu = _cpu() - cpu0
        stats = container.store.stats()
    finally:
        container.close()
    span_cpu = (
        worker.cpu_last - worker.cpu_first
        if worker.cpu_first is not None and worker.cpu_last is not None
        else 0.0
    )
    return {
        "mode": "consume",
        "events": summary["applied"],
        "rejected": summary["dead_letters"],
        "duplicates": summary["duplicates"],
        "seconds": summary["seconds"],
        # From the start of the first batch to the end of the last (the span of ``seconds``).
        "cpu_seconds": span_cpu,
        # The whole worker.run: joining the group, the idle wait at the end, leaving.
        "run_cpu_seconds": run_cpu,
        "peak_rss_kib": float(peak_rss_kib()),
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


def round_order(number: int) -> tuple[str, ...]:
    """The modes of round ``number`` (1-based) in the order they run: consume first in odd
    rounds, bulk first in even ones (a mode that always ran first would meet a machine in
    another state than the other, and carry that into every ratio: stop 50's single rounds, bulk
    always first, read 0.81x and then 0.77x with no stream code changed): bench/ingest.py's
    rotation of the modes, whose rounds count from 0."""
    return rotated(("consume", "bulk"), number - 1)


def round_ratios(bulk: dict[str, Any], consume: dict[str, Any]) -> dict[str, float]:
    """One round's ratios: identifiers per second consume/bulk (higher is better), and CPU
    seconds per identifier consume/bulk over the timed span and over the whole worker run
    (lower is better)."""
    bulk_rate = bulk["identifiers"] / bulk["seconds"]
    consume_rate = consume["identifiers"] / consume["seconds"] if consume["seconds"] else 0.0
    bulk_cpu = bulk["cpu_seconds"] / bulk["identifiers"]
    ratios = {
        THROUGHPUT_KEY: round(consume_rate / bulk_rate, 4),
        CPU_KEY: round(consume["cpu_seconds"] / consume["identifiers"] / bulk_cpu, 4),
    }
    if "run_cpu_seconds" in consume:
        ratios[RUN_CPU_KEY] = round(
            consume["run_cpu_seconds"] / consume["identifiers"] / bulk_cpu, 4
        )
    return ratios


def spread_ratios(each: list[dict[str, float]]) -> dict[str, float]:
    """The ``ratios`` object: each key's median round (as ``<key>`` and ``<key>_median``) and its
    lowest and highest round (``_min``, ``_max``), as bench/load.py writes them."""
    ratios: dict[str, float] = {"rounds": float(len(each))}
    for key in (THROUGHPUT_KEY, CPU_KEY, RUN_CPU_KEY):
        values = [r[key] for r in each if key in r]
        if len(values) == len(each) and values:
            ratios[key] = ratios[f"{key}_median"] = round(statistics.median(values), 3)
            ratios[f"{key}_min"], ratios[f"{key}_max"] = min(values), max(values)
    return ratios


def mode_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One mode over the rounds: its median seconds and CPU seconds, its largest peak RSS and
    its fewest events applied (a round that missed some shows); counts of the first round."""
    figures = dict(runs[0])
    for key in ("seconds", "cpu_seconds", "run_cpu_seconds"):
        if key in figures:
            figures[key] = round(statistics.median(r[key] for r in runs), 3)
    figures["peak_rss_kib"] = max(r["peak_rss_kib"] for r in runs)
    figures["events"] = min(r["events"] for r in runs)
    figures["rejected"] = max(r["rejected"] for r in runs)
    return figures


def _complete(bulk: dict[str, Any], consume: dict[str, Any]) -> bool:
    return consume["events"] == bulk["events"] and not consume["rejected"] and not bulk["rejected"]


def orchestrate(args: argparse.Namespace) -> int:
    """Generate, produce, run the rounds, print the figures, in a work directory (events,
    graphs, keys, the broker's data) removed at the end: stop 33 found dozens left in /tmp."""
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
    rounds: list[dict[str, Any]] = []
    try:
        # Produced once: every round's consumer reads the same records from the start.
        topic = _produce(bootstrap, data, args.partitions)
        for number in range(1, max(1, args.rounds) + 1):
            rounds.append(_round(number, work, data, bootstrap, topic, args))
            if args.rounds > 1:
                print(f"round {number}/{args.rounds} done", file=sys.stderr)
    finally:
        if broker_dir is not None:
            subprocess.run(
                [sys.executable, str(KAFKA_SERVER), "stop", "--data-dir", str(broker_dir)],
                capture_output=True, check=False,
            )  # fmt: skip
    load_after = os.getloadavg()
    figures = summarize(rounds, args, load_before, load_after)
    print(render(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0 if all(r["complete"] for r in rounds) else 1


def _round(
    number: int, work: Path, data: Path, bootstrap: str, topic: str, args: argparse.Namespace
) -> dict[str, Any]:
    """Both modes once, in :func:`round_order`, each on a fresh store under ``round-N``."""
    order = round_order(number)
    load = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    for mode in order:
        store = work / f"round-{number}" / mode
        # A quiet disk for each mode (untimed): every commit fsyncs, and an fsync waits behind
        # whatever the mode before left dirty (see bench/ingest.py's settle_disk).
        os.sync()
        common = [
            "--work-dir", str(work), "--store-dir", str(store),
            "--batch-size", str(args.batch_size),
        ]  # fmt: skip
        if mode == "bulk":
            results[mode] = _run_mode(["--mode", "bulk", "--data", str(data), *common])
        else:
            group = f"bench-{topic}-r{number}"
            argv = ["--mode", "consume", "--bootstrap", bootstrap, "--topic", topic]
            results[mode] = _run_mode([*argv, "--group", group, *common])
        # Its figures are in; the store (and its key-encryption key beside it) is not needed.
        shutil.rmtree(store, ignore_errors=True)
        shutil.rmtree(store.parent / f"{mode}-kek", ignore_errors=True)
    bulk, consume = results["bulk"], results["consume"]
    return {
        "round": number,
        "order": list(order),
        "bulk": bulk,
        "consume": consume,
        "ratios": round_ratios(bulk, consume),
        "complete": _complete(bulk, consume),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }


def summarize(
    rounds: list[dict[str, Any]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> dict[str, Any]:
    """The JSON document: the median round's ratios with their spread, each mode over the
    rounds (:func:`mode_figures`), every round, and the keys bench/report.py reads."""
    bulk = mode_figures([r["bulk"] for r in rounds])
    consume = mode_figures([r["consume"] for r in rounds])
    ratios = spread_ratios([r["ratios"] for r in rounds])
    ratio, cpu_ratio = ratios[THROUGHPUT_KEY], ratios[CPU_KEY]
    rss_mib = consume["peak_rss_kib"] / 1024
    ids = bulk["identifiers"]
    return {
        "identifiers": ids,
        "events": bulk["events"],
        "batch_size": args.batch_size,
        "partitions": args.partitions,
        "idle_exit_s": IDLE_EXIT_S,
        "bulk": bulk,
        "consume": consume,
        "bulk_identifiers_per_s": round(ids / bulk["seconds"], 1),
        "consume_identifiers_per_s": (
            round(consume["identifiers"] / consume["seconds"], 1) if consume["seconds"] else 0.0
        ),
        "ratio": ratio,
        "ratio_spread": [ratios[f"{THROUGHPUT_KEY}_min"], ratios[f"{THROUGHPUT_KEY}_max"]],
        "cpu_ratio": cpu_ratio,
        "cpu_ratio_spread": [ratios[f"{CPU_KEY}_min"], ratios[f"{CPU_KEY}_max"]],
        "goal_ratio": GOAL_RATIO,
        "ratio_met": ratio >= GOAL_RATIO,
        "consume_rss_mib": round(rss_mib, 1),
        "goal_rss_mib": GOAL_RSS_MIB,
        "rss_met": rss_mib < GOAL_RSS_MIB,
        "ratios": ratios,
        "rounds": rounds,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "cpus": os.cpu_count(),
    }


def render(figures: dict[str, Any]) -> str:
    """The printed report: every round, then the medians and the goals."""
    rounds = figures["rounds"]
    heading = (
        f"stream bench: {figures['events']} events, {figures['identifiers']} identifiers, "
        f"batch {figures['batch_size']}, {len(rounds)} round(s) in alternating order"
    )
    lines = [heading]
    for r in rounds:
        cells = [
            f"{mode} {r[mode]['seconds']:7.2f} s wall {r[mode]['cpu_seconds']:7.2f} s CPU"
            for mode in r["order"]
        ]
        ratios = r["ratios"]
        lines.append(
            f"  round {r['round']}: {'; '.join(cells)}; ratio {ratios[THROUGHPUT_KEY]:.3f}, "
            f"CPU ratio {ratios[CPU_KEY]:.3f}; load {r['load_average_before'][0]:.2f} -> "
            f"{r['load_average_after'][0]:.2f}" + ("" if r["complete"] else "; INCOMPLETE")
        )
    for mode in MODES:
        m = figures[mode]
        rate = figures[f"{mode}_identifiers_per_s"]
        lines.append(
            f"  {mode:8s} median {m['seconds']:8.2f} s wall {m['cpu_seconds']:8.2f} s CPU "
            f"{rate:10.0f} ids/s  peak RSS {m['peak_rss_kib'] / 1024:6.0f} MiB (largest)"
        )
    ratios = figures["ratios"]
    low, high = figures["ratio_spread"]
    cpu_low, cpu_high = figures["cpu_ratio_spread"]
    lines.append(
        f"  ratio consume/bulk: median {figures['ratio']:.2f} (spread {low:.2f}-{high:.2f}) "
        f"(goal >= {GOAL_RATIO}: {'met' if figures['ratio_met'] else 'NOT met'}); "
        f"consumer RSS {figures['consume_rss_mib']:.0f} MiB "
        f"(goal < {GOAL_RSS_MIB}: {'met' if figures['rss_met'] else 'NOT met'})"
    )
    whole_run = (
        f"; {ratios[RUN_CPU_KEY]:.2f} over the worker's whole run (group join, "
        f"{IDLE_EXIT_S:g} s idle wait, leave)"
        if RUN_CPU_KEY in ratios
        else ""
    )
    lines.append(
        f"  CPU per identifier consume/bulk: median {figures['cpu_ratio']:.2f} "
        f"(spread {cpu_low:.2f}-{cpu_high:.2f}), first batch to last commit{whole_run}"
    )
    lines.append(
        f"  load average before {figures['load_average_before'][0]:.2f}, after "
        f"{figures['load_average_after'][0]:.2f}, {figures['cpus']} CPUs"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identifiers", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of both modes, alternating (default 3)"
    )
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--tmp-dir", type=Path, help="where the work directory goes")
    parser.add_argument("--mode", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--group", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode == "bulk":
        print(json.dumps(run_bulk(args.data, args.work_dir, args.store_dir, args.batch_size)))
        return 0
    if args.mode == "consume":
        result = run_consume(
            args.bootstrap, args.topic, args.group, args.work_dir, args.store_dir, args.batch_size
        )
        print(json.dumps(result))
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
