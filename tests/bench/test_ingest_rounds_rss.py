"""With several rounds, a mode's peak RSS is its largest round's, and the reader process's
share beside it is that same round's: the two figures describe one run, not two."""

from __future__ import annotations

from typing import Any

from bench import ingest


def _real(seconds: float, peak: int, reader: int | None) -> dict[str, Any]:
    return {
        "seconds": seconds,
        "cpu_seconds": seconds,
        "bytes_written": 1,
        "peak_rss_kib": peak,
        "reader_peak_rss_kib": reader,
    }


def test_the_largest_rounds_peak_comes_with_its_own_reader_share() -> None:
    figures = ingest.Figures(ingest.DataSummary(), batch_size=10, synchronous="FULL")
    figures.add_round(("real",), {"real": _real(3.0, 500_000, 190_000)})
    figures.add_round(("real",), {"real": _real(2.0, 520_000, 150_000)})
    figures.add_round(("real",), {"real": _real(1.0, 480_000, 170_000)})

    real = figures.modes["real"]

    assert real["peak_rss_kib"] == 520_000
    assert real["reader_peak_rss_kib"] == 150_000  # not the last round's 170,000
    assert real["seconds"] == 2.0


def test_a_mode_without_a_reader_gets_no_reader_share() -> None:
    figures = ingest.Figures(ingest.DataSummary(), batch_size=10, synchronous="FULL")
    floor = {"seconds": 1.0, "cpu_seconds": 1.0, "bytes_written": 1, "peak_rss_kib": 9}
    figures.add_round(("floor",), {"floor": floor})
    figures.add_round(("floor",), {"floor": {**floor, "peak_rss_kib": 10}})

    assert "reader_peak_rss_kib" not in figures.modes["floor"]
