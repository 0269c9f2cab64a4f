"""A stopping process leaves no data key behind that no value uses (issue 14 follow-up).

The vault makes data keys ahead (a pool of up to 4,096 per process) so that an ingest needs one
durable commit. The keys a process had not handed out when it stopped stayed in the key file
for good; the crash suite reported them as orphans. The container's close removes them now.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.model import FactInput, FactKind, IdentityEvent
from tests.conftest import POLICY_DIR

AT = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)


def _column(path: Path, sql: str) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {str(row[0]) for row in conn.execute(sql)}
    finally:
        conn.close()


def test_a_closed_container_leaves_only_data_keys_that_values_use(tmp_path: Path) -> None:
    settings = Settings(
        env="test", data_dir=tmp_path / "data", policy_dir=POLICY_DIR, default_region="GB"
    )
    container = build_container(settings)
    try:
        policy = container.identity_policy
        for n in range(3):
            ids = (
                policy.normalize("email", f"pool.{n}@shop.example", "GB"),
                policy.normalize("customer_id", f"POOL-{n:04d}", "GB"),
            )
            city = FactInput(FactKind.ATTRIBUTE, "city", "location", AT, b'"Lyon"')
            (outcome,) = container.engine.ingest([IdentityEvent(ids, "shop", AT, (city,))])
            assert outcome.person_id is not None
    finally:
        container.close()

    keys = _column(
        settings.vault_keys_path, "SELECT owner FROM data_keys WHERE owner LIKE 'n\\_%' ESCAPE '\\'"
    )
    nodes = _column(settings.data_dir / "graph.sqlite3", "SELECT node_id FROM identifiers")
    assert keys  # values were sealed
    assert keys <= nodes  # no key for an owner id that exists nowhere
