"""``POST /v1/ingest`` announces its batch when the request arrives, not when a worker thread
starts on it.

A batch writer waits for announced batches (``IngestService.announce_batch``); over HTTP a
batch is decoded and validated on the event loop before a worker thread takes it, so a batch
announced only from the worker thread was written without its neighbours. Held
deterministically, nothing timed: the linger is an hour, and the writer's wait ends only when
the held request reaches the use case.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from identity.group_commit import GroupCommitter
from services.inputs import IdentifyRequest
from tests.conftest import Api
from tests.support.waits import lingering, wait_until

LONG_LINGER = 3600.0


def _body(name: str) -> dict[str, Any]:
    return {
        "events": [
            {"identifiers": [{"type": "cookie_id", "value": f"ck-arrival-{name}-{k}"}]}
            | {"source": "web"}
            for k in range(2)
        ]
    }


def test_an_http_batch_is_waited_for_before_its_worker_thread_reaches_the_use_case(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    service = api.client.app.state.ingest  # type: ignore[attr-defined]
    service._batch_group = GroupCommitter(
        service._ingest_batches, max_group=8, linger_s=LONG_LINGER
    )
    reached, go = threading.Event(), threading.Event()
    ingest = service.ingest

    def held_before_the_use_case(*args: Any, **kwargs: Any) -> Any:
        # The HTTP request is on its worker thread, not yet in the use case.
        reached.set()
        go.wait(30)
        return ingest(*args, **kwargs)

    monkeypatch.setattr(service, "ingest", held_before_the_use_case)
    direct = [IdentifyRequest.model_validate(event) for event in _body("direct")["events"]]
    with ThreadPoolExecutor(2) as pool:
        http = pool.submit(api.client.post, "/v1/ingest", json=_body("http"), headers=api.ingest)
        assert reached.wait(30)
        writer = pool.submit(ingest, direct, actor="test")
        # The writer waits for the HTTP batch, announced when its request arrived.
        wait_until(lambda: lingering(service._batch_group))
        go.set()
        response, outcomes = http.result(30), writer.result(30)

    assert response.status_code == 200, response.text
    assert response.json()["outcomes"] == {"created": 2}
    assert [o.outcome.value for o in outcomes] == ["created", "created"]
    assert service._batch_group.groups == 1  # both batches in one transaction
    with service._batch_group._cond:
        assert service._batch_group._coming == 0


@pytest.mark.parametrize(
    "body",
    [
        {"events": [{"identifiers": [{"type": "email", "value": "not-an-email"}]}]},  # use case
        {"events": "not a list"},  # refused by the body's validation, before the use case
        {"events": [{"identifiers": [{"type": "cookie_id", "value": "c"}]}] * 501},  # limit
    ],
)
def test_a_refused_http_batch_withdraws_its_arrival_and_writes_nothing(
    api: Api, body: dict[str, Any]
) -> None:
    service = api.client.app.state.ingest  # type: ignore[attr-defined]
    response = api.client.post("/v1/ingest", json=body, headers=api.ingest)
    assert response.status_code in (413, 422), response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    with service._batch_group._cond:
        assert service._batch_group._coming == 0  # no writer would wait for it
    assert service._batch_group.groups == 0
