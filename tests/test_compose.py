"""docker-compose.yml, Dockerfile and .env.example hold together (checked without Docker)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
# ${VAR}, ${VAR:-default}, ${VAR:?message}, ${VAR-default}; $$ escapes compose interpolation.
COMPOSE_VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])[^}]*)?\}")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|HASH_KEYS|API_KEY|AUTH", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


def _env_example() -> dict[str, str]:
    entries: dict[str, str] = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            name, _, value = stripped.partition("=")
            entries[name.strip()] = value.strip()
    return entries


def _env_example_mentions() -> set[str]:
    """Variables .env.example sets or documents in a comment (optional ones)."""
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE))


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    assert isinstance(env, dict)
    return {str(k): str(v) for k, v in env.items()}


def test_compose_declares_the_neo4j_and_api_services(compose: dict[str, Any]) -> None:
    assert {"neo4j", "api"} <= set(compose["services"])


def test_neo4j_image_is_pinned_to_an_exact_version(compose: dict[str, Any]) -> None:
    image = compose["services"]["neo4j"]["image"]
    name, _, tag = image.partition(":")
    assert name == "neo4j"
    assert tag != "latest"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-community|-enterprise)?", tag), image


def test_every_service_has_a_healthcheck(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in {"CMD", "CMD-SHELL"}
        assert not check.get("disable", False)
    assert "/readyz" in " ".join(compose["services"]["api"]["healthcheck"]["test"])


def test_api_waits_for_a_healthy_neo4j_and_migrates_before_serving(
    compose: dict[str, Any],
) -> None:
    api = compose["services"]["api"]
    assert api["build"] == "."
    assert api["depends_on"]["neo4j"]["condition"] == "service_healthy"
    start = " ".join(api["entrypoint"]) + " " + " ".join(api.get("command", []))
    assert start.index("idgraph store migrate") < start.index("idgraph serve --host 0.0.0.0")
    env = _environment(api)
    assert env["IDGRAPH_STORE_URL"] == "neo4j://neo4j:7687"
    assert {"IDGRAPH_NEO4J_USER", "IDGRAPH_NEO4J_PASSWORD_FILE", "IDGRAPH_NEO4J_DATABASE"} <= set(
        env
    )


def test_keys_and_passwords_are_file_secrets_never_environment_or_volume(
    compose: dict[str, Any],
) -> None:
    secrets = compose["secrets"]
    assert set(secrets) == {"neo4j_auth", "neo4j_password", "idgraph_kek", "idgraph_hash_keys"}
    assert all(set(s) == {"file"} and s["file"].startswith("./secrets/") for s in secrets.values())
    api = compose["services"]["api"]
    env = _environment(api)
    assert set(api["secrets"]) == {"neo4j_password", "idgraph_kek", "idgraph_hash_keys"}
    assert env["IDGRAPH_KEK_FILE"] == "/run/secrets/idgraph_kek"
    assert env["IDGRAPH_HASH_KEY_FILE"] == "/run/secrets/idgraph_hash_keys"
    assert env["IDGRAPH_NEO4J_PASSWORD_FILE"] == "/run/secrets/neo4j_password"
    assert not {"IDGRAPH_HASH_KEYS", "IDGRAPH_NEO4J_PASSWORD"} & set(env)
    # The KEK is not in the volume that holds the wrapped data keys (vault-keys.sqlite3).
    data_dir = env["IDGRAPH_DATA_DIR"]
    assert not env["IDGRAPH_KEK_FILE"].startswith(data_dir)
    neo4j = compose["services"]["neo4j"]
    assert _environment(neo4j)["NEO4J_AUTH_FILE"] == "/run/secrets/neo4j_auth"
    assert "NEO4J_AUTH" not in _environment(neo4j)


def test_neo4j_healthcheck_keeps_the_password_out_of_process_arguments(
    compose: dict[str, Any],
) -> None:
    (kind, script) = compose["services"]["neo4j"]["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    shell = script.replace("$$", "$")
    command = shell[shell.index("cypher-shell") :]
    assert " -p " not in command
    assert "--password" not in command
    assert 'NEO4J_PASSWORD="' in shell  # handed over in cypher-shell's environment


def test_neo4j_transaction_log_retention_is_set_short_for_erasure(
    compose: dict[str, Any],
) -> None:
    env = _environment(compose["services"]["neo4j"])
    assert "hours" in env["NEO4J_db_tx__log_rotation_retention__policy"]


def test_named_volumes_are_declared_and_mounted(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    mounted = {
        str(volume).split(":", 1)[0]
        for service in compose["services"].values()
        for volume in service.get("volumes", [])
    }
    assert "neo4j-data" in mounted
    assert mounted <= declared, f"undeclared volumes {mounted - declared}"
    neo4j_mounts = compose["services"]["neo4j"]["volumes"]
    assert any(str(v).endswith(":/data") for v in neo4j_mounts)


def test_every_variable_compose_reads_is_listed_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    referenced = {match.group(1) for match in COMPOSE_VAR.finditer(text)}
    required = {m.group(1) for m in COMPOSE_VAR.finditer(text) if m.group(2) == ":?"}
    assert referenced <= _env_example_mentions(), referenced - _env_example_mentions()
    # Required ones are real entries (uncommented), so `cp .env.example .env` shows them.
    assert required <= set(_env_example())


def test_no_literal_secret_in_compose_or_env_example(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key, value in _environment(service).items():
            if SECRET_NAME.search(key) and key.endswith("_FILE"):
                assert value.startswith("/run/secrets/"), f"{name}.{key} is not a Docker secret"
            elif SECRET_NAME.search(key):
                assert COMPOSE_VAR.search(value), f"{name}.{key} is a literal, not ${{VAR}}"
    for key, value in _env_example().items():
        if SECRET_NAME.search(key):
            assert value == "", f".env.example gives {key} a value; leave secrets empty"


def test_ports_are_published_on_localhost_only(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"


def test_dockerfile_runs_as_non_root_and_installs_the_neo4j_and_kafka_extras() -> None:
    lines = [
        line.strip()
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert all(line.split()[1].startswith("python:3.11-slim") for line in froms)
    final_stage = lines[lines.index(froms[-1]) :]
    users = [line.split()[1] for line in final_stage if line.startswith("USER ")]
    assert users, "the runtime stage never drops root"
    assert users[-1] not in {"root", "0"}
    assert any("[neo4j,kafka,hsm]" in line for line in lines)  # graph driver, Kafka, PKCS#11
    assert final_stage[-2:] == ['ENTRYPOINT ["idgraph"]', 'CMD ["serve", "--host", "0.0.0.0"]']


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_image() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".idgraph/", ".git", ".venv"} <= ignored


def test_kafka_image_is_the_official_one_pinned_to_the_version_make_kafka_runs(
    compose: dict[str, Any],
) -> None:
    kafka = compose["services"]["kafka"]
    name, _, tag = kafka["image"].partition(":")
    assert name == "apache/kafka"
    pom = (ROOT / "tools" / "kafka-server" / "pom.xml").read_text()
    pinned = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom)
    assert pinned is not None
    assert tag == pinned.group(1)
    assert "kafka-broker-api-versions" in " ".join(kafka["healthcheck"]["test"])
    assert all(port.startswith("127.0.0.1:") for port in kafka["ports"])


def test_dockerfile_copies_every_package_the_wheel_includes() -> None:
    """A package missing from the image's build stage would make `idgraph` fail at import."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = [
        pattern.rstrip("*")
        for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    ]
    copied = {
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("COPY ") and not line.startswith("COPY --from")
    }
    assert set(packages) <= copied, sorted(set(packages) - copied)
