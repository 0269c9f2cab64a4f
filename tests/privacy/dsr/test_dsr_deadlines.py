"""DSR deadlines: ISO 8601 periods, calendar months (GDPR Art. 12(3)), configured regulations."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from privacy.dsr.deadlines import DEFAULT_DEADLINES, Deadline, Period, parse_deadlines


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("P1M", Period(1, 0)),
        ("P45D", Period(0, 45)),
        ("P1M15D", Period(1, 15)),
        (" p2m ", Period(2, 0)),  # case and surrounding space do not matter
        ("P999M9999D", Period(999, 9999)),
    ],
)
def test_a_period_parses_months_and_days(text: str, period: Period) -> None:
    assert Period.parse(text) == period


@pytest.mark.parametrize(
    "text", ["P", "", "1M", "P1W", "P1D1M", "P1000M", "P10000D", "PT1H", "P0BD", "P1000BD"]
)
def test_a_period_that_is_not_months_and_days_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="must look like") as raised:
        Period.parse(text)
    assert str(raised.value) == f"period {text!r} must look like P1M, P45D, P1M15D or P15BD"


@pytest.mark.parametrize(
    ("start", "period", "due"),
    [
        # One calendar month, the day clamped to the month's end (Regulation 1182/71).
        (datetime(2026, 1, 31, 12, tzinfo=UTC), Period(1), datetime(2026, 2, 28, 12, tzinfo=UTC)),
        (datetime(2028, 1, 31, 12, tzinfo=UTC), Period(1), datetime(2028, 2, 29, 12, tzinfo=UTC)),
        (datetime(2026, 3, 15, tzinfo=UTC), Period(1), datetime(2026, 4, 15, tzinfo=UTC)),
        # Across the year end, and twelve months to the same day.
        (datetime(2026, 11, 30, tzinfo=UTC), Period(2), datetime(2027, 1, 30, tzinfo=UTC)),
        (datetime(2026, 12, 31, tzinfo=UTC), Period(1), datetime(2027, 1, 31, tzinfo=UTC)),
        (datetime(2026, 5, 1, tzinfo=UTC), Period(12), datetime(2027, 5, 1, tzinfo=UTC)),
        (datetime(2026, 5, 1, tzinfo=UTC), Period(25), datetime(2028, 6, 1, tzinfo=UTC)),
        # Days are added after the months.
        (datetime(2026, 1, 31, tzinfo=UTC), Period(1, 1), datetime(2026, 3, 1, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), Period(0, 45), datetime(2026, 4, 15, tzinfo=UTC)),
        (datetime(2026, 3, 1, tzinfo=UTC), Period(), datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
def test_a_period_after_a_start_counts_calendar_months_then_days(
    start: datetime, period: Period, due: datetime
) -> None:
    assert period.after(start) == due


def test_a_period_prints_as_it_is_written() -> None:
    assert [str(p) for p in (Period(1), Period(0, 45), Period(1, 15), Period())] == [
        "P1M",
        "P45D",
        "P1M15D",
        "P",
    ]


def test_the_default_deadlines_are_gdpr_and_ccpa() -> None:
    assert parse_deadlines(DEFAULT_DEADLINES) == {
        "gdpr": Deadline(Period(1), Period(2)),
        "ccpa": Deadline(
            Period(0, 45),
            Period(0, 45),
            {"objection": Period(business_days=15), "restriction": Period(business_days=15)},
        ),
    }


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "at least one regulation deadline is required"),
        (
            {"GDPR": {"initial": "P1M", "extension": "P2M"}},
            "regulation name 'GDPR' must be a lower-case token",
        ),
        (
            {"a" * 33: {"initial": "P1M", "extension": "P2M"}},
            f"regulation name {'a' * 33!r} must be a lower-case token",
        ),
        ({"lgpd": {"initial": "P15D"}}, "deadline of 'lgpd' lacks 'extension'"),
        ({"lgpd": {"extension": "P15D"}}, "deadline of 'lgpd' lacks 'initial'"),
        (
            {"lgpd": {"initial": "15 days", "extension": "P15D"}},
            "deadline of 'lgpd': period '15 days' must look like P1M, P45D, P1M15D or P15BD",
        ),
    ],
)
def test_bad_deadlines_are_refused_naming_the_entry(
    raw: dict[str, dict[str, str]], message: str
) -> None:
    with pytest.raises(ValueError, match=r"deadline|regulation") as raised:
        parse_deadlines(raw)
    assert str(raised.value) == message


def test_a_configured_regulation_keeps_its_own_periods() -> None:
    parsed = parse_deadlines(
        {
            "lgpd": {"initial": "P15D", "extension": "P15D"},
            "a_1": {"initial": "P1M", "extension": "P1M"},
        }
    )
    assert parsed == {
        "lgpd": Deadline(Period(0, 15), Period(0, 15)),
        "a_1": Deadline(Period(1), Period(1)),
    }


def test_business_days_skip_weekends_and_a_typed_period_cannot_be_extended() -> None:
    friday = datetime(2026, 3, 6, 17, tzinfo=UTC)
    assert Period.parse("P1BD").after(friday) == datetime(2026, 3, 9, 17, tzinfo=UTC)
    assert Period.parse("P15BD").after(friday) == datetime(2026, 3, 27, 17, tzinfo=UTC)
    assert str(Period.parse("p15bd")) == "P15BD"
    ccpa = parse_deadlines(DEFAULT_DEADLINES)["ccpa"]
    assert ccpa.period("objection") == Period(business_days=15)
    assert ccpa.period("access") == Period(0, 45)
    assert (ccpa.extendable("objection"), ccpa.extendable("erasure")) == (False, True)
    with pytest.raises(ValueError, match="unknown keys"):
        parse_deadlines({"ccpa": {"initial": "P45D", "extension": "P45D", "opt_out": "P15BD"}})
