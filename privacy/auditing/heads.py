"""Signed audit heads, published on a schedule, so truncation needs no hand-kept anchor.

The audit log is a hash chain: an edit or a deletion in the middle breaks it, but cutting off the
tail (or rewriting the whole chain consistently) leaves a valid, shorter chain. What catches that
is a head (``seq``, ``digest``) recorded *outside* the database earlier (see
:mod:`privacy.auditing.log`). :class:`AuditHeadPublisher` records one every few minutes
(``IDGRAPH_AUDIT_HEAD_INTERVAL_SECONDS``), to two sinks:

* **the service log** (event ``audit_head``): ship logs to a store the service cannot rewrite
  (a log platform, a WORM bucket) and every head is out of reach of whoever edits the host;
* **an append-only JSON-lines file** (``IDGRAPH_AUDIT_HEADS_FILE``, opened ``O_APPEND``, fsync'd),
  for ``idgraph audit verify --heads FILE``. Keep it on another volume, or ``chattr +a`` it.

Each head is signed: ``HMAC-SHA256(K_head, "idgraph-audit-head/1" NUL seq NUL digest NUL at)``
with ``K_head`` the vault's reference subkey for ``idgraph-audit-head/1``
(:meth:`privacy.keys.vault.Vault.reference_key`), so someone who can write the file but does not
hold the vault key file and the KEK cannot add a head that makes a rewritten chain look anchored.
Deleting lines is still possible on the file; the log copy is what survives that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from identity.errors import ConfigurationError
from privacy.auditing.log import AuditHead, AuditLog

HEAD_KEY_INFO = b"idgraph-audit-head/1"
_SIGN_PREFIX = b"idgraph-audit-head/1\x00"

log = structlog.get_logger("idgraph.audit")


@dataclass(frozen=True, slots=True)
class SignedHead:
    """A head as published: when it was taken and its signature (hex)."""

    head: AuditHead
    at: str
    signature: str


def _sign(key: bytes, head: AuditHead, at: str) -> str:
    message = _SIGN_PREFIX + f"{head.seq}\x00{head.digest}\x00{at}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class AuditHeadPublisher:
    """Takes the audit head, signs it and appends it to the heads file and the log."""

    def __init__(
        self,
        audit: AuditLog,
        sink: Path,
        key: bytes,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._audit = audit
        self._sink = sink
        self._key = key
        self._clock = clock

    def publish(self) -> SignedHead:
        """Publish the current head (also when unchanged: a gap in heads is itself a signal)."""
        head = self._audit.head()
        at = self._clock().strftime("%Y-%m-%dT%H:%M:%SZ")
        signed = SignedHead(head, at, _sign(self._key, head, at))
        line = json.dumps(
            {"seq": head.seq, "digest": head.digest, "at": at, "sig": signed.signature}
        )
        self._sink.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # O_APPEND: every write lands at the end, even from several processes; never truncates.
        fd = os.open(self._sink, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        log.info("audit_head", seq=head.seq, digest=head.digest, at=at, sig=signed.signature)
        return signed


def read_signed_heads(sink: Path, key: bytes) -> list[SignedHead]:
    """Every head in the file, oldest first; raises :class:`ConfigurationError` on a line that
    is malformed or whose signature does not verify (a forged or edited head)."""
    heads: list[SignedHead] = []
    try:
        lines = sink.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigurationError(f"audit heads file {sink}: {exc.strerror}") from None
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            item = json.loads(text)
            head = AuditHead(int(item["seq"]), str(item["digest"]))
            at, signature = str(item["at"]), str(item["sig"])
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"audit heads file {sink}:{number} is malformed") from None
        if not hmac.compare_digest(signature, _sign(key, head, at)):
            raise ConfigurationError(
                f"audit heads file {sink}:{number}: signature does not verify (forged or edited)"
            )
        heads.append(SignedHead(head, at, signature))
    return heads
