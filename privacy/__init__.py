"""The privacy core: everything that decides what may be kept, read, shown or forgotten.

One package per capability (docs/ARCHITECTURE.md shows the map):

* ``keys/``: hash-key and KEK files (one format, ``keyfile.py``), key providers (local file,
  PKCS#11), the vault (envelope encryption, crypto-shredding) and its ``VaultKeyStore`` port.
* ``consent/``: consent signals (direct, IAB TCF/GPP, GPC), CMP webhook intake, derived state.
* ``access/``: the pure ``PolicyEngine``, purposes, purpose-bound reads (``ReadService``),
  audiences, paging cursors, pseudonyms, API keys and operator accounts.
* ``dsr/``: data-subject requests, erasure and its recovery, retention.
* ``scanning/``: the PII-scanning port and its presidio adapter, fact intake, log redaction.
* ``auditing/``: the hash-chained audit log and its signed heads.
* ``transport/``: Standard Webhooks signatures and replay guard, SSRF-safe outbound HTTP.

Never imports a web framework or an entrypoint; its SQLite adapters open their files through
``storage.sqlite``.
"""
