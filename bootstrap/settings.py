"""Service settings: pydantic-settings, one prefix (``IDGRAPH_``), secrets as ``SecretStr``.

Core code never reads these: :mod:`bootstrap.container` passes values to constructors.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from privacy.consent.mappers import WebhookSourceConfig
from privacy.dsr.deadlines import DEFAULT_DEADLINES


class Environment(StrEnum):
    """Where the service runs. Production refuses development conveniences."""

    DEVELOPMENT = "development"
    TEST = "test"
    PRODUCTION = "production"


# Webhook source names appear in the URL, in consent records (``cmp:<source>``) and in audit
# actors; a leading letter keeps them from ever looking like a phone number to the log filter.
WEBHOOK_SOURCE_PATTERN = r"^[a-z][a-z0-9_-]{0,47}$"

PLACEHOLDER_SECRETS = frozenset(
    {"", "changeme", "change-me", "secret", "password", "neo4j", "placeholder", "example", "xxx"}
)


class Settings(BaseSettings):
    """Every setting, read from ``IDGRAPH_*`` environment variables (or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="IDGRAPH_", env_file=None, extra="ignore")

    env: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".idgraph")
    # sqlite:///absolute/path.sqlite3, sqlite:relative/path.sqlite3, or neo4j://host:7687
    store_url: str | None = None
    sqlite_synchronous: Literal["NORMAL", "FULL", "EXTRA"] = "FULL"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr | None = None
    # The password in a file instead (a Docker secret, or `make neo4j`'s generated 0600 file).
    neo4j_password_file: Path | None = None
    neo4j_database: str = "neo4j"
    # Driver tuning (docs/neo4j.md): connections per process, their lifetime (below any proxy's
    # idle timeout), how long a request waits for a free one, records per network round trip.
    neo4j_max_pool_size: Annotated[int, Field(ge=1, le=1000)] = 100
    neo4j_max_connection_lifetime_seconds: Annotated[float, Field(gt=0)] = 3600.0
    neo4j_acquisition_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    neo4j_fetch_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    # How long start-up keeps retrying a Neo4j that is not reachable (backoff 0.5 s to 8 s).
    neo4j_startup_timeout_seconds: Annotated[float, Field(ge=0, le=3600)] = 120.0

    policy_dir: Path = Path("policies")
    # Key-encryption keys of the vault (JSON, 0600). Default: <data dir>-kek/kek.json, a sibling
    # of the data dir, never inside it: a backup of the data dir must not hold the KEK too.
    kek_file: Path | None = None
    # Production refuses a KEK file on the same filesystem (volume) as vault-keys.sqlite3 unless
    # this acknowledges that no backup of that filesystem ever holds both (docs/keys.md).
    kek_shares_volume_with_vault: bool = False
    # Where the KEKs are: the KEK file above, or a PKCS#11 token (an HSM; docs/keys.md).
    key_provider: Literal["file", "pkcs11"] = "file"
    pkcs11_library: Path | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    pkcs11_kek_label_prefix: Annotated[str, Field(min_length=1, max_length=32)] = "idgraph-kek-"
    # PII scanning of attribute and event values. Off only for benchmarks; production refuses off.
    pii_scan: bool = True
    hash_key_file: Path | None = None
    # The key-file JSON document itself, for deployments that inject secrets via environment.
    hash_keys: SecretStr | None = None
    default_region: Annotated[str | None, Field(pattern=r"^[A-Z]{2}$")] = None

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = True

    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024
    # Consent changes and erasures put events for downstream tools in the graph's outbox, which
    # `idgraph consume --publish` relays to Kafka (docs/kafka.md). Off by default: with nobody
    # relaying them the outbox would only grow.
    outbound_events: bool = False
    max_batch_events: Annotated[int, Field(ge=1, le=10_000)] = 500
    # How long an applied event `message_id` is remembered (API, bulk files, stream): a resend
    # within the window is answered `duplicate` and writes nothing. Keep it above the longest
    # time a sender may retry (Segment retries for days; Kafka: above the topics' retention).
    message_id_window_days: Annotated[float, Field(ge=0.01, le=3650)] = 7.0
    max_identifiers_per_event: Annotated[int, Field(ge=1, le=200)] = 20
    # Asynchronous ingest (`POST /v1/ingest` with `Prefer: respond-async`, SQLite store only):
    # events queued in the durable journal at most (a batch past it gets 503 + Retry-After),
    # events applied per transaction at most, and how long a finished job's result is kept.
    ingest_journal_max_events: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    ingest_apply_max_events: Annotated[int, Field(ge=1, le=100_000)] = 10_000
    # How long the oldest queued batch waits for more to share its transaction.
    # 1000 ms, not 100: with 100 the applier kept pace with 4 callers and applied ~550 events per
    # transaction (bench/load.py ingest_async 0.520x bulk, 5.6x its bytes); with 1000 ~2,300
    # (0.625x, 2.6x its bytes; stop 40, 3 rounds of 20k events each, load 6-8).
    ingest_apply_linger_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 1000
    # ...unless no batch arrived for this long: the last batches of a burst (or a lone one) are
    # applied after 100 ms, not after up to the whole linger (bench/load.py ingest_async is
    # timed until applied: the linger's remainder was its tail).
    ingest_apply_idle_ms: Annotated[int, Field(ge=0, le=3_600_000)] = 100
    # Who applies the journal: "process", a separate `idgraph ingest-applier` process on the
    # same data dir; "thread", the server process itself (one applier thread); "auto" (the
    # default): `idgraph serve` starts and stops an applier process with itself, and an app
    # started any other way (`uvicorn --factory api.app:create_app`, tests) applies in a thread.
    # With "process" set, the app applies nothing: run `idgraph ingest-applier` beside it.
    # Why a process: accepting batches and applying them in one process share one GIL, and side
    # by side they took longer than one after the other (bench/README.md, stop 48: 0.68-0.75x
    # of bulk against 0.79-0.88x with the applier in its own process).
    ingest_applier: Literal["auto", "thread", "process"] = "auto"
    # Where an applier process keeps its counts (JSON, rewritten after each group) and the
    # server reads them for its /metrics, so one scrape counts every ingest. `idgraph serve`
    # sets it to a file of its own for its applier child; set it yourself, to the same path for
    # both, for a server beside an applier you start.
    ingest_applier_tally_file: Path | None = None
    # Set by `idgraph serve` for itself and its applier child, new at each start (not for you to
    # set): the child writes it into the tally file once it has looked at the journal, and the
    # server's /readyz answers 503 until the file holds it (services.metrics.ApplierStart).
    ingest_applier_run_id: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = (
        None
    )
    ingest_job_results_hours: Annotated[float, Field(gt=0, le=24 * 90)] = 24.0
    # Requests per minute per API key (token bucket, in memory, per process); 0 turns it off.
    rate_limit_per_minute: Annotated[int, Field(ge=0, le=1_000_000)] = 600
    # Requests a key may make at once before the per-minute rate applies.
    rate_limit_burst: Annotated[int, Field(ge=1, le=100_000)] = 100
    # How long a server process uses an API key it verified without reading the control database
    # again: the bound on how long a key revoked by another process (`idgraph keys
    # revoke-api-key`, another worker) keeps working there. 0: every request reads the database.
    api_key_cache_seconds: Annotated[float, Field(ge=0, le=60)] = 1.0

    # Consent webhooks (POST /v1/webhooks/consent/{source}): per source, the payload format and
    # its options, as JSON: {"didomi": {"format": "didomi", "purposes": {"cmp_id": "analytics"}}}.
    webhook_sources: dict[
        Annotated[str, StringConstraints(pattern=WEBHOOK_SOURCE_PATTERN)], WebhookSourceConfig
    ] = Field(default_factory=dict)
    # The whsec_ secrets per source, as JSON {"didomi": ["whsec_..."]} (several: rotation), or
    # the same JSON in a 0600 file. Production refuses a configured source without a secret.
    webhook_secrets: SecretStr | None = None
    webhook_secrets_file: Path | None = None
    # How long accepted webhook ids are remembered (replays inside it are refused). At least
    # twice the +-5 minute signature tolerance; longer also absorbs a sender's late retries.
    webhook_replay_retention_seconds: Annotated[int, Field(ge=600, le=30 * 86_400)] = 3 * 86_400

    # Data-subject requests (docs/dsr.md). Deadlines per regulation, ISO 8601 periods (PnM, PnD)
    # or business days (PnBD): the answer is due `initial` after the earlier of receipt and the
    # submitted time (in UTC), extendable once by `extension` before the due date; a request
    # type key (e.g. `objection`) gives that type its own, non-extendable period.
    dsr_deadlines: dict[str, dict[str, str]] = Field(
        default_factory=lambda: {k: dict(v) for k, v in DEFAULT_DEADLINES.items()}
    )
    dsr_default_regulation: str = "gdpr"
    # How long an access/portability export can be downloaded; then it is destroyed.
    dsr_export_ttl_seconds: Annotated[int, Field(ge=1, le=90 * 86_400)] = 7 * 86_400
    # Downstream deletion webhooks: {"crm": {"url": "https://...", "secret": "whsec_..."}}.
    dsr_destinations: SecretStr | None = None
    # Recipient notices (Art. 17(2), 19): per API key consumer that received a person's data,
    # where its erasure/restriction/objection/rectification notices go, same shape:
    # {"adtech-partner": {"url": "https://...", "secret": "whsec_..."}}.
    dsr_recipients: SecretStr | None = None
    # Signs the webhooks sent to per-request callback_urls (callbacks are refused without it).
    dsr_callback_secret: SecretStr | None = None
    # Outbound webhooks (DSR callbacks, downstream destinations; docs/dsr.md "Outbound URLs"):
    # only these hosts when set (names or *.domain); internal addresses (loopback, private,
    # link-local) only with allow_private, for receivers in the same private network. Cloud
    # metadata, multicast and unspecified addresses are refused whatever is set.
    outbound_allowed_hosts: list[str] = Field(default_factory=list)
    outbound_allow_private: bool = False
    # The in-process worker (processes the queue, sends webhooks, expires exports); 0 = off
    # (then run `idgraph dsr process` from a scheduler).
    dsr_worker_interval_seconds: Annotated[float, Field(ge=0, le=86_400)] = 5.0
    dsr_webhook_max_attempts: Annotated[int, Field(ge=1, le=50)] = 8
    dsr_webhook_backoff_seconds: Annotated[float, Field(ge=0, le=86_400)] = 30.0
    dsr_webhook_timeout_seconds: Annotated[float, Field(gt=0, le=120)] = 10.0
    # Retention sweeper: persons without activity for this many days are erased (0 = never);
    # facts no purpose may read are kept this many days for review, then deleted.
    retention_inactive_person_days: Annotated[int, Field(ge=0, le=36_500)] = 0
    # Ingest for a person whose processing is restricted (Art. 18; docs/dsr.md): new data is
    # stored and not used either way. `separate` (default) also refuses any identifier that would
    # merge the restricted person with another person; `merge` links as usual.
    restricted_ingest: Literal["separate", "merge"] = "separate"
    retention_unread_days: Annotated[int, Field(ge=0, le=36_500)] = 30
    # Signed audit heads (privacy/auditing/heads.py): every this many seconds to the log and to
    # the heads file (default <data dir>/audit-heads.jsonl; better on another volume). 0 = off.
    audit_head_interval_seconds: Annotated[float, Field(ge=0, le=86_400)] = 300.0
    audit_heads_file: Path | None = None
    # The in-process retention schedule; 0 = off (run `idgraph retention run` from cron).
    retention_interval_seconds: Annotated[float, Field(ge=0, le=30 * 86_400)] = 0.0
    # The operator console under /console (docs/console.md). Its session cookie is `Secure`
    # (sent over HTTPS only) unless this says otherwise; default: Secure outside development.
    console_enabled: bool = True
    console_secure_cookies: bool | None = None

    @field_validator("default_region", mode="before")
    @classmethod
    def _upper_region(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) and value else (value or None)

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        password = self.neo4j_password
        if (
            self.env is Environment.PRODUCTION
            and password is not None
            and password.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS
        ):
            raise ValueError("IDGRAPH_NEO4J_PASSWORD is a placeholder; set a real password")
        if self.env is Environment.PRODUCTION and not self.pii_scan:
            raise ValueError("IDGRAPH_PII_SCAN=false is refused in production")
        return self

    @property
    def resolved_store_url(self) -> str:
        """The store URL, defaulting to an SQLite file in the data dir."""
        return self.store_url or f"sqlite:{self.data_dir / 'graph.sqlite3'}"

    @property
    def resolved_hash_key_file(self) -> Path:
        """Where the hash-key file is (default: in the data dir)."""
        return self.hash_key_file or self.data_dir / "hash-keys.json"

    @property
    def resolved_kek_file(self) -> Path:
        """Where the vault's key-encryption keys are (default: ``<data dir>-kek/kek.json``).

        Outside the data dir on purpose: the data dir holds ``vault-keys.sqlite3`` (the wrapped
        data keys), and one backup holding both decrypts everything, shredded persons included
        (for as long as that backup lives), which defeats crypto-shredding.
        """
        if self.kek_file is not None:
            return self.kek_file
        data = self.data_dir.absolute()
        return data.parent / f"{data.name}-kek" / "kek.json"

    @property
    def vault_keys_path(self) -> Path:
        """The SQLite file of wrapped data keys: kept apart from the graph so that a copy of the
        graph database never holds a key (crypto-shredding works against old backups)."""
        return self.data_dir / "vault-keys.sqlite3"

    @property
    def control_db_path(self) -> Path:
        """The SQLite file for service state that is not the graph (API keys)."""
        return self.data_dir / "control.sqlite3"

    @property
    def webhook_replay_path(self) -> Path:
        """The SQLite file of accepted consent-webhook ids (the replay guard)."""
        return self.data_dir / "webhook-replay.sqlite3"

    @property
    def audit_db_path(self) -> Path:
        """The SQLite file of the hash-chained audit log (policy decisions, consent, DSRs)."""
        return self.data_dir / "audit.sqlite3"

    @property
    def operators_db_path(self) -> Path:
        """The SQLite file of console operator accounts and their sessions."""
        return self.data_dir / "operators.sqlite3"

    @property
    def console_cookies_secure(self) -> bool:
        """Whether the console's cookies carry ``Secure`` (always, unless in development)."""
        if self.console_secure_cookies is not None:
            return self.console_secure_cookies
        return self.env is not Environment.DEVELOPMENT

    @property
    def resolved_audit_heads_file(self) -> Path:
        """Where signed audit heads are appended (default: in the data dir)."""
        return self.audit_heads_file or self.data_dir / "audit-heads.jsonl"

    @property
    def dsr_db_path(self) -> Path:
        """The SQLite file of data-subject requests, their sealed exports and webhook outbox."""
        return self.data_dir / "dsr.sqlite3"
