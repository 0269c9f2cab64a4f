"""Files that hold secrets (hash keys, KEKs): written atomically with mode 0600, read only when
no other user can read them. Shared by :mod:`privacy.hash_keys` and :mod:`privacy.keyprovider`.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from identity.errors import ConfigurationError


def dated_key_id(prefix: str, now: datetime | None = None) -> str:
    """A fresh key id ``<prefix>-<yyyymmdd>-<6 hex>``: readable in logs, unique enough to rotate
    daily.

    The random suffix always holds a letter. Why: key ids travel into logs and audit entries,
    and an all-digit suffix (``hk-20261202-355274``, one draw in 17) makes the id end in a
    14-digit run that phone-number heuristics (ours in :mod:`privacy.redaction`, and those of
    any log pipeline downstream) take for a phone number and scrub or refuse. Redrawing costs
    0.1 bit of the suffix's 24.
    """
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    suffix = secrets.token_hex(3)
    while suffix.isdigit():
        suffix = secrets.token_hex(3)
    return f"{prefix}-{stamp}-{suffix}"


def write_secret_file(path: Path, text: str) -> None:
    """Write atomically with mode 0600: a crash leaves the old file or the new one, never half.

    The temp file is created 0600 before anything is written, so the secret is never on disk
    with a wider mode, and fsync'd before the rename so a power cut cannot leave an empty file.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
    """Decode unpadded base64url; raises :class:`ConfigurationError` naming ``where``."""
    value = str(text)
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ConfigurationError(f"{where} is not base64url") from None
