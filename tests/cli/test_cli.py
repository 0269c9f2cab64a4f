"""The idgraph CLI through typer's runner, on a real store in a temp data dir."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import POLICY_DIR

runner = CliRunner()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A development environment in a temp data dir."""
    monkeypatch.setenv("IDGRAPH_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(POLICY_DIR))
    monkeypatch.setenv("IDGRAPH_DEFAULT_REGION", "GB")
    monkeypatch.setenv("IDGRAPH_ENV", "development")
    return tmp_path


def _jsonl(path: Path, rows: Sequence[object]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_init_creates_keys_with_private_modes(env: Path) -> None:
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    data = env / "data"
    assert (data / "hash-keys.json").stat().st_mode & 0o777 == 0o600
    assert (data / "local-api-key").stat().st_mode & 0o777 == 0o600
    assert (data / "local-api-key").read_text().startswith("idg_")


def test_ingest_jsonl_reports_summary_and_rejected_lines(env: Path) -> None:
    path = _jsonl(
        env / "events.jsonl",
        [
            {
                "identifiers": [
                    {"type": "email", "value": "ann@shop.de"},
                    {"type": "cookie_id", "value": "c1"},
                ],
                "source": "web",
            },
            {"identifiers": [{"type": "email", "value": "broken"}], "source": "web"},
            "{not json",
            {
                "identifiers": [
                    {"type": "cookie_id", "value": "c1"},
                    {"type": "phone", "value": "+442079460958"},
                ]
            },
            "",
            {"identifiers": [{"type": "customer_id", "value": "null"}], "source": "crm"},
        ],
    )
    result = runner.invoke(app, ["ingest", str(path), "--source", "import"])
    assert result.exit_code == 1, result.output  # some rows were rejected
    assert "line 2: #/identifiers/0/value: not a valid email address" in result.output
    assert "line 3: not valid JSON" in result.output
    assert "broken" not in result.output
    resolved = runner.invoke(app, ["resolve", "phone=020 7946 0958"])
    assert resolved.exit_code == 0
    assert (
        resolved.output.strip()
        == runner.invoke(app, ["resolve", "email=ANN@shop.de"]).output.strip()
    )


def test_ingest_csv_with_repeated_type_columns(env: Path) -> None:
    path = env / "crm.csv"
    path.write_text(
        "source,timestamp,customer_id,email,email.2,phone\n"
        "crm,2026-03-01T10:00:00Z,C-1,ann@shop.de,ann.work@corp.de,+442079460958\n"
        "crm,,C-2,bob@shop.de,,\n"
    )
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 0, result.output
    first = runner.invoke(app, ["resolve", "email=ann.work@corp.de"]).output.strip()
    assert first == runner.invoke(app, ["resolve", "customer_id=C-1"]).output.strip()
    assert first != runner.invoke(app, ["resolve", "customer_id=C-2"]).output.strip()


def test_ingest_csv_with_unknown_column_stops_before_writing(env: Path) -> None:
    path = env / "bad.csv"
    path.write_text("email,passport\nann@shop.de,X1\n")
    result = runner.invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2
    assert "unknown CSV column 'passport'" in result.output
    assert runner.invoke(app, ["resolve", "email=ann@shop.de"]).exit_code == 1


def test_explain_and_unlink_commands(env: Path) -> None:
    path = _jsonl(
        env / "e.jsonl",
        [
            {
                "identifiers": [
                    {"type": "email", "value": "ann@shop.de"},
                    {"type": "phone", "value": "+442079460958"},
                ],
                "source": "web",
            },
        ],
    )
    assert runner.invoke(app, ["ingest", str(path)]).exit_code == 0
    explained = runner.invoke(app, ["explain", "email=ann@shop.de", "phone=+442079460958"])
    assert explained.exit_code == 0
    assert "web" in explained.output
    unlinked = runner.invoke(app, ["unlink", "email=ann@shop.de", "phone=+442079460958"])
    assert unlinked.exit_code == 0
    assert "split" in unlinked.output
    apart = runner.invoke(app, ["explain", "email=ann@shop.de", "phone=+442079460958"])
    assert apart.exit_code == 1
    assert "kept apart by do-not-link rule dnl_" in apart.output


def test_links_rules_lists_and_allow_removes_a_rule_with_an_audit_entry(env: Path) -> None:
    pair = [{"type": "email", "value": "ann@shop.de"}, {"type": "phone", "value": "+442079460958"}]
    explain = ["explain", "email=ann@shop.de", "phone=+442079460958"]
    path = _jsonl(env / "e.jsonl", [{"identifiers": pair, "source": "web"}])
    assert runner.invoke(app, ["ingest", str(path)]).exit_code == 0
    unlinked = runner.invoke(app, ["unlink", "email=ann@shop.de", "phone=+442079460958"])
    assert "do-not-link rule dnl_" in unlinked.output
    listed = runner.invoke(app, ["links", "rules"])
    assert listed.exit_code == 0, listed.output
    rule_id = next(w for w in listed.output.split() if w.startswith("dnl_"))
    assert "ann@shop.de" not in listed.output
    # Sticky: ingesting the pair again does not merge it.
    again = _jsonl(env / "again.jsonl", [{"identifiers": pair, "source": "crm"}])
    assert runner.invoke(app, ["ingest", str(again)]).exit_code == 0
    assert runner.invoke(app, explain).exit_code == 1
    allowed = runner.invoke(app, ["links", "allow", rule_id])
    assert allowed.exit_code == 0, allowed.output
    assert runner.invoke(app, ["links", "allow", rule_id]).exit_code == 1  # gone
    assert "0 do-not-link rule(s)" in runner.invoke(app, ["links", "rules"]).output
    # A new event (another source: the file above was applied already) links them again.
    later = _jsonl(env / "later.jsonl", [{"identifiers": pair, "source": "shop"}])
    assert runner.invoke(app, ["ingest", str(later)]).exit_code == 0
    assert runner.invoke(app, explain).exit_code == 0
    from bootstrap.container import build_container
    from bootstrap.settings import Settings

    container = build_container(Settings())
    try:
        actions = [e.action for e in container.audit.entries()]
    finally:
        container.close()
    assert "links.unlinked" in actions
    assert "links.rule_removed" in actions


def test_resolve_reads_the_value_from_stdin(env: Path) -> None:
    path = _jsonl(
        env / "e.jsonl",
        [{"identifiers": [{"type": "email", "value": "ann@shop.de"}], "source": "web"}],
    )
    runner.invoke(app, ["ingest", str(path)])
    result = runner.invoke(app, ["resolve", "email=-"], input="ann@shop.de\n")
    assert result.exit_code == 0
    assert result.output.strip().startswith("p_")


def test_invalid_identifier_on_the_command_line_exits_2_without_echo(env: Path) -> None:
    result = runner.invoke(app, ["resolve", "email=secret-not-an-email"])
    assert result.exit_code == 2
    assert "secret-not-an-email" not in result.output


def test_api_key_lifecycle(env: Path) -> None:
    created = runner.invoke(
        app,
        ["keys", "create-api-key", "--scope", "ingest", "--scope", "resolve", "--name", "crm-sync"],
    )
    assert created.exit_code == 0, created.output
    token = created.stdout.strip().splitlines()[-1]
    assert token.startswith("idg_")
    key_id = token.removeprefix("idg_").split(".")[0]
    listed = runner.invoke(app, ["keys", "list-api-keys"])
    assert key_id in listed.output
    assert token.split(".")[1] not in listed.output  # never the secret
    assert runner.invoke(app, ["keys", "revoke-api-key", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke-api-key", key_id]).exit_code == 1


def test_rotating_the_hash_key_keeps_identifiers_resolvable(env: Path) -> None:
    path = _jsonl(
        env / "e.jsonl",
        [{"identifiers": [{"type": "email", "value": "ann@shop.de"}], "source": "web"}],
    )
    runner.invoke(app, ["ingest", str(path)])
    before = runner.invoke(app, ["resolve", "email=ann@shop.de"]).output.strip()
    rotated = runner.invoke(app, ["keys", "rotate-hash-key"])
    assert rotated.exit_code == 0, rotated.output
    assert "2 keys known" in rotated.output
    assert runner.invoke(app, ["resolve", "email=ann@shop.de"]).output.strip() == before
    runner.invoke(app, ["ingest", str(path)])
    keys = json.loads((env / "data" / "hash-keys.json").read_text())
    assert len(keys["keys"]) == 2


def test_policy_check(env: Path) -> None:
    result = runner.invoke(app, ["policy-check"])
    assert result.exit_code == 0
    assert "identifier types" in result.output
    assert "8 purposes (ad_measurement, ad_targeting, analytics" in result.output


def test_policy_check_names_a_bad_purposes_file(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    policies = tmp_path / "bad-policies"
    policies.mkdir()
    for name in ("identity.yaml", "categories.yaml", "purposes.yaml"):
        text = (POLICY_DIR / name).read_text()
        if name == "purposes.yaml":
            text = text.replace(
                "      behavioural: {retention_days: 395}", "      health: {retention_days: 1}", 1
            )
        (policies / name).write_text(text)
    monkeypatch.setenv("IDGRAPH_POLICY_DIR", str(policies))
    result = runner.invoke(app, ["policy-check"])
    assert result.exit_code == 2
    assert "purposes.analytics.categories.health" in result.output


def test_production_serve_refuses_generated_keys(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    monkeypatch.setenv("IDGRAPH_ENV", "production")
    result = runner.invoke(app, ["serve", "--port", "1"])
    assert result.exit_code == 2
    assert "production refuses" in result.output


def _ingest_people(env: Path, count: int) -> None:
    rows = [
        {
            "identifiers": [
                {"type": "email", "value": f"person{i}@shop.de"},
                {"type": "cookie_id", "value": f"ck-{i}"},
            ],
            "source": "web",
            "traits": {"city": "Lisbon"},
        }
        for i in range(count)
    ]
    assert runner.invoke(app, ["ingest", str(_jsonl(env / "people.jsonl", rows))]).exit_code == 0


def test_rehash_moves_kept_identifiers_to_the_new_key_and_resumes(env: Path) -> None:
    _ingest_people(env, 7)
    before = runner.invoke(app, ["resolve", "email=person3@shop.de"]).output.strip()
    assert runner.invoke(app, ["keys", "rotate-hash-key"]).exit_code == 0
    # An interrupted run: only the first page commits.
    from bootstrap.container import build_container
    from bootstrap.settings import Settings

    container = build_container(Settings())
    try:
        first = container.engine.rehash_page("", 3)
        assert first.rehashed + first.without_raw_value == 3
    finally:
        container.close()
    result = runner.invoke(app, ["keys", "rehash", "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    # emails are kept (keep_raw) and move; cookies are not kept and wait until seen again
    assert "without a kept value" in result.output
    keys = json.loads((env / "data" / "hash-keys.json").read_text())
    container = build_container(Settings())
    try:
        nodes = container.store.read(lambda tx: tx.identifiers_page(keys["primary"], "", 100))
        assert {n.hashed.type for n in nodes} == {"cookie_id"}
        assert len(nodes) == 7
    finally:
        container.close()
    assert runner.invoke(app, ["resolve", "email=person3@shop.de"]).output.strip() == before
    assert runner.invoke(app, ["resolve", "cookie_id=ck-3"]).output.strip() == before


def test_rehash_moves_what_is_readable_when_one_kept_value_has_its_data_key_shredded(
    env: Path,
) -> None:
    # One email's data key is gone while its node is still in the graph: its kept value cannot
    # be re-hashed, and it stays under the old key like a value that was never kept. The run
    # used to stop at that page with data-key-destroyed (exit 2, naming the node) every time.
    _ingest_people(env, 4)
    assert runner.invoke(app, ["keys", "rotate-hash-key"]).exit_code == 0
    from bootstrap.container import build_container
    from bootstrap.settings import Settings

    container = build_container(Settings())
    try:
        person = container.engine.resolve(
            container.identity_policy.normalize("email", "person2@shop.de", "GB")
        )
        assert person is not None
        nodes = container.store.read(lambda tx: tx.cluster(person).nodes)
        assert container.vault.shred([n.node_id for n in nodes if n.hashed.type == "email"]) == 1
    finally:
        container.close()

    result = runner.invoke(app, ["keys", "rehash", "--batch-size", "3"])

    assert result.exit_code == 0, result.output
    assert "re-hashed 3 identifier(s)" in result.output
    assert "5 without a kept value" in result.output
    assert "1 of them: the kept value's data key was shredded" in result.output
    keys = json.loads((env / "data" / "hash-keys.json").read_text())
    container = build_container(Settings())
    try:
        # Still under the old key: the four cookies (never kept) and the unreadable email.
        old = container.store.read(lambda tx: tx.identifiers_page(keys["primary"], "", 100))
        assert sorted(n.hashed.type for n in old) == ["cookie_id"] * 4 + ["email"]
    finally:
        container.close()


def test_rotate_kek_rewraps_every_data_key_and_data_stays_readable(env: Path) -> None:
    _ingest_people(env, 5)
    result = runner.invoke(app, ["keys", "rotate-kek", "--batch-size", "2", "--retire-old"])
    assert result.exit_code == 0, result.output
    assert "re-wrapped" in result.output
    assert "removed retired KEK" in result.output
    keks = json.loads((env / "data-kek" / "kek.json").read_text())
    assert len(keks["keys"]) == 1
    from bootstrap.container import build_container
    from bootstrap.settings import Settings
    from identity.model import FactKind, FactStatus

    container = build_container(Settings())
    try:
        assert set(container.vault.count_by_kek()) == {keks["primary"]}
        person = container.engine.resolve(
            container.identity_policy.normalize("email", "person1@shop.de", None)
        )
        assert person is not None
        facts = container.store.read(
            lambda tx: tx.person_facts(person, (FactKind.ATTRIBUTE,), FactStatus.ACTIVE)
        )
        opened = container.vault.decrypt_many([(f.node_id, f.seal_field, f.sealed) for f in facts])
        assert opened == [b'"Lisbon"']
    finally:
        container.close()


def test_quarantine_list_release_and_drop(env: Path) -> None:
    rows = [
        {
            "identifiers": [{"type": "customer_id", "value": f"C-{i}"}],
            "source": "web",
            "events": [{"name": "wishlist_add", "properties": {"sku": f"s-{i}"}}],
        }
        for i in range(2)
    ]
    assert runner.invoke(app, ["ingest", str(_jsonl(env / "q.jsonl", rows))]).exit_code == 0
    listed = runner.invoke(app, ["quarantine", "list"])
    assert listed.exit_code == 0
    fact_ids = [w for w in listed.output.split() if w.startswith("f_")]
    assert len(fact_ids) == 2
    assert "s-0" not in listed.output
    assert runner.invoke(app, ["quarantine", "release", fact_ids[0]]).exit_code == 0
    assert runner.invoke(app, ["quarantine", "drop", fact_ids[1]]).exit_code == 0
    assert runner.invoke(app, ["quarantine", "drop", fact_ids[0]]).exit_code == 1  # released
    assert "no quarantined values" in runner.invoke(app, ["quarantine", "list"]).output
