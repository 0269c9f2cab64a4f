"""The Cypher module's rules, and the Neo4j adapter's behaviour without a server.

Runs without Neo4j. The lint tests run when node and the pinned linter are installed
(``make cypher-lint`` installs it) and are skipped with the reason otherwise.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest

from identity.errors import ConfigurationError, StoreIntegrityError, StoreUnavailableError
from identity.hashing import HashedIdentifier
from identity.model import (
    ChangeSet,
    ConsentRecord,
    ConsentSignal,
    EventCountRule,
    Fact,
    FactKind,
    FactStatus,
    IdentifierNode,
    MemberScan,
    MemberScanPage,
    PersonRecord,
)
from identity.store import cypher
from identity.store.cypher_dump import lint_input

ROOT = Path(__file__).resolve().parents[3]
CYPHER_SOURCE = ROOT / "identity" / "store" / "cypher.py"
LINT_DIR = ROOT / "scripts" / "cypher-lint"
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")


def _top_level_string_constants() -> dict[str, ast.expr]:
    """Every UPPER_SNAKE name assigned at module level in cypher.py whose value is a string."""
    found: dict[str, ast.expr] = {}
    for node in ast.parse(CYPHER_SOURCE.read_text()).body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name, value = node.target.id, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
            if not isinstance(target, ast.Name):
                continue
            name, value = target.id, node.value
        else:
            continue
        is_string = isinstance(value, ast.Constant) and isinstance(value.value, str)
        if value is not None and UPPER_SNAKE.match(name) and (is_string or _builds_str(value)):
            found[name] = value
    return found


def _builds_str(value: ast.expr) -> bool:
    return isinstance(value, ast.JoinedStr | ast.BinOp) or (
        isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
    )


def test_collector_returns_exactly_the_modules_string_constants() -> None:
    assert set(cypher.statements()) == set(_top_level_string_constants())
    assert lint_input()["statements"] == cypher.statements()
    assert len(cypher.statements()) >= 20


def test_every_statement_is_a_plain_literal_when_the_module_is_parsed() -> None:
    # No f-strings, concatenation or .format(): nothing can splice a value or label in.
    for name, value in _top_level_string_constants().items():
        assert isinstance(value, ast.Constant), f"{name} is built, not written literally"


def test_no_statement_contains_a_formatting_placeholder() -> None:
    # {name} / {} / {0} (str.format or the long-removed Cypher {param} syntax) and %-style.
    placeholder = re.compile(r"\{\s*\w*\s*(?:![rsa])?\s*\}|%(?:\(\w+\))?[sdr]")
    for name, query in cypher.statements().items():
        assert not placeholder.search(query), f"{name} has a formatting placeholder"


def _params(query: str) -> set[str]:
    return set(re.findall(r"\$([A-Za-z_]\w*)", query))


def test_every_parameter_is_documented_and_every_documented_one_is_used() -> None:
    used: set[str] = set()
    for name, query in cypher.statements().items():
        undocumented = _params(query) - set(cypher.PARAMETERS)
        assert not undocumented, f"{name} uses undocumented parameters {undocumented}"
        used |= _params(query)
    assert used == set(cypher.PARAMETERS)


def test_labels_and_relationship_types_come_from_the_closed_enums() -> None:
    labels = {label.value for label in cypher.Label}
    rels = {rel.value for rel in cypher.Rel}
    node_label = re.compile(r"\(\s*\w*\s*:\s*(\w+(?:\s*\|\s*\w+)*)")
    rel_type = re.compile(r"\[\s*\w*\s*:\s*(\w+)")
    seen_labels: set[str] = set()
    seen_rels: set[str] = set()
    for name, query in cypher.statements().items():
        for group in node_label.findall(query):
            used = {part.strip() for part in group.split("|")}
            assert used <= labels, f"{name} uses labels outside Label: {used - labels}"
            seen_labels |= used
        for used_rel in rel_type.findall(query):
            assert used_rel in rels, f"{name} uses relationship type {used_rel}"
            seen_rels.add(used_rel)
    assert seen_labels == labels
    assert seen_rels == rels


def test_property_keys_are_declared_in_the_schema() -> None:
    declared = set(cypher.property_keys())
    access = re.compile(r"\b[a-z_]\w*\.([a-z_]\w*)")
    map_key = re.compile(r"[{,]\s*([a-z_]\w*)\s*:")
    for name, query in cypher.statements().items():
        used = set(access.findall(query)) | set(map_key.findall(query))
        assert used <= declared, f"{name} uses undeclared keys {used - declared}"


def test_every_batched_write_unwinds_rows_and_every_schema_statement_is_idempotent() -> None:
    for name, query in cypher.statements().items():
        text = " ".join(query.split())
        if "$rows" in text:
            assert text.startswith("UNWIND $rows AS row "), name
        if text.startswith(("CREATE CONSTRAINT", "CREATE INDEX")):
            assert " IF NOT EXISTS " in text, name
            assert query in cypher.SCHEMA_STATEMENTS, f"{name} is not run by migrate()"
    assert "IN TRANSACTIONS" in cypher.WIPE_ALL


# -- the offline lint ---------------------------------------------------------------------------


def _lint(tmp_path: Path, payload: dict[str, object]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (LINT_DIR / "node_modules" / "@neo4j-cypher" / "language-support").is_dir():
        pytest.skip("the Cypher linter is not installed; run `make cypher-lint` once")
    dump = tmp_path / "dump.json"
    dump.write_text(json.dumps(payload))
    return subprocess.run(
        [node, str(LINT_DIR / "lint.mjs"), str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow  # ~10 s; `make test` already runs it as `make cypher-lint`
def test_lint_passes_on_the_real_statements(tmp_path: Path) -> None:
    result = _lint(tmp_path, lint_input())
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(cypher.statements())} statement(s) OK" in result.stdout


def test_lint_fails_and_names_the_constant_when_a_statement_is_wrong(tmp_path: Path) -> None:
    payload = lint_input()
    payload["statements"] = {
        "GOOD": cypher.CLUSTER_NODES,
        "BAD_SYNTAX": "MATCH (p:Person) RETRN p",
        "BAD_LABEL": "MATCH (p:Persn {person_id: $person_id}) RETURN p.person_id",
        "BAD_PARAM": "MATCH (p:Person {person_id: $who}) RETURN p.person_id",
        "BAD_PROPERTY": "MATCH (p:Person {person_id: $person_id}) RETURN p.email",
    }
    result = _lint(tmp_path, payload)
    assert result.returncode == 1
    for bad in ("BAD_SYNTAX", "BAD_LABEL", "BAD_PARAM", "BAD_PROPERTY"):
        assert f"{bad}:" in result.stdout
    assert "GOOD:" not in result.stdout


def test_lint_script_skips_with_a_message_when_node_is_missing() -> None:
    bash = shutil.which("bash")
    assert bash is not None
    result = subprocess.run(
        [bash, str(ROOT / "scripts" / "cypher-lint.sh")],
        capture_output=True,
        text=True,
        env={"PATH": "/nonexistent"},
        timeout=30,
        check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == "cypher-lint: node not found; skipped"


# -- the Neo4j adapter without a server ---------------------------------------------------------


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung or wrong server)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                accepted.append(server.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield server.getsockname()[1]
    server.close()
    for conn in accepted:
        conn.close()


def test_store_raises_store_unavailable_quickly_when_nothing_listens() -> None:
    from identity.store.neo4j import Neo4jGraphStore

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="could not connect") as caught:
        Neo4jGraphStore("bolt://127.0.0.1:1", "neo4j", "irrelevant", connect_timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert type(caught.value.__cause__).__module__.startswith("neo4j")


@pytest.mark.parametrize("scheme", ["bolt", "neo4j"])
def test_store_gives_up_after_the_connect_timeout_when_the_server_never_answers(
    silent_server: int, scheme: str
) -> None:
    from identity.store.neo4j import Neo4jGraphStore

    started = time.monotonic()
    with pytest.raises(StoreUnavailableError):
        Neo4jGraphStore(
            f"{scheme}://127.0.0.1:{silent_server}", "neo4j", "x", connect_timeout_s=0.5
        )
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("uri", ["http://127.0.0.1:7474", "localhost:7687", "sqlite:x.db"])
def test_store_refuses_a_uri_that_is_not_bolt_or_neo4j(uri: str) -> None:
    from identity.store.neo4j import Neo4jGraphStore

    with pytest.raises(ConfigurationError):
        Neo4jGraphStore(uri, "neo4j", "x", connect_timeout_s=0.5)


# -- the Neo4j adapter's facts, offline (statements recorded by a fake transaction) -------------


class _FakeTx:
    """Stands in for the driver's ManagedTransaction: records every statement and its params.

    Batched writes answer with one record whose counted column is the number of rows whose
    anchor node is in ``nodes`` (what ``MATCH (i:Identifier {node_id: row.node_id})`` keeps).
    """

    def __init__(self, nodes: set[str], records: list[dict[str, object]] | None = None) -> None:
        self.nodes = nodes
        self.records = records or []
        self.runs: list[tuple[str, dict[str, object]]] = []

    def run(self, query: str, params: dict[str, object] | None = None) -> _FakeResult:
        params = params or {}
        self.runs.append((query, params))
        rows = params.get("rows")
        if isinstance(rows, list) and "written" in query:
            kept = sum(1 for row in rows if row["node_id"] in self.nodes)
            return _FakeResult([{"written": kept}])
        return _FakeResult(self.records)

    def names(self) -> list[str]:
        by_text = {text: name for name, text in cypher.statements().items()}
        return [by_text[query] for query, _ in self.runs]


class _FakeResult:
    def __init__(self, records: list[dict[str, object]]) -> None:
        self._records = records

    def data(self) -> list[dict[str, object]]:
        return self._records

    def consume(self) -> object:
        class _Counters:
            nodes_deleted = 2
            relationships_deleted = 0

        class _Summary:
            counters = _Counters()

        return _Summary()


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _f(fact_id: str, node: str, kind: FactKind, name: str, at_min: int, **kw: Any) -> Fact:
    return Fact(
        fact_id,
        node,
        kind,
        name,
        kw.get("category", "location"),
        T0 + timedelta(minutes=at_min),
        kw.get("source", "web"),
        kw.get("status", FactStatus.ACTIVE),
        kw.get("sealed", fact_id.encode()),
        kw.get("pii", ()),
    )


# Repeats of every upsert key in one change set, in an order where a late row is older.
_BATCH = (
    _f("f1", "n1", FactKind.ATTRIBUTE, "city", 5, sealed=b"five", pii=("PERSON",)),
    _f("f2", "n1", FactKind.ATTRIBUTE, "city", 9, sealed=b"nine", category="geo"),
    _f("f3", "n1", FactKind.ATTRIBUTE, "city", 1, sealed=b"stale"),
    _f("f4", "n1", FactKind.ATTRIBUTE, "city", 9, sealed=b"tie", source="crm"),
    _f("f5", "n2", FactKind.ATTRIBUTE, "city", 3),
    _f("f6", "n1", FactKind.ATTRIBUTE, "city", 0, status=FactStatus.QUARANTINED),
    _f("f7", "n1", FactKind.RAW_IDENTIFIER, "email", 4, sealed=b"raw-a", pii=("EMAIL",)),
    _f("f8", "n1", FactKind.RAW_IDENTIFIER, "email", 2, sealed=b"raw-b", source="crm"),
    _f("f9", "n2", FactKind.EVENT, "purchase", 7),
    _f("f10", "n2", FactKind.EVENT, "purchase", 7),
)


def test_fact_rows_fold_repeats_into_what_the_sqlite_store_keeps(tmp_path: Path) -> None:
    from identity.store.neo4j import _fact_rows
    from identity.store.sqlite import SqliteGraphStore

    store = SqliteGraphStore(tmp_path / "g.sqlite3")
    try:
        store.write(
            lambda tx: tx.apply(
                ChangeSet(
                    new_persons=(PersonRecord("p1", T0, T0),),
                    new_nodes=tuple(
                        IdentifierNode(n, HashedIdentifier("email", "k1", n.encode()), "p1", T0, T0)
                        for n in ("n1", "n2")
                    ),
                    facts=_BATCH,
                )
            )
        )
        stored = store.read(
            lambda tx: [
                fact
                for status in FactStatus
                for fact in tx.person_facts("p1", tuple(FactKind), status)
            ]
        )
    finally:
        store.close()
    current, raw, other = _fact_rows(_BATCH)
    folded = sorted(
        (
            row["fact_id"],
            row["node_id"],
            row["kind"],
            row["name"],
            row["category"],
            row["at"],
            row["source"],
            row["status"],
            row["sealed"],
            tuple(row["pii"]),
        )
        for row in current + raw + other
    )
    kept = sorted(
        (
            f.fact_id,
            f.node_id,
            f.kind.value,
            f.name,
            f.category,
            int(f.at.timestamp() * 1000),
            f.source,
            f.status.value,
            f.sealed,
            f.pii,
        )
        for f in stored
    )
    assert folded == kept
    # The first row's id keeps the value of the latest (last among equals) attribute row.
    assert [(r["fact_id"], r["sealed"], r["source"]) for r in current] == [
        ("f1", b"tie", "crm"),
        ("f5", b"f5", "web"),
    ]
    assert [(r["fact_id"], r["sealed"], r["pii"]) for r in raw] == [("f7", b"raw-b", ["EMAIL"])]
    assert [r["fact_id"] for r in other] == ["f6", "f9", "f10"]


def test_apply_writes_facts_after_merges_and_reassignments_in_bounded_batches() -> None:
    from identity.store.neo4j import Neo4jTransaction

    fake = _FakeTx({"n1", "n2"})
    changes = ChangeSet(merged={"p2": "p1"}, reassigned={"n2": "p3"}, facts=_BATCH)
    Neo4jTransaction(cast(Any, fake), batch_size=2).apply(changes)
    names = fake.names()
    assert names.index("UPSERT_ATTRIBUTE_FACTS") > names.index("MOVE_IDENTIFIERS_OF_PERSONS")
    assert names.index("UPSERT_ATTRIBUTE_FACTS") > names.index("REASSIGN_IDENTIFIERS")
    fact_writes: list[tuple[str, list[dict[str, Any]]]] = [
        (name, cast(list[dict[str, Any]], params["rows"]))
        for name, (_, params) in zip(names, fake.runs, strict=True)
        if name in {"UPSERT_ATTRIBUTE_FACTS", "UPSERT_RAW_IDENTIFIER_FACTS", "CREATE_FACTS"}
    ]
    assert [(name, len(rows)) for name, rows in fact_writes] == [
        ("UPSERT_ATTRIBUTE_FACTS", 2),
        ("UPSERT_RAW_IDENTIFIER_FACTS", 1),
        ("CREATE_FACTS", 2),
        ("CREATE_FACTS", 1),
    ]
    raw = fact_writes[1][1][0]
    assert isinstance(raw["sealed"], bytes)  # a byte array property, not text
    assert raw["pii"] == ["EMAIL"]  # a list of strings
    assert isinstance(raw["at"], int)  # epoch milliseconds


def test_apply_refuses_a_fact_whose_anchor_node_does_not_exist() -> None:
    from identity.store.neo4j import Neo4jTransaction

    fake = _FakeTx({"n1"})  # n2 is missing
    with pytest.raises(StoreIntegrityError, match="identifier node that does not exist"):
        Neo4jTransaction(cast(Any, fake), batch_size=100).apply(ChangeSet(facts=_BATCH))


def test_fact_reads_map_records_back_to_facts() -> None:
    from identity.store.neo4j import Neo4jTransaction

    record: dict[str, object] = {
        "fact_id": "f1",
        "node_id": "n1",
        "kind": "attribute",
        "name": "city",
        "category": "location",
        "at": 1_767_225_600_000,
        "source": "web",
        "status": "quarantined",
        "sealed": b"\x00cipher",
        "pii": ["PERSON", "EMAIL_ADDRESS"],
    }
    fake = _FakeTx(set(), [record])
    tx = Neo4jTransaction(cast(Any, fake), batch_size=100)
    (fact,) = tx.facts_page(FactStatus.QUARANTINED, "", 10)
    assert fact == Fact(
        "f1",
        "n1",
        FactKind.ATTRIBUTE,
        "city",
        "location",
        T0,
        "web",
        FactStatus.QUARANTINED,
        b"\x00cipher",
        ("PERSON", "EMAIL_ADDRESS"),
    )
    query, params = fake.runs[-1]
    assert query == cypher.FACTS_PAGE
    assert params == {"status": "quarantined", "after_fact_id": "", "limit": 10}
    tx.person_facts("p1", (FactKind.EVENT, FactKind.ATTRIBUTE), FactStatus.ACTIVE)
    assert fake.runs[-1][1] == {
        "person_id": "p1",
        "kinds": ["attribute", "event"],
        "status": "active",
    }
    tx.node_facts(["n2", "n1", "n2"], FactKind.RAW_IDENTIFIER)
    assert fake.runs[-1][1] == {
        "node_ids": ["n1", "n2"],
        "kind": "raw_identifier",
        "status": "active",
    }


def test_set_fact_status_refuses_a_second_current_attribute_and_delete_counts_nodes() -> None:
    from identity.store.neo4j import Neo4jTransaction

    clashing = _FakeTx(set(), [{"changed": 1, "clashes": 1}])
    with pytest.raises(StoreIntegrityError, match="two current values"):
        Neo4jTransaction(cast(Any, clashing), 100).set_fact_status(["f1"], FactStatus.ACTIVE)
    # Quarantining cannot break "one current value", so there is no check.
    fine = _FakeTx(set(), [{"changed": 1, "clashes": 1}])
    quarantine = Neo4jTransaction(cast(Any, fine), 100).set_fact_status
    assert quarantine(["f1", "f1"], FactStatus.QUARANTINED) == 1
    assert [q for q, _ in fine.runs] == [cypher.SET_FACT_STATUS]
    # Deletes go out deduplicated, sorted and in batches; the counts of every batch add up
    # (the fake's summary counts 2 deletions per statement).
    deleting = _FakeTx(set())
    assert Neo4jTransaction(cast(Any, deleting), 2).delete_facts(["f3", "f1", "f2", "f1"]) == 4
    assert deleting.runs == [
        (cypher.DELETE_FACTS, {"fact_ids": ["f1", "f2"]}),
        (cypher.DELETE_FACTS, {"fact_ids": ["f3"]}),
    ]


# -- the Neo4j adapter's consents and member scans, offline -------------------------------------


def _consent_record(record_id: str, node: str, purpose: str, at_min: int) -> ConsentRecord:
    return ConsentRecord(
        record_id,
        node,
        purpose,
        purpose != "*",
        T0 + timedelta(minutes=at_min),
        T0 + timedelta(minutes=at_min, seconds=1),
        "cmp:x",
        ConsentSignal.TCF,
        "consent",
        "ab" * 32,
    )


class _ScriptedTx(_FakeTx):
    """A fake transaction that answers each statement (by constant) with its own records."""

    def __init__(self, answers: dict[str, list[dict[str, object]]]) -> None:
        super().__init__(set())
        self.answers = {getattr(cypher, name): records for name, records in answers.items()}

    def run(self, query: str, params: dict[str, object] | None = None) -> _FakeResult:
        self.runs.append((query, params or {}))
        return _FakeResult(self.answers.get(query, []))


def test_apply_appends_consents_after_merges_in_bounded_batches_as_typed_properties() -> None:
    from identity.store.neo4j import Neo4jTransaction

    records = tuple(_consent_record(f"c{n}", "n1", "marketing", n) for n in range(3))
    fake = _FakeTx({"n1"})
    changes = ChangeSet(merged={"p2": "p1"}, reassigned={"n1": "p3"}, consents=records)
    Neo4jTransaction(cast(Any, fake), batch_size=2).apply(changes)
    names = fake.names()
    assert names.index("CREATE_CONSENTS") > names.index("MOVE_IDENTIFIERS_OF_PERSONS")
    assert names.index("CREATE_CONSENTS") > names.index("REASSIGN_IDENTIFIERS")
    batches = [
        cast(list[dict[str, Any]], params["rows"])
        for name, (_, params) in zip(names, fake.runs, strict=True)
        if name == "CREATE_CONSENTS"
    ]
    assert [len(rows) for rows in batches] == [2, 1]
    row = batches[0][0]
    assert row == {
        "record_id": "c0",
        "node_id": "n1",
        "purpose": "marketing",
        "granted": True,  # a boolean property
        "at": int(T0.timestamp() * 1000),  # epoch milliseconds, like every time
        "recorded_at": int(T0.timestamp() * 1000) + 1000,
        "source": "cmp:x",
        "signal": "tcf",
        "lawful_basis": "consent",
        "proof": "ab" * 32,
    }


def test_apply_refuses_a_consent_whose_anchor_node_does_not_exist() -> None:
    from identity.store.neo4j import Neo4jTransaction

    fake = _FakeTx({"n1"})
    orphan = (_consent_record("c1", "n1", "marketing", 0), _consent_record("c2", "n9", "x", 0))
    with pytest.raises(StoreIntegrityError, match="consents name an identifier node"):
        Neo4jTransaction(cast(Any, fake), batch_size=100).apply(ChangeSet(consents=orphan))


def _consent_row(person: str, record: ConsentRecord) -> dict[str, object]:
    return {
        "person_id": person,
        "record_id": record.record_id,
        "node_id": record.node_id,
        "purpose": record.purpose,
        "granted": record.granted,
        "at": int(record.at.timestamp() * 1000),
        "recorded_at": int(record.recorded_at.timestamp() * 1000),
        "source": record.source,
        "signal": record.signal.value,
        "lawful_basis": record.lawful_basis,
        "proof": record.proof,
    }


def test_person_and_person_consents_map_records_back() -> None:
    from identity.store.neo4j import Neo4jTransaction

    record = _consent_record("c1", "n1", "*", 5)
    fake = _ScriptedTx(
        {
            "GET_PERSON": [{"person_id": "p1", "created_at": 1_767_225_600_000, "last_seen": 0}],
            "PERSONS_CONSENTS": [_consent_row("p1", record)],
        }
    )
    tx = Neo4jTransaction(cast(Any, fake), batch_size=100)
    person = tx.person("p1")
    assert person is not None
    assert (person.person_id, person.created_at) == ("p1", T0)
    assert tx.person_consents("p1", ["marketing", "analytics"]) == [record]
    assert fake.runs[-1] == (
        cypher.PERSONS_CONSENTS,
        {"person_ids": ["p1"], "purposes": ["*", "analytics", "marketing"]},
    )
    assert Neo4jTransaction(cast(Any, _ScriptedTx({})), 100).person("p9") is None


def test_member_page_passes_distinct_rules_and_reads_consents_and_attributes_per_chunk() -> None:
    from identity.store.neo4j import Neo4jTransaction

    consent = _consent_record("c1", "n1", "marketing", 1)
    attribute: dict[str, object] = {
        "person_id": "p2",
        "fact_id": "f1",
        "node_id": "n2",
        "kind": "attribute",
        "name": "city",
        "category": "location",
        "at": 1_767_225_600_000,
        "source": "web",
        "status": "active",
        "sealed": b"\x00cipher",
        "pii": [],
    }
    persons: list[dict[str, object]] = [
        {"person_id": p, "created_at": 1_767_225_600_000, "last_seen": 1_767_225_600_000}
        for p in ("p1", "p2", "p3")
    ]
    fake = _ScriptedTx(
        {
            "MEMBER_PAGE": persons,
            "PERSONS_CONSENTS": [_consent_row("p1", consent)],
            "MEMBER_ATTRIBUTES": [attribute],
        }
    )
    rule = EventCountRule("purchase", T0, 2)
    scan = MemberScan((rule, rule), ("city", "city"), ("marketing",))
    page = Neo4jTransaction(cast(Any, fake), batch_size=2).member_page(scan, "p0", 10)
    assert (page.scanned, page.last_person_id, page.excluded) == (3, "p3", {})
    rows = page.rows
    assert [r.person_id for r in rows] == ["p1", "p2", "p3"]
    # The fake answers both chunks (p1, p2 and p3) with the same rows: two copies each.
    assert rows[0].consents == (consent, consent)
    assert (rows[0].created_at, rows[0].last_seen) == (None, None)  # not asked for
    timed = MemberScan((rule,), person_times=True)
    again = _ScriptedTx({"MEMBER_PAGE": persons})
    row = Neo4jTransaction(cast(Any, again), batch_size=2).member_page(timed, "p0", 10).rows[0]
    assert (row.created_at, row.last_seen) == (T0, T0)
    assert [f.fact_id for f in rows[1].attributes] == ["f1", "f1"]
    assert rows[2].consents == ()
    assert rows[2].attributes == ()
    page_query, page_params = fake.runs[0]
    assert page_query == cypher.MEMBER_PAGE
    assert page_params == {
        "after_person_id": "p0",
        "rules": [{"name": "purchase", "since": int(T0.timestamp() * 1000), "min_count": 2}],
        "kind": "event",
        "status": "active",
        "limit": 10,
    }
    reads = [(q, p) for q, p in fake.runs[1:]]
    assert [q for q, _ in reads] == [
        cypher.PERSONS_CONSENTS,
        cypher.MEMBER_ATTRIBUTES,
        cypher.PERSONS_CONSENTS,
        cypher.MEMBER_ATTRIBUTES,
    ]
    assert reads[0][1] == {"person_ids": ["p1", "p2"], "purposes": ["*", "marketing"]}
    assert reads[3][1] == {
        "person_ids": ["p3"],
        "kind": "attribute",
        "status": "active",
        "names": ["city"],
    }


def test_member_page_without_attribute_names_or_matches_reads_no_more() -> None:
    from identity.store.neo4j import Neo4jTransaction

    empty = _ScriptedTx({})
    nothing = MemberScanPage((), 0, "", {})
    assert Neo4jTransaction(cast(Any, empty), 100).member_page(MemberScan(), "", 10) == nothing
    assert [q for q, _ in empty.runs] == [cypher.MEMBER_PAGE]
    assert Neo4jTransaction(cast(Any, empty), 100).member_page(MemberScan(), "", 0) == nothing
    assert len(empty.runs) == 1


def test_consent_statements_are_run_by_migrate_and_counted_and_wiped() -> None:
    assert cypher.CREATE_CONSENT_ID_CONSTRAINT in cypher.SCHEMA_STATEMENTS
    assert cypher.CREATE_CONSENT_PURPOSE_INDEX in cypher.SCHEMA_STATEMENTS
    assert "AS consents" in cypher.COUNT_ALL
    assert "Consent" in cypher.WIPE_ALL
    assert cypher.SCHEMA_VERSION >= 2
