"""Per-consumer pseudonyms for feature exports.

A feature table (``GET /v1/features``) is keyed by a pseudonym, not by the person id:

``pseudonym = "ps_" + hex(HMAC-SHA256(K, len(consumer) || consumer || person_id))[:32]``

with ``K = HKDF-SHA256(primary hash key, info="idgraph-feature-pseudonym/1")``
(:meth:`identity.hashing.Keyring.derive_key`).

Why this shape:

* **Stable per consumer**: the same person gets the same pseudonym in every export to one
  consumer (the downstream system named on its API key), so a data-science team can join
  today's table with last month's and train on history.
* **Different across consumers**: the consumer name is inside the MAC, so two consumers'
  exports share no key column and cannot be joined with each other (nor with anything keyed by
  person id, such as audience member pages).
* **Keyed, not a plain hash**: person ids travel to other downstream tools; with an unkeyed
  hash anyone holding a person id could recompute the pseudonym. The key never leaves idgraph.
* **A derived key, not the hash key itself**: HKDF with its own ``info`` separates this use
  from identifier hashing (a feature pseudonym can never equal an identifier digest) and lets
  the key be rotated with the hash key without storing another secret.
* The consumer's length is encoded first, so ``("ab", "c…")`` and ``("a", "bc…")`` can never
  produce the same MAC input.

**Key rotation**: rotating the primary hash key (``idgraph keys rotate-hash-key``) derives a new
``K``, so every pseudonym changes for every consumer at once. That is deliberate (a rotation
also cuts the link between old and new exports, as a rotation should) and visible (the
response names the ``pseudonym_key_id``); consumers that need continuity re-export their
history after a rotation. 128 bits of the MAC are kept: collisions are out of reach at any
population size.
"""

from __future__ import annotations

import hashlib
import hmac

from identity.hashing import Keyring

PSEUDONYM_INFO = b"idgraph-feature-pseudonym/1"
_PREFIX = "ps_"
_HEX_CHARS = 32  # 128 bits


class FeaturePseudonymizer:
    """Computes per-consumer pseudonyms of person ids (see the module docstring)."""

    def __init__(self, keyring: Keyring) -> None:
        self.key_id, key = keyring.derive_key(PSEUDONYM_INFO)
        self._mac = hmac.new(key, digestmod=hashlib.sha256)

    def pseudonym(self, consumer: str, person_id: str) -> str:
        """The pseudonym of ``person_id`` for ``consumer``."""
        mac = self._mac.copy()
        encoded = consumer.encode()
        mac.update(len(encoded).to_bytes(4, "big") + encoded + person_id.encode())
        return _PREFIX + mac.hexdigest()[:_HEX_CHARS]
