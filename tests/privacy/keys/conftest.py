"""Fixtures shared by the key and vault tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from privacy.keys.keyprovider import create_kek_file


@pytest.fixture
def kek_path(tmp_path: Path) -> Path:
    """A fresh operator KEK file (real AES key material) under the test's temp directory."""
    path = tmp_path / "secrets" / "kek.json"
    create_kek_file(path, origin="operator")
    return path
