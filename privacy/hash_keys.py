"""The hash-key file: where the HMAC keys for identifiers live on disk.

Format (JSON, file mode 0600)::

    {"format": "idgraph-hash-keys/1",
     "primary": "hk-20261123-3f9a1c",
     "keys": [{"id": "hk-20261123-3f9a1c", "secret": "<base64url, 32 bytes>",
               "created_at": "2026-11-23T10:00:00Z", "origin": "generated"}]}

``origin`` is ``generated`` for a key that ``idgraph`` made by itself for local development
(``make run``) and ``operator`` for one made on purpose with ``idgraph keys create-hash-key-file``
or ``rotate-hash-key``. Production refuses ``generated`` keys: a key nobody chose on purpose is a
key nobody backs up or protects.

The same JSON document may be passed in the ``IDGRAPH_HASH_KEYS`` setting instead of a file, for
deployments that take secrets from a secret manager via the environment.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from identity.errors import ConfigurationError
from identity.hashing import MIN_KEY_BYTES, HashKey, Keyring
from privacy.audit import is_audit_ref
from privacy.secretfile import (
    b64url_decode,
    b64url_encode,
    create_secret_file,
    read_secret_file,
    secret_file_lock,
    write_secret_file,
)

FORMAT = "idgraph-hash-keys/1"
Origin = Literal["generated", "operator"]


@dataclass(frozen=True, slots=True)
class KeyFileEntry:
    """One key as recorded in the key file (the secret stays in ``HashKey``)."""

    key: HashKey
    created_at: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class HashKeyFile:
    """The parsed key file."""

    primary: str
    entries: tuple[KeyFileEntry, ...]

    def keyring(self) -> Keyring:
        """The keyring these keys make."""
        return Keyring((e.key for e in self.entries), self.primary)

    @property
    def primary_origin(self) -> Origin:
        """Origin of the primary key."""
        return next(e.origin for e in self.entries if e.key.key_id == self.primary)


def new_key_id(now: datetime | None = None) -> str:
    """A fresh key id: date plus random suffix; readable in logs, unique enough to rotate daily."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    # The suffix always has a letter: an all-digit one makes "20261202-045123", which the log
    # and audit filters take for a phone number (about 6% of ids did, and the features
    # read's audit entry, which names the key, was then refused).
    suffix = secrets.token_hex(3)
    while suffix.isdigit():
        suffix = secrets.token_hex(3)
    return f"hk-{stamp}-{suffix}"


def _entry(key_id: str, origin: Origin) -> KeyFileEntry:
    # 32 bytes from the OS CSPRNG: the full strength HMAC-SHA256 can use.
    return KeyFileEntry(
        HashKey(key_id, secrets.token_bytes(MIN_KEY_BYTES)),
        datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        origin,
    )


def parse_key_document(text: str, source: str) -> HashKeyFile:
    """Parse the JSON document; ``source`` names where it came from in error messages."""
    try:
        doc: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{source}: not valid JSON ({exc.msg})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigurationError(f"{source}: format must be {FORMAT!r}")
    raw_keys = doc.get("keys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise ConfigurationError(f"{source}: keys must be a non-empty list")
    entries = []
    for index, item in enumerate(raw_keys):
        if not isinstance(item, dict):
            raise ConfigurationError(f"{source}: keys[{index}] must be an object")
        kid, secret, origin = item.get("id"), item.get("secret"), item.get("origin", "operator")
        # Key ids go into responses, logs and audit entries as ids (AuditRef): a shape that no
        # email address or phone number has, checked here once instead of failing every read.
        if not isinstance(kid, str) or len(kid) > 64 or not is_audit_ref(kid):
            raise ConfigurationError(
                f"{source}: keys[{index}].id must be 1-64 of A-Z a-z 0-9 _ . : - "
                "with at least one letter"
            )
        if origin not in ("generated", "operator"):
            raise ConfigurationError(f"{source}: keys[{index}].origin must be generated|operator")
        raw = b64url_decode(secret, f"{source}: keys[{index}].secret")
        entries.append(KeyFileEntry(HashKey(kid, raw), str(item.get("created_at", "")), origin))
    primary = doc.get("primary")
    if not isinstance(primary, str) or primary not in {e.key.key_id for e in entries}:
        raise ConfigurationError(f"{source}: primary must name one of the keys")
    return HashKeyFile(primary, tuple(entries))


def dump_key_document(keys: HashKeyFile) -> str:
    """Serialize ``keys`` to the JSON document."""
    return json.dumps(
        {
            "format": FORMAT,
            "primary": keys.primary,
            "keys": [
                {
                    "id": e.key.key_id,
                    "secret": b64url_encode(e.key.secret),
                    "created_at": e.created_at,
                    "origin": e.origin,
                }
                for e in keys.entries
            ],
        },
        indent=2,
    )


def write_key_file(path: Path, keys: HashKeyFile) -> None:
    """Write atomically with mode 0600 (see :func:`privacy.secretfile.write_secret_file`)."""
    write_secret_file(path, dump_key_document(keys))


def read_key_file(path: Path) -> HashKeyFile:
    """Read and check the key file; refuses files readable by group or others."""
    return parse_key_document(read_secret_file(path, "hash key file"), str(path))


def create_key_file(path: Path, origin: Origin) -> HashKeyFile:
    """Create a key file with one new key; refuses to overwrite an existing file."""
    entry = _entry(new_key_id(), origin)
    keys = HashKeyFile(entry.key.key_id, (entry,))
    create_secret_file(path, dump_key_document(keys), "hash key file")
    return keys


def rotate_key_file(path: Path) -> HashKeyFile:
    """Add a new operator key and make it primary; old keys stay for lookups."""
    with secret_file_lock(path):
        current = read_key_file(path)
        entry = _entry(new_key_id(), "operator")
        rotated = HashKeyFile(entry.key.key_id, (*current.entries, entry))
        write_key_file(path, rotated)
    return rotated
