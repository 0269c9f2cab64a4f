"""Access and portability exports (GDPR Art. 15 and 20): everything held about the subject.

For each person the subject's identities resolve to, the export holds:

* **identifiers**: every identifier of the person by type, with the normalized value for types
  whose value is kept (``keep_raw`` in ``identity.yaml``: decrypted from the vault) and, for the
  others, the note that only a keyed hash is held (there is no value to give back: that is the
  point of hashing);
* **attributes** and **events** (decrypted from the vault), quarantined ones included and marked;
* the **consent history** (every record, oldest first);
* **processing**: the purposes the person's data was read for and the recipients (API key
  consumers) that read it, from the audit log (entries carrying the person's
  :func:`~privacy.audit.person_ref`).

JSON is the machine-readable format (portability); CSV flattens the same document into one row per
item. Pure functions over already-loaded data plus :func:`collect`, which reads the stores.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from identity.model import Cluster, ConsentRecord, Fact, FactKind, FactStatus, PersonRecord
from identity.policy import IdentityPolicy
from identity.store.port import GraphStore, GraphTransaction
from privacy.audit import MAX_ENTRIES_LIMIT, AuditEntry, AuditLog
from privacy.vault import TamperedCiphertextError, Vault, VaultError

EXPORT_FORMAT = "idgraph-dsr-export/1"
HELD_AS_TAMPERED = "encrypted value (failed its integrity check: altered at rest)"
HELD_AS_HASH = "keyed hash only (the value is not stored and cannot be returned)"
# Audit actions that record changes to the person rather than uses of its data.
_NOT_A_USE = ("consent.", "dsr.", "retention.", "erasure.")
_CSV_COLUMNS = ("person_id", "section", "name", "value", "category", "at", "detail")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True, slots=True)
class PersonData:
    """What the graph store holds about one person, still sealed."""

    person: PersonRecord
    cluster: Cluster
    raw_identifiers: tuple[Fact, ...]
    facts: tuple[Fact, ...]
    consents: tuple[ConsentRecord, ...]


def load_person(
    tx: GraphTransaction, person_id: str, purposes: Collection[str]
) -> PersonData | None:
    """Everything the store holds about ``person_id`` in one read transaction."""
    person = tx.person(person_id)
    if person is None:
        return None
    cluster = tx.cluster(person_id)
    kinds = (FactKind.ATTRIBUTE, FactKind.EVENT)
    facts = [
        *tx.person_facts(person_id, kinds, FactStatus.ACTIVE),
        *tx.person_facts(person_id, kinds, FactStatus.QUARANTINED),
    ]
    raws = tx.node_facts([n.node_id for n in cluster.nodes], FactKind.RAW_IDENTIFIER)
    consents = tx.person_consents(person_id, purposes)
    return PersonData(person, cluster, tuple(raws), tuple(facts), tuple(consents))


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _open_all(vault: Vault, facts: Sequence[Fact]) -> tuple[list[bytes | None], list[bool]]:
    """Decrypt every fact: the plaintexts (``None`` where unreadable) and, per fact, whether it
    failed *authentication*.

    A value whose data key was shredded is "no longer readable", an expected state. A value or
    wrapped key that fails its AES-GCM tag was altered (or moved to another owner): that is
    tampering, and it is reported as such (in the export and, by the caller, in the audit log),
    never folded into "no longer readable".
    """
    items = [(f.node_id, f.seal_field, f.sealed) for f in facts]
    try:
        return list(vault.decrypt_many(items)), [False] * len(items)
    except VaultError:
        pass
    opened: list[bytes | None] = []
    tampered: list[bool] = []
    for item in items:  # one at a time, so one unreadable value does not hide the others
        try:
            opened.append(vault.decrypt_many([item])[0])
            tampered.append(False)
        except TamperedCiphertextError:  # includes TamperedDataKeyError
            opened.append(None)
            tampered.append(True)
        except VaultError:
            opened.append(None)
            tampered.append(False)
    return opened, tampered


def _uses(audit: AuditLog, person_id: str) -> list[AuditEntry]:
    """The audit entries that record a use (an allowed read) of the person's data."""
    reference = audit.person_ref(person_id)
    found: list[AuditEntry] = []
    after = 0
    while batch := audit.entries(person_id=reference, after_seq=after, limit=MAX_ENTRIES_LIMIT):
        found.extend(
            e
            for e in batch
            if e.purpose is not None
            and e.decision == "allow"
            and not e.action.startswith(_NOT_A_USE)
        )
        after = batch[-1].seq
    return found


def person_document(
    data: PersonData,
    vault: Vault,
    policy: IdentityPolicy,
    uses: Sequence[AuditEntry],
    recipient_name: Callable[[str], str],
) -> dict[str, Any]:
    """The export section of one person (plain JSON types)."""
    raw_plain, raw_tampered = _open_all(vault, data.raw_identifiers)
    raw_values = dict(zip((f.node_id for f in data.raw_identifiers), raw_plain, strict=True))
    tampered_nodes = {
        f.node_id for f, bad in zip(data.raw_identifiers, raw_tampered, strict=True) if bad
    }
    fact_plain, fact_tampered = _open_all(vault, data.facts)
    identifiers = []
    for node in sorted(data.cluster.nodes, key=lambda n: (n.hashed.type, n.first_seen)):
        kept = (
            policy.types[node.hashed.type].keep_raw if node.hashed.type in policy.types else False
        )
        raw = raw_values.get(node.node_id)
        identifiers.append(
            {
                "type": node.hashed.type,
                "value": raw.decode() if raw is not None else None,
                "held_as": "encrypted value"
                if raw is not None
                else (
                    HELD_AS_TAMPERED
                    if node.node_id in tampered_nodes
                    else ("encrypted value (no longer readable)" if kept else HELD_AS_HASH)
                ),
                "first_seen": _iso(node.first_seen),
                "last_seen": _iso(node.last_seen),
            }
        )
    attributes, events = [], []
    for fact, plain, bad in zip(data.facts, fact_plain, fact_tampered, strict=True):
        value: Any = json.loads(plain) if plain is not None else None
        item: dict[str, Any] = {
            "name": fact.name,
            "category": fact.category,
            "at": _iso(fact.at),
            "source": fact.source,
            "status": fact.status.value,
        }
        if bad:
            item["integrity"] = "tampered"
        if fact.kind is FactKind.EVENT:
            item["properties"] = value.get("properties", {}) if isinstance(value, dict) else None
            events.append(item)
        else:
            item["value"] = value
            attributes.append(item)
    consents = [
        {
            "purpose": c.purpose,
            "granted": c.granted,
            "at": _iso(c.at),
            "recorded_at": _iso(c.recorded_at),
            "source": c.source,
            "signal": c.signal.value,
            "lawful_basis": c.lawful_basis,
            "proof_sha256": c.proof,
        }
        for c in data.consents
    ]
    recipients = sorted({recipient_name(e.actor) for e in uses})
    return {
        "person_id": data.person.person_id,
        # Values that failed authentication (altered at rest): reported, never hidden.
        "integrity": {"tampered_values": len(tampered_nodes) + sum(fact_tampered)},
        "created_at": _iso(data.person.created_at),
        "last_seen": _iso(data.person.last_seen),
        "identifiers": identifiers,
        "attributes": attributes,
        "events": events,
        "consents": consents,
        "processing": {
            "purposes": sorted({e.purpose for e in uses if e.purpose is not None}),
            "recipients": recipients,
            "uses": [
                {
                    "at": _iso(e.at),
                    "purpose": e.purpose,
                    "action": e.action,
                    "recipient": recipient_name(e.actor),
                }
                for e in uses
            ],
        },
    }


def collect(
    graph: GraphStore,
    vault: Vault,
    audit: AuditLog,
    policy: IdentityPolicy,
    purposes: Collection[str],
    person_ids: Iterable[str],
    recipient_name: Callable[[str], str],
) -> list[dict[str, Any]]:
    """The export sections of ``person_ids`` (persons that no longer exist are skipped)."""
    documents = []
    for person_id in sorted(set(person_ids)):
        data = graph.read(lambda tx, pid=person_id: load_person(tx, pid, purposes))  # type: ignore[misc]
        if data is None:
            continue
        documents.append(
            person_document(data, vault, policy, _uses(audit, person_id), recipient_name)
        )
    return documents


def export_document(
    request_id: str, generated_at: datetime, persons: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The whole export (JSON), with a summary of what it holds."""
    return {
        "format": EXPORT_FORMAT,
        "request_id": request_id,
        "generated_at": _iso(generated_at),
        "persons": list(persons),
    }


def counts(persons: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """How many items of each kind an export holds (the request's result summary)."""
    return {
        "persons": len(persons),
        "identifiers": sum(len(p["identifiers"]) for p in persons),
        "attributes": sum(len(p["attributes"]) for p in persons),
        "events": sum(len(p["events"]) for p in persons),
        "consents": sum(len(p["consents"]) for p in persons),
        "uses": sum(len(p["processing"]["uses"]) for p in persons),
    }


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    # CSV injection: a cell starting with a formula character runs as a formula in spreadsheets.
    return "'" + text if text.startswith(_FORMULA_START) else text


def to_csv(document: Mapping[str, Any]) -> str:
    """The export as CSV: one row per identifier, attribute, event, consent and use."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for person in document["persons"]:
        pid = person["person_id"]
        for i in person["identifiers"]:
            writer.writerow(
                [pid, "identifier", i["type"], _cell(i["value"]), "", i["first_seen"], i["held_as"]]
            )
        for a in person["attributes"]:
            writer.writerow(
                [
                    pid,
                    "attribute",
                    a["name"],
                    _cell(a["value"]),
                    a["category"],
                    a["at"],
                    a["status"],
                ]
            )
        for e in person["events"]:
            writer.writerow(
                [
                    pid,
                    "event",
                    e["name"],
                    _cell(e["properties"]),
                    e["category"],
                    e["at"],
                    e["status"],
                ]
            )
        for c in person["consents"]:
            writer.writerow(
                [
                    pid,
                    "consent",
                    c["purpose"],
                    "granted" if c["granted"] else "denied",
                    "",
                    c["at"],
                    f"{c['signal']} via {_cell(c['source'])}",
                ]
            )
        for u in person["processing"]["uses"]:
            writer.writerow(
                [pid, "use", u["purpose"], _cell(u["recipient"]), "", u["at"], u["action"]]
            )
    return buffer.getvalue()
