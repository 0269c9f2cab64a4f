"""Settings and containers of a test service on a temp data dir (real stores, the repo's policies).

Tests that need a container of their own (a second open of the same data dir, a setting the
shared ``settings`` fixture does not have, a child process) build it here, so the test service's
defaults are stated once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from tests.conftest import POLICY_DIR


def service_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings on ``data_dir`` (the repo's policies, region GB) with ``overrides``."""
    values: dict[str, Any] = {
        "env": "test",
        "data_dir": data_dir,
        "policy_dir": POLICY_DIR,
        "default_region": "GB",
    }
    values.update(overrides)
    return Settings(**values)


@contextmanager
def opened_container(data_dir: Path, **overrides: Any) -> Iterator[Container]:
    """The real container of :func:`service_settings`, closed when the block ends."""
    container = build_container(service_settings(data_dir, **overrides))
    try:
        yield container
    finally:
        container.close()
