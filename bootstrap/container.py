"""The one place that wires idgraph together: settings in, ready collaborators out.

Routers and CLI commands get the collaborators from here (the role of cosmic python's
``bootstrap.py``); nothing else reads settings or chooses adapters.
"""

from __future__ import annotations

import json
import threading
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from bootstrap.dsr import (
    DeferredNotifier,
    build_dsr_service,
    build_retention,
    load_record_retention,
)
from bootstrap.settings import PLACEHOLDER_SECRETS, Environment, Settings
from bootstrap.validation import (
    checked_scanner,
    ingest_limits,
    load_all_policies,
    reader_validation,
)
from identity.errors import ConfigurationError, StoreUnavailableError
from identity.hashing import Keyring
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.deferred import DeferredGraphStore
from identity.store.port import GraphStore
from privacy.access.api_keys import ApiKeys, ApiKeyStore
from privacy.access.audiences import SqliteAudienceStore
from privacy.access.cursors import CursorCodec
from privacy.access.operators import OperatorAccess, SqliteOperatorStore
from privacy.access.policy_engine import PolicyEngine
from privacy.access.pseudonyms import FeaturePseudonymizer
from privacy.access.purposes import PurposesPolicy
from privacy.access.reads import ReadService
from privacy.audit_refs import VaultPersonRefKeys
from privacy.auditing.heads import HEAD_KEY_INFO, AuditHeadPublisher
from privacy.auditing.log import PERSON_REF_INFO, AuditLog, SqliteAuditLog
from privacy.consent.mappers import build_mapper, check_source_config
from privacy.consent.signals import ConsentSignalTranslator
from privacy.consent.webhook_intake import ConsentWebhooks, WebhookSource, build_verifiers
from privacy.dsr.erasure import ErasureService
from privacy.dsr.retention import RetentionSweeper
from privacy.dsr.service import DsrService
from privacy.keys.hash_keys import create_key_file, keyring, parse_key_document, read_key_file
from privacy.keys.keyprovider import (
    KeyProvider,
    LocalFileKeyProvider,
    check_kek_origin,
    create_kek_file,
)
from privacy.keys.secretfile import read_secret_file
from privacy.keys.vault import Vault, VaultUnavailableError
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from privacy.scanning import PiiScanner
from privacy.scanning.facts import FactIntake, FactsPolicy
from privacy.scanning.lazy import LazyScanner
from privacy.transport.webhooks import SqliteReplayGuard, refuse_published_secret
from services.async_ingest import AsyncIngest, AsyncIngestLimits
from services.audience_changes import AudienceChangePublisher
from services.ingest import IngestService
from services.links import LinkService
from services.metrics import ApplierExits, ApplierStart, TallyFile
from storage.journal import SqliteIngestJournal, journal_path

if TYPE_CHECKING:
    from identity.store.copy import CopySource
    from privacy.keys.pkcs11_provider import Pkcs11KeyProvider

log = structlog.get_logger("idgraph.bootstrap")


@dataclass(frozen=True)
class Container:
    """Everything a request or a CLI command needs, built once."""

    settings: Settings
    store: GraphStore
    keyring: Keyring
    identity_policy: IdentityPolicy
    facts_policy: FactsPolicy
    engine: ResolutionEngine
    facts: FactIntake
    vault: Vault
    vault_keys: SqliteVaultKeyStore
    api_keys: ApiKeys
    purposes: PurposesPolicy
    policy: PolicyEngine
    audit: AuditLog
    consent_signals: ConsentSignalTranslator
    webhooks: ConsentWebhooks
    replay_guard: SqliteReplayGuard

    def close(self) -> None:
        """Release the store, the vault, the control database and the audit log."""
        self.store.close()
        # No graph write runs any more: the keys this process made ahead and never handed out
        # are removed, not left in the key file at every stop (Vault.discard_pool says why).
        try:
            self.vault.discard_pool()
        except VaultUnavailableError as exc:
            log.warning("vault_pool_not_discarded", error=type(exc).__name__)
        self.vault_keys.close()
        self.api_keys.close()
        self.audit.close()
        self.replay_guard.close()
        if "audience_store" in self.__dict__:  # built on first use (see below)
            self.audience_store.close()
        if "dsr" in self.__dict__:
            self.dsr.store.close()
        if "operators" in self.__dict__:
            self.operators.close()
        if "async_ingest" in self.__dict__ and self.async_ingest is not None:
            self.async_ingest.close()

    @cached_property
    def reads(self) -> ReadService:
        """Purpose-bound reads (profiles, audiences, features), with the audience store.

        Built on first use (``create_app`` touches it at start-up) from the collaborators above,
        so the CLI commands that never read pay nothing for it.
        """
        return ReadService(
            self.store,
            self.vault,
            self.policy,
            self.facts,
            self.audit,
            self.audience_store,
            self.pseudonyms,
            CursorCodec(self.keyring),
        )

    @cached_property
    def audience_store(self) -> SqliteAudienceStore:
        """Audience definitions and their membership snapshots (the control database)."""
        return SqliteAudienceStore(self.settings.control_db_path, self.vault)

    @cached_property
    def pseudonyms(self) -> FeaturePseudonymizer:
        """Per-consumer pseudonyms (feature tables, audience change events)."""
        return FeaturePseudonymizer(self.keyring)

    @cached_property
    def audience_changes(self) -> AudienceChangePublisher:
        """Audience-membership change events into the outbox (``idgraph consume`` runs it)."""
        return AudienceChangePublisher(self.reads, self.audience_store, self.store, self.pseudonyms)

    @cached_property
    def audit_heads(self) -> AuditHeadPublisher:
        """Publishes signed audit heads (the background job calls it on a schedule)."""
        return AuditHeadPublisher(
            self.audit,
            self.settings.resolved_audit_heads_file,
            self.vault.reference_key(HEAD_KEY_INFO),
        )

    @cached_property
    def ingest(self) -> IngestService:
        """The ingest use case (identify, batches, consent, webhooks, bulk files)."""
        return IngestService(
            self.engine,
            self.facts,
            self.consent_signals,
            self.webhooks,
            self.audit,
            ingest_limits(self.settings),
            # A large bulk file is read and validated in a process of its own, which builds
            # the same validation from these settings (services.bulk_reader).
            validation_builder=partial(reader_validation, self.settings),
        )

    @cached_property
    def async_ingest(self) -> AsyncIngest | None:
        """Asynchronous batch ingest (``Prefer: respond-async``): its journal is a SQLite file
        beside the graph file (``storage.journal.journal_path``); the graph file keeps the
        applied markers. ``None`` on Neo4j (the preference is then not applied: batches are
        written synchronously)."""
        path = sqlite_store_path(self.settings)
        if path is None:
            return None
        settings = self.settings
        return AsyncIngest(
            self.ingest,
            SqliteIngestJournal(journal_path(path), path),
            self.vault,
            AsyncIngestLimits(
                max_queued_events=settings.ingest_journal_max_events,
                apply_max_events=settings.ingest_apply_max_events,
                keep_results_s=int(settings.ingest_job_results_hours * 3600),
                apply_linger_s=settings.ingest_apply_linger_ms / 1000,
                apply_idle_s=settings.ingest_apply_idle_ms / 1000,
                keep_accepted=settings.ingest_applier != "process",
            ),
        )

    @cached_property
    def links(self) -> LinkService:
        """Resolve, explain and unlink from raw identifiers."""
        return LinkService(self.engine, self.settings.default_region, self.audit)

    @cached_property
    def erasure(self) -> ErasureService:
        """Erasure on the graph, the vault and the audit log."""
        service = ErasureService(
            self.store,
            self.vault,
            self.keyring,
            self.audit,
            outbound_events=self.settings.outbound_events,
        )
        # Every erasure tells the recipients through the DSR service's outbox, also when the
        # DSR service is not built yet (start-up recovery, retention): built on first notice.
        service.attach_notifier(DeferredNotifier(lambda: self.dsr))
        if sqlite_store_path(self.settings) is not None:
            # The ingest journal's WAL is truncated with the graph's (privacy.dsr.erasure, step
            # 3); the journal is opened on the first erasure if nothing opened it before.
            service.attach_checkpoint(self._checkpoint_journal)
        return service

    def _checkpoint_journal(self) -> None:
        jobs = self.async_ingest
        if jobs is not None:
            jobs.checkpoint_journal()

    @cached_property
    def dsr(self) -> DsrService:
        """Data-subject requests (``dsr.sqlite3``), built on first use (:mod:`bootstrap.dsr`)."""
        return build_dsr_service(
            self.settings,
            self.store,
            self.engine,
            self.vault,
            self.keyring,
            self.identity_policy,
            self.purposes,
            self.audit,
            self.erasure,
            self.api_keys,
        )

    @cached_property
    def operators(self) -> OperatorAccess:
        """Console operator accounts and sessions (``operators.sqlite3``), built on first use."""
        return OperatorAccess(
            SqliteOperatorStore(self.settings.operators_db_path), self.audit, self.purposes.ids
        )

    @cached_property
    def retention(self) -> RetentionSweeper:
        """The retention sweeper, built on first use (:mod:`bootstrap.dsr`)."""
        return build_retention(
            self.settings,
            self.store,
            self.audit,
            self.purposes,
            self.facts_policy,
            self.erasure,
            self.dsr.destroy_person_exports,
            dsr_records=self.dsr.store,
        )


def load_keyring(settings: Settings) -> Keyring:
    """The hash keyring from ``IDGRAPH_HASH_KEYS`` or the key file.

    In development (and tests) a missing key file is created with a fresh random key marked
    ``generated``. In production a missing key is an error and a ``generated`` key is refused:
    production keys are made on purpose and kept in a secret store (invariant 5).
    """
    if settings.hash_keys is not None:
        keys = parse_key_document(settings.hash_keys.get_secret_value(), "IDGRAPH_HASH_KEYS")
    else:
        path = settings.resolved_hash_key_file
        if not path.exists():
            if settings.env is Environment.PRODUCTION:
                raise ConfigurationError(
                    f"no hash key: {path} does not exist and IDGRAPH_HASH_KEYS is not set. "
                    "Create one with `idgraph keys create-hash-key-file` and keep it in your "
                    "secret store."
                )
            keys = create_key_file(path, origin="generated")
            log.warning(
                "hash_key_generated",
                path=str(path),
                key_id=keys.primary,
                note="development key; production refuses generated keys",
            )
        else:
            keys = read_key_file(path)
    if settings.env is Environment.PRODUCTION and keys.primary_origin == "generated":
        raise ConfigurationError(
            "the primary hash key was generated for local development; production refuses it. "
            "Create an operator key with `idgraph keys rotate-hash-key` or set IDGRAPH_HASH_KEYS."
        )
    return keyring(keys)


def open_vault(settings: Settings) -> tuple[Vault, SqliteVaultKeyStore]:
    """The vault: wrapped data keys in their own SQLite file, KEKs from the local key file.

    Development creates a ``generated`` KEK file when missing; production refuses a missing or
    generated KEK (made on purpose with ``idgraph keys create-kek-file``). With
    ``IDGRAPH_KEY_PROVIDER=pkcs11`` the KEKs are in an HSM instead (:func:`open_pkcs11_provider`).
    """
    keys = SqliteVaultKeyStore(settings.vault_keys_path)
    try:
        vault = Vault(keys, open_key_provider(settings))
        vault.check_keks()
    except BaseException:
        keys.close()
        raise
    return vault, keys


def open_pkcs11_provider(settings: Settings) -> Pkcs11KeyProvider:
    """The PKCS#11 (HSM) key provider named by the ``IDGRAPH_PKCS11_*`` settings."""
    if settings.pkcs11_library is None or not settings.pkcs11_token_label:
        raise ConfigurationError(
            "IDGRAPH_KEY_PROVIDER=pkcs11 needs IDGRAPH_PKCS11_LIBRARY and "
            "IDGRAPH_PKCS11_TOKEN_LABEL (and IDGRAPH_PKCS11_PIN)"
        )
    from privacy.keys.pkcs11_provider import Pkcs11KeyProvider

    pin = settings.pkcs11_pin.get_secret_value() if settings.pkcs11_pin else ""
    return Pkcs11KeyProvider(
        settings.pkcs11_library,
        settings.pkcs11_token_label,
        pin,
        settings.pkcs11_kek_label_prefix,
    )


def open_key_provider(settings: Settings) -> KeyProvider:
    """The KEK provider: the local KEK file (default) or a PKCS#11 token."""
    if settings.key_provider == "pkcs11":
        return open_pkcs11_provider(settings)
    path = settings.resolved_kek_file
    production = settings.env is Environment.PRODUCTION
    legacy = settings.data_dir / "kek.json"  # the default before the KEK moved out
    if settings.kek_file is None and not path.exists() and legacy.exists():
        if production:
            raise ConfigurationError(
                f"the KEK file is still at its old default {legacy}, next to the vault key file. "
                f"Move it out of the data dir (to {path}, or set IDGRAPH_KEK_FILE); see "
                "docs/keys.md"
            )
        log.warning("kek_in_data_dir", path=str(legacy), move_to=str(path))
        path = legacy
    if not path.exists():
        if production:
            raise ConfigurationError(
                f"no key-encryption key: {path} does not exist. Create one with "
                "`idgraph keys create-kek-file` and keep it in your secret store."
            )
        create_kek_file(path, origin="generated")
        log.warning(
            "kek_generated",
            path=str(path),
            note="development key; production refuses generated keys",
        )
    provider = LocalFileKeyProvider(path)
    check_kek_origin(provider.primary_origin, production=production)
    if production:
        check_kek_apart_from_vault(
            path, settings.vault_keys_path, allow_same_volume=settings.kek_shares_volume_with_vault
        )
    return provider


def check_kek_apart_from_vault(kek: Path, vault_keys: Path, *, allow_same_volume: bool) -> None:
    """Refuse a KEK file kept with the wrapped data keys (production).

    The two together decrypt every value, shredded persons included, so a backup holding both
    defeats crypto-shredding for as long as it is kept. Same directory: always refused. Same
    filesystem (``st_dev``: one volume, one snapshot): refused unless the operator sets
    ``IDGRAPH_KEK_SHARES_VOLUME_WITH_VAULT=true`` to say backups never capture both.
    """
    kek_dir = kek.absolute().parent.resolve()
    vault_dir = vault_keys.absolute().parent
    vault_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    vault_dir = vault_dir.resolve()
    if kek_dir == vault_dir:
        raise ConfigurationError(
            f"the KEK file {kek} is in the same directory as the vault key file {vault_keys}; "
            "production refuses this (one backup would decrypt everything). Set "
            "IDGRAPH_KEK_FILE to a path on another volume or a mounted secret (docs/keys.md)."
        )
    if not allow_same_volume and kek_dir.stat().st_dev == vault_dir.stat().st_dev:
        raise ConfigurationError(
            f"the KEK file {kek} is on the same filesystem as the vault key file {vault_keys}; "
            "production refuses this (a volume backup or snapshot would hold both). Mount the "
            "KEK from another volume or a secret, or set IDGRAPH_KEK_SHARES_VOLUME_WITH_VAULT="
            "true if your backups never capture both (docs/keys.md)."
        )


def sqlite_store_path(settings: Settings) -> Path | None:
    """The graph file of an ``sqlite:`` store URL, or ``None`` for another store."""
    url = settings.resolved_store_url
    if not url.startswith("sqlite:"):
        return None
    raw = url.removeprefix("sqlite:")
    # sqlite:///abs/path -> /abs/path ; sqlite:rel/path -> rel/path
    return Path("/" + raw.removeprefix("///")) if raw.startswith("///") else Path(raw)


def applier_start(settings: Settings) -> ApplierStart | None:
    """What a server's ``/readyz`` waits for besides the store: the applier child
    ``idgraph serve`` started beside it (``IDGRAPH_INGEST_APPLIER=process`` with the tally file
    and the run id serve sets), until that child has looked at the journal.

    Here, not in the app: which applier a server has, and whether it can tell that applier's
    start apart from an earlier one, follows from the settings alone, as the rest of the wiring
    does. ``None`` (nothing to wait for) when the app applies in a thread, on a store without a
    journal (Neo4j), or beside an applier started some other way (no run id: the app cannot
    tell which start of it the tally file speaks of)."""
    tally_file, run_id = settings.ingest_applier_tally_file, settings.ingest_applier_run_id
    if (
        settings.ingest_applier != "process"
        or sqlite_store_path(settings) is None  # no journal (Container.async_ingest is None)
        or tally_file is None
        or run_id is None
    ):
        return None
    return ApplierStart(TallyFile(tally_file), run_id, APPLIER_EXITS)


def open_store(settings: Settings) -> GraphStore:
    """Open the graph store named by ``IDGRAPH_STORE_URL``."""
    url = settings.resolved_store_url
    path = sqlite_store_path(settings)
    if path is not None:
        from identity.store.sqlite import SqliteGraphStore

        return SqliteGraphStore(path, synchronous=settings.sqlite_synchronous)
    if url.split("://", 1)[0] in NEO4J_SCHEMES:
        from identity.store.neo4j import Neo4jGraphStore

        return Neo4jGraphStore(
            url,
            settings.neo4j_user,
            neo4j_password(settings),
            database=settings.neo4j_database,
            max_pool_size=settings.neo4j_max_pool_size,
            max_connection_lifetime_s=settings.neo4j_max_connection_lifetime_seconds,
            acquisition_timeout_s=settings.neo4j_acquisition_timeout_seconds,
            fetch_size=settings.neo4j_fetch_size,
            startup_timeout_s=settings.neo4j_startup_timeout_seconds,
        )
    raise ConfigurationError(
        "IDGRAPH_STORE_URL must start with sqlite: or neo4j:// (or bolt://, neo4j+s://)"
    )


def open_copy_source(settings: Settings) -> Path | CopySource:
    """The source of ``idgraph store copy --from URL`` (``settings.store_url``): the file of an
    ``sqlite:`` URL (opened read-only by the copy itself), or a Neo4j database opened with the
    Neo4j settings (user, password, database) and read through its adapter. The caller closes a
    :class:`CopySource`."""
    url = settings.resolved_store_url
    if url.startswith("sqlite:"):
        raw = url.removeprefix("sqlite:")
        return Path("/" + raw.removeprefix("///")) if raw.startswith("///") else Path(raw)
    if url.split("://", 1)[0] in NEO4J_SCHEMES:
        from identity.store.neo4j import Neo4jCopySource, Neo4jGraphStore

        store = open_store(settings)
        assert isinstance(store, Neo4jGraphStore)  # noqa: S101 - open_store's choice for the URL
        return Neo4jCopySource(store)
    raise ConfigurationError(
        "the copy source must be an SQLite (sqlite:PATH) or Neo4j (neo4j://, bolt://) store URL"
    )


NEO4J_SCHEMES = frozenset({"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"})
# Set when a store connected in the background gave up: ``idgraph serve`` watches it, shuts the
# HTTP server down gracefully and exits 3, so the orchestrator restarts the process.
STORE_GAVE_UP = threading.Event()
# The exits of the applier child ``idgraph serve`` supervises in this process (recorded by
# cli.applier.ApplierChild): /readyz says a child that keeps exiting before it starts is being
# started again (applier_start), instead of "not started yet" for ever.
APPLIER_EXITS = ApplierExits()


def _stop_serving(reason: str) -> None:
    log.error("store_unavailable_giving_up", reason=reason)
    STORE_GAVE_UP.set()


def open_store_in_background(settings: Settings) -> GraphStore:
    """The store for a server: Neo4j is connected by a background thread with bounded backoff
    (``IDGRAPH_NEO4J_STARTUP_TIMEOUT_SECONDS``), so the HTTP server answers meanwhile (``/readyz``
    503 with the reason, ``/livez`` 200); SQLite opens at once. Settings problems (URI scheme,
    password file) still fail here, before anything serves. The caller starts the store
    (:meth:`DeferredGraphStore.start`) once its start-up hook is set."""
    url = settings.resolved_store_url
    if url.split("://", 1)[0] not in NEO4J_SCHEMES:
        return open_store(settings)
    neo4j_password(settings)  # a missing or readable-by-others password file: fail now
    from identity.store.neo4j import is_refused_connection

    one_attempt = settings.model_copy(update={"neo4j_startup_timeout_seconds": 0.0})
    return DeferredGraphStore(
        lambda: open_store(one_attempt),
        timeout_s=settings.neo4j_startup_timeout_seconds,
        on_give_up=_stop_serving,
        is_refusal=is_refused_connection,
        name="Neo4j",
    )


def neo4j_password(settings: Settings) -> str:
    """The Neo4j password: ``IDGRAPH_NEO4J_PASSWORD``, or ``IDGRAPH_NEO4J_PASSWORD_FILE`` (0600)."""
    if settings.neo4j_password is not None and settings.neo4j_password_file is not None:
        raise ConfigurationError(
            "set IDGRAPH_NEO4J_PASSWORD or IDGRAPH_NEO4J_PASSWORD_FILE, not both"
        )
    if settings.neo4j_password_file is not None:
        password = read_secret_file(settings.neo4j_password_file, "Neo4j password file").strip()
        if settings.env is Environment.PRODUCTION and password.lower() in PLACEHOLDER_SECRETS:
            raise ConfigurationError("the Neo4j password file holds a placeholder password")
        return password
    return settings.neo4j_password.get_secret_value() if settings.neo4j_password else ""


def load_webhook_secrets(settings: Settings) -> dict[str, list[str]]:
    """The ``whsec_`` secrets per webhook source, from ``IDGRAPH_WEBHOOK_SECRETS`` or the file.

    JSON: ``{"source": ["whsec_...", ...]}`` (a single string is accepted for one secret).
    Messages name the source, never a secret.
    """
    if settings.webhook_secrets is not None and settings.webhook_secrets_file is not None:
        raise ConfigurationError(
            "set IDGRAPH_WEBHOOK_SECRETS or IDGRAPH_WEBHOOK_SECRETS_FILE, not both"
        )
    if settings.webhook_secrets is not None:
        text, where = settings.webhook_secrets.get_secret_value(), "IDGRAPH_WEBHOOK_SECRETS"
    elif settings.webhook_secrets_file is not None:
        where = f"webhook secrets file {settings.webhook_secrets_file}"
        text = read_secret_file(settings.webhook_secrets_file, "webhook secrets file")
    else:
        return {}
    try:
        document = json.loads(text)
    except ValueError:
        raise ConfigurationError(f"{where} is not valid JSON") from None
    if not isinstance(document, dict):
        raise ConfigurationError(f"{where} must be a JSON object {{source: [secrets]}}")
    secrets: dict[str, list[str]] = {}
    for source, value in document.items():
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigurationError(f"{where}: {source!r} must be a list of whsec_ secrets")
        secrets[source] = values
    return secrets


def build_webhook_sources(
    settings: Settings, purposes: PurposesPolicy, identity: IdentityPolicy
) -> dict[str, WebhookSource]:
    """Secrets and payload mapper per configured consent-webhook source (secrets validated).

    Secrets for a source that is not configured are refused (a typo would otherwise leave the
    intended source without a secret). A configured source without a secret is refused in
    production; elsewhere it is kept and refuses every delivery (401), with a warning.
    """
    secrets = load_webhook_secrets(settings)
    stray = sorted(set(secrets) - set(settings.webhook_sources))
    if stray:
        raise ConfigurationError(
            "webhook secrets for sources IDGRAPH_WEBHOOK_SOURCES does not configure: "
            + ", ".join(repr(name) for name in stray)
        )
    sources: dict[str, WebhookSource] = {}
    for name, config in settings.webhook_sources.items():
        check_source_config(name, config, purposes, identity)
        keys = secrets.get(name, [])
        if not keys:
            if settings.env is Environment.PRODUCTION:
                raise ConfigurationError(
                    f"webhook source {name!r} has no secret; set it in IDGRAPH_WEBHOOK_SECRETS "
                    "or IDGRAPH_WEBHOOK_SECRETS_FILE"
                )
            log.warning("webhook_source_without_secret", source=name, note="deliveries refused")
        if settings.env is Environment.PRODUCTION:
            for key in keys:
                refuse_published_secret(key, f"webhook source {name!r}")
        sources[name] = WebhookSource(name, tuple(keys), build_mapper(config))
    build_verifiers(sources.values())  # a bad secret stops start-up, not every delivery
    return sources


def build_container(
    settings: Settings, *, store_in_background: bool = False, scanner_on_demand: bool = False
) -> Container:
    """Wire every collaborator from ``settings``; fails fast on bad policy or keys.

    ``store_in_background`` (the HTTP server): a Neo4j store is connected by a background
    thread (:func:`open_store_in_background`) and interrupted erasures are finished on that
    thread once connected, before the store serves anything else.

    ``scanner_on_demand`` (one-shot commands): the PII scanner is built by the first scan
    rather than here (:class:`~privacy.scanning.lazy.LazyScanner`), and the categories' PII
    entity names are checked then. Why: it costs seconds and ~105 MiB, and most commands
    never scan; ``idgraph ingest`` of a large file scans in its reader process, so the
    ingesting process would hold a second scanner for nothing (stop 54: 1M identifiers with 5
    traits each peaked at 668.8 MiB across the two processes, ~105 MiB of it this one's
    unused scanner). Servers (the API, the applier, the stream worker) build it here: their
    first request must not wait for it, and a bad entity name must stop them at start-up."""
    policy, facts_policy, purposes = load_all_policies(settings)
    load_record_retention(settings)  # validated at start-up like every policy file
    scanner: PiiScanner | None = None
    if settings.pii_scan:
        build = partial(checked_scanner, settings, facts_policy)
        scanner = LazyScanner(build) if scanner_on_demand else build()
    keyring = load_keyring(settings)
    webhook_sources = build_webhook_sources(settings, purposes, policy)
    # Each resource opened is closed again if a later step fails; on success the stack lets go
    # and the container owns them (Container.close).
    with ExitStack() as stack:
        vault, vault_keys = open_vault(settings)
        stack.callback(vault_keys.close)
        store = open_store_in_background(settings) if store_in_background else open_store(settings)
        stack.callback(store.close)
        api_keys = ApiKeyStore(
            settings.control_db_path, verified_ttl_s=settings.api_key_cache_seconds
        )
        stack.callback(api_keys.close)
        audit = SqliteAuditLog(
            settings.audit_db_path,
            person_ref_key=vault.reference_key(PERSON_REF_INFO),
            person_keys=VaultPersonRefKeys(vault),
        )
        stack.callback(audit.close)
        replay_guard = SqliteReplayGuard(
            settings.webhook_replay_path, retention_s=settings.webhook_replay_retention_seconds
        )
        stack.callback(replay_guard.close)
        # Objections to any declared purpose (and restrictions) follow the person across splits.
        engine = ResolutionEngine(
            store,
            keyring,
            policy,
            sealer=vault,
            owner_reservations=vault,
            person_decision_purposes=purposes.ids,
            keep_restricted_apart=settings.restricted_ingest == "separate",
            outbound_events=settings.outbound_events,
            message_window=timedelta(days=settings.message_id_window_days),
        )
        container = Container(
            settings=settings,
            store=store,
            keyring=keyring,
            identity_policy=policy,
            facts_policy=facts_policy,
            engine=engine,
            facts=FactIntake(facts_policy, scanner),
            vault=vault,
            vault_keys=vault_keys,
            api_keys=api_keys,
            purposes=purposes,
            policy=PolicyEngine(purposes),
            audit=audit,
            consent_signals=ConsentSignalTranslator(purposes),
            webhooks=ConsentWebhooks(webhook_sources, replay_guard),
            replay_guard=replay_guard,
        )
        # Finish erasures a crash interrupted between their graph commit and their key shred
        # (privacy/dsr/erasure.py): before anything serves, every committed erasure is complete.
        # Then remove the keys made ahead by processes that died with them (Vault.sweep_unused).
        if isinstance(store, DeferredGraphStore):
            store.on_connected = lambda: _after_connect(container)
            store.start()
        else:
            _after_connect(container)
        stack.pop_all()
    return container


def _after_connect(container: Container) -> None:
    container.erasure.recover()
    sweep_pool_keys(container.vault, container.store)


def sweep_pool_keys(vault: Vault, store: GraphStore) -> int:
    """Delete the data keys that gone processes made ahead and no value uses (at start-up:
    :meth:`privacy.keys.vault.Vault.sweep_unused`); how many. A failure is logged, not raised:
    the keys are harmless, and the next start-up sweeps them."""
    try:
        swept = vault.sweep_unused(lambda owners: store.read(lambda tx: tx.existing_nodes(owners)))
    except StoreUnavailableError as exc:  # the vault's and the graph's outages alike
        log.warning("vault_pool_sweep_failed", error=type(exc).__name__)
        return 0
    if swept:
        log.info("vault_pool_keys_swept", keys=swept)
    return swept
