"""bootstrap.validation.reader_validation: what a bulk file's reader process validates with. It
holds no store and no key, validates exactly as the container's ingest service does, and builds
the PII scanner only when a row has something to scan (privacy.scanning.lazy.LazyScanner)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from bootstrap.container import build_container
from bootstrap.settings import Settings
from bootstrap.validation import build_scanner, reader_validation
from identity.model import IdentityEvent
from privacy.scanning import PiiScanner
from privacy.scanning.facts import load_facts_policy
from privacy.scanning.lazy import LazyScanner
from services.inputs import IdentifyInput, IdentifyRequest

ROOT = Path(__file__).resolve().parents[2]
RAW = "lazy.scanner.person@gmail.com"
AT = "2026-11-30T10:00:00Z"


def _row(email: str, **extra: Any) -> IdentifyInput:
    row = {"identifiers": [{"type": "email", "value": email}], "source": "crm", "timestamp": AT}
    return IdentifyInput.of(IdentifyRequest.model_validate({**row, **extra}))


def test_the_reader_validates_as_the_ingest_service_and_scans_only_when_a_row_needs_it(
    tmp_path: Path,
) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "data", pii_scan=True)
    validation = reader_validation(settings)
    scanner = validation._facts._scanner  # what the reader built
    assert isinstance(scanner, LazyScanner)
    plain = _row("Plain.Row@GMail.com")
    traits = _row("traits.row@gmail.com", traits={"favourite_category": f"mail {RAW}"})
    bad = _row("not an address")

    (event,) = validation.events([plain])
    assert isinstance(event, IdentityEvent)
    assert not scanner.built  # identifiers only: nothing to scan, nothing built

    mine = validation.events([plain, traits, bad])
    assert scanner.built
    container = build_container(settings)
    try:
        theirs = container.ingest.events([plain, traits, bad])
    finally:
        container.close()
    assert mine[:2] == theirs[:2]  # the trait with an address in it is redacted the same way
    assert str(mine[2]) == str(theirs[2])
    redacted = mine[1]
    assert isinstance(redacted, IdentityEvent)
    assert redacted.facts
    assert RAW.encode() not in b"".join(f.payload for f in redacted.facts)


def test_a_lazy_scanner_is_built_once_whatever_the_threads(tmp_path: Path) -> None:
    settings = Settings(env="test", data_dir=tmp_path / "data", pii_scan=True)
    config = load_facts_policy(settings.policy_dir / "categories.yaml").scanner
    built: list[PiiScanner] = []

    def build() -> PiiScanner:
        scanner = build_scanner(config)
        built.append(scanner)
        return scanner

    lazy = LazyScanner(build)
    results: list[int] = []
    threads = [
        threading.Thread(target=lambda: results.append(len(lazy.scan_many([f"write to {RAW}"]))))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(built) == 1
    assert results == [1] * 8
    assert lazy.scan(f"write to {RAW}")
    assert "EMAIL_ADDRESS" in lazy.entities


def test_the_reader_process_imports_no_store_vault_or_container() -> None:
    # What the reader process imports (services.bulk_reader, then the pickled builder's module):
    # run in a fresh interpreter, as the reader is. Why it matters: the reader's resident set
    # counts towards the bulk path's peak, and the container's imports cost ~20 MiB there.
    probe = (
        "import sys, pickle\n"
        "from functools import partial\n"
        "import services.bulk_reader\n"
        "from bootstrap.validation import reader_validation\n"
        "pickle.loads(pickle.dumps(partial(reader_validation, None)))\n"
        "heavy = ('bootstrap.container', 'identity.store.sqlite', 'privacy.keys.vault',\n"
        "         'privacy.auditing.log', 'neo4j', 'fastapi')\n"
        "print(','.join(m for m in heavy if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.strip() == ""
