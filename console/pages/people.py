"""Person lookup: the cluster picture, consent history and "why is this read allowed/denied".

The searched value travels in a POST body only (never in a URL, where access logs would keep
it), and so does the person id of the follow-up "why" question.
"""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response

from console.render import page
from console.security import Action, Needs, Posted, Services, reader
from privacy.access.operators import ConsoleScope, Session
from services.lookup import KeptValue, NodeView, PersonPicture, ReadExplanation

router = APIRouter(prefix="/people")
Viewer = Annotated[Session, Depends(Needs(ConsoleScope.RESOLVE))]
Lookup = Annotated[Posted, Depends(Action(ConsoleScope.RESOLVE))]
PICTURE_SIZE = 360


def layout(nodes: tuple[NodeView, ...]) -> dict[str, tuple[float, float]]:
    """Positions for the cluster picture: nodes on a circle, in a stable order."""
    if len(nodes) == 1:
        return {nodes[0].node_id: (PICTURE_SIZE / 2, PICTURE_SIZE / 2)}
    radius = PICTURE_SIZE / 2 - 50
    positions = {}
    for index, node in enumerate(sorted(nodes, key=lambda n: (n.identifier_type, n.node_id))):
        angle = 2 * math.pi * index / len(nodes) - math.pi / 2
        positions[node.node_id] = (
            round(PICTURE_SIZE / 2 + radius * math.cos(angle), 1),
            round(PICTURE_SIZE / 2 + radius * math.sin(angle), 1),
        )
    return positions


def _person_page(
    request: Request,
    services: Services,
    picture: PersonPicture | None,
    searched_type: str,
    explanation: ReadExplanation | None = None,
    purpose: str = "",
    status_code: int = 200,
    kept: tuple[KeptValue, ...] = (),
) -> Response:
    return page(
        request,
        "people.html",
        {
            "identifier_types": services.lookup.identifier_types,
            "purposes": services.purposes,
            "picture": picture,
            "positions": layout(picture.nodes) if picture else {},
            "size": PICTURE_SIZE,
            "searched": True,
            "searched_type": searched_type,
            "explanation": explanation,
            "purpose": purpose,
            "kept": {k.node_id: k for k in kept},
        },
        status_code,
    )


@router.get("", name="people")
def search_form(request: Request, services: Services, _: Viewer) -> Response:
    """The search form."""
    return page(
        request,
        "people.html",
        {
            "identifier_types": services.lookup.identifier_types,
            "purposes": services.purposes,
            "picture": None,
            "searched": False,
            "searched_type": "",
        },
    )


@router.post("", name="people_lookup")
def lookup(request: Request, services: Services, posted: Lookup) -> Response:
    """Find the person one identifier resolves to (audited, the value never logged)."""
    identifier_type = posted.text("identifier_type", 32)
    identifier = services.lookup.normalize(identifier_type, posted.text("value", 320))
    picture = services.lookup.find(posted.session.operator.actor, identifier)
    if picture is None:
        return _person_page(request, services, None, identifier_type, status_code=404)
    kept = services.lookup.kept_values(reader(posted.session), picture.person_id)
    return _person_page(request, services, picture, identifier_type, kept=kept)


@router.post("/why", name="people_why")
def why(request: Request, services: Services, posted: Lookup) -> Response:
    """The policy decision, with its reasons, for a read of this person for one purpose."""
    person_id = posted.text("person_id", 128)
    purpose = posted.text("purpose", 64)
    picture = services.lookup.picture(posted.session.operator.actor, person_id)
    if picture is None:
        return _person_page(request, services, None, "", status_code=404)
    explanation = services.lookup.explain_read(reader(posted.session), person_id, purpose)
    kept = services.lookup.kept_values(reader(posted.session), person_id)
    return _person_page(request, services, picture, "", explanation, purpose, kept=kept)
