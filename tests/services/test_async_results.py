"""An asynchronous job's result document (services.async_ingest ``_results_json``) is exactly the
text the dicts of ``_outcome_result`` encode to, for every kind of outcome: the plain events are
built as text (no dict per event), every other one goes through ``json.dumps`` as before.
Stored job results and applied markers keep their bytes (no format change, no migration)."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime

from identity.hashing import HashedIdentifier
from identity.model import EventOutcome, Outcome, Refusal, RefusalReason
from services.async_ingest import _outcome_result, _results_json

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _dumped(outcomes: list[EventOutcome], gpc: bool) -> str:
    """The document as it was made before: a dict per event, one ``json.dumps``."""
    return json.dumps(
        {
            "results": [_outcome_result(i, o, gpc) for i, o in enumerate(outcomes)],
            "refused_identifiers": sum(len(o.refused_identifiers) for o in outcomes),
        },
        separators=(",", ":"),
    )


def _refusal(position: int, reason: RefusalReason, digest: bytes) -> Refusal:
    return Refusal(
        HashedIdentifier("email", "k1", digest),
        reason,
        f'refused: {reason.value} "quoted" \u00e9',  # text that JSON must escape
        "web",
        T0,
        position,
    )


def _outcomes() -> list[EventOutcome]:
    """Every outcome, with and without refusals (one identifier refused at two positions
    counts once), with zero and non-zero counts."""
    made: list[EventOutcome] = []
    refusal_sets = [
        (),
        (_refusal(1, RefusalReason.LIMIT_EXCEEDED, b"\x01" * 32),),
        (
            _refusal(0, RefusalReason.BLOCKED_VALUE, b"\x02" * 32),
            _refusal(2, RefusalReason.BLOCKED_VALUE, b"\x02" * 32),
            _refusal(3, RefusalReason.SUPPRESSED, b"\x03" * 32),
        ),
    ]
    for outcome, refusals, counts in itertools.product(
        Outcome, refusal_sets, [(0, 0, 0, 0, 0, 0), (3, 2, 1, 1, 4, 2), (12, 0, 0, 7, 0, 0)]
    ):
        new, stored, quarantined, dropped, recorded, consents_dropped = counts
        made.append(
            EventOutcome(
                outcome,
                "p_x" if outcome is not Outcome.REFUSED else None,
                (),
                new,
                refusals,
                stored,
                quarantined,
                dropped,
                recorded,
                consents_dropped,
            )
        )
    return made


def test_the_result_document_is_the_dumped_dicts_text_for_every_kind_of_outcome() -> None:
    outcomes = _outcomes()
    for gpc in (False, True):
        assert _results_json(outcomes, gpc) == _dumped(outcomes, gpc)
        for one in outcomes:  # each alone too (index 0, the counts of one event)
            assert _results_json([one], gpc) == _dumped([one], gpc)
    assert _results_json([], False) == _dumped([], False)


def test_a_plain_outcome_reads_back_as_the_synchronous_answers_result() -> None:
    plain = EventOutcome(Outcome.CREATED, "p_x", (), 3, (), 3, 0, 0)

    (result,) = json.loads(_results_json([plain], False))["results"]

    assert result == {
        "index": 0,
        "outcome": "created",
        "new_identifiers": 3,
        "refused": [],
        "facts": {"stored": 3, "quarantined": 0, "dropped": 0},
    }
