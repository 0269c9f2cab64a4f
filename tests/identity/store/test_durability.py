"""Data survives a restart, including a process killed without closing the store."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from identity.hashing import Keyring
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.sqlite import SqliteGraphStore
from privacy.keys.vault import Vault
from tests.conftest import REPO, Ids


def test_data_is_there_after_reopening_the_store(
    tmp_path: Path, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    path = tmp_path / "graph.sqlite3"
    store = SqliteGraphStore(path)
    (outcome,) = ResolutionEngine(store, keyring, policy, sealer=vault).ingest(
        [ids.event(("email", "ann@shop.de"), ("phone", "+442079460958"))]
    )
    store.close()

    reopened = SqliteGraphStore(path)
    try:
        engine = ResolutionEngine(reopened, keyring, policy, sealer=vault)
        assert engine.resolve(ids("phone", "+442079460958")) == outcome.person_id
        assert reopened.stats().identifiers == 2
    finally:
        reopened.close()


def test_committed_batch_survives_a_killed_process(tmp_path: Path) -> None:
    """A child ingests, reports the commit, then dies by os._exit without closing anything."""
    path = tmp_path / "graph.sqlite3"
    child = textwrap.dedent(
        f"""
        import os, sys
        from datetime import UTC, datetime
        from pathlib import Path
        from identity.hashing import HashKey, Keyring
        from identity.model import IdentityEvent
        from identity.policy import load_identity_policy
        from identity.resolution import ResolutionEngine
        from identity.store.sqlite import SqliteGraphStore
        policy = load_identity_policy(Path({str(REPO / "policies" / "identity.yaml")!r}))
        ring = Keyring([HashKey("k1", bytes(range(32)))], "k1")
        engine = ResolutionEngine(SqliteGraphStore(Path({str(path)!r})), ring, policy)
        events = [IdentityEvent((policy.normalize("cookie_id", f"c{{i}}", None),), "t",
                  datetime.now(UTC)) for i in range(100)]
        engine.ingest(events)
        print("committed", flush=True)
        os._exit(9)  # no close, no checkpoint: the WAL holds the commit
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", child],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    assert result.returncode == 9, result.stderr
    assert "committed" in result.stdout
    store = SqliteGraphStore(path)
    try:
        assert store.stats().identifiers == 100
        assert store.stats().persons == 100
        integrity = store.read(lambda tx: tx._conn.execute("PRAGMA integrity_check").fetchone())
        assert integrity == ("ok",)
    finally:
        store.close()


def test_store_files_are_private_to_the_owner(
    tmp_path: Path, keyring: Keyring, policy: IdentityPolicy, ids: Ids, vault: Vault
) -> None:
    store = SqliteGraphStore(tmp_path / "graph.sqlite3")
    try:
        ResolutionEngine(store, keyring, policy, sealer=vault).ingest(
            [ids.event(("email", "ann@shop.de"))]
        )
        for name in ("graph.sqlite3", "graph.sqlite3-wal"):
            assert (tmp_path / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        store.close()
