"""Legal deadlines of data-subject requests: calendar periods and the deadline per regulation.

GDPR Art. 12(3) gives one month, extendable by two further months; CCPA gives 45 days,
extendable once by 45 more, and 15 business days (no extension) to opt-outs of sale/sharing and
requests to limit. Deadlines are configured per regulation (``IDGRAPH_DSR_DEADLINES``)
as ISO 8601 periods and parsed here; :class:`~privacy.dsr.service.DsrService` computes each
request's ``due_at`` with :meth:`Period.after`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from privacy.dsr.model import DsrType

_PERIOD = re.compile(r"P(?:(\d{1,3})M)?(?:(\d{1,4})D)?")
_BUSINESS = re.compile(r"P(\d{1,3})BD")


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar period of whole months and days (ISO 8601 ``PnM``, ``PnD``, ``PnMnD``), or of
    business days (``PnBD``: Monday to Friday, as the CCPA regulations count opt-outs)."""

    months: int = 0
    days: int = 0
    business_days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``P1M``, ``P45D``, ``P1M15D`` or ``P15BD``; raises :class:`ValueError` on
        anything else."""
        business = _BUSINESS.fullmatch(text.strip().upper())
        if business is not None and int(business.group(1)) > 0:
            return cls(business_days=int(business.group(1)))
        match = _PERIOD.fullmatch(text.strip().upper())
        if match is None or not any(match.groups()):
            raise ValueError(f"period {text!r} must look like P1M, P45D, P1M15D or P15BD")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def after(self, start: datetime) -> datetime:
        """``start`` plus this period, months first (calendar months; the day is clamped).

        GDPR Art. 12(3) counts "one month" as a calendar month (Regulation 1182/71): a request of
        31 January is due on 28 (or 29) February, not on 2 March. Business days skip Saturdays
        and Sundays (public holidays are not modelled: the due date errs early, never late).
        """
        if self.business_days:
            at, left = start, self.business_days
            while left:
                at += timedelta(days=1)
                left -= at.weekday() < 5
            return at
        month_index = start.month - 1 + self.months
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def __str__(self) -> str:
        if self.business_days:
            return f"P{self.business_days}BD"
        return (
            "P"
            + (f"{self.months}M" if self.months else "")
            + (f"{self.days}D" if self.days else "")
        )


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a regulation gives to answer, and by how much the answer may be extended once.

    ``per_type`` overrides the initial period for some request types; those are not extendable
    (the CCPA regulations give opt-outs of sale/sharing 15 business days, with no extension).
    """

    initial: Period
    extension: Period
    per_type: Mapping[str, Period] = field(default_factory=dict)

    def period(self, request_type: str) -> Period:
        """The initial period for ``request_type``."""
        return self.per_type.get(request_type, self.initial)

    def extendable(self, request_type: str) -> bool:
        """Whether a request of ``request_type`` may be extended at all."""
        return request_type not in self.per_type


DEFAULT_DEADLINES: Mapping[str, Mapping[str, str]] = {
    # GDPR Art. 12(3): one month, extendable by two further months.
    "gdpr": {"initial": "P1M", "extension": "P2M"},
    # CCPA (Cal. Civ. Code 1798.130(a)(2)): 45 days, extendable once by another 45; requests to
    # opt out of sale/sharing (objection here) within 15 business days, no extension
    # (CCPA regulations, 11 CCR 7026(f)); so is a request to limit (restriction, 7027(g)).
    "ccpa": {
        "initial": "P45D",
        "extension": "P45D",
        "objection": "P15BD",
        "restriction": "P15BD",
    },
}


def parse_deadlines(raw: Mapping[str, Mapping[str, str]]) -> dict[str, Deadline]:
    """Deadlines per regulation from settings; raises :class:`ValueError` naming the entry."""
    parsed: dict[str, Deadline] = {}
    for regulation, spec in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", regulation):
            raise ValueError(f"regulation name {regulation!r} must be a lower-case token")
        unknown = set(spec) - {"initial", "extension"} - {t.value for t in DsrType}
        if unknown:
            raise ValueError(
                f"deadline of {regulation!r}: unknown keys {sorted(unknown)}; use initial, "
                "extension or a request type"
            )
        try:
            parsed[regulation] = Deadline(
                Period.parse(spec["initial"]),
                Period.parse(spec["extension"]),
                {t.value: Period.parse(spec[t.value]) for t in DsrType if t.value in spec},
            )
        except KeyError as exc:
            raise ValueError(f"deadline of {regulation!r} lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise ValueError(f"deadline of {regulation!r}: {exc}") from None
    if not parsed:
        raise ValueError("at least one regulation deadline is required")
    return parsed
