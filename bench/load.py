"""Load test: the real server on loopback, driven by a bounded asyncio httpx client.

Usage::

    .venv/bin/python bench/load.py                       # small: a few thousand requests
    .venv/bin/python bench/load.py --requests 20000 --concurrency 32 --json /tmp/load.json

Starts two servers as subprocesses on 127.0.0.1 (free ports): ``idgraph serve`` on a fresh data
dir (embedded SQLite store, generated development keys) and ``bench/hello_app.py``, a FastAPI
hello-world under the same uvicorn: **the ceiling**. Then runs, each phase with a fixed request
count (and a wall-clock cap, so the run always stops by itself):

* ``hello``        GET /hello on the ceiling app, closed loop at ``--concurrency``;
* ``identify``     POST /v1/identify (three identifiers and two traits per person) at a fixed
                   arrival rate (``--rate`` requests/s, open loop: latency includes queueing);
* ``ingest``       POST /v1/ingest batches of ``--batch`` events, closed loop on a quarter of
                   ``--concurrency`` connections, ``--ingest-requests`` of them (default
                   ``--requests / --batch``); the bodies are encoded before the phase starts,
                   as the bulk phase's file is written before it is timed;
* ``ingest_async`` the ingest phase's batches again (same persons, same snapshot) with
                   ``Prefer: respond-async``, timed until every event is applied (the server's
                   ingest journal is empty), not until the last 202; ``ingest_async_over_bulk``
                   in ``ratios`` beside the synchronous ``ingest_events_per_second_over_bulk``
                   (on a pre-grown store only, i.e. with ``--rounds`` > 1; ``--no-ingest-async``);
* ``profile``      GET /v1/profiles/{id}?purpose=analytics for persons with analytics consent
                   (recorded first through POST /v1/consent), closed loop;
* ``audience``     POST /v1/audiences once, then GET .../export?format=jsonl, a few times.

Phases whose endpoints the server does not have (checked in its OpenAPI document) are skipped
with a message. Figures per phase: requests, errors (non-2xx or no answer) and error rate,
transport failures resent once (``retried``: only requests with a ``message_id``), throughput
(requests/s), p50/p95/p99 latency in ms, and the ratio of throughput and of p50 to the
``hello`` ceiling. The open-loop phase keeps at most ``--max-in-flight`` requests in flight and
measures each latency from when the request was due (queueing included). Errors are figures:
the exit status is 1 only when a phase's error rate exceeds ``--max-error-rate`` (1 %).
Machines are noisy: compare the ratios, not the absolute numbers. Each phase also reports CPU
seconds of the client and servers together and of the server alone (``server_cpu_seconds``;
``*_server_cpu_per_request_over_hello`` in ``ratios``): the steadier figure when other jobs
share the machine. ``--phases identify_closed,ingest`` runs only the named phases after
``hello`` (``bulk`` comes with ``ingest``). The ingest phase also reports the server's graph
transactions (``commits``, from its own ``/metrics``: one per group commit), to compare with
``bench/ingest_paths.py``'s (the ``identify_closed`` phase reports its own the same way: how
many identify calls share one), and beside the bulk phase (whose process reports its own bytes
written) ``ingest_bytes_over_bulk``, ``ingest_server_cpu_over_wall`` and ``bulk_cpu_over_wall``:
both are bound to one core by the GIL, so a server below the bulk process's CPU over wall is
waiting (for its commits' fsyncs, for requests in transit) rather than working.

With a pre-grown store, each round also runs ``bulk_txn``: the bulk path on the same events in
transactions no bigger than the ingest phase's can be (``--bulk-txn-events``, default its
connections times ``--batch``: every batch in flight in one group commit). The bulk phase
commits 10,000 events per transaction; an HTTP caller's batch is acknowledged only once it is
durable, so the server's transactions hold what is in flight, at most that many events; each
event of a small transaction dirties index pages of its own (random keys), so the bytes written
per event fall only once a transaction touches most of an index's pages (at 125 events per
transaction the bulk path wrote as much per event as the HTTP path, 8x its own at 10,000).
``ingest_*_over_bulk_txn``
compare the two paths at the same transaction size: what the HTTP layer itself costs, apart
from the transaction size the goal ratio includes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.measure import (  # noqa: E402 - after the path set-up
    Span,
    load_average,
    measured,
    process_cpu_seconds,
)
from privacy.access.api_keys import ApiKeyStore, Scope  # noqa: E402 - after the path set-up above
from storage.journal import journal_path  # noqa: E402 - after the path set-up above

Request = Callable[[httpx.AsyncClient, int], Awaitable[httpx.Response]]
PHASES = frozenset({"identify", "identify_closed", "ingest", "profile", "audience_export"})


@dataclass
class Phase:
    """The figures of one phase."""

    name: str
    items_per_request: int = 1  # events per request (ingest batches), else 1
    requests: int = 0
    errors: int = 0
    # Transport failures (connection reset/closed) retried once; only requests that are safe
    # to resend are (they carry a message_id, so a resent one that was applied is a duplicate).
    retried: int = 0
    # Open loop: the most requests in flight at once (arrivals beyond --max-in-flight wait, and
    # their latency counts from when they were due, queueing included).
    max_in_flight: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    error_statuses: dict[str, int] = field(default_factory=dict)
    # Client and server together (see bench/measure.py): CPU seconds, bytes written, load.
    cpu_seconds: float = 0.0
    # The server process alone (the hello-world server for ``hello``): steadier than the sum
    # on a shared machine, because the client's CPU is not in it.
    server_cpu_seconds: float = 0.0
    bytes_written: int = 0
    load_before: float = 0.0
    load_after: float = 0.0
    # Ingest: the server's graph transactions during the phase (its idgraph_store_seconds
    # count for operation="ingest": one per group commit), 0 when not measured.
    commits: int = 0
    # Async ingest: the queued batches the server's journal applier opened during the phase,
    # from memory (kept as validated by the accepting process) or from the journal (unsealed and
    # decoded: past the kept bound); from its idgraph_ingest_journal_batches_opened counter.
    batches_from_memory: int = 0
    batches_from_journal: int = 0
    # Profile: the server's context switches during the phase, summed over its threads
    # (``voluntary``: a thread went to sleep, e.g. on a lock or futex; ``involuntary``: it was
    # preempted); empty when not measured. Threads that ended within the phase are not counted.
    server_switches: dict[str, int] = field(default_factory=dict)

    @property
    def throughput(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def error_rate(self) -> float:
        """Failed requests over requests sent."""
        return self.errors / self.requests if self.requests else 0.0

    def percentile(self, q: float) -> float:
        """Latency percentile ``q`` (0-100) in milliseconds."""
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
        return ordered[index]

    def summary(self) -> dict[str, Any]:
        """The phase as JSON-ready figures."""
        data = asdict(self)
        data.pop("latencies_ms")
        data.update(
            throughput=round(self.throughput, 1),
            items_per_second=round(self.throughput * self.items_per_request, 1),
            p50_ms=round(self.percentile(50), 2),
            p95_ms=round(self.percentile(95), 2),
            p99_ms=round(self.percentile(99), 2),
            mean_ms=round(statistics.fmean(self.latencies_ms), 2) if self.latencies_ms else 0.0,
            error_rate=round(self.error_rate, 5),
        )
        return data


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    """Poll ``url`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} not ready after {timeout:.0f} s")


async def run_closed(
    name: str,
    client: httpx.AsyncClient,
    send: Request,
    count: int,
    concurrency: int,
    cap: float,
    items: int = 1,
    pids: tuple[int, ...] = (),
    retry_transport: bool = False,
    then: Callable[[], Awaitable[None]] | None = None,
) -> Phase:
    """``count`` requests by ``concurrency`` workers, each sending the next as soon as it can
    (``retry_transport``: resend once after a dropped connection; safe with message ids).
    ``then`` is awaited after the last answer, inside the timed span (``ingest_async``: until
    every accepted event is applied)."""
    phase = Phase(name, items)
    counter = iter(range(count))
    start = time.perf_counter()

    async def worker() -> None:
        for index in counter:
            if time.perf_counter() - start > cap:
                return
            await _one(phase, client, send, index, retry_transport=retry_transport)

    with measured_server(pids) as span:
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        if then is not None:
            await then()
    _fill(phase, span)
    return phase


@contextmanager
def measured_server(pids: tuple[int, ...]) -> Iterator[Span]:
    """:func:`bench.measure.measured` (client + ``pids``), plus the CPU of ``pids`` alone in
    ``span.extra["server_cpu_seconds"]``."""
    before = sum(process_cpu_seconds(p) for p in pids)
    with measured(pids) as span:
        yield span
    span.extra["server_cpu_seconds"] = sum(process_cpu_seconds(p) for p in pids) - before


def _fill(phase: Phase, span: Span) -> None:
    phase.seconds = span.seconds
    phase.server_cpu_seconds = round(float(span.extra.get("server_cpu_seconds", 0.0)), 3)
    phase.cpu_seconds = round(span.cpu_seconds, 3)
    phase.bytes_written = span.bytes_written
    phase.load_before, phase.load_after = span.load_before, span.load_after


async def run_open(
    name: str,
    client: httpx.AsyncClient,
    send: Request,
    count: int,
    rate: float,
    cap: float,
    pids: tuple[int, ...] = (),
    max_in_flight: int = 64,
    retry_transport: bool = False,
) -> Phase:
    """``count`` requests due at a fixed ``rate`` per second, whatever the server does.

    At most ``max_in_flight`` are in flight: an arrival beyond that waits for a slot instead
    of piling up sockets until the client or the server gives (last stop: one ``ReadError`` in
    8,043 at 50/s on a loaded machine). The wait is not hidden: each latency counts from the
    moment the request was *due*, so a server that falls behind shows it in p50-p99.
    """
    phase = Phase(name)
    slots = asyncio.Semaphore(max_in_flight)
    in_flight = 0

    async def one(index: int, due: float) -> None:
        nonlocal in_flight
        async with slots:
            in_flight += 1
            phase.max_in_flight = max(phase.max_in_flight, in_flight)
            try:
                await _one(phase, client, send, index, due, retry_transport)
            finally:
                in_flight -= 1

    with measured_server(pids) as span:
        start = time.perf_counter()
        tasks = []
        for index in range(count):
            due = start + index / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.perf_counter() - start > cap:
                break
            tasks.append(asyncio.create_task(one(index, due)))
        await asyncio.gather(*tasks)
    _fill(phase, span)
    return phase


async def _one(
    phase: Phase,
    client: httpx.AsyncClient,
    send: Request,
    index: int,
    began: float | None = None,
    retry_transport: bool = False,
) -> None:
    began = time.perf_counter() if began is None else began
    for attempt in (1, 2):
        try:
            response = await send(client, index)
            status = str(response.status_code)
            ok = response.is_success
        except httpx.TransportError as exc:
            # A connection the server closed under us (keep-alive race, reset under load):
            # resent once when that is safe, and counted either way.
            status, ok = type(exc).__name__, False
            if retry_transport and attempt == 1:
                phase.retried += 1
                continue
        except httpx.HTTPError as exc:
            status, ok = type(exc).__name__, False
        break
    phase.latencies_ms.append((time.perf_counter() - began) * 1000)
    phase.requests += 1
    if not ok:
        phase.errors += 1
        phase.error_statuses[status] = phase.error_statuses.get(status, 0) + 1


# The bulk path on a JSONL file of the same events as the ingest phase sends, in a process of
# its own on the server's data dir (the server is idle then); timed around ingest_file only
# (not the interpreter's start-up or the container's build), wall, CPU (the file's reader
# process's included, services.bulk_reader) and the bytes
# the process wrote (the ingest phase reports the server's, so the two compare).
_BULK_SCRIPT = """
import json, sys, time
from pathlib import Path
from bench.measure import bytes_written, children_cpu_seconds
from bootstrap.container import build_container
from bootstrap.settings import Settings
from services.bulk import DEFAULT_BATCH_EVENTS, ingest_file
container = build_container(Settings())
batch_size = int(sys.argv[2]) if len(sys.argv) > 2 else DEFAULT_BATCH_EVENTS
try:
    wall, cpu = time.perf_counter(), time.process_time() + children_cpu_seconds()
    written = bytes_written()
    report = ingest_file(container.ingest, Path(sys.argv[1]), actor="bench",
                         batch_size=batch_size)
    wall = time.perf_counter() - wall
    cpu = time.process_time() + children_cpu_seconds() - cpu  # the file's reader process too
    written = bytes_written() - written
finally:
    container.close()
print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "bytes_written": written,
                  "rows": report.rows, "events": report.events,
                  "rejected": report.rejected_rows}))
"""


def run_bulk(
    events: list[dict[str, Any]],
    work: Path,
    env: dict[str, str],
    name: str = "bulk",
    batch_size: int | None = None,
) -> Phase:
    """The same events through the bulk path (``idgraph ingest FILE``'s use case), in
    transactions of ``batch_size`` events (default: the bulk path's own)."""
    phase = Phase(name, items_per_request=len(events))
    path = work / "bulk-events.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    load_before = load_average()
    size = () if batch_size is None else (str(batch_size),)
    done = subprocess.run(
        [sys.executable, "-c", _BULK_SCRIPT, str(path), *size],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    phase.load_before, phase.load_after = load_before, load_average()
    if done.returncode != 0:
        phase.requests, phase.errors = 1, 1
        phase.error_statuses["exit " + str(done.returncode)] = 1
        print(done.stderr[-2000:], file=sys.stderr)
        return phase
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    phase.requests = 1
    if figures["rejected"] or figures["events"] != len(events):
        phase.errors = 1
        phase.error_statuses["rows rejected"] = int(figures["rejected"])
    phase.seconds = float(figures["seconds"])
    phase.cpu_seconds = round(float(figures["cpu_seconds"]), 3)
    phase.bytes_written = int(figures["bytes_written"])
    phase.latencies_ms.append(phase.seconds * 1000)
    return phase


JSON_CONTENT = {"Content-Type": "application/json"}
_INGEST_COMMITS = re.compile(r'^idgraph_store_seconds_count\{operation="ingest"\} (\S+)$', re.M)


_OPENED_BATCHES = re.compile(
    r'^idgraph_ingest_journal_batches_opened_total\{source="(\w+)"\} (\S+)$', re.M
)


async def server_counts(api: httpx.AsyncClient) -> tuple[int, int, int]:
    """From the server's own ``/metrics``: its ingest transactions so far (one per group), and
    the journal batches its applier opened from memory and from the journal (0 for a server
    without that counter)."""
    text = (await api.get("/metrics")).text
    found = _INGEST_COMMITS.search(text)
    opened = {m.group(1): int(float(m.group(2))) for m in _OPENED_BATCHES.finditer(text)}
    commits = int(float(found.group(1))) if found else 0
    return commits, opened.get("memory", 0), opened.get("journal", 0)


async def ingest_commits(api: httpx.AsyncClient) -> int:
    """The server's ingest transactions so far (from its own ``/metrics``; one per group)."""
    return (await server_counts(api))[0]


def ingest_bodies(first: int, requests: int, batch: int, rng_seed: int) -> list[bytes]:
    """The encoded ``POST /v1/ingest`` bodies of the ingest phase: request ``i`` holds persons
    ``first + i * batch`` to ``first + (i + 1) * batch - 1`` (the bulk phase then sends the
    persons after them, in the same shape)."""
    return [
        json.dumps(
            {"events": [person(first + i * batch + k, rng_seed) for k in range(batch)]}
        ).encode()
        for i in range(requests)
    ]


def person(index: int, rng_seed: int) -> dict[str, Any]:
    """The identify body of synthetic person ``index`` (deterministic per seed); its
    ``message_id`` makes a resend after a dropped connection harmless (answered duplicate)."""
    rng = random.Random(rng_seed * 1_000_003 + index)
    return {
        "message_id": f"load-{rng_seed}-{index}",
        "identifiers": [
            {"type": "customer_id", "value": f"L{rng_seed:02d}{index:08d}"},
            {"type": "email", "value": f"load.{rng_seed}.{index}@bench-mail.de"},
            {"type": "cookie_id", "value": f"ck-{rng_seed}-{index:08d}"},
        ],
        "source": "load",
        "traits": {"city": rng.choice(["Berlin", "Lyon", "Porto", "Turin"]), "visit_count": 3},
        "events": [{"name": "purchase", "properties": {"amount": 12.5, "currency": "EUR"}}],
    }


async def identify_closed(
    api: httpx.AsyncClient, args: argparse.Namespace, offset: int, server: tuple[int, ...]
) -> Phase:
    """The closed-loop identify phase on persons from ``offset`` on, with the graph
    transactions it took (one per identify group commit) as its ``commits``."""
    commits_before = await ingest_commits(api)
    phase = await run_closed(
        "identify_closed",
        api,
        identify_from(offset, args.seed),
        args.requests,
        args.concurrency,
        args.cap,
        pids=server,
        retry_transport=True,
    )
    phase.commits = await ingest_commits(api) - commits_before
    return phase


async def drive(
    args: argparse.Namespace,
    base: str,
    hello: str,
    token: str,
    pids: tuple[int, int] = (0, 0),
    store: PregrownStore | None = None,
) -> dict[str, Any]:
    """Run every phase the server supports; returns the figures. ``pids`` are the idgraph and
    hello-world servers' process ids (their CPU and writes count with the client's). With a
    pre-grown ``store``, each round starts the server on the snapshot, and its ingest and bulk
    phases each start from the snapshot with the same events."""
    server = (pids[0],) if pids[0] else ()
    ceiling_pids = (pids[1],) if pids[1] else ()
    headers = {"Authorization": f"Bearer {token}"}
    # Expire idle connections before uvicorn's 5 s keep-alive timeout closes them under us.
    limits = httpx.Limits(
        max_connections=args.concurrency,
        max_keepalive_connections=args.concurrency,
        keepalive_expiry=2.0,
    )
    seed, wanted, rounds = args.seed, args.phases, max(1, args.rounds)
    ingest_requests = args.ingest_requests or max(1, args.requests // args.batch)
    skipped: dict[str, str] = {}
    if "identify" not in wanted:
        skipped["identify"] = "not in --phases"
    # Each round: hello (the ceiling), identify_closed, then ingest and bulk on fresh persons.
    # The order of ingest and bulk alternates (ingest first in odd rounds, bulk first in even
    # ones). On a pre-grown store (``--pregrow``, the default with --rounds) both start from the
    # same snapshot with the same events; without one the store grows by each phase's persons,
    # so neither path always meets the bigger store. One 20k-event bulk phase swung 5.3-9.2 s on
    # a quiet machine and decided the ratio alone; the figures of record are the medians of the
    # per-round ratios, with their spread.
    per_round: list[list[Phase]] = []
    singles: list[Phase] = []
    offset = 0

    def client() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60)

    events = ingest_requests * args.batch
    bulk_too = "ingest" in wanted and args.bulk_env is not None
    api = client()
    try:
        for number in range(1, rounds + 1):
            done: list[Phase] = []
            # A bulk-first round's bulk phase (on a pre-grown store: before the server starts).
            bulk_first: list[Phase] = []
            if store is not None:
                # From the round's ingest persons on: after identify_closed's (bulk-first rounds
                # are even, so round 1's open-loop identify does not come before them).
                bulk_first = store.start_round(
                    number, bulk_too, offset + args.requests, events, args
                )
                server = (store.server.pid,)
                await api.aclose()
                api = client()  # no kept-alive connection to the stopped server
            async with httpx.AsyncClient(base_url=hello, limits=limits, timeout=60) as ceiling:
                done.append(
                    await run_closed(
                        "hello",
                        ceiling,
                        lambda c, i: c.get("/hello"),
                        args.requests,
                        args.concurrency,
                        args.cap,
                        pids=ceiling_pids,
                    )
                )
            if number == 1 and "identify" in wanted:
                # Open loop at a fixed rate: a latency figure, not a throughput one (once).
                singles.append(
                    await run_open(
                        "identify",
                        api,
                        lambda c, i: c.post("/v1/identify", json=person(i, seed)),
                        args.requests,
                        args.rate,
                        args.cap,
                        pids=server,
                        max_in_flight=args.max_in_flight or 4 * args.concurrency,
                        retry_transport=True,
                    )
                )
            if number == 1:
                offset += args.requests
            # Throughput of identify: closed loop at the hello phase's concurrency (group commit
            # coalesces the concurrent calls into shared engine batches).
            if "identify_closed" in wanted:
                done.append(await identify_closed(api, args, offset, server))
            offset += args.requests
            if "ingest" in wanted:
                done += bulk_first  # after hello: the round's ratios take the first as ceiling
                done += await ingest_and_bulk(api, args, number, offset, server, store)
                offset += events if store is not None else 2 * events
            per_round.append(done)
        if store is not None and not store.server.pid:
            store.server.start()  # stopped for the last bulk phase: the reads need it
            server = (store.server.pid,)
            await api.aclose()
            api = client()
        singles += await read_phases(api, args, server, skipped)
    finally:
        await api.aclose()
    phases = pooled(per_round, singles)
    return {"phases": phases, "skipped": skipped, "rounds": per_round if rounds > 1 else []}


async def read_phases(
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    server: tuple[int, ...],
    skipped: dict[str, str],
) -> list[Phase]:
    """The profile and audience export phases asked for (once each, after the rounds); why
    one did not run goes in ``skipped``.

    The server's OpenAPI document (which says whether it has their routes) is fetched only when
    one of them is asked for, once, after the timed rounds: building it is the server's costliest
    request, ~6 % of a short phase's server samples in a whole-run profile (stop 46), and a run
    of ``--phases identify_closed`` does not need it."""
    done: list[Phase] = []
    paths: dict[str, Any] | None = None
    for name, run_phase in (("profile", profile_phase), ("audience_export", export_phase)):
        if name not in args.phases:
            skipped[name] = "not in --phases"
            continue
        if paths is None:
            paths = (await api.get("/openapi.json")).json()["paths"]
        outcome = await run_phase(api, args, paths, server)
        if isinstance(outcome, Phase):
            done.append(outcome)
        else:
            skipped[name] = outcome
    return done


async def ingest_and_bulk(
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    number: int,
    first: int,
    server: tuple[int, ...],
    store: PregrownStore | None,
) -> list[Phase]:
    """Round ``number``'s ingest phase and bulk phase (unless --no-bulk) on the persons from
    ``first`` on: ingest first in odd rounds. On a pre-grown ``store`` both take the same
    persons, each from the snapshot (bulk-first rounds ran their bulk phase before the server
    started: see :func:`drive`); otherwise the bulk phase takes the persons after them."""
    requests = args.ingest_requests or max(1, args.requests // args.batch)
    events = requests * args.batch
    done: list[Phase] = []
    if store is not None:
        done.append(await ingest_phase(api, args, first, requests, server))
        if args.ingest_async:
            # The same events again, from the same snapshot, queued with Prefer: respond-async.
            store.restore(start=True)
            async with httpx.AsyncClient(
                base_url=api.base_url, headers=api.headers, timeout=60
            ) as fresh:  # no kept-alive connection to the stopped server
                done.append(
                    await ingest_async_phase(fresh, args, first, requests, store.server.pids)
                )
        if number % 2 == 1 and args.bulk_env is not None:
            sent = done[-1].requests * args.batch
            store.restore(start=False)
            done.append(bulk_phase(first, sent, args))
            if bulk_txn_events(args):
                store.restore(start=False)
                done.append(bulk_txn_phase(first, sent, args))
        return done
    ingest_at, bulk_at = first, first + events
    if number % 2 == 0 and args.bulk_env is not None:
        ingest_at, bulk_at = bulk_at, ingest_at
        done.append(bulk_phase(bulk_at, events, args))
    done.append(await ingest_phase(api, args, ingest_at, requests, server))
    if number % 2 == 1 and args.bulk_env is not None:
        done.append(bulk_phase(bulk_at, done[-1].requests * args.batch, args))
    return done


def identify_from(first: int, seed: int) -> Request:
    """``POST /v1/identify`` of person ``first + i`` for request ``i``."""
    return lambda c, i: c.post("/v1/identify", json=person(first + i, seed))


def settle_store(data_dir: Path | None) -> None:
    """Fold the WAL of every SQLite file of the server's data dir into the file (untimed), so
    each ingest and bulk phase starts on the same store state: an empty WAL.

    Why: the phase before left its last commits in the WAL (up to the store's autocheckpoint
    of 16,384 pages, 64 MiB), and whichever process wrote next paid for folding them in: the
    bulk process for the server's in ingest-first rounds, the server for the bulk process's in
    bulk-first rounds. Settled, each phase pays for the checkpoints its own commits trigger and
    no other. That is at most ~64 MiB of a 400-batch phase's 0.5-1.1 GiB written: not what made
    stop 36's bulk-first rounds low (0.305, 0.548), which stop 37 did not see as systematic
    (bench/README.md). The server is idle between phases, so no read snapshot keeps the
    checkpoint from completing."""
    if data_dir is None:
        return
    for path in sorted(data_dir.glob("*.sqlite3")):
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.close()


def children_of(pid: int) -> tuple[int, ...]:
    """The running child processes of ``pid`` (from ``/proc``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return tuple(found)


# ``idgraph serve`` as the load test starts it (the port is added).
SERVE = (sys.executable, "-c", "from cli.main import main; main()", "serve")
# Persons of the pre-grown store (``--pregrow``) are numbered from here: no round's persons.
PREGROW_FIRST = 50_000_000


class IdgraphServer:
    """``idgraph serve`` on the run's data dir, as a subprocess that can be stopped, its store
    put back to the pre-grown snapshot (``--pregrow``), and started again on the same port."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env, self.port = env, port
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        """The server's base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running server's process id (0 when stopped)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else 0

    @property
    def pids(self) -> tuple[int, ...]:
        """The running server's process id and its children's: with
        ``IDGRAPH_INGEST_APPLIER=process`` its ``idgraph ingest-applier`` applies the async
        phase's batches, so its CPU and bytes written are the server's too."""
        pid = self.pid
        return (pid, *children_of(pid)) if pid else ()

    def start(self) -> None:
        """Start the server and wait until it answers."""
        self.proc = subprocess.Popen(
            [*SERVE, "--port", str(self.port)],
            cwd=REPO,
            env=self.env,
        )
        wait_ready(self.base + "/readyz", self.proc)  # the store connected too

    def stop(self) -> None:
        """Stop the server (SIGTERM: a graceful shutdown; SIGKILL after 15 s)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class PregrownStore:
    """The data dir's pre-grown state, copied aside once (untimed): every ingest and bulk phase
    starts from it, so each round measures the same store state and the same events.

    Why: on one growing store the ingest phase wrote ~0.5 GiB in round 1 and ~1 GiB in later
    rounds (stop 37: random keys land on more distinct index pages as the B-trees grow), so the
    rounds mixed two regimes. The snapshot holds one round's worth of persons (``--pregrow``),
    made by the bulk path before the first round: round 1 no longer meets a near-empty store."""

    data_dir: Path
    snapshot: Path
    server: IdgraphServer
    # The data dir still is the snapshot (nothing ran on it since it was copied).
    fresh: bool = True

    def restore(self, start: bool) -> None:
        """Stop the server, put the snapshot back in place of the data dir (untimed), and start
        the server again if ``start``."""
        if self.fresh and start and self.server.pid:
            self.fresh = False  # the server just started on the snapshot: nothing to put back
            return
        self.fresh = False
        self.server.stop()
        shutil.rmtree(self.data_dir)
        shutil.copytree(self.snapshot, self.data_dir)
        if start:
            self.server.start()

    def start_round(
        self, number: int, bulk: bool, first: int, events: int, args: argparse.Namespace
    ) -> list[Phase]:
        """Start round ``number``'s server on the snapshot; in bulk-first (even) rounds with a
        ``bulk`` phase, that phase runs on the snapshot first (``events`` persons from
        ``first``: the ones the round's ingest phase sends), after the ``bulk_txn`` phase (on
        the snapshot too), and they are returned."""
        done = []
        if number % 2 == 0 and bulk:
            if bulk_txn_events(args):
                self.restore(start=False)
                done.append(bulk_txn_phase(first, events, args))
            self.restore(start=False)
            done.append(bulk_phase(first, events, args))
        self.restore(start=True)
        return done


def pregrow_persons(args: argparse.Namespace) -> int:
    """How many persons ``--pregrow`` puts in the store: as asked, or by default (-1) one
    round's (identify_closed's requests, the ingest phase's events and the bulk phase's) when
    there are several rounds with an ingest and a bulk phase; 0 otherwise."""
    if args.pregrow >= 0:
        return int(args.pregrow)  # argparse's int
    if args.rounds <= 1 or "ingest" not in args.phases or args.no_bulk:
        return 0
    events = (args.ingest_requests or max(1, args.requests // args.batch)) * args.batch
    closed = args.requests if "identify_closed" in args.phases else 0
    return int(closed + 2 * events)


def pregrow(persons: int, args: argparse.Namespace, server: IdgraphServer) -> PregrownStore:
    """Grow the (stopped) server's store by ``persons`` through the bulk path, fold its WAL in,
    and copy the data dir aside as the snapshot every phase starts from."""
    rows = [person(PREGROW_FIRST + k, args.seed) for k in range(persons)]
    grown = run_bulk(rows, args.bulk_work, server.env)
    if grown.errors:
        raise SystemExit(f"pre-growing the store failed: {grown.error_statuses}")
    settle_store(args.data_dir)
    snapshot = args.bulk_work / "pregrown"
    shutil.copytree(args.data_dir, snapshot)
    print(
        f"pre-grown store: {persons:,} persons by the bulk path in {grown.seconds:.1f} s "
        f"({sum(f.stat().st_size for f in snapshot.iterdir() if f.is_file()) / 2**20:.0f} MiB)",
        file=sys.stderr,
    )
    return PregrownStore(args.data_dir, snapshot, server)


def bulk_phase(first: int, events: int, args: argparse.Namespace) -> Phase:
    """The bulk path on ``events`` persons from ``first`` on (the ingest phase's shape)."""
    rows = [person(first + k, args.seed) for k in range(events)]
    settle_store(args.data_dir)
    return run_bulk(rows, args.bulk_work, args.bulk_env)


def bulk_txn_events(args: argparse.Namespace) -> int:
    """Events per transaction of the ``bulk_txn`` phase: as asked, or by default (-1) the most
    one group commit of the ingest phase can hold (its connections' batches); 0 = no phase.
    Only on a pre-grown store (``--pregrow``), where both start from the same snapshot."""
    if args.bulk_txn_events >= 0:
        return int(args.bulk_txn_events)  # argparse's int
    return int(args.batch * max(1, args.concurrency // 4))


def bulk_txn_phase(first: int, events: int, args: argparse.Namespace) -> Phase:
    """:func:`bulk_phase` in transactions of :func:`bulk_txn_events` events."""
    rows = [person(first + k, args.seed) for k in range(events)]
    settle_store(args.data_dir)
    return run_bulk(
        rows, args.bulk_work, args.bulk_env, name="bulk_txn", batch_size=bulk_txn_events(args)
    )


async def ingest_phase(
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    first: int,
    requests: int,
    server: tuple[int, ...],
) -> Phase:
    """``requests`` batches of ``args.batch`` persons from ``first`` on, closed loop on a
    quarter of ``--concurrency`` connections, with the server's graph transactions."""
    return await _ingest_batches("ingest", api, args, first, requests, server)


async def _ingest_batches(
    name: str,
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    first: int,
    requests: int,
    server: tuple[int, ...],
    *,
    prefer: dict[str, str] | None = None,
    accepted: list[str] | None = None,
    then: Callable[[], Awaitable[None]] | None = None,
) -> Phase:
    """The ingest phases' closed loop: ``prefer`` headers on every batch, the ``Location`` of
    each 202 collected in ``accepted``, ``then`` awaited inside the timed span."""
    # The bodies are made and encoded before the phase, as the bulk phase writes its file
    # before it is timed: the client's making of 50 events per request (and their JSON
    # encoding) is not the server's work, and on 2 cores it took CPU from it.
    bodies = ingest_bodies(first, requests, args.batch, args.seed)
    settle_store(args.data_dir)
    headers = JSON_CONTENT | (prefer or {})

    async def batch(c: httpx.AsyncClient, i: int) -> httpx.Response:
        response = await c.post("/v1/ingest", content=bodies[i], headers=headers)
        if accepted is not None and response.status_code == 202:
            accepted.append(response.headers["Location"])
        return response

    before = await server_counts(api)
    phase = await run_closed(
        name,
        api,
        batch,
        requests,
        max(1, args.concurrency // 4),
        args.cap,
        items=args.batch,
        pids=server,
        retry_transport=True,
        then=then,
    )
    after = await server_counts(api)
    phase.commits = after[0] - before[0]
    phase.batches_from_memory = after[1] - before[1]
    phase.batches_from_journal = after[2] - before[2]
    return phase


ASYNC_PREFER = {"Prefer": "respond-async"}
# How often the ingest_async phase looks at the journal once every batch was accepted.
JOURNAL_POLL_S = 0.01


async def journal_drained(graph: Path) -> None:
    """Wait until the server's ingest journal is empty (every accepted batch applied and
    settled): a read-only look at the journal file beside ``graph`` every ``JOURNAL_POLL_S``."""
    journal = journal_path(graph)
    while True:
        conn = sqlite3.connect(f"file:{journal}?mode=ro", uri=True, timeout=30)
        try:
            (queued,) = conn.execute("SELECT count(*) FROM ingest_journal").fetchone()
        finally:
            conn.close()
        if not queued:
            return
        await asyncio.sleep(JOURNAL_POLL_S)


async def ingest_async_phase(
    api: httpx.AsyncClient,
    args: argparse.Namespace,
    first: int,
    requests: int,
    server: tuple[int, ...],
) -> Phase:
    """The ingest phase's batches (the same persons) with ``Prefer: respond-async``, timed
    **until every event is applied** (the journal is empty), not until the last 202. Each
    job is then read (untimed): one that is not ``applied`` counts as an error."""
    locations: list[str] = []
    phase = await _ingest_batches(
        "ingest_async",
        api,
        args,
        first,
        requests,
        server,
        prefer=ASYNC_PREFER,
        accepted=locations,
        then=lambda: journal_drained(args.data_dir / "graph.sqlite3"),
    )
    for location in locations:
        status = (await api.get(location)).json().get("status", "missing")
        if status != "applied":
            phase.errors += 1
            phase.error_statuses[f"job {status}"] = phase.error_statuses.get(f"job {status}", 0) + 1
    return phase


def pooled(per_round: list[list[Phase]], singles: list[Phase]) -> list[Phase]:
    """One phase per name over every round (requests, seconds, CPU, bytes and latencies
    summed), ``hello`` first, in the order of the first round; then the once-only phases."""
    order: dict[str, list[Phase]] = {}
    for done in per_round:
        for phase in done:
            order.setdefault(phase.name, []).append(phase)
    merged: list[Phase] = []
    for name, runs in order.items():
        if len(runs) == 1:
            merged.append(runs[0])
            continue
        total = Phase(name, runs[0].items_per_request)
        for run in runs:
            total.requests += run.requests
            total.errors += run.errors
            total.retried += run.retried
            total.max_in_flight = max(total.max_in_flight, run.max_in_flight)
            total.seconds += run.seconds
            total.latencies_ms.extend(run.latencies_ms)
            for status, count in run.error_statuses.items():
                total.error_statuses[status] = total.error_statuses.get(status, 0) + count
            total.cpu_seconds = round(total.cpu_seconds + run.cpu_seconds, 3)
            total.server_cpu_seconds = round(total.server_cpu_seconds + run.server_cpu_seconds, 3)
            total.bytes_written += run.bytes_written
            total.commits += run.commits
            total.batches_from_memory += run.batches_from_memory
            total.batches_from_journal += run.batches_from_journal
        total.load_before, total.load_after = runs[0].load_before, runs[-1].load_after
        merged.append(total)
    hello = [p for p in merged if p.name == "hello"]
    rest = [p for p in merged if p.name != "hello"]
    # identify (open loop) ran right after the first hello: keep it in that place.
    opened = [p for p in singles if p.name == "identify"]
    return hello + opened + rest + [p for p in singles if p.name != "identify"]


def thread_switches(pid: int) -> dict[str, int]:
    """Voluntary and involuntary context switches of ``pid``'s live threads so far (Linux
    ``/proc/<pid>/task/*/status``; empty elsewhere)."""
    totals = {"voluntary": 0, "involuntary": 0}
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return {}
    for task in tasks:
        try:
            status = (task / "status").read_text()
        except OSError:  # the thread ended meanwhile
            continue
        for line in status.splitlines():
            name, _, value = line.partition(":")
            if name in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                key = "voluntary" if name.startswith("voluntary") else "involuntary"
                totals[key] += int(value)
    return totals


async def profile_phase(
    api: httpx.AsyncClient, args: argparse.Namespace, paths: dict[str, Any], server: tuple[int, ...]
) -> Phase | str:
    """Profile reads of persons with consent (recorded first): the phase, or why it is skipped."""
    if "/v1/consent" not in paths or "/v1/profiles/{person_id}" not in paths:
        return "the server has no /v1/consent or /v1/profiles/{person_id}"
    person_ids: list[str] = []
    for i in range(min(args.requests, 2_000)):
        body = {
            "identifiers": person(i, args.seed)["identifiers"][:1],
            "decisions": {"analytics": True, "ad_targeting": True},
            "source": "load",
        }
        response = await api.post("/v1/consent", json=body)
        response.raise_for_status()
        pid = response.json().get("person_id")
        if pid:
            person_ids.append(pid)
    if not person_ids:
        return "POST /v1/consent returned no person ids for this key"
    # Context switches of the server: how its reads wait for their audit's group commit shows
    # here (a sleeping worker thread per read, or one loop wake-up per group) beside its CPU.
    before = [thread_switches(pid) for pid in server]
    phase = await run_closed(
        "profile",
        api,
        lambda c, i: c.get(
            f"/v1/profiles/{person_ids[i % len(person_ids)]}", params={"purpose": "analytics"}
        ),
        args.requests,
        args.concurrency,
        args.cap,
        pids=server,
    )
    after = [thread_switches(pid) for pid in server]
    if all(before) and all(after):
        phase.server_switches = {
            key: sum(a[key] for a in after) - sum(b[key] for b in before)
            for key in ("voluntary", "involuntary")
        }
    return phase


async def export_phase(
    api: httpx.AsyncClient, args: argparse.Namespace, paths: dict[str, Any], server: tuple[int, ...]
) -> Phase | str:
    """Exports of one audience (created first): the phase, or why it is skipped."""
    if "/v1/audiences" not in paths or "/v1/audiences/{audience_id}/export" not in paths:
        return "the server has no /v1/audiences export"
    definition = {
        "name": "load-berlin",
        "purpose": "ad_targeting",
        "rules": {
            "attributes": [{"attribute": "city", "op": "eq", "value": "Berlin"}],
            "events": [{"event": "purchase", "within_days": 30, "min_count": 1}],
        },
    }
    created = await api.post("/v1/audiences", json=definition)
    if not created.is_success:
        return f"POST /v1/audiences answered {created.status_code}: {created.text[:200]}"
    audience_id = created.json()["id"]
    return await run_closed(
        "audience_export",
        api,
        lambda c, i: c.get(f"/v1/audiences/{audience_id}/export", params={"format": "jsonl"}),
        args.exports,
        1,
        args.cap,
        pids=server,
    )


def _per_event(ingest: dict[str, Any], cpu: str) -> float:
    """CPU seconds (``cpu``: the client's and server's, or the server's) per ingested event."""
    return float(ingest[cpu]) / max(1, int(ingest["requests"]) * int(ingest["items_per_request"]))


def _per_bulk_event(bulk: dict[str, Any]) -> float:
    """The bulk process's CPU seconds per event (one request holds all its events)."""
    return float(bulk["cpu_seconds"]) / max(1, int(bulk["items_per_request"]))


def _http_over_bulk(
    http: dict[str, Any], bulk: dict[str, Any], names: tuple[str, str, str]
) -> dict[str, float]:
    """An HTTP ingest phase over a bulk phase on the same events: throughput, server CPU per
    event and bytes written, under ``names`` (in that order)."""
    throughput, cpu, written = names
    ratios = {throughput: round(http["items_per_second"] / bulk["items_per_second"], 3)}
    if http["server_cpu_seconds"] and bulk["cpu_seconds"]:
        ratios[cpu] = round(_per_event(http, "server_cpu_seconds") / _per_bulk_event(bulk), 3)
    if http["bytes_written"] and bulk["bytes_written"]:
        ratios[written] = round(http["bytes_written"] / bulk["bytes_written"], 2)
    return ratios


def _ingest_over_bulk_txn(ingest: dict[str, Any], bulk: dict[str, Any]) -> dict[str, float]:
    """The ingest phase's figures over the ``bulk_txn`` phase's (same events, transactions of
    the size the ingest phase's can have): what the HTTP path costs apart from that size."""
    return _http_over_bulk(
        ingest,
        bulk,
        (
            "ingest_events_per_second_over_bulk_txn",
            "ingest_server_cpu_per_event_over_bulk_txn",
            "ingest_bytes_over_bulk_txn",
        ),
    )


def _ingest_over_bulk(ingest: dict[str, Any], bulk: dict[str, Any]) -> dict[str, float]:
    """The ingest phase's figures over the bulk phase's (same events): the ``ratios`` entries."""
    ratios: dict[str, float] = {}
    # HTTP /v1/ingest batches over the bulk path on events of the same shape (goal >= 0.8).
    ratios["ingest_events_per_second_over_bulk"] = round(
        ingest["items_per_second"] / bulk["items_per_second"], 3
    )
    # CPU: HTTP's client + server against the bulk process alone (an HTTP client's JSON
    # encoding is part of what the HTTP path costs; the file's writing is not timed).
    if ingest["cpu_seconds"] and bulk["cpu_seconds"]:
        ratios["ingest_cpu_per_event_over_bulk"] = round(
            _per_event(ingest, "cpu_seconds") / _per_bulk_event(bulk), 3
        )
    if ingest["server_cpu_seconds"] and bulk["cpu_seconds"]:
        # The server alone against the bulk process (no client in either).
        ratios["ingest_server_cpu_per_event_over_bulk"] = round(
            _per_event(ingest, "server_cpu_seconds") / _per_bulk_event(bulk), 3
        )
    if ingest["seconds"] and bulk["seconds"]:
        # How busy each process kept a core: the server (GIL-bound, like the bulk process)
        # waits for fsyncs and for requests in transit; wall over CPU is what that costs.
        ratios["ingest_server_cpu_over_wall"] = round(
            ingest["server_cpu_seconds"] / ingest["seconds"], 3
        )
        ratios["bulk_cpu_over_wall"] = round(bulk["cpu_seconds"] / bulk["seconds"], 3)
    if ingest["bytes_written"] and bulk["bytes_written"]:
        ratios["ingest_bytes_over_bulk"] = round(ingest["bytes_written"] / bulk["bytes_written"], 2)
    return ratios


def summaries(phases: list[Phase]) -> list[dict[str, Any]]:
    """Each phase's JSON figures with its ratios to the first phase (``hello``, the ceiling)."""
    ceiling = phases[0]
    rows: list[dict[str, Any]] = []
    for phase in phases:
        summary = phase.summary()
        tp_ratio = phase.throughput / ceiling.throughput if ceiling.throughput else 0.0
        p50_ratio = phase.percentile(50) / ceiling.percentile(50) if ceiling.latencies_ms else 0.0
        summary.update(
            throughput_ratio_to_hello=round(tp_ratio, 3), p50_ratio_to_hello=round(p50_ratio, 2)
        )
        rows.append(summary)
    return rows


def phase_ratios(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ``ratios`` of one set of phase summaries (``hello`` first)."""
    ceiling = rows[0]
    by_name = {row["name"]: row for row in rows}
    ratios: dict[str, float] = {}
    for row in rows[1:]:
        if row["name"] in ("bulk", "bulk_txn"):  # files, not requests: compared with `ingest`
            continue
        ratios[f"{row['name']}_throughput_over_hello"] = row["throughput_ratio_to_hello"]
        ratios[f"{row['name']}_p50_over_hello"] = row["p50_ratio_to_hello"]
        ratios[f"{row['name']}_error_rate"] = row["error_rate"]
        if ceiling["cpu_seconds"] and row["requests"] and ceiling["requests"]:
            # CPU per request (client + server) over the hello phase's.
            per = row["cpu_seconds"] / row["requests"]
            ratios[f"{row['name']}_cpu_per_request_over_hello"] = round(
                per / (ceiling["cpu_seconds"] / ceiling["requests"]), 3
            )
        if ceiling["server_cpu_seconds"] and row["requests"] and ceiling["requests"]:
            # The server process alone: the steadier figure on a shared machine.
            per = row["server_cpu_seconds"] / row["requests"]
            ratios[f"{row['name']}_server_cpu_per_request_over_hello"] = round(
                per / (ceiling["server_cpu_seconds"] / ceiling["requests"]), 3
            )
    if "ingest" in by_name and by_name.get("bulk", {}).get("items_per_second"):
        ratios.update(_ingest_over_bulk(by_name["ingest"], by_name["bulk"]))
    if "ingest" in by_name and by_name.get("bulk_txn", {}).get("items_per_second"):
        ratios.update(_ingest_over_bulk_txn(by_name["ingest"], by_name["bulk_txn"]))
    if "ingest_async" in by_name and by_name.get("bulk", {}).get("items_per_second"):
        ratios.update(_ingest_async_over_bulk(by_name["ingest_async"], by_name["bulk"]))
    return ratios


def _ingest_async_over_bulk(queued: dict[str, Any], bulk: dict[str, Any]) -> dict[str, float]:
    """The ``ingest_async`` phase over the bulk phase (same events; timed until applied)."""
    return _http_over_bulk(
        queued,
        bulk,
        (
            "ingest_async_over_bulk",
            "ingest_async_server_cpu_per_event_over_bulk",
            "ingest_async_bytes_over_bulk",
        ),
    )


# The ratios judged against goals (and the CPU beside them): with --rounds, each is the median
# of its per-round values (also as ``<key>_median``), and ``<key>_min`` / ``<key>_max`` give
# the spread.
ROUND_RATIOS = (
    "identify_closed_throughput_over_hello",
    "identify_closed_server_cpu_per_request_over_hello",
    "ingest_events_per_second_over_bulk",
    "ingest_server_cpu_per_event_over_bulk",
    "ingest_cpu_per_event_over_bulk",
    "ingest_events_per_second_over_bulk_txn",
    "ingest_server_cpu_per_event_over_bulk_txn",
    "ingest_bytes_over_bulk_txn",
    "ingest_async_over_bulk",
    "ingest_async_server_cpu_per_event_over_bulk",
    "ingest_async_bytes_over_bulk",
)


def round_figures(per_round: list[list[Phase]]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The medians and spreads of :data:`ROUND_RATIOS` over the rounds, and each round's
    ratios (with its phases' throughput, seconds and CPU) for the JSON document."""
    each = [phase_ratios(summaries(done)) for done in per_round]
    figures: dict[str, float] = {"rounds": float(len(per_round))}
    for key in ROUND_RATIOS:
        values = [r[key] for r in each if key in r]
        if len(values) == len(each) and values:
            figures[key] = figures[f"{key}_median"] = round(statistics.median(values), 3)
            figures[f"{key}_min"], figures[f"{key}_max"] = min(values), max(values)
    documents = [
        {
            "round": number,
            "order": [p.name for p in done],
            "phases": {
                p.name: {
                    "requests": p.requests,
                    "seconds": round(p.seconds, 3),
                    "items_per_second": round(p.throughput * p.items_per_request, 1),
                    "cpu_seconds": p.cpu_seconds,
                    "server_cpu_seconds": p.server_cpu_seconds,
                    "bytes_written": p.bytes_written,
                    "load": [p.load_before, p.load_after],
                }
                for p in done
            },
            "ratios": {key: r[key] for key in ROUND_RATIOS if key in r},
        }
        for number, (done, r) in enumerate(zip(per_round, each, strict=True), start=1)
    ]
    return figures, documents


def report(result: dict[str, Any]) -> dict[str, Any]:
    """Print the table; returns the JSON document."""
    phases: list[Phase] = result["phases"]
    print(
        f"{'phase':<16}{'requests':>9}{'errors':>8}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'p99 ms':>9}{'items/s':>10}{'req/s vs hello':>16}{'p50 vs hello':>14}"
    )
    rows = summaries(phases)
    for phase, row in zip(phases, rows, strict=True):
        items = phase.throughput * phase.items_per_request
        print(
            f"{phase.name:<16}{phase.requests:>9}{phase.errors:>8}{phase.throughput:>10.1f}"
            f"{phase.percentile(50):>9.2f}{phase.percentile(95):>9.2f}{phase.percentile(99):>9.2f}"
            f"{items:>10.1f}{row['throughput_ratio_to_hello']:>16.3f}"
            f"{row['p50_ratio_to_hello']:>14.2f}"
        )
        if phase.error_statuses:
            print(f"    non-2xx: {phase.error_statuses}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    by_name = {row["name"]: row for row in rows}
    ratios = phase_ratios(rows)
    rounds: list[dict[str, Any]] = []
    if result.get("rounds"):
        figures, rounds = round_figures(result["rounds"])
        ratios.update(figures)
        for doc in rounds:
            print(
                f"round {doc['round']} ({', '.join(doc['order'])}): "
                + ", ".join(f"{key} {value:.3f}" for key, value in doc["ratios"].items())
            )
        for key in ROUND_RATIOS:
            if f"{key}_min" in ratios:
                print(
                    f"{key}: median {ratios[key]:.3f} over {len(rounds)} rounds "
                    f"({ratios[f'{key}_min']:.3f}-{ratios[f'{key}_max']:.3f})"
                )
    print(
        "phase CPU s (client + server / server alone), MiB written, load: "
        + "; ".join(
            f"{r['name']} {r['cpu_seconds']:.1f} s / {r['server_cpu_seconds']:.1f} s, "
            f"{r['bytes_written'] / 2**20:.1f} MiB, "
            f"{r['load_before']:.2f}->{r['load_after']:.2f}"
            for r in rows
        )
    )
    profile = by_name.get("profile", {})
    if profile.get("server_switches") and profile.get("requests"):
        reads = profile["requests"]
        print(
            f"profile: server CPU per read {1e6 * profile['server_cpu_seconds'] / reads:.0f} µs; "
            "server context switches per read: "
            f"{profile['server_switches']['voluntary'] / reads:.2f} voluntary, "
            f"{profile['server_switches']['involuntary'] / reads:.2f} involuntary"
        )
    if "identify_closed" in by_name:
        print(
            f"identify at {by_name['identify_closed'].get('requests', 0)} requests, closed loop: "
            f"{ratios.get('identify_closed_throughput_over_hello', 0):.3f}x hello throughput "
            f"(goal >= 0.5), p99 {by_name['identify_closed']['p99_ms']:.1f} ms, server CPU per "
            "request "
            f"{ratios.get('identify_closed_server_cpu_per_request_over_hello', 0):.2f}x hello's"
        )
    if "ingest_events_per_second_over_bulk" in ratios:
        print(
            f"/v1/ingest events/s over bulk: {ratios['ingest_events_per_second_over_bulk']:.3f} "
            "(goal >= 0.8); server CPU per event over bulk: "
            f"{ratios.get('ingest_server_cpu_per_event_over_bulk', 0):.2f}; "
            f"{by_name['ingest']['commits']} server transactions for "
            f"{by_name['ingest']['requests']} batches; CPU over wall: server "
            f"{ratios.get('ingest_server_cpu_over_wall', 0):.2f}, bulk "
            f"{ratios.get('bulk_cpu_over_wall', 0):.2f}; bytes written over bulk "
            f"{ratios.get('ingest_bytes_over_bulk', 0):.2f}"
        )
    if "ingest_events_per_second_over_bulk_txn" in ratios:
        print(
            "/v1/ingest over the bulk path in transactions of the ingest phase's size "
            f"(bulk_txn): events/s {ratios['ingest_events_per_second_over_bulk_txn']:.3f}, "
            "server CPU per event "
            f"{ratios.get('ingest_server_cpu_per_event_over_bulk_txn', 0):.2f}, bytes written "
            f"{ratios.get('ingest_bytes_over_bulk_txn', 0):.2f}"
        )
    if "ingest_async_over_bulk" in ratios:
        print(
            "/v1/ingest with Prefer: respond-async, timed until applied, over bulk: events/s "
            f"{ratios['ingest_async_over_bulk']:.3f} (goal >= 0.8), server CPU per event "
            f"{ratios.get('ingest_async_server_cpu_per_event_over_bulk', 0):.2f}, bytes written "
            f"{ratios.get('ingest_async_bytes_over_bulk', 0):.2f}; "
            f"{by_name['ingest_async']['commits']} server transactions for "
            f"{by_name['ingest_async']['requests']} batches (opened from memory "
            f"{by_name['ingest_async']['batches_from_memory']}, from the journal "
            f"{by_name['ingest_async']['batches_from_journal']})"
        )
    return {
        "phases": rows,
        "skipped": result["skipped"],
        "ratios": ratios,
        "rounds": rounds,
        "load": result.get("load", {}),
        # Persons in the snapshot every ingest and bulk phase started from (0: a growing store).
        "pregrow_persons": result.get("pregrow_persons", 0),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line's options (exit 2 with the reason on a bad one)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2_000, help="requests per phase")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0, help="identify arrivals per second")
    parser.add_argument("--batch", type=int, default=50, help="events per ingest request")
    parser.add_argument(
        "--ingest-requests",
        type=int,
        default=0,
        help="requests of the ingest phase (default --requests / --batch: the same events as "
        "--requests identify calls; more give a steadier ratio, the bulk phase matching them)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of hello, identify_closed, ingest and bulk (ingest and bulk in alternating "
        "order); the goal ratios are then their medians, with the spread as <key>_min/_max",
    )
    parser.add_argument(
        "--pregrow",
        type=int,
        default=-1,
        help="persons put in the store by the bulk path before the first round (untimed); every "
        "ingest and bulk phase then starts from that snapshot, with the same events (default: "
        "one round's persons with --rounds > 1, else 0 = none: the store grows over the run)",
    )
    parser.add_argument(
        "--bulk-txn-events",
        type=int,
        default=-1,
        help="events per transaction of the bulk_txn phase (the bulk path on the same events in "
        "transactions of the ingest phase's size; pre-grown store only); default: --batch times "
        "the ingest phase's connections; 0 = no such phase",
    )
    parser.add_argument("--exports", type=int, default=3, help="audience exports")
    parser.add_argument("--cap", type=float, default=120.0, help="seconds per phase at most")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=0,
        help="open-loop requests in flight at most (default 4 x --concurrency)",
    )
    parser.add_argument(
        "--no-bulk", action="store_true", help="skip the bulk phase (same events, bulk path)"
    )
    parser.add_argument(
        "--no-ingest-async",
        dest="ingest_async",
        action="store_false",
        help="skip the ingest_async phase (the ingest phase's events with Prefer: "
        "respond-async, timed until applied; runs on a pre-grown store only)",
    )
    parser.add_argument(
        "--phases",
        type=lambda text: frozenset(filter(None, text.split(","))),
        default=PHASES,
        help="comma-separated phases to run after `hello` (always run: the ceiling); "
        f"default all: {','.join(sorted(PHASES))}. `bulk` runs with `ingest` unless --no-bulk",
    )
    parser.add_argument(
        "--max-error-rate",
        type=float,
        default=0.01,
        help="exit 1 if a phase's failed/sent exceeds this (errors are reported either way)",
    )
    args = parser.parse_args(argv)
    if not args.phases <= PHASES:
        parser.error(f"unknown phase(s): {', '.join(sorted(args.phases - PHASES))}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the load test; exit 1 if a phase's error rate is above ``--max-error-rate``."""
    args = parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="idgraph-load-") as tmp:
        data_dir = Path(tmp) / "data"
        env = {
            **os.environ,
            "IDGRAPH_ENV": "test",
            "IDGRAPH_DATA_DIR": str(data_dir),
            "IDGRAPH_POLICY_DIR": str(REPO / "policies"),
            "IDGRAPH_LOG_LEVEL": "warning",
            "IDGRAPH_MAX_BATCH_EVENTS": str(max(args.batch, 50)),
            "IDGRAPH_RATE_LIMIT_PER_MINUTE": "0",  # the load test measures the service, not 429s
        }
        data_dir.mkdir(parents=True, mode=0o700)
        keys = ApiKeyStore(data_dir / "control.sqlite3")
        _, token = keys.create("load", frozenset(Scope), purposes=frozenset({"*"}))
        keys.close()
        port, hello_port = free_port(), free_port()
        server = IdgraphServer(env, port)
        args.bulk_env = None if args.no_bulk else env
        args.bulk_work = Path(tmp)
        args.data_dir = data_dir
        store = None
        persons = pregrow_persons(args)
        if persons:
            store = pregrow(persons, args, server)
        hello = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(REPO / "bench"),
                "hello_app:app",
                "--port",
                str(hello_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            cwd=REPO,
        )
        try:
            server.start()
            ceiling = f"http://127.0.0.1:{hello_port}"
            wait_ready(ceiling + "/hello", hello)
            load_before = load_average()
            result = asyncio.run(
                drive(args, server.base, ceiling, token, (server.pid, hello.pid), store)
            )
            result["load"] = {"before": load_before, "after": load_average()}
            result["pregrow_persons"] = persons
        finally:
            server.stop()
            hello.terminate()
            try:
                hello.wait(timeout=15)
            except subprocess.TimeoutExpired:
                hello.kill()
    doc = report(result)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2), encoding="utf-8")
    # Errors are figures (per phase, with their statuses, and in `ratios`); the run only
    # fails when they stop being rare, so one reset connection at high load does not erase
    # every other figure of `make bench`.
    return 1 if any(row["error_rate"] > args.max_error_rate for row in doc["phases"]) else 0


if __name__ == "__main__":
    raise SystemExit(main())
