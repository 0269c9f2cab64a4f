"""The ``/v1/ingest`` use case without HTTP, beside the bulk path, on the same events.

Usage::

    .venv/bin/python bench/ingest_paths.py                                  # 400 x 50 events
    .venv/bin/python bench/ingest_paths.py --requests 100 --rounds 3 --json /tmp/paths.json

Why: ``bench/load.py`` compares ``POST /v1/ingest`` with the bulk path end to end, so its ratio
mixes the HTTP server, the client on the same cores and the use case. This bench takes the
server away and asks what the use case itself costs per event, and what the size of a commit
has to do with it. Each mode runs in a process of its own on a fresh data dir (same settings as
``load.py``'s server), on the events ``load.py``'s ingest phase sends (``ingest_bodies``), and
the modes alternate for ``--rounds`` rounds (the machine's load moves):

* ``bulk``       ``services.bulk.ingest_file`` on a JSONL file of the events (``idgraph ingest``);
* ``callers``    ``IngestService.ingest`` of each decoded body from ``--callers`` threads, closed
                 loop: what the server's worker threads do for ``/v1/ingest`` (strict decode,
                 certification, validation, group commit), without the HTTP layer;
* ``groups-G``   (``--groups G,...``) the bodies in order, ``G`` batches validated per call and
                 committed as one transaction: how CPU and bytes move with the commit size alone.

Figures per run: wall and CPU seconds (user and system apart), bytes written
(``/proc/self/io``), transactions (``commits``), events per second and CPU microseconds per
event, the load average; the summary gives each mode's median and its ratio to ``bulk``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.load import ingest_bodies, person  # noqa: E402 - after the path set-up
from bench.measure import load_average  # noqa: E402 - after the path set-up


def _written_bytes() -> int:
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:  # pragma: no cover - no /proc
        pass
    return 0


def run_mode(mode: str, requests: int, batch: int, callers: int, seed: int) -> dict[str, Any]:
    """One timed run of ``mode`` in this process (a fresh data dir, removed after); returns
    its figures."""
    with tempfile.TemporaryDirectory(prefix="idgraph-paths-") as tmp:
        return _run_mode_in(Path(tmp), mode, requests, batch, callers, seed)


def _cpu_usage() -> tuple[float, float]:
    """User and system CPU seconds of this process and the processes it waited for (a large
    bulk file's reader process, services.bulk_reader, is part of the bulk path)."""
    me, children = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return me.ru_utime + children.ru_utime, me.ru_stime + children.ru_stime


def _run_mode_in(
    work: Path, mode: str, requests: int, batch: int, callers: int, seed: int
) -> dict[str, Any]:
    from bootstrap.container import build_container
    from bootstrap.settings import Settings
    from identity.strict_json import loads_strict
    from services.bulk import ingest_file
    from services.inputs import ingest_inputs

    data = work / "data"
    data.mkdir(mode=0o700)
    os.environ.update(
        {
            "IDGRAPH_ENV": "test",
            "IDGRAPH_DATA_DIR": str(data),
            "IDGRAPH_POLICY_DIR": str(REPO / "policies"),
            "IDGRAPH_LOG_LEVEL": "warning",
            # A groups-G call is one batch of G bodies' events.
            "IDGRAPH_MAX_BATCH_EVENTS": str(max(batch * _group_size(mode), 50)),
        }
    )
    container = build_container(Settings())
    service = container.ingest
    try:
        # Warm up on other persons (the PII model, statement caches), as a server is warm.
        warm = loads_strict(ingest_bodies(10 * (requests + 1) * batch, 1, batch, seed)[0])
        service.ingest(ingest_inputs(warm) or (), actor="bench")
        bodies = ingest_bodies(0, requests, batch, seed)
        path = work / "events.jsonl"
        if mode == "bulk":
            events = (person(k, seed) for k in range(requests * batch))
            path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
        groups_before = service._batch_group.groups  # a bench counts commits
        usage = _cpu_usage()
        written, wall = _written_bytes(), time.perf_counter()
        load_before = load_average()
        if mode == "bulk":
            ingest_file(service, path, actor="bench")
        elif mode == "callers":
            _callers(service, bodies, callers)
        else:
            size = _group_size(mode)
            for start in range(0, len(bodies), size):
                decoded = [
                    ingest_inputs(loads_strict(b)) or () for b in bodies[start : start + size]
                ]
                service.ingest([e for events in decoded for e in events], actor="bench")
        wall = time.perf_counter() - wall
        after = _cpu_usage()
        written = _written_bytes() - written
        commits = service._batch_group.groups - groups_before
    finally:
        container.close()
    user, system = after[0] - usage[0], after[1] - usage[1]
    events_done = requests * batch
    return {
        "mode": mode,
        "events": events_done,
        "seconds": round(wall, 3),
        "cpu_seconds": round(user + system, 3),
        "user_seconds": round(user, 3),
        "system_seconds": round(system, 3),
        "bytes_written": written,
        "commits": commits,
        "events_per_second": round(events_done / wall, 1),
        "cpu_us_per_event": round((user + system) / events_done * 1e6, 1),
        "load_before": load_before,
        "load_after": load_average(),
    }


def _group_size(mode: str) -> int:
    return int(mode.removeprefix("groups-")) if mode.startswith("groups-") else 1


def _callers(service: Any, bodies: list[bytes], callers: int) -> None:
    """``callers`` threads, each taking the next body until none is left (a closed loop)."""
    from identity.strict_json import loads_strict
    from services.inputs import ingest_inputs

    lock = threading.Lock()
    pending = iter(bodies)

    def work() -> None:
        while True:
            with lock:
                body = next(pending, None)
            if body is None:
                return
            service.ingest(ingest_inputs(loads_strict(body)) or (), actor="bench")

    threads = [threading.Thread(target=work) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Each mode's median figures and its ratios to ``bulk`` (events/s, CPU and bytes per event)."""
    modes: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r["mode"] for r in runs):
        mine = [r for r in runs if r["mode"] == name]
        modes[name] = {
            key: statistics.median(r[key] for r in mine)
            for key in (
                "events_per_second",
                "cpu_us_per_event",
                "bytes_written",
                "commits",
                "seconds",
                "cpu_seconds",
            )
        }
    ratios: dict[str, float] = {}
    bulk = modes.get("bulk")
    if bulk:
        for name, figures in modes.items():
            if name == "bulk":
                continue
            if bulk["events_per_second"]:
                ratios[f"{name}_events_per_second_over_bulk"] = round(
                    figures["events_per_second"] / bulk["events_per_second"], 3
                )
            if bulk["cpu_us_per_event"]:
                ratios[f"{name}_cpu_per_event_over_bulk"] = round(
                    figures["cpu_us_per_event"] / bulk["cpu_us_per_event"], 3
                )
            if bulk["bytes_written"]:
                ratios[f"{name}_bytes_over_bulk"] = round(
                    figures["bytes_written"] / bulk["bytes_written"], 2
                )
    return {"modes": modes, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    """Run every mode ``--rounds`` times, alternating; print the table (and ``--json``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="batches (load.py's phase)")
    parser.add_argument("--batch", type=int, default=50, help="events per batch")
    parser.add_argument("--callers", type=int, default=4, help="threads of the callers mode")
    parser.add_argument(
        "--groups",
        type=lambda text: [int(g) for g in text.split(",") if g],
        default=[],
        help="comma-separated batches per commit to run as groups-G modes (e.g. 1,8)",
    )
    parser.add_argument(
        "--modes",
        type=lambda text: [m for m in text.split(",") if m],
        default=["bulk", "callers"],
        help="comma-separated modes besides the groups-G ones (default bulk,callers)",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one run, in a child process
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.requests, args.batch, args.callers, args.seed)))
        return 0
    modes = [*args.modes, *(f"groups-{g}" for g in args.groups)]
    runs: list[dict[str, Any]] = []
    for _ in range(args.rounds):
        for mode in modes:
            done = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--mode",
                    mode,
                    "--requests",
                    str(args.requests),
                    "--batch",
                    str(args.batch),
                    "--callers",
                    str(args.callers),
                    "--seed",
                    str(args.seed),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            run = json.loads(done.stdout.strip().splitlines()[-1])
            runs.append(run)
            print(
                f"{run['mode']:10s} {run['events_per_second']:8.1f} ev/s "
                f"{run['seconds']:7.2f} s wall {run['cpu_seconds']:6.2f} s CPU "
                f"({run['user_seconds']:.2f} user {run['system_seconds']:.2f} sys) "
                f"{run['cpu_us_per_event']:6.1f} us CPU/event "
                f"{run['bytes_written'] / 2**20:7.1f} MiB {run['commits']:4d} commits "
                f"load {run['load_before']:.1f}->{run['load_after']:.1f}",
                flush=True,
            )
    summary = summarize(runs)
    for key, value in summary["ratios"].items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, **summary}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
