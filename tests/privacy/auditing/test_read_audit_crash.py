"""A profile read answered to its caller has its audit entry on disk, even if the process is
killed right after (SIGKILL): the group-committed audit append (announced reads, a writer that
lingers for them) changes when entries are committed, never whether an answer waits for it.

A child process reads profiles from 8 threads and prints one line per read *after* the read
returned; the parent kills it with SIGKILL once enough reads were answered, then counts the
``read.profile`` entries per person in the audit log: at least as many as answered reads (reads
in flight when the kill came may or may not have theirs), and the chain verifies.
"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.model import ConsentInput, ConsentSignal, FactInput, FactKind, IdentityEvent
from tests.conftest import POLICY_DIR
from tests.support.kill_child import lines_until_killed

ROOT = Path(__file__).resolve().parents[3]
PURPOSE = "ad_targeting"
PERSONS = 6
ANSWERED = 300  # reads answered before the kill

# The child: the service's own wiring (build_container) on the parent's data directory.
CHILD = """
import sys, threading
from pathlib import Path
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.policy_engine import Caller

data_dir, policy_dir, *persons = sys.argv[1:]
container = build_container(
    Settings(env="test", data_dir=Path(data_dir), policy_dir=Path(policy_dir), store_url=None)
)
caller = Caller("crash1", frozenset({"ad_targeting"}), "crash1")
printing = threading.Lock()

def reader(offset):
    i = offset
    while True:
        person = persons[i % len(persons)]
        container.reads.profile(caller, person, "ad_targeting")
        with printing:  # only after the read returned: the answer the caller got
            sys.stdout.write(f"ok {person}\\n")
            sys.stdout.flush()
        i += 1

threads = [threading.Thread(target=reader, args=(k,), daemon=True) for k in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""

# The same over HTTP: the real app (GET /v1/profiles/{id}), 8 concurrent requests on one event
# loop; a line is printed only once the response arrived.
CHILD_HTTP = """
import asyncio, sys
from pathlib import Path
import httpx
from api.app import create_app
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.api_keys import Scope

data_dir, policy_dir, *persons = sys.argv[1:]
container = build_container(
    Settings(
        env="test",
        data_dir=Path(data_dir),
        policy_dir=Path(policy_dir),
        store_url=None,
        rate_limit_per_minute=0,  # off: the readers send as fast as answers come
    )
)
_, token = container.api_keys.create(
    "crash", frozenset({Scope.READ}), purposes=frozenset({"ad_targeting"})
)
app = create_app(container=container)
headers = {"Authorization": f"Bearer {token}"}

async def main():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://crash") as client:
        async def reader(offset):
            i = offset
            while True:
                person = persons[i % len(persons)]
                response = await client.get(
                    f"/v1/profiles/{person}", params={"purpose": "ad_targeting"}, headers=headers
                )
                if response.status_code != 200:
                    sys.stdout.write(f"failed {response.status_code}\\n")
                else:
                    sys.stdout.write(f"ok {person}\\n")
                sys.stdout.flush()
                i += 1

        await asyncio.gather(*(reader(k) for k in range(8)))

asyncio.run(main())
"""


def _settings(data_dir: Path) -> Settings:
    return Settings(env="test", data_dir=data_dir, policy_dir=POLICY_DIR, store_url=None)


def _persons(data_dir: Path) -> list[str]:
    now = datetime.now(UTC)
    container = build_container(_settings(data_dir))
    try:
        policy = container.identity_policy
        persons: list[str] = []
        for i in range(PERSONS):
            event = IdentityEvent(
                (policy.normalize("customer_id", f"CRASH-{i:04d}", "GB"),),
                "test",
                now - timedelta(hours=1),
                (
                    FactInput(FactKind.ATTRIBUTE, "city", "location", now, b'"Lisbon"'),
                    FactInput(FactKind.EVENT, "purchase", "behavioural", now, b'{"properties":{}}'),
                ),
                (
                    ConsentInput(
                        PURPOSE, True, now - timedelta(days=1), ConsentSignal.DIRECT, "c", "0" * 64
                    ),
                ),
            )
            (outcome,) = container.engine.ingest([event])
            assert outcome.person_id is not None
            persons.append(outcome.person_id)
        return persons
    finally:
        container.close()


@pytest.mark.parametrize("child", [CHILD, CHILD_HTTP], ids=["threads", "http-event-loop"])
def test_every_answered_profile_read_has_its_audit_entry_after_sigkill(
    tmp_path: Path, child: str
) -> None:
    data_dir = tmp_path / "data"
    persons = _persons(data_dir)
    printed = lines_until_killed(
        [sys.executable, "-c", child, str(data_dir), str(POLICY_DIR), *persons],
        cwd=ROOT,
        enough=lambda lines: len(lines) >= ANSWERED,
    )
    assert not [line for line in printed if not line.startswith("ok ")]
    answered = Counter(line.split()[1] for line in printed)

    container = build_container(_settings(data_dir))
    try:
        log = container.audit
        assert log.verify().ok
        recorded: Counter[str] = Counter()
        after = 0
        while page := log.entries(after_seq=after, limit=1_000):
            for entry in page:
                if entry.action == "read.profile" and entry.decision == "allow":
                    assert entry.person_id is not None
                    recorded[entry.person_id] += 1
            after = page[-1].seq
        for person, count in answered.items():
            assert recorded[log.person_ref(person, create=False)] >= count, person
        assert sum(recorded.values()) >= sum(answered.values()) >= ANSWERED
    finally:
        container.close()
