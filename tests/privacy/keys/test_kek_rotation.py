"""KEK rotation cannot lose data: concurrent writers, a restart, and a start-up check.

Issue 22, finding 2: the running service kept wrapping new data keys under the KEK it loaded at
start; `rotate-kek --retire-old` re-wrapped and removed the old KEK without seeing them, and after
the next restart those keys raised KekNotFoundError.
"""

from __future__ import annotations

import secrets
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.main import app
from identity.errors import ConfigurationError
from privacy.keys.keyprovider import (
    LocalFileKeyProvider,
    create_kek_file,
    read_kek_file,
    remove_kek,
    rotate_kek_file,
)
from privacy.keys.vault import KekRetiredError, Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import POLICY_DIR

runner = CliRunner()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_KEK_FILE", str(tmp_path / "keys" / "kek.json"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return Settings()


def _owner() -> str:
    return "n_" + secrets.token_hex(12)


def _readable(vault: Vault, written: list[tuple[str, bytes]]) -> int:
    """How many of ``written`` decrypt, one by one (a missing KEK fails only its own keys)."""
    ok = 0
    for owner, blob in written:
        try:
            vault.decrypt(owner, "f", blob)
        except Exception:  # noqa: BLE001, S112 - counting failures is the point
            continue
        ok += 1
    return ok


def test_service_running_through_rotate_and_retire_keeps_every_key_readable_after_restart(
    settings: Settings,
) -> None:
    service = build_container(settings)  # loads the KEK file once, like `idgraph serve`
    written = [(o, service.vault.encrypt(o, "f", b"before")) for o in (_owner(), _owner())]

    result = runner.invoke(app, ["keys", "rotate-kek", "--retire-old"])
    assert result.exit_code == 0, result.output
    assert "removed retired KEK" in result.output
    # The service never restarted: it must follow the rotation, not wrap under the removed KEK.
    written += [(o, service.vault.encrypt(o, "f", b"after")) for o in (_owner(), _owner())]
    service.close()

    restarted = build_container(settings)
    try:
        assert _readable(restarted.vault, written) == len(written)
        assert set(restarted.vault.count_by_kek()) == {
            read_kek_file(settings.resolved_kek_file).primary
        }
    finally:
        restarted.close()


def test_rotate_and_retire_under_concurrent_writers_leaves_zero_unreadable_keys(
    tmp_path: Path,
) -> None:
    kek_path = tmp_path / "kek.json"
    create_kek_file(kek_path, origin="operator")
    db = tmp_path / "vault-keys.sqlite3"
    written: list[tuple[str, bytes]] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        # Another process: its own connection and its own provider, loaded before the rotation.
        keys = SqliteVaultKeyStore(db)
        vault = Vault(keys, LocalFileKeyProvider(kek_path), cache_size=0)
        try:
            while not stop.is_set():
                batch = [(_owner(), "f", b"v") for _ in range(5)]
                blobs = vault.encrypt_many(batch)
                written.extend((o, b) for (o, _, _), b in zip(batch, blobs, strict=True))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            keys.close()

    SqliteVaultKeyStore(db).close()  # created once, as the service does before writers run
    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    while len(written) < 50:
        stop.wait(0.01)
    admin_keys = SqliteVaultKeyStore(db)
    try:
        for _ in range(2):  # two full rotations while the writers keep going
            rotate_kek_file(kek_path)
            admin = Vault(admin_keys, LocalFileKeyProvider(kek_path))
            report = admin.retire_old_keks(batch_size=7)
            for old in report.retired:
                if old in read_kek_file(kek_path).key_ids:
                    remove_kek(kek_path, old)
            before = len(written)
            while len(written) < before + 50:
                stop.wait(0.01)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        admin_keys.close()
    assert not errors, errors

    # Restart: a fresh process with the file as it is now.
    keys = SqliteVaultKeyStore(db)
    try:
        vault = Vault(keys, LocalFileKeyProvider(kek_path))
        vault.check_keks()
        assert _readable(vault, written) == len(written)
        assert set(vault.count_by_kek()) == {read_kek_file(kek_path).primary}
    finally:
        keys.close()


def test_writer_with_a_stale_copy_of_the_kek_file_is_refused_never_stores_under_a_retired_kek(
    tmp_path: Path,
) -> None:
    kek_path = tmp_path / "kek.json"
    create_kek_file(kek_path, origin="operator")
    stale = tmp_path / "other-host" / "kek.json"
    stale.parent.mkdir()
    shutil.copy2(kek_path, stale)  # a second host whose copy of the file nobody updated
    db = tmp_path / "vault-keys.sqlite3"
    keys = SqliteVaultKeyStore(db)
    try:
        rotate_kek_file(kek_path)
        Vault(keys, LocalFileKeyProvider(kek_path)).retire_old_keks()
        other = Vault(keys, LocalFileKeyProvider(stale))

        with pytest.raises(KekRetiredError):
            other.encrypt(_owner(), "f", b"v")

        assert set(keys.count_by_kek()) <= {read_kek_file(kek_path).primary}
    finally:
        keys.close()


def test_start_up_refuses_when_a_data_key_names_a_kek_the_provider_does_not_hold(
    settings: Settings,
) -> None:
    service = build_container(settings)
    service.vault.encrypt(_owner(), "f", b"v")
    service.close()
    path = settings.resolved_kek_file
    old = read_kek_file(path).primary
    rotate_kek_file(path)
    remove_kek(path, old)  # removed by hand, without re-wrapping first

    with pytest.raises(ConfigurationError, match=old):
        build_container(settings)


def test_start_up_refuses_a_restored_kek_file_whose_primary_was_retired(
    settings: Settings,
) -> None:
    service = build_container(settings)
    service.vault.encrypt(_owner(), "f", b"v")
    service.close()
    path = settings.resolved_kek_file
    backup = path.read_bytes()
    assert runner.invoke(app, ["keys", "rotate-kek", "--retire-old"]).exit_code == 0
    path.write_bytes(backup)  # an old backup of the KEK file put back

    with pytest.raises(ConfigurationError, match="retired"):
        build_container(settings)
