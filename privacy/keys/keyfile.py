"""Key files: the one on-disk format for every secret key idgraph keeps in a file (the HMAC hash
keys and the key-encryption keys of the local key provider).

Format (JSON, file mode 0600; ``format`` names which kind of key the file holds)::

    {"format": "idgraph-hash-keys/1",            (or "idgraph-kek/1")
     "primary": "hk-20261123-3f9a1c",
     "keys": [{"id": "hk-20261123-3f9a1c", "secret": "<base64url, 32 bytes>",
               "created_at": "2026-11-23T10:00:00Z", "origin": "generated"}]}

``primary`` is the key new data is hashed or wrapped with; the others stay so that what was made
under them can still be looked up or unwrapped until it has moved to the primary. ``origin`` is
``generated`` for a key idgraph made by itself for local development (``make run``) and
``operator`` for one made on purpose; production refuses ``generated`` keys: a key nobody chose
on purpose is a key nobody backs up or protects.

One parser for both kinds, so the rules cannot drift apart again (they had: KEK files accepted
ids that hash-key files refused, hash-key files accepted repeated ids). Every key file is checked
the same way: ids are short audit-safe references (letters, digits, ``_ . : -``, at least one
letter: ids go into logs and audit entries, and an all-digit id looks like a phone number there),
no id twice, strict canonical base64url secrets of the kind's length, a known origin, a primary
that names one of the keys. File handling (create never overwrites, atomic durable replace, a
lock around read-modify-write, owner-only mode) is :mod:`privacy.keys.secretfile`.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from identity.errors import ConfigurationError
from privacy.auditing.log import is_audit_ref
from privacy.keys.secretfile import (
    b64url_decode,
    b64url_encode,
    create_secret_file,
    read_secret_file,
    replace_secret_file,
    secret_file_lock,
)

Origin = Literal["generated", "operator"]
_ORIGINS: tuple[Origin, ...] = ("generated", "operator")
_MAX_ID = 64


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One key as recorded in a key file."""

    key_id: str
    secret: bytes = field(repr=False)
    created_at: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class KeyFile:
    """A parsed key file: its primary key id and every key, oldest first."""

    primary: str
    entries: tuple[KeyEntry, ...]

    @property
    def primary_origin(self) -> Origin:
        """Origin of the primary key (production refuses ``generated``)."""
        return next(e.origin for e in self.entries if e.key_id == self.primary)

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every key in the file, oldest first."""
        return tuple(e.key_id for e in self.entries)


@dataclass(frozen=True, slots=True)
class KeyFileFormat:
    """One kind of key file: its ``format`` tag, how it is named in messages, the prefix of new
    key ids and the secret length (``exact``: only that length, else at least that length)."""

    format: str
    what: str
    id_prefix: str
    secret_bytes: int
    exact: bool

    def new_key_id(self, now: datetime | None = None) -> str:
        """A fresh key id: prefix, date and a random suffix; readable in logs, unique enough to
        rotate daily."""
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
        # The suffix always has a letter: an all-digit one makes "20261202-045123", which the log
        # and audit filters take for a phone number (about 6% of ids did, and the features
        # read's audit entry, which names the key, was then refused).
        suffix = secrets.token_hex(3)
        while suffix.isdigit():
            suffix = secrets.token_hex(3)
        return f"{self.id_prefix}-{stamp}-{suffix}"

    def new_entry(self, origin: Origin) -> KeyEntry:
        """A new key: ``secret_bytes`` from the OS CSPRNG (``secrets`` uses ``os.urandom``), the
        full strength of HMAC-SHA256 and of AES-256."""
        return KeyEntry(
            self.new_key_id(),
            secrets.token_bytes(self.secret_bytes),
            datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            origin,
        )

    def parse(self, text: str, source: str) -> KeyFile:
        """Parse and check a key document; ``source`` names where it came from in messages."""
        try:
            doc: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigurationError(f"{source}: not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict) or doc.get("format") != self.format:
            raise ConfigurationError(f"{source}: format must be {self.format!r}")
        raw_keys = doc.get("keys")
        if not isinstance(raw_keys, list) or not raw_keys:
            raise ConfigurationError(f"{source}: keys must be a non-empty list")
        entries: list[KeyEntry] = []
        for index, item in enumerate(raw_keys):
            entries.append(self._entry(item, f"{source}: keys[{index}]", entries))
        primary = doc.get("primary")
        if not isinstance(primary, str) or primary not in {e.key_id for e in entries}:
            raise ConfigurationError(f"{source}: primary must name one of the keys")
        return KeyFile(primary, tuple(entries))

    def _entry(self, item: object, where: str, earlier: list[KeyEntry]) -> KeyEntry:
        if not isinstance(item, dict):
            raise ConfigurationError(f"{where} must be an object")
        kid, secret, origin = item.get("id"), item.get("secret"), item.get("origin", "operator")
        # Key ids go into responses, logs and audit entries as ids (AuditRef): a shape that no
        # email address or phone number has, checked here once instead of failing every read.
        if not isinstance(kid, str) or len(kid) > _MAX_ID or not is_audit_ref(kid):
            raise ConfigurationError(
                f"{where}.id must be 1-{_MAX_ID} of A-Z a-z 0-9 _ . : - with at least one letter"
            )
        if kid in {e.key_id for e in earlier}:
            raise ConfigurationError(f"{where}.id repeats an earlier id")
        if origin not in _ORIGINS:
            raise ConfigurationError(f"{where}.origin must be generated|operator")
        raw = b64url_decode(secret, f"{where}.secret")
        # KEKs: exactly 32 bytes (AES-256 only; a shorter key would silently select
        # AES-128/192). Hash keys: at least 32 (HMAC-SHA256's strength is bounded by the key).
        if len(raw) != self.secret_bytes if self.exact else len(raw) < self.secret_bytes:
            exactly = "" if self.exact else "at least "
            raise ConfigurationError(f"{where}.secret must be {exactly}{self.secret_bytes} bytes")
        return KeyEntry(kid, raw, str(item.get("created_at", "")), origin)

    def dump(self, keys: KeyFile) -> str:
        """Serialize ``keys`` to the JSON document."""
        return json.dumps(
            {
                "format": self.format,
                "primary": keys.primary,
                "keys": [
                    {
                        "id": e.key_id,
                        "secret": b64url_encode(e.secret),
                        "created_at": e.created_at,
                        "origin": e.origin,
                    }
                    for e in keys.entries
                ],
            },
            indent=2,
        )

    def read(self, path: Path) -> KeyFile:
        """Read and check the file; refuses a missing file or one readable by group or others."""
        return self.parse(read_secret_file(path, self.what), str(path))

    def write(self, path: Path, keys: KeyFile) -> None:
        """Replace the file atomically with mode 0600 (see :mod:`privacy.keys.secretfile`)."""
        replace_secret_file(path, self.dump(keys))

    def create(self, path: Path, origin: Origin) -> KeyFile:
        """Create the file with one new key; refuses to overwrite an existing file."""
        entry = self.new_entry(origin)
        keys = KeyFile(entry.key_id, (entry,))
        create_secret_file(path, self.dump(keys), self.what)
        return keys

    def rotate(self, path: Path) -> KeyFile:
        """Add a new operator key and make it primary; old keys stay. Holds the file's lock."""
        with secret_file_lock(path):
            current = self.read(path)
            entry = self.new_entry("operator")
            rotated = KeyFile(entry.key_id, (*current.entries, entry))
            self.write(path, rotated)
        return rotated

    def remove(self, path: Path, key_id: str) -> KeyFile:
        """Drop a retired key from the file; refuses the primary. Holds the file's lock."""
        with secret_file_lock(path):
            current = self.read(path)
            if key_id == current.primary:
                raise ConfigurationError(
                    f"{self.what}: key {key_id!r} is the primary; rotate before removing it"
                )
            if key_id not in current.key_ids:
                raise ConfigurationError(f"{self.what}: key {key_id!r} is not in {path}")
            remaining = KeyFile(
                current.primary, tuple(e for e in current.entries if e.key_id != key_id)
            )
            self.write(path, remaining)
        return remaining
