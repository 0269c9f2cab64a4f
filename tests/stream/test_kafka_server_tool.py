"""The broker launcher's own decisions, checked without starting a broker."""

from __future__ import annotations

import base64
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from tests.stream.conftest import KAFKA_SERVER


def _launcher() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kafka_server_tool", KAFKA_SERVER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_cluster_id_never_starts_with_a_dash_the_storage_tool_would_read_as_an_option() -> None:
    # 0xf8 encodes to "-" first in base64url: the first draw is refused, the second kept.
    draws: Iterator[bytes] = iter([b"\xf8" + bytes(15), b"\x01" * 16])
    cluster_id = _launcher().new_cluster_id(lambda n: next(draws))
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" * 16).decode().rstrip("=")
    assert base64.urlsafe_b64encode(b"\xf8" + bytes(15)).decode().startswith("-")


def test_a_kept_cluster_id_is_reused_and_a_dashed_one_replaced(tmp_path: Path) -> None:
    launcher = _launcher()
    made = launcher._cluster_id(tmp_path)
    assert launcher._cluster_id(tmp_path) == made
    assert len(made) == 22
    (tmp_path / "cluster.id").write_text("-dashed\n", encoding="ascii")
    replaced = launcher._cluster_id(tmp_path)
    assert not replaced.startswith("-")
    assert (tmp_path / "cluster.id").read_text(encoding="ascii").strip() == replaced
