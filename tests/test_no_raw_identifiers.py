"""Privacy invariant 1: no raw identifier in the database, its WAL, the logs or any response."""

from __future__ import annotations

import io
import json
from pathlib import Path

from .conftest import Api

EMAILS = [f"leak.canary{i}@privacy-shop.de" for i in range(20)]
PHONES = [f"+44 20 7946 {i:04d}" for i in range(20)]
E164 = [p.replace(" ", "") for p in PHONES]
CUSTOMER_IDS = [f"CANARY-CUST-{i:05d}" for i in range(20)]
SHAS = [f"5f4dcc3b5aa765d61d8327deb882cf99{i:032x}" for i in range(20)]


def _needles() -> list[bytes]:
    values = [*EMAILS, *PHONES, *E164, *CUSTOMER_IDS, *SHAS]
    values += [p.replace("+44 ", "0").replace(" ", "") for p in PHONES]  # national form
    values += [e.upper() for e in EMAILS]
    needles = {v.encode() for v in values}
    needles |= {v.encode("utf-16-le") for v in values}  # SQLite may store UTF-16 text
    needles |= {b"leak.canary", b"CANARY-CUST"}  # fragments
    return sorted(needles)


def _hits(blob: bytes) -> list[bytes]:
    return [n for n in _needles() if n in blob]


def test_raw_identifiers_appear_nowhere_after_ingest_and_reads(
    api: Api, log_stream: io.StringIO
) -> None:
    responses: list[bytes] = []
    client = api.client

    def post(path: str, body: object, headers: dict[str, str]) -> None:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code < 500, response.text
        responses.append(response.content)
        responses.append(json.dumps(dict(response.headers)).encode())

    for i in range(10):
        post(
            "/v1/identify",
            {
                "identifiers": [
                    {"type": "email", "value": EMAILS[i]},
                    {"type": "phone", "value": PHONES[i]},
                    {"type": "customer_id", "value": CUSTOMER_IDS[i]},
                ],
                "source": "web",
            },
            api.ingest,
        )
    post(
        "/v1/ingest",
        {
            "events": [
                {
                    "identifiers": [
                        {"type": "email", "value": EMAILS[i]},
                        {"type": "phone", "value": PHONES[i]},
                        {"type": "email_sha256", "value": SHAS[i]},
                    ],
                    "source": "crm",
                }
                for i in range(10, 20)
            ]
        },
        api.ingest,
    )
    # Conflicts and refusals record hashes only.
    post(
        "/v1/identify",
        {
            "identifiers": [
                {"type": "email", "value": EMAILS[0]},
                {"type": "customer_id", "value": CUSTOMER_IDS[1]},
            ],
            "source": "web",
        },
        api.ingest,
    )
    for i in range(5):
        post("/v1/resolve", {"identifier": {"type": "email", "value": EMAILS[i]}}, api.resolve)
        post(
            "/v1/links/explain",
            {
                "a": {"type": "email", "value": EMAILS[i]},
                "b": {"type": "phone", "value": PHONES[i]},
            },
            api.admin,
        )
    post(
        "/v1/links/unlink",
        {"a": {"type": "email", "value": EMAILS[2]}, "b": {"type": "phone", "value": PHONES[2]}},
        api.admin,
    )
    # Error paths: values that are invalid but contain canaries, and lookups that miss.
    post(
        "/v1/identify",
        {
            "identifiers": [
                {"type": "email", "value": EMAILS[3] + "@@"},
                {"type": "phone", "value": PHONES[4] + "999999"},
            ],
            "source": "web",
        },
        api.ingest,
    )
    post(
        "/v1/resolve", {"identifier": {"type": "email", "value": "never." + EMAILS[5]}}, api.resolve
    )
    post(
        "/v1/links/unlink",
        {"a": {"type": "email", "value": EMAILS[6]}, "b": {"type": "email", "value": EMAILS[7]}},
        api.admin,
    )
    post(
        "/v1/identify",
        {"identifiers": [{"type": "passport", "value": EMAILS[8]}], "source": "web"},
        api.ingest,
    )

    store_path = Path(str(api.container.store.path))  # type: ignore[attr-defined]
    files = [
        store_path,
        Path(f"{store_path}-wal"),
        Path(f"{store_path}-shm"),
        api.container.settings.control_db_path,
    ]
    assert Path(f"{store_path}-wal").exists(), "WAL should hold recent commits (not checkpointed)"
    for path in files:
        if path.exists():
            assert _hits(path.read_bytes()) == [], f"raw identifier in {path.name}"
    for body in responses:
        assert _hits(body) == [], body[:200]
    logged = log_stream.getvalue().encode()
    assert b"request" in logged  # the log did capture the traffic
    assert _hits(logged) == []

    assert api.container.store.stats().identifiers == 60  # the data did get in, as hashes
