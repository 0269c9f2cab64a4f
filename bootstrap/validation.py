"""What validates input before anything is stored: the policy files, the PII scanner and the
per-request limits of the settings, and the validation a bulk file's reader process builds.

Apart from :mod:`bootstrap.container` so that the reader process (``services.bulk_reader``),
which unpickles :func:`reader_validation` and so imports this module, does not import the
stores, the vault, the audit log and the rest of the container: 54 MiB resident after the
imports here against 73 MiB after the container's (stop 54), in a process whose peak counts
towards the bulk path's.
"""

from __future__ import annotations

import gc
from functools import partial

from bootstrap.logging import configure_logging
from bootstrap.settings import Settings
from identity.policy import IdentityPolicy, load_identity_policy
from privacy.access.purposes import PurposesPolicy, check_purposes, load_purposes_policy
from privacy.scanning import MODEL_ENTITIES, PiiScanner, ScannerConfig
from privacy.scanning.facts import FactIntake, FactsPolicy, load_facts_policy
from privacy.scanning.lazy import LazyScanner
from services.event_validation import EventValidation, IngestLimits

__all__ = [
    "build_scanner",
    "checked_scanner",
    "ingest_limits",
    "load_all_policies",
    "load_policies",
    "reader_validation",
]


def load_policies(settings: Settings) -> IdentityPolicy:
    """Load and validate the identity policy; an invalid file raises ``PolicyFileError``."""
    return load_identity_policy(settings.policy_dir / "identity.yaml")


def load_all_policies(settings: Settings) -> tuple[IdentityPolicy, FactsPolicy, PurposesPolicy]:
    """Load and validate every policy file; the first invalid one raises ``PolicyFileError``."""
    identity = load_policies(settings)
    facts = load_facts_policy(settings.policy_dir / "categories.yaml")
    purposes_file = settings.policy_dir / "purposes.yaml"
    purposes = load_purposes_policy(purposes_file)
    check_purposes(purposes, facts, identity, str(purposes_file))
    return identity, facts, purposes


_scanners: dict[str, PiiScanner] = {}


def build_scanner(config: ScannerConfig) -> PiiScanner:
    """The presidio scanner for ``config``, built once per process (building takes seconds).

    Once built, the objects alive in the process are moved out of the garbage collector's
    reach (``gc.freeze``): importing and building presidio, spaCy and the NER model leaves
    about 90,000 long-lived objects the collector tracks, and without this every full
    collection during ingest walks all of them again (``bench/ingest.py --attributes 5
    --ner``: about half a CPU second of a 4 s ingest). They live as long as the process
    anyway; frozen objects are still freed when their last reference goes, only reference
    cycles among them are never collected (at most the first spaCy pipeline's, once the
    scanner replaces it; see ``recycle_after``).
    """
    key = config.model_dump_json()
    if key not in _scanners:
        from privacy.scanning.presidio_scanner import PresidioPiiScanner

        _scanners[key] = PresidioPiiScanner(config)
        gc.collect()  # what is garbage now is collected, not frozen
        gc.freeze()
    return _scanners[key]


def checked_scanner(settings: Settings, facts_policy: FactsPolicy) -> PiiScanner:
    """:func:`build_scanner` for ``settings``, after checking that every PII entity the
    categories allow (``categories.yaml``) is one the scanner or the model can report: a
    misspelt entity name would otherwise never match and let that PII through."""
    scanner = build_scanner(facts_policy.scanner)
    facts_policy.check_entities(
        scanner.entities | set(MODEL_ENTITIES), str(settings.policy_dir / "categories.yaml")
    )
    return scanner


def ingest_limits(settings: Settings) -> IngestLimits:
    """The per-request limits and default phone region of ``settings``."""
    return IngestLimits(
        max_identifiers_per_event=settings.max_identifiers_per_event,
        max_batch_events=settings.max_batch_events,
        default_region=settings.default_region,
    )


def reader_validation(settings: Settings) -> EventValidation:
    """What a bulk file's reader process validates rows with (services.bulk_reader): the
    policies, PII scanner and limits of ``settings``, and nothing else (no store, no keys:
    the process never writes and holds no secret it does not need).

    The process is started fresh (spawned), so its logging is configured here like the
    ingesting process's (standard error, redacted): its stdout stays the caller's."""
    configure_logging(settings.log_level, settings.log_json)
    policy, facts_policy, _ = load_all_policies(settings)
    # Built by the first row that has traits or events to scan: most bulk files carry
    # identifiers only, and the scanner costs seconds and ~105 MiB (privacy.scanning.lazy).
    scanner = (
        LazyScanner(partial(checked_scanner, settings, facts_policy)) if settings.pii_scan else None
    )
    return EventValidation(policy, FactIntake(facts_policy, scanner), ingest_limits(settings))
