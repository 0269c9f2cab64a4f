"""bench/stream.py's rounds without a broker: the order of the modes, the median round and its
spread, and how bench/report.py shows them (the live run: tests/stream/test_stream_bench_kafka)."""

from __future__ import annotations

import argparse
from typing import Any

from bench import stream
from tests.support.bench_support import bench_script_module


def _mode(mode: str, seconds: float, cpu: float, rss_mib: float) -> dict[str, Any]:
    figures = {
        "mode": mode,
        "events": 2725,
        "rejected": 0,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "peak_rss_kib": rss_mib * 1024,
        "persons": 2500,
        "identifiers": 10_000,
    }
    if mode == "consume":
        figures["run_cpu_seconds"] = cpu + 0.5
    return figures


def _figures() -> dict[str, Any]:
    # Three rounds whose ratios (bulk seconds / consume seconds) are 0.8, 0.75 and 0.9.
    rounds = []
    for number, (bulk_s, consume_s, rss) in enumerate(
        ((8.0, 10.0, 300.0), (7.5, 10.0, 340.0), (9.0, 10.0, 320.0)), start=1
    ):
        bulk, consume = _mode("bulk", bulk_s, 8.0, 310.0), _mode("consume", consume_s, 9.0, rss)
        rounds.append(
            {
                "round": number,
                "order": list(stream.round_order(number)),
                "bulk": bulk,
                "consume": consume,
                "ratios": stream.round_ratios(bulk, consume),
                "complete": True,
                "load_average_before": [1.0, 1.0, 1.0],
                "load_average_after": [1.5, 1.0, 1.0],
            }
        )
    args = argparse.Namespace(batch_size=500, partitions=1)
    return stream.summarize(rounds, args, (1.0, 1.0, 1.0), (1.5, 1.2, 1.1))


def test_rounds_alternate_with_consume_first_in_odd_rounds() -> None:
    assert [stream.round_order(n) for n in (1, 2, 3)] == [
        ("consume", "bulk"),
        ("bulk", "consume"),
        ("consume", "bulk"),
    ]


def test_the_figures_ratio_is_the_median_round_with_its_spread_and_the_largest_rss() -> None:
    figures = _figures()

    assert figures["ratio"] == 0.8
    assert figures["ratio_spread"] == [0.75, 0.9]
    assert figures["ratios"]["rounds"] == 3.0
    key = "consume_identifiers_per_second_over_bulk"
    assert figures["ratios"][key] == figures["ratios"][f"{key}_median"] == 0.8
    # Same CPU every round: consume spends 9/8 of bulk's CPU per identifier.
    assert figures["cpu_ratio"] == 1.125
    assert figures["cpu_ratio_spread"] == [1.125, 1.125]
    assert figures["ratios"]["consume_run_cpu_per_identifier_over_bulk"] == 1.188
    assert figures["consume_rss_mib"] == 340.0
    assert figures["bulk"]["seconds"] == 8.0  # each mode's median round
    assert [r["order"][0] for r in figures["rounds"]] == ["consume", "bulk", "consume"]
    assert "round 2: bulk" in stream.render(figures)


def test_the_report_shows_the_median_round_and_its_spread_beside_the_goal() -> None:
    bench_report = bench_script_module("report.py")
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["stream"] = bench_report.Outcome("stream", [], data=_figures())

    text = "\n".join(bench_report.stream_section(report))

    assert "| 0.80x (spread 0.75-0.90x, median of 3 rounds) |" in text
    assert "| 1.12x (spread 1.12-1.12x, median of 3 rounds) |" in text
    assert "- round 2 (bulk 7.500 s / 8.000 s CPU, consume 10.000 s / 9.000 s CPU): " in text
    throughput, rss = report.goals
    assert throughput.figure == "0.80x (spread 0.75-0.90x, median of 3 rounds)"
    assert throughput.status == "met (inside the goal by less than the spread)"
    assert rss.figure == "340 MiB"


def test_the_report_still_reads_a_one_run_json_without_rounds() -> None:
    bench_report = bench_script_module("report.py")
    data = _figures()
    for key in ("ratios", "rounds", "ratio_spread", "cpu_ratio", "cpu_ratio_spread"):
        del data[key]
    del data["consume"]["run_cpu_seconds"]
    report = bench_report.Report("1m", bench_report.PRESETS["1m"])
    report.outcomes["stream"] = bench_report.Outcome("stream", [], data=data)

    text = "\n".join(bench_report.stream_section(report))

    assert "| 0.80x |" in text
    assert report.goals[0].status == "met"
    assert "- round" not in text
