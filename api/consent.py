"""The HTTP side of consent: the ``Sec-GPC`` header and the response shapes of recorded consent.

Recording itself (one engine transaction, then the audit entries) is
:class:`services.ingest.IngestService`'s, for every path that carries consent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

from fastapi import Header

from api.schemas import ConsentRecordOut, GppOut, GppSectionOut
from identity.model import ConsentInput, EventOutcome
from privacy.consent.signals import GppReport

GPC_HEADER = "Sec-GPC"
GpcHeader = Annotated[
    str | None,
    Header(
        alias=GPC_HEADER,
        description="Global Privacy Control: `1` records opt-outs for the purposes mapped to GPC.",
    ),
]


def gpc_requested(value: str | None) -> bool:
    """Whether a ``Sec-GPC`` header value asks for GPC: exactly ``1`` (the spec's only value)."""
    return value is not None and value.strip() == "1"


def records_out(outcome: EventOutcome, consents: Sequence[ConsentInput]) -> list[ConsentRecordOut]:
    """The records an event stored (none when its identifiers were all refused)."""
    if not outcome.consents_recorded:
        return []
    return [
        ConsentRecordOut(
            purpose=c.purpose,
            granted=c.granted,
            signal=c.signal.value,
            decided_at=c.at,
            lawful_basis=c.lawful_basis,
        )
        for c in consents
    ]


def gpp_out(report: GppReport | None) -> GppOut | None:
    """The response's account of a GPP string's sections."""
    if report is None:
        return None
    return GppOut(
        applied=list(report.applied),
        not_applied=[
            GppSectionOut(
                id=section,
                name=report.section_name(section),
                reason=report.reason(section).value,
            )
            for section in report.not_applied
        ],
    )
