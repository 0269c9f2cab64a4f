"""Key files, key locations and keyed references (issue 22, findings 3, 4, 5, 9, 10, 11)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from bootstrap.container import build_container, check_kek_apart_from_vault
from bootstrap.settings import Settings
from identity.errors import ConfigurationError
from identity.model import new_node_id
from privacy.auditing.log import PERSON_REF_INFO, person_ref
from privacy.keys.hash_keys import create_key_file, read_key_file, rotate_key_file
from privacy.keys.keyprovider import (
    LocalFileKeyProvider,
    create_kek_file,
    read_kek_file,
    rotate_kek_file,
)
from privacy.keys.secretfile import b64url_decode, replace_secret_file, secret_file_lock
from privacy.keys.vault import DataKeyDestroyedError, Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from privacy.transport.webhooks import refuse_published_secret
from tests.conftest import POLICY_DIR

ROOT = Path(__file__).resolve().parents[3]
SAMPLE_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

# -- strict base64 (finding 9) ---------------------------------------------------------------


@pytest.mark.parametrize("junk", ["!", "*", "~", " ", "\n", "=", "+", "/"])
def test_key_file_secret_with_an_inserted_invalid_character_is_refused(
    tmp_path: Path, junk: str
) -> None:
    path = tmp_path / "kek.json"
    create_kek_file(path, origin="operator")
    doc = json.loads(path.read_text())
    secret = doc["keys"][0]["secret"]
    doc["keys"][0]["secret"] = secret[:10] + junk + secret[10:]
    path.write_text(json.dumps(doc))

    with pytest.raises(ConfigurationError, match="base64url"):
        read_kek_file(path)


def test_hash_key_with_an_inserted_invalid_character_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hash-keys.json"
    create_key_file(path, origin="operator")
    doc = json.loads(path.read_text())
    doc["keys"][0]["secret"] = "!" + doc["keys"][0]["secret"]
    path.write_text(json.dumps(doc))

    with pytest.raises(ConfigurationError, match="base64url"):
        read_key_file(path)


def test_non_canonical_base64_is_refused() -> None:
    assert b64url_decode("AAE", "x") == b"\x00\x01"
    with pytest.raises(ConfigurationError, match="canonical"):
        b64url_decode("AAF", "x")  # same bytes, non-zero unused bits
    with pytest.raises(ConfigurationError):
        b64url_decode("A", "x")  # impossible length


# -- create never overwrites, rotations are serialized (finding 4) ----------------------------


def test_concurrent_creates_of_one_kek_file_leave_exactly_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    results: list[str] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        try:
            results.append(create_kek_file(path, origin="operator").primary)
        except ConfigurationError:
            results.append("refused")

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [r for r in results if r != "refused"]
    assert len(winners) == 1
    assert read_kek_file(path).primary == winners[0]  # the key the winner got is the one kept


def test_create_refuses_an_existing_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "hash-keys.json"
    first = create_key_file(path, origin="operator")

    with pytest.raises(ConfigurationError, match="already exists"):
        create_key_file(path, origin="operator")

    assert read_key_file(path).primary == first.primary
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hash-keys.json"]


def _fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return calls


def test_a_replace_fsyncs_the_file_and_its_directory_when_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = _fsyncs(monkeypatch)
    path = tmp_path / "keys" / "secret.json"
    replace_secret_file(path, "one")
    assert path.read_text() == "one"
    assert path.stat().st_mode & 0o777 == 0o600
    assert len(fsyncs) == 2  # the temp file, then the directory after the rename


def test_a_replace_fsyncs_nothing_and_creates_no_directory_when_not_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs = _fsyncs(monkeypatch)
    path = tmp_path / "tally.json"
    replace_secret_file(path, "one", durable=False, create_directory=False)
    replace_secret_file(path, "two", durable=False, create_directory=False)
    assert path.read_text() == "two"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tally.json"]  # no temp file left
    assert fsyncs == []
    with pytest.raises(FileNotFoundError):
        replace_secret_file(tmp_path / "gone" / "tally.json", "x", create_directory=False)
    assert not (tmp_path / "gone").exists()


def test_concurrent_rotations_keep_every_new_key(tmp_path: Path) -> None:
    path = tmp_path / "kek.json"
    create_kek_file(path, origin="operator")
    made: list[str] = []
    start = threading.Barrier(6)

    def rotate() -> None:
        start.wait()
        made.append(rotate_kek_file(path))

    threads = [threading.Thread(target=rotate) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(made) <= set(read_kek_file(path).key_ids)
    assert len(read_kek_file(path).key_ids) == 7


def test_rotation_waits_for_the_key_file_lock(tmp_path: Path) -> None:
    path = tmp_path / "hash-keys.json"
    create_key_file(path, origin="operator")
    done = threading.Event()

    with secret_file_lock(path):

        def rotate() -> None:
            rotate_key_file(path)
            done.set()

        worker = threading.Thread(target=rotate)
        worker.start()
        time.sleep(0.3)
        assert not done.is_set()  # blocked while another holder has the lock
    worker.join(5)
    assert done.is_set()
    assert len(read_key_file(path).entries) == 2


# -- keyed references (finding 5) -------------------------------------------------------------


def test_shred_refs_in_the_key_file_cannot_be_recomputed_from_the_owner_id(
    tmp_path: Path,
) -> None:
    create_kek_file(tmp_path / "kek.json", origin="operator")
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        vault = Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))
        owner = new_node_id()
        vault.encrypt(owner, "f", b"v")
        vault.shred([owner])
        assert vault.shred_ref(owner) != hashlib.sha256(owner.encode()).hexdigest()
    finally:
        keys.close()

    conn = sqlite3.connect(tmp_path / "vault-keys.sqlite3")
    refs = {r for (r,) in conn.execute("SELECT ref FROM shredded_refs")}
    conn.close()
    unkeyed = hashlib.sha256(b"idgraph-vault-shredded/1\x00" + owner.encode()).hexdigest()
    assert unkeyed not in refs  # the old construction: anyone with the id could confirm it
    assert len(refs) == 1


def test_shredded_owner_stays_refused_after_a_restart(tmp_path: Path) -> None:
    create_kek_file(tmp_path / "kek.json", origin="operator")
    owner = new_node_id()
    for step in ("shred", "check"):
        keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
        try:
            vault = Vault(keys, LocalFileKeyProvider(tmp_path / "kek.json"))
            if step == "shred":
                vault.encrypt(owner, "f", b"v")
                vault.shred([owner])
            else:
                with pytest.raises(DataKeyDestroyedError):
                    vault.encrypt(owner, "f", b"again")
        finally:
            keys.close()


def test_audit_person_refs_are_keyed_and_survive_kek_rotation(tmp_path: Path) -> None:
    kek = tmp_path / "kek.json"
    create_kek_file(kek, origin="operator")
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        before = Vault(keys, LocalFileKeyProvider(kek)).reference_key(PERSON_REF_INFO)
        rotate_kek_file(kek)
        rotated = Vault(keys, LocalFileKeyProvider(kek))
        rotated.retire_old_keks()
        after = Vault(keys, LocalFileKeyProvider(kek)).reference_key(PERSON_REF_INFO)
    finally:
        keys.close()

    assert before == after  # old audit entries stay findable after a KEK rotation
    unkeyed = "r_" + hashlib.sha256(b"idgraph-audit-person/1\x00p_1").hexdigest()[:24]
    assert person_ref("p_1", before) != unkeyed


def test_audit_file_holds_no_ref_computable_from_a_person_id_alone(
    settings: Settings,
) -> None:
    container = build_container(settings)
    try:
        ref = container.audit.person_ref("p_0123456789abcdef01234567")
    finally:
        container.close()
    unkeyed = hashlib.sha256(b"idgraph-audit-person/1\x00p_0123456789abcdef01234567")
    assert ref != "r_" + unkeyed.hexdigest()[:24]
    assert re.fullmatch(r"r_[0-9a-f]{24}", ref)


# -- where the KEK lives (findings 3, 10) ------------------------------------------------------


def test_kek_default_is_outside_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "data", policy_dir=POLICY_DIR)

    kek = settings.resolved_kek_file

    assert settings.data_dir.absolute() not in kek.parents
    assert kek.parent != settings.vault_keys_path.parent


def test_production_refuses_a_kek_in_the_vault_key_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with pytest.raises(ConfigurationError, match="same directory"):
        check_kek_apart_from_vault(
            data / "kek.json", data / "vault-keys.sqlite3", allow_same_volume=True
        )


def test_production_refuses_a_kek_on_the_vault_volume_unless_acknowledged(
    tmp_path: Path,
) -> None:
    kek, vault_keys = tmp_path / "kek" / "kek.json", tmp_path / "data" / "vault-keys.sqlite3"
    kek.parent.mkdir()

    with pytest.raises(ConfigurationError, match="same filesystem"):
        check_kek_apart_from_vault(kek, vault_keys, allow_same_volume=False)
    check_kek_apart_from_vault(kek, vault_keys, allow_same_volume=True)


def test_production_start_up_refuses_the_old_default_kek_next_to_the_vault_keys(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    create_kek_file(data / "kek.json", origin="operator")
    create_key_file(tmp_path / "hash-keys.json", origin="operator")
    settings = Settings(
        env="production",
        data_dir=data,
        policy_dir=POLICY_DIR,
        hash_key_file=tmp_path / "hash-keys.json",
    )

    with pytest.raises(ConfigurationError, match="old default"):
        build_container(settings)


def test_the_image_defaults_to_production_with_the_kek_on_its_own_volume() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    env = dict(re.findall(r"(IDGRAPH_[A-Z_]+)=(\S+)", dockerfile))

    assert env["IDGRAPH_ENV"] == "production"
    assert not env["IDGRAPH_KEK_FILE"].startswith(env["IDGRAPH_DATA_DIR"] + "/")
    volumes = re.search(r"VOLUME \[(.*)\]", dockerfile)
    assert volumes is not None
    assert str(Path(env["IDGRAPH_KEK_FILE"]).parent) in volumes.group(1)


# -- published webhook secret (finding 11) -----------------------------------------------------


def test_the_standard_webhooks_sample_secret_is_refused_even_re_encoded() -> None:
    with pytest.raises(ConfigurationError, match="example secret"):
        refuse_published_secret(SAMPLE_SECRET, "source 'shop'")
    with pytest.raises(ConfigurationError, match="example secret"):
        refuse_published_secret(SAMPLE_SECRET + "=" * 0, "source 'shop'")
    refuse_published_secret("whsec_" + "QUJD" * 8, "source 'shop'")  # any other key passes


def test_production_start_up_refuses_the_sample_secret(tmp_path: Path) -> None:
    create_key_file(tmp_path / "hash-keys.json", origin="operator")
    create_kek_file(tmp_path / "kek" / "kek.json", origin="operator")
    settings = Settings(
        env="production",
        data_dir=tmp_path / "data",
        policy_dir=POLICY_DIR,
        hash_key_file=tmp_path / "hash-keys.json",
        kek_file=tmp_path / "kek" / "kek.json",
        kek_shares_volume_with_vault=True,
        webhook_sources={"shop": {"format": "generic"}},
        webhook_secrets=json.dumps({"shop": [SAMPLE_SECRET]}),
    )

    with pytest.raises(ConfigurationError, match="example secret"):
        build_container(settings)
