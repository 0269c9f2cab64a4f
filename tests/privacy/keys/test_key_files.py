"""One key-file module (privacy/keys/keyfile.py) for hash keys and KEKs: files written in today's
format still load and are written back byte for byte, and both kinds follow the same rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from identity.errors import ConfigurationError
from privacy.keys.hash_keys import HASH_KEY_FILE, keyring, read_key_file, rotate_key_file
from privacy.keys.keyfile import KeyFileFormat
from privacy.keys.keyprovider import KEK_FILE, LocalFileKeyProvider, read_kek_file, remove_kek

# Exactly what the two writers produced before they were merged (json.dumps(indent=2) of these
# fields in this order), with fixed secrets so the test can compare bytes.
HASH_KEY_SECRET = "q6bTEGH6lRTl3LUkIvU9AyEBm2bU1X54yXBn11vCGk0"
OLD_HASH_KEY_SECRET = "Yz3o0pJ3n8C1aXbR5s2LkT9vWq4eUi7OmP6dFgHjKl0"
KEK_SECRET = "3mJvQ5Wc8rT1yU4iO7pA0sD2fG6hJ9kL1zX3cV5bN7M"
TODAYS_HASH_KEY_FILE = f"""{{
  "format": "idgraph-hash-keys/1",
  "primary": "hk-20261202-a1b2c3",
  "keys": [
    {{
      "id": "hk-20261123-3f9a1c",
      "secret": "{OLD_HASH_KEY_SECRET}",
      "created_at": "2026-11-23T10:00:00Z",
      "origin": "generated"
    }},
    {{
      "id": "hk-20261202-a1b2c3",
      "secret": "{HASH_KEY_SECRET}",
      "created_at": "2026-12-02T09:30:00Z",
      "origin": "operator"
    }}
  ]
}}"""
TODAYS_KEK_FILE = f"""{{
  "format": "idgraph-kek/1",
  "primary": "kek-20261123-3f9a1c",
  "keys": [
    {{
      "id": "kek-20261123-3f9a1c",
      "secret": "{KEK_SECRET}",
      "created_at": "2026-11-23T10:00:00Z",
      "origin": "generated"
    }}
  ]
}}"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_hash_key_file_in_todays_format_loads_when_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "hash-keys.json", TODAYS_HASH_KEY_FILE)
    keys = read_key_file(path)
    assert keys.primary == "hk-20261202-a1b2c3"
    assert keys.key_ids == ("hk-20261123-3f9a1c", "hk-20261202-a1b2c3")
    assert keys.primary_origin == "operator"
    assert [e.origin for e in keys.entries] == ["generated", "operator"]
    assert keys.entries[0].created_at == "2026-11-23T10:00:00Z"
    ring = keyring(keys)
    assert ring.key_ids == ("hk-20261202-a1b2c3", "hk-20261123-3f9a1c")
    assert HASH_KEY_FILE.dump(keys) == TODAYS_HASH_KEY_FILE


def test_kek_file_in_todays_format_loads_when_read(tmp_path: Path) -> None:
    path = _write(tmp_path / "kek.json", TODAYS_KEK_FILE)
    keks = read_kek_file(path)
    assert keks.primary == "kek-20261123-3f9a1c"
    assert keks.primary_origin == "generated"
    assert len(keks.entries[0].secret) == 32
    assert KEK_FILE.dump(keks) == TODAYS_KEK_FILE
    provider = LocalFileKeyProvider(path)
    wrapped = provider.wrap(b"k" * 32, b"owner")
    assert provider.unwrap(wrapped, b"owner") == b"k" * 32


def test_rotation_keeps_the_old_keys_byte_for_byte_when_a_file_is_rotated(tmp_path: Path) -> None:
    path = _write(tmp_path / "hash-keys.json", TODAYS_HASH_KEY_FILE)
    rotated = rotate_key_file(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert doc["primary"] == rotated.primary != "hk-20261202-a1b2c3"
    assert doc["keys"][:2] == json.loads(TODAYS_HASH_KEY_FILE)["keys"]
    assert doc["keys"][2]["origin"] == "operator"


@pytest.mark.parametrize("kind", [HASH_KEY_FILE, KEK_FILE], ids=["hash-keys", "kek"])
@pytest.mark.parametrize(
    ("key_id", "message"),
    [
        ("4915112345678", "at least one letter"),  # reads like a phone number in the audit log
        ("has space", "A-Z a-z 0-9"),
        ("x" * 65, "1-64"),
    ],
)
def test_both_kinds_refuse_the_same_key_ids_when_parsed(
    kind: KeyFileFormat, key_id: str, message: str
) -> None:
    # KEK files used to accept any short string as an id; hash-key files did not.
    doc = json.loads(TODAYS_KEK_FILE)
    doc["format"] = kind.format
    doc["keys"][0]["id"] = doc["primary"] = key_id
    with pytest.raises(ConfigurationError, match=message):
        kind.parse(json.dumps(doc), "test")


@pytest.mark.parametrize("kind", [HASH_KEY_FILE, KEK_FILE], ids=["hash-keys", "kek"])
def test_both_kinds_refuse_a_repeated_key_id_when_parsed(kind: KeyFileFormat) -> None:
    # Hash-key files used to accept a repeated id (the keyring refused it later, or not).
    doc = json.loads(TODAYS_KEK_FILE)
    doc["format"] = kind.format
    doc["keys"].append(dict(doc["keys"][0]))
    with pytest.raises(ConfigurationError, match="repeats an earlier id"):
        kind.parse(json.dumps(doc), "test")


def test_kek_secrets_must_be_exactly_32_bytes_and_hash_keys_at_least_32_when_parsed() -> None:
    long_secret = HASH_KEY_FILE.dump(HASH_KEY_FILE.parse(TODAYS_HASH_KEY_FILE, "test")).replace(
        HASH_KEY_SECRET, "A" * 59 + "Q"
    )  # 45 bytes
    assert len(HASH_KEY_FILE.parse(long_secret, "test").entries[1].secret) == 45
    kek = json.loads(TODAYS_KEK_FILE)
    kek["keys"][0]["secret"] = "A" * 59 + "Q"
    with pytest.raises(ConfigurationError, match="must be 32 bytes"):
        KEK_FILE.parse(json.dumps(kek), "test")
    short = TODAYS_HASH_KEY_FILE.replace(HASH_KEY_SECRET, "A" * 42)  # 31 bytes
    with pytest.raises(ConfigurationError, match="at least 32 bytes"):
        HASH_KEY_FILE.parse(short, "test")


def test_removing_the_primary_kek_is_refused_when_asked(tmp_path: Path) -> None:
    path = _write(tmp_path / "kek.json", TODAYS_KEK_FILE)
    with pytest.raises(ConfigurationError, match="is the primary"):
        remove_kek(path, "kek-20261123-3f9a1c")
    assert path.read_text(encoding="utf-8") == TODAYS_KEK_FILE
