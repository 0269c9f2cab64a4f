"""The PKCS#11 key provider against a real SoftHSM2 token (issue 22, finding 3).

Needs Debian's ``softhsm2`` (``make softhsm`` installs it; ``.ci/run`` does so before the suite).
Without it the tests are skipped with the reason; in CI (``CI=true``) a missing SoftHSM fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bootstrap.container import build_container
from bootstrap.settings import Settings
from cli.main import app
from privacy.keys.keyprovider import WrappedKey, WrappedKeyInvalidError
from privacy.keys.vault import TamperedDataKeyError, Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.conftest import POLICY_DIR

LIBRARIES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
)
PIN = "4321"
runner = CliRunner()


def _library() -> str | None:
    return next((lib for lib in LIBRARIES if Path(lib).exists()), None)


def _missing() -> str | None:
    try:
        import pkcs11  # noqa: F401
    except ImportError:
        return "python-pkcs11 is not installed (pip install '.[hsm]')"
    if shutil.which("softhsm2-util") is None or _library() is None:
        return "SoftHSM2 is not installed (run `make softhsm`, i.e. apt-get install softhsm2)"
    return None


REASON = _missing()
if REASON is not None and os.environ.get("CI") == "true":
    raise RuntimeError(f"CI must run the PKCS#11 tests: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def token(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A fresh SoftHSM2 token in a temp dir: (library path, token label)."""
    root = tmp_path_factory.mktemp("softhsm")
    (root / "tokens").mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n")
    # SoftHSM reads its configuration when the library initializes, once per process; every
    # test of this module shares the token.
    os.environ["SOFTHSM2_CONF"] = str(conf)
    label = "idgraph-test"
    subprocess.run(
        [
            str(shutil.which("softhsm2-util")),
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            "87654321",
        ],
        check=True,
        capture_output=True,
    )
    library = _library()
    assert library is not None
    return Path(library), label


def _provider(token: tuple[Path, str]):  # type: ignore[no-untyped-def]
    from privacy.keys.pkcs11_provider import Pkcs11KeyProvider

    return Pkcs11KeyProvider(token[0], token[1], PIN, label_prefix="test-kek-")


def test_kek_is_generated_in_the_token_sensitive_and_not_extractable(
    token: tuple[Path, str],
) -> None:
    provider = _provider(token)
    try:
        kek = provider.create_kek()
        assert provider.current_kek_id == kek
        assert provider.attributes(kek) == {"sensitive": True, "extractable": False, "token": True}
    finally:
        provider.close()


def test_vault_round_trips_through_the_token_and_binds_the_owner(
    token: tuple[Path, str], tmp_path: Path
) -> None:
    provider = _provider(token)
    keys = SqliteVaultKeyStore(tmp_path / "vault-keys.sqlite3")
    try:
        if not provider.kek_ids:
            provider.create_kek()
        vault = Vault(keys, provider, cache_size=0)
        blob = vault.encrypt("n_owner1", "email", b"ann@shop.example")
        assert vault.decrypt("n_owner1", "email", blob) == b"ann@shop.example"
        assert set(vault.count_by_kek()) == {provider.current_kek_id}
        # The wrapped key moved to another owner's row must not unwrap (AAD binds the owner).
        wrapped = keys.get_many({"n_owner1"})["n_owner1"]
        with pytest.raises(WrappedKeyInvalidError):
            provider.unwrap(wrapped, b"idgraph-vault-dek/1\x00n_other")
        altered = WrappedKey(wrapped.kek_id, wrapped.blob[:-1] + bytes([wrapped.blob[-1] ^ 1]))
        with pytest.raises(WrappedKeyInvalidError):
            provider.unwrap(altered, b"idgraph-vault-dek/1\x00n_owner1")
        keys.replace_wrapped([("n_owner1", wrapped, altered)])
        with pytest.raises(TamperedDataKeyError):
            vault.decrypt("n_owner1", "email", blob)
    finally:
        keys.close()
        provider.close()


def test_service_on_the_token_rotates_retires_and_restarts_with_every_value_readable(
    token: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "IDGRAPH_ENV": "development",
        "IDGRAPH_DATA_DIR": str(tmp_path / "data"),
        "IDGRAPH_POLICY_DIR": str(POLICY_DIR),
        "IDGRAPH_KEY_PROVIDER": "pkcs11",
        "IDGRAPH_PKCS11_LIBRARY": str(token[0]),
        "IDGRAPH_PKCS11_TOKEN_LABEL": token[1],
        "IDGRAPH_PKCS11_PIN": PIN,
        "IDGRAPH_PKCS11_KEK_LABEL_PREFIX": "svc-kek-",
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert runner.invoke(app, ["keys", "rotate-kek"]).exit_code == 0  # the first KEK
    service = build_container(settings)
    written = [
        (f"n_{i:04d}", service.vault.encrypt(f"n_{i:04d}", "f", b"before")) for i in range(3)
    ]
    first = service.vault.count_by_kek()

    result = runner.invoke(app, ["keys", "rotate-kek", "--retire-old"])
    assert result.exit_code == 0, result.output
    assert "removed retired KEK" in result.output
    # The running service follows the rotation: new keys go under the new KEK in the token.
    written += [
        (f"n_{i:04d}", service.vault.encrypt(f"n_{i:04d}", "f", b"after")) for i in range(3, 6)
    ]
    service.close()

    restarted = build_container(settings)
    try:
        for owner, blob in written:
            assert restarted.vault.decrypt(owner, "f", blob) in (b"before", b"after")
        (current,) = restarted.vault.count_by_kek()
        assert current not in first
    finally:
        restarted.close()
