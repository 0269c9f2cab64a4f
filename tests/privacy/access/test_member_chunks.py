"""How many persons each ``member_page`` read of a member scan asks for (``_next_chunk``).

Persons read past a page's last member are read, decoded and decided again by the next page:
a cold 1M audience read 61.4k persons for 58.6k with later reads of the pass-rate estimate plus
5 % and at least 250, 59.6k with plus 1 % and at least 32 (stop 34).
"""

from __future__ import annotations

from privacy.access.reads import _MIN_CHUNK, _next_chunk

LIMIT = 1_000
MAX_SCAN = 20_000


def test_the_first_read_asks_for_the_page_when_nothing_was_scanned() -> None:
    assert _next_chunk(LIMIT, 0, 0, MAX_SCAN) == LIMIT
    assert _next_chunk(10, 0, 0, MAX_SCAN) == _MIN_CHUNK


def test_a_later_read_asks_for_the_estimate_plus_one_percent_when_members_passed() -> None:
    # 420 members of 1,000 persons: 580 more at that rate are 1,381 persons, plus 1 %: 1,395.
    assert _next_chunk(LIMIT, 420, 1_000, MAX_SCAN) == 1_395


def test_a_later_read_stays_small_when_few_members_are_missing() -> None:
    # 5 members missing at a rate of 0.4: 13 persons are needed, 32 are read (not 250).
    assert _next_chunk(LIMIT, 995, 2_400, MAX_SCAN) == 32


def test_a_read_never_passes_the_scan_bound_when_it_is_near() -> None:
    assert _next_chunk(LIMIT, 420, 1_000, 1_100) == 100
    assert _next_chunk(LIMIT, 0, 1_000, MAX_SCAN) == 2_000  # nothing passed: read further
