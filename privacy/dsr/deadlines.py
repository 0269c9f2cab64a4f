"""Legal deadlines of data-subject requests: calendar periods and the deadline per regulation.

GDPR Art. 12(3) gives one month, extendable by two further months; CCPA gives 45 days,
extendable once by 45 more. Deadlines are configured per regulation (``IDGRAPH_DSR_DEADLINES``)
as ISO 8601 periods and parsed here; :class:`~privacy.dsr.service.DsrService` computes each
request's ``due_at`` with :meth:`Period.after`.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

_PERIOD = re.compile(r"P(?:(\d{1,3})M)?(?:(\d{1,4})D)?")


@dataclass(frozen=True, slots=True)
class Period:
    """A calendar period of whole months and days (ISO 8601 ``PnM``, ``PnD``, ``PnMnD``)."""

    months: int = 0
    days: int = 0

    @classmethod
    def parse(cls, text: str) -> Period:
        """Parse ``P1M``, ``P45D`` or ``P1M15D``; raises :class:`ValueError` on anything else."""
        match = _PERIOD.fullmatch(text.strip().upper())
        if match is None or not any(match.groups()):
            raise ValueError(f"period {text!r} must look like P1M, P45D or P1M15D")
        return cls(int(match.group(1) or 0), int(match.group(2) or 0))

    def after(self, start: datetime) -> datetime:
        """``start`` plus this period, months first (calendar months; the day is clamped).

        GDPR Art. 12(3) counts "one month" as a calendar month (Regulation 1182/71): a request of
        31 January is due on 28 (or 29) February, not on 2 March.
        """
        month_index = start.month - 1 + self.months
        year = start.year + month_index // 12
        month = month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        return start.replace(year=year, month=month, day=day) + timedelta(days=self.days)

    def __str__(self) -> str:
        return (
            "P"
            + (f"{self.months}M" if self.months else "")
            + (f"{self.days}D" if self.days else "")
        )


@dataclass(frozen=True, slots=True)
class Deadline:
    """How long a regulation gives to answer, and by how much the answer may be extended once."""

    initial: Period
    extension: Period


DEFAULT_DEADLINES: Mapping[str, Mapping[str, str]] = {
    # GDPR Art. 12(3): one month, extendable by two further months.
    "gdpr": {"initial": "P1M", "extension": "P2M"},
    # CCPA (Cal. Civ. Code 1798.130(a)(2)): 45 days, extendable once by another 45.
    "ccpa": {"initial": "P45D", "extension": "P45D"},
}


def parse_deadlines(raw: Mapping[str, Mapping[str, str]]) -> dict[str, Deadline]:
    """Deadlines per regulation from settings; raises :class:`ValueError` naming the entry."""
    parsed: dict[str, Deadline] = {}
    for regulation, spec in raw.items():
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", regulation):
            raise ValueError(f"regulation name {regulation!r} must be a lower-case token")
        try:
            parsed[regulation] = Deadline(
                Period.parse(spec["initial"]), Period.parse(spec["extension"])
            )
        except KeyError as exc:
            raise ValueError(f"deadline of {regulation!r} lacks {exc.args[0]!r}") from None
        except ValueError as exc:
            raise ValueError(f"deadline of {regulation!r}: {exc}") from None
    if not parsed:
        raise ValueError("at least one regulation deadline is required")
    return parsed
