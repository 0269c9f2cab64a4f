"""No audit entry names a reference the key file lost, even if the process is killed (SIGKILL)
while audience pages make their members' first-ever references: each page's references are
stored, durably (one fsync'd key-file commit), before an entry naming them is written.

A child process (the service's own wiring) reads a buyers audience page by page, its members'
references made for the first time, and prints each page's members *after* the page returned;
the parent kills it with SIGKILL once a few pages were answered. Then: the chain verifies, every
reference any entry names (answered pages, or a page whose entries were written as the kill
came) is a member's stored reference, and every answered member is named by its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.audiences import AudienceRules, EventRule
from privacy.access.policy_engine import Caller
from privacy.audit_refs import VaultPersonRefKeys
from tests.conftest import POLICY_DIR
from tests.support.audit_support import AUDIENCE_PURPOSE, audience_buyers
from tests.support.kill_child import lines_until_killed

ROOT = Path(__file__).resolve().parents[3]
PAGE = 50
ANSWERED = 3  # pages answered before the kill (of 6 in the audience's first pass)

# The child: the service's own wiring (build_container) on the parent's data directory.
CHILD = """
import sys
from pathlib import Path
from bootstrap.container import build_container
from bootstrap.settings import Settings
from privacy.access.policy_engine import Caller

data_dir, policy_dir, audience_id, page = sys.argv[1:]
container = build_container(
    Settings(env="test", data_dir=Path(data_dir), policy_dir=Path(policy_dir), store_url=None)
)
caller = Caller("crash2", frozenset({"ad_targeting"}), "crash2")
while True:
    cursor = None
    while True:
        got = container.reads.audience_members(caller, audience_id, cursor, int(page))
        # Only after the page returned: the answer the caller got.
        sys.stdout.write(" ".join(["ok", *got.person_ids]) + "\\n")
        sys.stdout.flush()
        cursor = got.next_cursor
        if cursor is None:
            break
"""


def _settings(data_dir: Path) -> Settings:
    return Settings(env="test", data_dir=data_dir, policy_dir=POLICY_DIR, store_url=None)


def test_no_audit_entry_names_a_lost_reference_when_killed_during_first_ever_pages(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    container = build_container(_settings(data_dir))
    try:
        # 1 person in 4 passes: 300 members, 6 pages of 50, each making its members' references.
        persons = audience_buyers(container, 1_200, 4)
        caller = Caller("crash2", frozenset({AUDIENCE_PURPOSE}), "crash2")
        rules = AudienceRules(events=(EventRule("purchase", 30, 2),))
        audience = container.reads.define_audience(caller, "buyers", AUDIENCE_PURPOSE, rules)
    finally:
        container.close()

    printed = lines_until_killed(
        [
            sys.executable,
            "-c",
            CHILD,
            str(data_dir),
            str(POLICY_DIR),
            audience.audience_id,
            str(PAGE),
        ],
        cwd=ROOT,
        enough=lambda lines: len(lines) >= ANSWERED,
    )
    answered = [line.split()[1:] for line in printed]

    container = build_container(_settings(data_dir))
    try:
        log = container.audit
        assert log.verify().ok
        stored = VaultPersonRefKeys(container.vault).refs(persons, create=False)
        named: list[str] = []
        for entry in log.entries(limit=10_000):
            if entry.action == "read.audience" and entry.reason == "members":
                refs = entry.details["refs"]
                assert isinstance(refs, tuple | list)
                named += [str(ref) for ref in refs]
        assert named, "the answered pages' entries are there"
        # Every reference an entry names survived the kill: it is a member's stored one.
        assert set(named) <= set(stored.values())
        for members in answered:
            assert len(members) == PAGE
            assert {stored[p] for p in members} <= set(named)
    finally:
        container.close()
