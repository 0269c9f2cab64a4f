"""Explain and unlink (scope `admin`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import AdminKey, Links
from api.routers.identity import PROBLEMS
from api.schemas import DoNotLinkOut, ExplainResponse, HopOut, PairRequest, UnlinkResponse
from privacy.auditing.log import api_key_actor

router = APIRouter(prefix="/v1/links", tags=["links"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "An identifier is not in the graph (`identifier-not-found`)"}
}
NOT_LINKED: dict[int | str, dict[str, Any]] = {
    409: {"description": "The two identifiers are not directly linked (`not-linked`)"}
}


@router.post("/explain", response_model=ExplainResponse, responses={**PROBLEMS, **NOT_FOUND})
def explain(body: PairRequest, service: Links, _: AdminKey) -> ExplainResponse:
    """The chain of links (source, first and last time) that joins two identifiers."""
    result = service.explain((body.a.type, body.a.value), (body.b.type, body.b.value))
    return ExplainResponse(
        linked=result.linked,
        person_id=result.person_id,
        hops=[
            HopOut(
                from_node=h.from_node,
                from_type=h.from_type,
                to_node=h.to_node,
                to_type=h.to_type,
                sources=list(h.sources),
                first_linked_at=h.first_linked_at,
                last_linked_at=h.last_linked_at,
            )
            for h in result.hops
        ],
        do_not_link=[
            DoNotLinkOut(
                rule_id=e.rule.rule_id,
                node_a=e.rule.a,
                type_a=e.type_a,
                node_b=e.rule.b,
                type_b=e.type_b,
                created_at=e.rule.created_at,
            )
            for e in result.do_not_link
        ],
    )


@router.post(
    "/unlink", response_model=UnlinkResponse, responses={**PROBLEMS, **NOT_FOUND, **NOT_LINKED}
)
def unlink(body: PairRequest, service: Links, key: AdminKey) -> UnlinkResponse:
    """Remove the direct link between two identifiers; split the person if it falls apart.

    When the two end up apart, a do-not-link rule keeps them apart: a later event naming both
    links neither across (reason `do_not_link`). Audited.
    """
    result = service.unlink(
        (body.a.type, body.a.value), (body.b.type, body.b.value), actor=api_key_actor(key.key_id)
    )
    return UnlinkResponse(
        removed_links=result.removed_links,
        split=result.split,
        person_id_a=result.person_id_a,
        person_id_b=result.person_id_b,
        rule_id=result.rule_id,
    )
