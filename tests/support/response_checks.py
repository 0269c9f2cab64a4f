"""Checks every hostile-input test applies to every response (invariant 7 and invariant 1)."""

from __future__ import annotations

import json
from collections.abc import Iterable

import httpx

from api.problems import PROBLEM_JSON

PROBLEM_MEMBERS: dict[str, type] = {"type": str, "title": str, "status": int, "detail": str}


def forms_of(value: str) -> set[bytes]:
    """The byte forms ``value`` could take in a body, a header or a file."""
    escaped = json.dumps(value)[1:-1]  # how a JSON body would carry it (\\u0000, \\")
    forms = {value, escaped, json.dumps(value, ensure_ascii=False)[1:-1]}
    encoded = {f.encode("utf-8", "surrogatepass") for f in forms if f}
    encoded |= {f.encode("utf-16-le", "surrogatepass") for f in forms if f}
    return encoded


def assert_clean_response(response: httpx.Response, secrets: Iterable[str] = ()) -> None:
    """Never a 5xx; every 4xx a complete problem+json; no secret in the body or headers."""
    label = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    assert response.status_code < 500, f"{label}: {response.text[:300]}"
    if response.status_code >= 400:
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        assert media_type == PROBLEM_JSON, f"{label}: {media_type!r}"
        body = response.json()
        for member, kind in PROBLEM_MEMBERS.items():
            assert isinstance(body.get(member), kind), f"{label}: problem lacks {member}"
        assert body["status"] == response.status_code, label
        assert body["type"].startswith("urn:idgraph:problem:"), label
    raw = response.content + json.dumps(dict(response.headers)).encode()
    for secret in secrets:
        for form in forms_of(secret):
            assert form not in raw, f"{label}: the response echoes a submitted value"
