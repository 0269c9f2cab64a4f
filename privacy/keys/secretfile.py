"""Files that hold secrets (hash keys, KEKs): the one module that creates, replaces, locks, reads
and decodes them. Shared by :mod:`privacy.keys.hash_keys` and :mod:`privacy.keys.keyprovider`.

* **Create never overwrites.** :func:`create_secret_file` writes a temp file and ``link``\\ s it
  to the final name: ``link`` fails if the name exists, atomically, so two processes creating
  the same key file cannot both win (an exists-then-rename check can: the second rename
  replaces a key the first process already used to hash or wrap, and that data is lost).
* **Replace is atomic and durable.** :func:`replace_secret_file` renames a fsync'd temp file
  over the old one and then fsyncs the directory, so after a power cut the directory entry
  names the new file, not a vanished temp file or the old key. A file that is rewritten often
  and may be lost in a crash (the ingest applier's tally file, ``services.metrics.TallyFile``)
  uses the same replace with ``durable=False``: atomic and owner-only, never fsync'd.
* **Read-modify-write holds a lock.** :func:`secret_file_lock` takes an exclusive ``flock`` on a
  ``<name>.lock`` file next to the key file, so two rotations (or a rotation and a removal)
  cannot both read the same old file and the second write drop the first's new key.
* **Strict base64url.** :func:`b64url_decode` refuses any character outside the alphabet and any
  non-canonical encoding; Python's decoder silently drops invalid characters, so a corrupted
  or hand-edited key would otherwise load as a different key.
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from identity.errors import ConfigurationError

_B64URL = re.compile(r"[A-Za-z0-9_-]*")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _private_temp(
    path: Path, text: str, *, durable: bool = True, create_directory: bool = True
) -> Path:
    """A temp file (mode 0600 before any byte is written) next to ``path``, fsync'd if
    ``durable``; ``path``'s directory is created (0700) first if ``create_directory``."""
    if create_directory:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def create_secret_file(path: Path, text: str, what: str) -> None:
    """Create ``path`` holding ``text`` (mode 0600); refuses if it exists, even if another
    process creates it at the same moment (``link`` is atomic and never overwrites)."""
    tmp = _private_temp(path, text)
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise ConfigurationError(
            f"{what} {path} already exists; refusing to overwrite it"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def replace_secret_file(
    path: Path, text: str, *, durable: bool = True, create_directory: bool = True
) -> None:
    """Replace ``path`` atomically with mode 0600: a crash leaves the old file or the new one,
    never half, and the directory is fsync'd so the rename itself survives a power cut.

    ``durable=False`` skips both fsyncs (the temp file's and the directory's): the replace is
    still atomic and owner-only, but after a power cut the old file (or none) may be what is
    there. For a file that is rewritten often and whose last write may be lost, never a key:
    the ingest applier's counts (``services.metrics.TallyFile``), rewritten after every group
    it applies, where two fsyncs per group would cost the applier disk flushes for monitoring
    figures. ``create_directory=False`` leaves a missing directory missing (the replace then
    raises ``FileNotFoundError``): for a file in a directory someone else owns and removes (the
    tally file's, which ``idgraph serve`` deletes when it stops), so that a late write does not
    create it again.
    """
    tmp = _private_temp(path, text, durable=durable, create_directory=create_directory)
    try:
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


# The name existing callers use; a replace is the only way to write an existing key file.
write_secret_file = replace_secret_file


@contextmanager
def secret_file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock for a read-modify-write of ``path`` (rotate, remove a key).

    The lock is ``flock`` on ``<path>.lock`` (created 0600, never deleted: deleting it would let
    a waiter and a newcomer lock different inodes). Blocks until the lock is free; released
    when the block exits or the process dies.
    """
    lock_path = path.with_name(path.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


def read_secret_file(path: Path, what: str) -> str:
    """The file's text; refuses a missing file or one readable by group or others.

    ``what`` names the file in messages (``hash key file``, ``KEK file``).
    """
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigurationError(f"{what} {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise ConfigurationError(
            f"{what} {path} has mode {mode:o}; run `chmod 600 {path}` (secrets must not be "
            "readable by other users)"
        )
    return text


def b64url_encode(secret: bytes) -> str:
    """Unpadded base64url, the form secrets take in key files."""
    return base64.urlsafe_b64encode(secret).decode().rstrip("=")


def b64url_decode(text: object, where: str) -> bytes:
    """Decode unpadded base64url strictly; raises :class:`ConfigurationError` naming ``where``.

    Only the 64 alphabet characters, no padding, no whitespace, and the canonical encoding
    (the unused low bits of the last character are zero): exactly one text per key, so a
    damaged key file fails loudly instead of loading a different key.
    """
    if not isinstance(text, str) or not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ConfigurationError(f"{where} is not unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not unpadded base64url") from None
    if b64url_encode(raw) != text:
        raise ConfigurationError(f"{where} is not canonical base64url")
    return raw
