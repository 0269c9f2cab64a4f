"""The privacy core: everything that decides what may be kept, read, shown or forgotten.

Keys and the vault (keyed hashing keys, KEK providers, envelope encryption, crypto-shredding),
consent (signals, TCF/GPP/GPC, webhooks, the derived state), purpose-bound reads (the purposes
policy, the pure :class:`~privacy.policy_engine.PolicyEngine`, :class:`~privacy.reads.ReadService`),
data-subject rights (DSR service, erasure, retention), PII scanning and redaction, and the
hash-chained audit log. Never imports a web framework or an entrypoint; see docs/ARCHITECTURE.md.
"""
