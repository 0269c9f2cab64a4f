"""Neutral file plumbing every stateful adapter shares: the one SQLite opener (owner-only mode,
WAL, busy timeout, durability, secure delete), its transaction helper and schema migration.

It sits below ``identity/`` and ``privacy/`` and knows nothing of either (it imports only the
error root), so the graph store, the vault key store, the audit log and the service-state files
open their files the same way without the core borrowing another package's internals.
"""
