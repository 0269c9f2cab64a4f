"""API keys verified a moment ago are answered without reading the control database, and only
those: a failed token is never remembered, a revocation here is at once, and one by another
process (the real CLI, in its own process) within the store's ``verified_ttl_s``."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import ApiKeyStore, AuthenticationError, Scope

REPO = Path(__file__).resolve().parents[3]
POLICY_DIR = REPO / "policies"


class SteppedClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


@contextmanager
def reads_of(store: ApiKeyStore) -> Iterator[list[str]]:
    """The SQL statements ``store`` runs on its control database meanwhile."""
    statements: list[str] = []
    conn: sqlite3.Connection = store._conn  # what the store reads is the point
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def _wrong_secret(token: str) -> str:
    """``token`` with its secret's first character changed (same id, same length)."""
    key_part, _, secret = token.partition(".")
    return f"{key_part}.{'B' if secret[0] == 'A' else 'A'}{secret[1:]}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An owner-only data directory, as the CLI of another process requires."""
    folder = tmp_path / "data"
    folder.mkdir(mode=0o700)
    return folder


def _revoke_in_another_process(data_dir: Path, key_id: str) -> None:
    """``idgraph keys revoke-api-key`` run as its own process on ``data_dir``."""
    env = {
        **os.environ,
        "IDGRAPH_DATA_DIR": str(data_dir),
        "IDGRAPH_POLICY_DIR": str(POLICY_DIR),
        "IDGRAPH_ENV": "development",
    }
    command = ["keys", "revoke-api-key", key_id]
    done = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *command],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def test_a_verified_key_is_answered_without_a_database_read_when_used_again(
    tmp_path: Path,
) -> None:
    store = ApiKeyStore(tmp_path / "control.sqlite3", clock=SteppedClock())
    try:
        key, token = store.create("web", frozenset({Scope.INGEST}))
        with reads_of(store) as first:
            assert store.authenticate(token).key_id == key.key_id
        with reads_of(store) as again:
            for _ in range(3):
                assert store.authenticate(token).key_id == key.key_id
        assert len(first) == 1
        assert again == []
    finally:
        store.close()


def test_a_failed_token_is_never_remembered_and_does_not_unseat_a_valid_one_when_guessed(
    tmp_path: Path,
) -> None:
    store = ApiKeyStore(tmp_path / "control.sqlite3", clock=SteppedClock())
    try:
        key, token = store.create("web", frozenset({Scope.INGEST}))
        store.authenticate(token)  # remembered from here on
        guesses = [
            _wrong_secret(token),  # the remembered id with a wrong secret
            token[:-1],  # a prefix of the right secret
            # The right secret under an id that no key has (not hex: key ids are).
            "idg_zzzzzzzzzzzz." + token.partition(".")[2],
        ]
        for guess in guesses:
            for _ in range(2):
                with reads_of(store) as read, pytest.raises(AuthenticationError):
                    store.authenticate(guess)
                # Each try goes to the database, the second like the first: nothing was kept.
                assert len(read) == 1
        with reads_of(store) as read:
            assert store.authenticate(token).key_id == key.key_id
        assert read == []
    finally:
        store.close()


def test_a_key_revoked_through_the_same_store_is_refused_at_once(tmp_path: Path) -> None:
    store = ApiKeyStore(tmp_path / "control.sqlite3", clock=SteppedClock())
    try:
        key, token = store.create("web", frozenset({Scope.INGEST}))
        store.authenticate(token)
        assert store.revoke(key.key_id)
        with pytest.raises(AuthenticationError, match="revoked"):
            store.authenticate(token)
    finally:
        store.close()


def test_a_key_revoked_by_another_process_is_refused_once_the_verified_time_has_passed(
    data_dir: Path,
) -> None:
    clock = SteppedClock()
    store = ApiKeyStore(data_dir / "control.sqlite3", verified_ttl_s=1.0, clock=clock)
    try:
        key, token = store.create("web", frozenset({Scope.INGEST}))
        store.authenticate(token)  # verified at 5000.0: usable from memory until 5001.0
        _revoke_in_another_process(data_dir, key.key_id)
        clock.now += 1.0
        with pytest.raises(AuthenticationError, match="revoked"):
            store.authenticate(token)
        clock.now += 60.0  # and it stays refused
        with pytest.raises(AuthenticationError, match="revoked"):
            store.authenticate(token)
    finally:
        store.close()


def test_a_key_revoked_by_another_process_is_refused_at_once_when_the_verified_time_is_zero(
    data_dir: Path,
) -> None:
    store = ApiKeyStore(data_dir / "control.sqlite3", verified_ttl_s=0.0, clock=SteppedClock())
    try:
        key, token = store.create("web", frozenset({Scope.INGEST}))
        with reads_of(store) as reads:
            store.authenticate(token)
            store.authenticate(token)
        assert len(reads) == 2
        _revoke_in_another_process(data_dir, key.key_id)
        with pytest.raises(AuthenticationError, match="revoked"):
            store.authenticate(token)
    finally:
        store.close()


def test_the_server_reads_its_verified_time_from_the_settings_when_set_to_zero(
    settings: Settings,
) -> None:
    container = build_container(settings.model_copy(update={"api_key_cache_seconds": 0.0}))
    try:
        key, token = container.api_keys.create("web", frozenset({Scope.RESOLVE}))
        headers = {"Authorization": f"Bearer {token}"}
        body = {"identifier": {"type": "email", "value": "nobody@shop.example.de"}}
        with TestClient(create_app(container=container), raise_server_exceptions=False) as client:
            assert client.post("/v1/resolve", json=body, headers=headers).status_code == 404
            _revoke_in_another_process(settings.data_dir, key.key_id)
            refused = client.post("/v1/resolve", json=body, headers=headers)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "this API key has been revoked"
    finally:
        container.close()


def test_a_negative_verified_time_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="verified_ttl_s"):
        ApiKeyStore(tmp_path / "control.sqlite3", verified_ttl_s=-1.0)
