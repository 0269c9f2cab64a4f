"""The hash-key file: where the HMAC keys for identifiers live on disk.

The format is the one every key file has (:mod:`privacy.keys.keyfile`), tagged
``"format": "idgraph-hash-keys/1"``; key ids look like ``hk-20261123-3f9a1c`` and secrets are at
least 32 bytes. ``origin`` is ``generated`` for a key that ``idgraph`` made by itself for local
development (``make run``) and ``operator`` for one made on purpose with ``idgraph keys
create-hash-key-file`` or ``rotate-hash-key``. Production refuses ``generated`` keys.

The same JSON document may be passed in the ``IDGRAPH_HASH_KEYS`` setting instead of a file, for
deployments that take secrets from a secret manager via the environment.
"""

from __future__ import annotations

from pathlib import Path

from identity.hashing import MIN_KEY_BYTES, HashKey, Keyring
from privacy.keys.keyfile import KeyFile, KeyFileFormat, Origin

HASH_KEY_FILE = KeyFileFormat(
    format="idgraph-hash-keys/1",
    what="hash key file",
    id_prefix="hk",
    secret_bytes=MIN_KEY_BYTES,
    exact=False,
)
FORMAT = HASH_KEY_FILE.format


def keyring(keys: KeyFile) -> Keyring:
    """The keyring a hash-key file makes (``HashKey`` refuses weak or placeholder secrets)."""
    return Keyring((HashKey(e.key_id, e.secret) for e in keys.entries), keys.primary)


def new_key_id() -> str:
    """A fresh hash key id (``hk-<date>-<random>``)."""
    return HASH_KEY_FILE.new_key_id()


def parse_key_document(text: str, source: str) -> KeyFile:
    """Parse a hash-key document (a file's text or ``IDGRAPH_HASH_KEYS``)."""
    return HASH_KEY_FILE.parse(text, source)


def read_key_file(path: Path) -> KeyFile:
    """Read and check the hash-key file; refuses files readable by group or others."""
    return HASH_KEY_FILE.read(path)


def create_key_file(path: Path, origin: Origin) -> KeyFile:
    """Create a hash-key file with one new key; refuses to overwrite an existing file."""
    return HASH_KEY_FILE.create(path, origin)


def rotate_key_file(path: Path) -> KeyFile:
    """Add a new operator key and make it primary; old keys stay for lookups."""
    return HASH_KEY_FILE.rotate(path)
