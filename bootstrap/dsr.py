"""Wiring of the DSR service and the retention sweeper from settings and the container.

Called by :class:`bootstrap.container.Container` (its ``dsr`` and ``retention`` properties, built
on first use) so that commands which never touch DSRs do not open the DSR file. Takes the
collaborators it uses, never the container (no import cycle between the two modules).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from bootstrap.settings import Environment, Settings
from identity.errors import ConfigurationError
from identity.hashing import Keyring
from identity.policy import IdentityPolicy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.api_keys import ApiKeys
from privacy.access.purposes import PurposesPolicy
from privacy.auditing.log import AuditLog, api_key_actor
from privacy.dsr.deadlines import parse_deadlines
from privacy.dsr.delivery import parse_destinations
from privacy.dsr.erasure import ErasureService, HeldNotices
from privacy.dsr.retention import (
    DsrRecords,
    PersonEraser,
    RetentionPolicy,
    RetentionSweeper,
    load_retention_policy,
    rules_from_policies,
)
from privacy.dsr.service import DsrConfig, DsrService, Eraser, result_counts
from privacy.dsr.store import SqliteDsrStore
from privacy.keys.vault import Vault
from privacy.scanning.facts import FactsPolicy
from privacy.transport.outbound import OutboundPolicy, allowed_hosts
from privacy.transport.webhooks import parse_secret, refuse_published_secret


def dsr_config(settings: Settings) -> DsrConfig:
    """The DSR configuration; an invalid setting raises :class:`ConfigurationError`."""
    try:
        deadlines = parse_deadlines(settings.dsr_deadlines)
    except ValueError as exc:
        raise ConfigurationError(f"IDGRAPH_DSR_DEADLINES: {exc}") from None
    if settings.dsr_default_regulation not in deadlines:
        raise ConfigurationError(
            "IDGRAPH_DSR_DEFAULT_REGULATION must be one of: " + ", ".join(sorted(deadlines))
        )
    allow_http = settings.env is not Environment.PRODUCTION
    raw = settings.dsr_destinations.get_secret_value() if settings.dsr_destinations else None
    callback_secrets: tuple[str, ...] = ()
    if settings.dsr_callback_secret is not None:
        secret = settings.dsr_callback_secret.get_secret_value()
        try:
            parse_secret(secret)
        except (ValueError, ConfigurationError) as exc:
            raise ConfigurationError(f"IDGRAPH_DSR_CALLBACK_SECRET: {exc}") from None
        callback_secrets = (secret,)
    try:
        outbound = OutboundPolicy(
            allow_http=allow_http,
            allowed_hosts=allowed_hosts(settings.outbound_allowed_hosts),
            allow_private=settings.outbound_allow_private,
        )
    except ValueError as exc:
        raise ConfigurationError(f"IDGRAPH_OUTBOUND_ALLOWED_HOSTS: {exc}") from None
    destinations = parse_destinations(raw, outbound)
    raw_recipients = settings.dsr_recipients.get_secret_value() if settings.dsr_recipients else None
    recipients = parse_destinations(raw_recipients, outbound, "IDGRAPH_DSR_RECIPIENTS")
    if settings.env is Environment.PRODUCTION:
        for recipient in recipients.values():
            for secret in recipient.secrets:
                refuse_published_secret(secret, f"IDGRAPH_DSR_RECIPIENTS.{recipient.name}")
        for secret in callback_secrets:
            refuse_published_secret(secret, "IDGRAPH_DSR_CALLBACK_SECRET")
        for destination in destinations.values():
            for secret in destination.secrets:
                refuse_published_secret(secret, f"IDGRAPH_DSR_DESTINATIONS.{destination.name}")
    return DsrConfig(
        deadlines=deadlines,
        default_regulation=settings.dsr_default_regulation,
        export_ttl=timedelta(seconds=settings.dsr_export_ttl_seconds),
        destinations=destinations,
        recipients=recipients,
        callback_secrets=callback_secrets,
        outbound=outbound,
        webhook_max_attempts=settings.dsr_webhook_max_attempts,
        webhook_backoff=timedelta(seconds=settings.dsr_webhook_backoff_seconds),
        webhook_timeout_seconds=settings.dsr_webhook_timeout_seconds,
        default_region=settings.default_region,
        unread_retention_days=settings.retention_unread_days,
    )


def recipient_namer(api_keys: ApiKeys) -> Mapping[str, str]:
    """Audit actors (``key_<id>``) to the API key's consumer (or name), for access exports."""
    names: dict[str, str] = {}
    for key in api_keys.list():
        names[api_key_actor(key.key_id)] = key.consumer or key.name
        names[key.key_id] = key.consumer or key.name
    return names


class DeferredNotifier:
    """The erasure notifier (:class:`privacy.dsr.erasure.ErasureNotifier`), building the DSR
    service on first use: an erasure at start-up (recovery) or by retention must tell the
    recipients as a requested one does, and most commands never need the DSR file opened."""

    def __init__(self, service: Callable[[], DsrService]) -> None:
        self._service = service

    def hold(
        self,
        erasure_id: str,
        request_id: str,
        person_ids: Sequence[str],
        *,
        tx: GraphTransaction | None = None,
    ) -> HeldNotices:
        """:meth:`DsrService.hold`."""
        return self._service().hold(erasure_id, request_id, person_ids, tx=tx)

    def release(self, erasure_id: str) -> int:
        """:meth:`DsrService.release`."""
        return self._service().release(erasure_id)

    def drop(self, erasure_id: str) -> None:
        """:meth:`DsrService.drop`."""
        self._service().drop(erasure_id)


def build_dsr_service(
    settings: Settings,
    graph: GraphStore,
    engine: ResolutionEngine,
    vault: Vault,
    keyring: Keyring,
    identity_policy: IdentityPolicy,
    purposes: PurposesPolicy,
    audit: AuditLog,
    eraser: Eraser,
    api_keys: ApiKeys,
) -> DsrService:
    """The DSR service with its own store file (``dsr.sqlite3``)."""
    config = dsr_config(settings)
    store = SqliteDsrStore(settings.dsr_db_path)

    def recipient_name(actor: str) -> str:
        # Looked up per export (keys are created while the service runs); unknown actors as is.
        return recipient_namer(api_keys).get(actor, actor)

    def consumer_of(actor: str) -> str | None:
        # Only API key actors are recipients: console and worker actors released nothing.
        if not actor.startswith("key_"):
            return None
        return recipient_namer(api_keys).get(actor)

    return DsrService(
        store,
        graph,
        engine,
        vault,
        keyring,
        identity_policy,
        purposes,
        audit,
        eraser,
        config,
        recipient_name=recipient_name,
        consumer_of=consumer_of,
    )


def build_retention(
    settings: Settings,
    graph: GraphStore,
    audit: AuditLog,
    purposes: PurposesPolicy,
    facts_policy: FactsPolicy,
    erasure: ErasureService,
    destroy_exports: Callable[[Sequence[str]], int],
    dsr_records: DsrRecords | None = None,
) -> RetentionSweeper:
    """The retention sweeper: category rules from the policies, persons erased via erasure,
    record retention from ``retention.yaml`` (with the DSR store's records when given).

    ``destroy_exports`` is :meth:`DsrService.destroy_person_exports`: an access export made
    before the person was erased must not outlive them, whichever path erased them.
    """
    rules = rules_from_policies(
        purposes,
        facts_policy,
        settings.retention_unread_days,
        settings.retention_inactive_person_days,
    )
    erase_persons: PersonEraser | None = None
    if rules.inactive_person is not None:

        def erase(person_ids: Sequence[str], actor: str, run_id: str) -> Mapping[str, int]:
            # Exports first, while the persons' refs still name them: a graph erasure that fails
            # half-way completes on recover(), but nothing would then find their exports again.
            destroyed = destroy_exports(person_ids)
            # No suppression: nobody asked these persons to stay away (privacy/dsr/retention.py).
            erased = erasure.erase_persons(
                person_ids, actor=actor, request_id=run_id, suppress=False
            )
            return {**result_counts(erased), "exports_destroyed": destroyed}

        erase_persons = erase
    return RetentionSweeper(
        graph,
        audit,
        rules,
        erase_persons,
        records=load_record_retention(settings).records,
        dsr_records=dsr_records,
    )


def load_record_retention(settings: Settings) -> RetentionPolicy:
    """``policies/retention.yaml`` (validated; an invalid file raises ``PolicyFileError``), or
    its defaults when a policy directory has no such file."""
    path = settings.policy_dir / "retention.yaml"
    return load_retention_policy(path) if path.is_file() else RetentionPolicy(version=1)
