"""The one place that wires idgraph together: settings in, ready collaborators out.

Routers and CLI commands get the collaborators from here (the role of cosmic python's
``bootstrap.py``); nothing else reads settings or chooses adapters.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import structlog

from api.auth import ApiKeyStore
from api.settings import Environment, Settings
from identity.errors import ConfigurationError
from identity.hashing import Keyring
from identity.policy import IdentityPolicy, load_identity_policy
from identity.resolution import ResolutionEngine
from identity.store.port import GraphStore
from privacy.facts import FactIntake, FactsPolicy, load_facts_policy
from privacy.hash_keys import create_key_file, parse_key_document, read_key_file
from privacy.keyprovider import LocalFileKeyProvider, check_kek_origin, create_kek_file
from privacy.scanning import PiiScanner, ScannerConfig
from privacy.vault import SqliteVaultKeyStore, Vault

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
    api_keys: ApiKeyStore

    def close(self) -> None:
        """Release the store, the vault and the control database."""
        self.store.close()
        self.vault_keys.close()
        self.api_keys.close()


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
    return keys.keyring()


def load_policies(settings: Settings) -> IdentityPolicy:
    """Load and validate the identity policy; an invalid file raises ``PolicyFileError``."""
    return load_identity_policy(settings.policy_dir / "identity.yaml")


def load_all_policies(settings: Settings) -> tuple[IdentityPolicy, FactsPolicy]:
    """Load and validate every policy file; the first invalid one raises ``PolicyFileError``."""
    return load_policies(settings), load_facts_policy(settings.policy_dir / "categories.yaml")


_scanners: dict[str, PiiScanner] = {}


def build_scanner(config: ScannerConfig) -> PiiScanner:
    """The presidio scanner for ``config``, built once per process (building takes seconds)."""
    key = config.model_dump_json()
    if key not in _scanners:
        from privacy.scanning.presidio_scanner import PresidioPiiScanner

        _scanners[key] = PresidioPiiScanner(config)
    return _scanners[key]


def open_vault(settings: Settings) -> tuple[Vault, SqliteVaultKeyStore]:
    """The vault: wrapped data keys in their own SQLite file, KEKs from the local key file.

    Development creates a ``generated`` KEK file when missing; production refuses a missing or
    generated KEK (made on purpose with ``idgraph keys create-kek-file``).
    """
    path = settings.resolved_kek_file
    production = settings.env is Environment.PRODUCTION
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
    keys = SqliteVaultKeyStore(settings.vault_keys_path)
    return Vault(keys, provider), keys


def open_store(settings: Settings) -> GraphStore:
    """Open the graph store named by ``IDGRAPH_STORE_URL``."""
    url = settings.resolved_store_url
    if url.startswith("sqlite:"):
        from identity.store.sqlite import SqliteGraphStore

        raw = url.removeprefix("sqlite:")
        # sqlite:///abs/path -> /abs/path ; sqlite:rel/path -> rel/path
        path = Path("/" + raw.removeprefix("///")) if raw.startswith("///") else Path(raw)
        return SqliteGraphStore(path, synchronous=settings.sqlite_synchronous)
    if url.split("://", 1)[0] in {"neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"}:
        from identity.store.neo4j import Neo4jGraphStore

        password = settings.neo4j_password.get_secret_value() if settings.neo4j_password else ""
        return Neo4jGraphStore(url, settings.neo4j_user, password, database=settings.neo4j_database)
    raise ConfigurationError(
        "IDGRAPH_STORE_URL must start with sqlite: or neo4j:// (or bolt://, neo4j+s://)"
    )


def build_container(settings: Settings) -> Container:
    """Wire every collaborator from ``settings``; fails fast on bad policy or keys."""
    policy, facts_policy = load_all_policies(settings)
    scanner = build_scanner(facts_policy.scanner) if settings.pii_scan else None
    if scanner is not None:
        facts_policy.check_entities(scanner.entities, str(settings.policy_dir / "categories.yaml"))
    keyring = load_keyring(settings)
    vault, vault_keys = open_vault(settings)
    try:
        store = open_store(settings)
    except Exception:
        vault_keys.close()
        raise
    try:
        api_keys = ApiKeyStore(settings.control_db_path)
    except Exception:
        store.close()
        vault_keys.close()
        raise
    engine = ResolutionEngine(store, keyring, policy, sealer=vault)
    return Container(
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
    )
