"""The SQLite store's time conversion: a cached conversion must never answer for another instant."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from identity.store.sqlite import _ms


def test_the_two_instants_of_a_dst_fold_convert_apart() -> None:
    zone = ZoneInfo("America/New_York")  # 2026-11-01 01:30 happens twice (EDT, then EST)
    first = datetime(2026, 11, 1, 1, 30, tzinfo=zone)
    second = first.replace(fold=1)
    assert first == second  # equal in one zone: a cache keyed on them would mix them up
    assert _ms(first) == int(datetime(2026, 11, 1, 5, 30, tzinfo=UTC).timestamp() * 1000)
    assert _ms(second) == _ms(first) + 3_600_000
    assert _ms(first) == _ms(first.astimezone(UTC))  # and the cached one still answers
