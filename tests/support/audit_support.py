"""Audit-log helpers shared by tests."""

from __future__ import annotations

from collections.abc import Sequence

from privacy.audit_refs import VaultPersonRefKeys
from privacy.keys.vault import Vault


class CountingRefKeys:
    """The real per-person references (stored in the vault key file), counting how often the
    audit log asks for them: which persons, and whether one may be made."""

    def __init__(self, vault: Vault) -> None:
        self._keys = VaultPersonRefKeys(vault)
        self.calls: list[tuple[tuple[str, ...], bool]] = []

    def refs(self, person_ids: Sequence[str], *, create: bool = True) -> dict[str, str]:
        """The real references; the call is counted."""
        self.calls.append((tuple(person_ids), create))
        return self._keys.refs(person_ids, create=create)

    def owners(self, person_ids: Sequence[str]) -> list[str]:
        """The real owners (not counted)."""
        return self._keys.owners(person_ids)

    def refs_ahead(self, person_ids: Sequence[str]) -> None:
        """The real work ahead (not counted: :meth:`refs` is, when it is asked)."""
        self._keys.refs_ahead(person_ids)

    def close(self) -> None:
        """The real close."""
        self._keys.close()
