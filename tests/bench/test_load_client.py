"""bench/load.py's client: the open loop stays bounded and a dropped connection is a figure."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import load


def test_open_loop_bounds_in_flight_and_resends_a_dropped_connection_once() -> None:
    in_flight = peak = 0
    attempts: Counter[int] = Counter()

    async def server(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.005)
            index = int(request.url.params["i"])
            attempts[index] += 1
            if index % 5 == 0 and attempts[index] == 1:
                raise httpx.ReadError("connection closed", request=request)
            if index == 7:
                raise httpx.ReadError("connection closed", request=request)  # every time
            return httpx.Response(200)
        finally:
            in_flight -= 1

    async def drive() -> load.Phase:
        transport = httpx.MockTransport(server)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await load.run_open(
                "identify",
                client,
                lambda c, i: c.get("/", params={"i": i}),
                40,
                rate=10_000.0,  # every request due at once: only the bound holds them back
                cap=600.0,
                max_in_flight=4,
                retry_transport=True,
            )

    phase = asyncio.run(drive())

    assert peak <= 4
    assert phase.max_in_flight == 4
    assert phase.requests == 40
    assert phase.retried == 9  # the 8 multiples of 5 once, and 7 once before it failed again
    assert phase.errors == 1
    assert phase.error_statuses == {"ReadError": 1}
    assert phase.summary()["error_rate"] == 0.025


def _phase(name: str, requests: int, seconds: float, cpu: float, server_cpu: float) -> load.Phase:
    phase = load.Phase(name, requests=requests, seconds=seconds)
    phase.cpu_seconds, phase.server_cpu_seconds = cpu, server_cpu
    phase.latencies_ms = [10.0] * requests
    return phase


def test_report_gives_every_phase_its_cpu_ratios_to_hello_when_several_phases_ran() -> None:
    hello = _phase("hello", 100, 1.0, cpu=0.4, server_cpu=0.1)
    identify = _phase("identify_closed", 100, 2.0, cpu=0.8, server_cpu=0.3)
    profile = _phase("profile", 50, 1.0, cpu=0.6, server_cpu=0.25)

    ratios = load.report({"phases": [hello, identify, profile], "skipped": {}})["ratios"]

    # Per request, client + server and the server alone, each over the hello phase's.
    assert ratios["identify_closed_cpu_per_request_over_hello"] == 2.0
    assert ratios["identify_closed_server_cpu_per_request_over_hello"] == 3.0
    assert ratios["profile_cpu_per_request_over_hello"] == 3.0
    assert ratios["profile_server_cpu_per_request_over_hello"] == 5.0
    assert ratios["identify_closed_throughput_over_hello"] == 0.5


def test_phases_option_refuses_an_unknown_phase_before_any_server_starts() -> None:
    parser_error = None
    try:
        load.main(["--phases", "identify_closed,nonsense"])
    except SystemExit as exc:
        parser_error = exc.code
    assert parser_error == 2  # argparse's usage error, before any server starts


def _round(hello_s: float, ingest_s: float, bulk_s: float, bulk_first: bool) -> list[load.Phase]:
    hello = _phase("hello", 100, hello_s, cpu=0.4, server_cpu=0.1)
    ingest = _phase("ingest", 10, ingest_s, cpu=1.0, server_cpu=0.8)
    ingest.items_per_request = 50
    bulk = _phase("bulk", 1, bulk_s, cpu=0.5, server_cpu=0.0)
    bulk.items_per_request = 500
    return [hello, bulk, ingest] if bulk_first else [hello, ingest, bulk]


def test_report_judges_ingest_over_bulk_on_the_median_round_with_its_spread_when_rounds_ran() -> (
    None
):
    # One slow bulk round (4 s for 500 events) no longer decides the ratio: the median does.
    rounds = [
        _round(1.0, 1.0, 1.0, bulk_first=False),  # ingest 500 ev/s, bulk 500: 1.0
        _round(1.0, 1.0, 0.5, bulk_first=True),  # bulk 1000 ev/s: 0.5
        _round(1.0, 1.0, 4.0, bulk_first=False),  # bulk 125 ev/s: 4.0
        _round(1.0, 1.0, 0.8, bulk_first=True),  # 0.8
        _round(1.0, 1.0, 0.9, bulk_first=False),  # 0.9
    ]
    doc = load.report({"phases": load.pooled(rounds, []), "skipped": {}, "rounds": rounds})
    ratios = doc["ratios"]

    assert ratios["ingest_events_per_second_over_bulk"] == 0.9
    assert ratios["ingest_events_per_second_over_bulk_median"] == 0.9
    assert ratios["ingest_events_per_second_over_bulk_min"] == 0.5
    assert ratios["ingest_events_per_second_over_bulk_max"] == 4.0
    assert ratios["rounds"] == 5
    assert [r["order"] for r in doc["rounds"]][:2] == [
        ["hello", "ingest", "bulk"],
        ["hello", "bulk", "ingest"],
    ]
    # The table's rows pool the rounds: every request, second and CPU second counted once.
    by_name = {row["name"]: row for row in doc["phases"]}
    assert [row["name"] for row in doc["phases"]] == ["hello", "ingest", "bulk"]
    assert by_name["ingest"]["requests"] == 50
    assert by_name["bulk"]["requests"] == 5
    assert by_name["bulk"]["seconds"] == 1.0 + 0.5 + 4.0 + 0.8 + 0.9
    assert by_name["ingest"]["server_cpu_seconds"] == 4.0


def test_report_keeps_single_round_ratios_without_a_spread_when_one_round_ran() -> None:
    (hello, ingest, bulk) = _round(1.0, 1.0, 0.5, bulk_first=False)

    ratios = load.report({"phases": [hello, ingest, bulk], "skipped": {}})["ratios"]

    assert ratios["ingest_events_per_second_over_bulk"] == 0.5
    assert "ingest_events_per_second_over_bulk_min" not in ratios
    assert "rounds" not in ratios


def test_phases_start_on_an_empty_wal_when_the_server_left_commits_in_it(tmp_path: Path) -> None:
    # The phase before an ingest or bulk phase left its last commits in the WAL, and whichever
    # process wrote next paid for folding them in (bulk-first rounds: the server's ingest).
    server = sqlite3.connect(tmp_path / "graph.sqlite3")  # the server keeps its connection
    try:
        server.execute("PRAGMA journal_mode=WAL")
        server.execute("PRAGMA wal_autocheckpoint=0")
        server.execute("CREATE TABLE t (x BLOB)")
        with server:
            server.executemany("INSERT INTO t VALUES (?)", [(b"x" * 1000,) for _ in range(500)])
        wal = tmp_path / "graph.sqlite3-wal"
        assert wal.stat().st_size > 500_000

        load.settle_store(tmp_path)

        assert wal.stat().st_size == 0
        assert server.execute("SELECT count(*) FROM t").fetchone() == (500,)
    finally:
        server.close()


def test_pregrow_defaults_to_one_rounds_persons_when_there_are_rounds() -> None:
    def persons(*argv: str) -> int:
        return load.pregrow_persons(load.parse_args(list(argv)))

    sizes = ("--requests", "200", "--batch", "50", "--ingest-requests", "10")
    assert persons(*sizes, "--rounds", "3") == 200 + 2 * 500  # identify_closed, ingest, bulk
    phases = ("--phases", "ingest")
    assert persons(*sizes, *phases, "--rounds", "3") == 2 * 500
    assert persons(*sizes, "--rounds", "1") == 0  # one run: the store as it grows
    assert persons(*sizes, "--rounds", "3", "--no-bulk") == 0
    assert persons(*sizes, "--rounds", "1", "--pregrow", "70") == 70


def test_phase_starts_from_the_snapshot_when_the_store_is_pregrown(tmp_path: Path) -> None:
    data, snapshot = tmp_path / "data", tmp_path / "pregrown"
    data.mkdir()
    with sqlite3.connect(data / "graph.sqlite3") as conn:
        conn.execute("CREATE TABLE persons (id INTEGER)")
        conn.executemany("INSERT INTO persons VALUES (?)", [(n,) for n in range(3)])
    conn.close()
    shutil.copytree(data, snapshot)
    with sqlite3.connect(data / "graph.sqlite3") as conn:  # a phase grew the store
        conn.executemany("INSERT INTO persons VALUES (?)", [(n,) for n in range(3, 9)])
    conn.close()
    (data / "bulk-left-over.jsonl").write_text("{}\n", encoding="utf-8")
    server = load.IdgraphServer({}, port=0)  # not started: nothing to stop

    load.PregrownStore(data, snapshot, server, fresh=False).restore(start=False)

    assert sorted(p.name for p in data.iterdir()) == ["graph.sqlite3"]
    with sqlite3.connect(data / "graph.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM persons").fetchone() == (3,)
    conn.close()


def test_report_compares_ingest_with_the_bulk_path_at_its_own_transaction_size() -> None:
    hello = _phase("hello", 100, 1.0, cpu=0.4, server_cpu=0.1)
    ingest = _phase("ingest", 10, 1.0, cpu=1.0, server_cpu=0.8)  # 500 events in 1 s
    ingest.items_per_request, ingest.bytes_written = 50, 3_000
    bulk = _phase("bulk", 1, 0.5, cpu=0.5, server_cpu=0.0)  # 1,000 events/s
    bulk.items_per_request, bulk.bytes_written = 500, 1_000
    small = _phase("bulk_txn", 1, 0.8, cpu=0.64, server_cpu=0.0)  # 625 events/s
    small.items_per_request, small.bytes_written = 500, 2_000

    doc = load.report({"phases": [hello, ingest, bulk, small], "skipped": {}})
    ratios = doc["ratios"]

    assert ratios["ingest_events_per_second_over_bulk"] == 0.5  # the goal's ratio, unchanged
    assert ratios["ingest_events_per_second_over_bulk_txn"] == 0.8
    assert ratios["ingest_server_cpu_per_event_over_bulk_txn"] == 1.25  # 1.6 ms vs 1.28 ms
    assert ratios["ingest_bytes_over_bulk_txn"] == 1.5
    # A file, not requests: no ratio to hello of its own.
    assert not any(key.startswith("bulk_txn_") for key in ratios)


def test_bulk_txn_phase_defaults_to_what_one_group_commit_of_the_ingest_phase_holds() -> None:
    def events(*argv: str) -> int:
        return load.bulk_txn_events(load.parse_args(list(argv)))

    assert events() == 50 * (16 // 4)  # --batch times the ingest phase's connections
    assert events("--batch", "10", "--concurrency", "2") == 10  # at least one connection
    assert events("--bulk-txn-events", "0") == 0  # no such phase
    assert events("--bulk-txn-events", "333") == 333


def test_thread_switches_count_a_sleep_of_another_thread_of_the_process() -> None:
    # The profile phase's server figure: context switches summed over the process's threads.
    import os
    import threading

    asleep, release = threading.Event(), threading.Event()

    def sleeper() -> None:
        asleep.set()
        release.wait(30)  # sleeps: a voluntary switch of this thread

    before = load.thread_switches(os.getpid())
    thread = threading.Thread(target=sleeper)
    thread.start()
    assert asleep.wait(30)
    middle = load.thread_switches(os.getpid())
    release.set()
    thread.join()

    assert set(before) == {"voluntary", "involuntary"}
    assert middle["voluntary"] > before["voluntary"]
    assert load.thread_switches(2**22 + 12345) == {}  # no such process


def _drive_against_a_stand_in(
    monkeypatch: pytest.MonkeyPatch, phases: str
) -> tuple[dict[str, Any], Counter[str]]:
    """``load.drive`` with every client it opens answered by one in-process stand-in for both
    servers (hello-world and idgraph, no read routes in its OpenAPI document); the paths asked."""
    asked: Counter[str] = Counter()

    def stand_in(request: httpx.Request) -> httpx.Response:
        asked[request.url.path] += 1
        if request.url.path == "/openapi.json":
            return httpx.Response(200, json={"paths": {"/v1/identify": {}}})
        if request.url.path == "/metrics":
            return httpx.Response(200, text='idgraph_store_seconds_count{operation="ingest"} 3\n')
        return httpx.Response(200, json={})

    real_client = httpx.AsyncClient

    def client(**kwargs: Any) -> httpx.AsyncClient:
        kwargs.pop("limits", None)
        return real_client(transport=httpx.MockTransport(stand_in), **kwargs)

    monkeypatch.setattr(httpx, "AsyncClient", client)
    args = load.parse_args(["--requests", "4", "--concurrency", "2", "--phases", phases])
    args.bulk_env = None
    result = asyncio.run(load.drive(args, "http://idgraph", "http://hello", "token"))
    return result, asked


def test_a_run_without_read_phases_never_asks_for_the_openapi_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, asked = _drive_against_a_stand_in(monkeypatch, "identify_closed")

    assert asked["/openapi.json"] == 0
    assert asked["/v1/identify"] == 4
    assert [phase.name for phase in result["phases"]] == ["hello", "identify_closed"]
    assert result["skipped"] == {
        "identify": "not in --phases",
        "profile": "not in --phases",
        "audience_export": "not in --phases",
    }


def test_read_phases_ask_for_the_openapi_document_once_and_skip_routes_it_lacks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result, asked = _drive_against_a_stand_in(monkeypatch, "profile,audience_export")

    assert asked["/openapi.json"] == 1
    assert result["skipped"] == {
        "identify": "not in --phases",
        "profile": "the server has no /v1/consent or /v1/profiles/{person_id}",
        "audience_export": "the server has no /v1/audiences export",
    }


def test_server_counts_reads_transactions_and_the_applier_s_opened_batches_from_metrics() -> None:
    scrape = (
        "# HELP idgraph_store_seconds Latency\n"
        'idgraph_store_seconds_count{operation="ingest"} 17.0\n'
        'idgraph_store_seconds_count{operation="resolve"} 5.0\n'
        'idgraph_ingest_journal_batches_opened_total{source="memory"} 398.0\n'
        'idgraph_ingest_journal_batches_opened_total{source="journal"} 2.0\n'
    )

    async def counts(text: str) -> tuple[int, int, int]:
        transport = httpx.MockTransport(lambda request: httpx.Response(200, text=text))
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            return await load.server_counts(client)

    assert asyncio.run(counts(scrape)) == (17, 398, 2)
    # A server without the applier's counter (an older idgraph): zeros, not an error.
    assert asyncio.run(counts(scrape.split("idgraph_ingest_journal", maxsplit=1)[0])) == (17, 0, 0)


def test_children_of_finds_a_running_child_and_not_a_finished_one() -> None:
    # The async phase measures the server and its applier child (IDGRAPH_INGEST_APPLIER=process).
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        assert child.pid in load.children_of(os.getpid())
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(60)
    assert child.pid not in load.children_of(os.getpid())
