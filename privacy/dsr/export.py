"""Access and portability exports (GDPR Art. 15 and 20): everything held about the subject.

For each person the subject's identities resolve to, the export holds:

* **identifiers**: every identifier of the person by type, with the normalized value for types
  whose value is kept (``keep_raw`` in ``identity.yaml``: decrypted from the vault) and, for the
  others, the note that only a keyed hash is held (there is no value to give back: that is the
  point of hashing);
* **attributes** and **events** (decrypted from the vault), quarantined ones included and marked;
* the **consent history** (every record, oldest first);
* **processing** (Art. 15(1)(a), (c)): every use of the person's data — profile reads, audience
  pages, ad-platform (hashed identifier) exports and model-feature reads — with time, purpose,
  lawful basis, action and recipient (API key consumer), from the audit log: entries carrying the
  person's :func:`~privacy.auditing.log.person_ref` *and* page entries listing it in
  ``details.refs``;
  the purposes with their description and lawful basis;
* **categories** (Art. 15(1)(b)) of the data held, with how many items each and **retention**
  (Art. 15(1)(d)): how long each category is kept, from ``purposes.yaml``;
* **sources** (Art. 15(1)(g)): the source of every identifier (the sources of its links) and of
  every fact;
* **profiling** (Art. 15(1)(h)): the audiences (segments) the person was a member of and the
  feature sets (per purpose) the person's attributes were exported in; no decision with legal
  effect is automated by this service;
* the **consent history** with the proof digest of each original signal (the signal itself is
  not kept: the digest lets the subject match a copy of it).

Portability (Art. 20) covers only data the subject *provided* or that was *observed* about them:
identifiers, attributes, events and consent decisions. Uses, recipients, categories, retention and
profiling are the controller's records about the processing, not the subject's data, so a
portability export leaves them out (``scope: portability``).

JSON is the machine-readable format; CSV carries the same content, one row per item (a section
column says which). Pure functions over already-loaded data plus :func:`collect`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from identity.model import Cluster, ConsentRecord, Fact, FactKind, FactStatus, PersonRecord
from identity.policy import IdentityPolicy
from identity.store.port import GraphStore, GraphTransaction
from privacy.access.purposes import PurposesPolicy
from privacy.auditing.log import MAX_ENTRIES_LIMIT, AuditEntry, AuditLog
from privacy.keys.vault import TamperedCiphertextError, Vault

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
    # decrypt_readable: a shredded key gives None in the same single pass (it used to fail the
    # whole batch and send every value through the one-at-a-time loop below). A vault that
    # cannot be read at all (VaultUnavailableError) is not "no longer readable": it raises, and
    # the request is retried later rather than completed with every value reported gone.
    try:
        return vault.decrypt_readable(items), [False] * len(items)
    except TamperedCiphertextError:
        pass
    opened: list[bytes | None] = []
    tampered: list[bool] = []
    for item in items:  # one at a time, so one altered value does not hide the others
        try:
            opened.append(vault.decrypt_readable([item])[0])
            tampered.append(False)
        except TamperedCiphertextError:  # includes TamperedDataKeyError
            opened.append(None)
            tampered.append(True)
    return opened, tampered


def _uses(audit: AuditLog, person_id: str) -> list[AuditEntry]:
    """The audit entries that record a use (an allowed read) of the person's data: entries about
    the person and page entries (audiences, exports, features) that list the person."""
    reference = audit.person_ref(person_id)
    found: list[AuditEntry] = []
    after = 0
    while batch := audit.mentioning(reference, after_seq=after, limit=MAX_ENTRIES_LIMIT):
        found.extend(
            e
            for e in batch
            if e.purpose is not None
            and e.decision == "allow"
            and not e.action.startswith(_NOT_A_USE)
        )
        after = batch[-1].seq
    return found


@dataclass(frozen=True, slots=True)
class ExportPolicy:
    """What an export says about purposes and retention, from the policy files."""

    purposes: PurposesPolicy
    unread_retention_days: int
    portability: bool = False

    def retention_days(self) -> dict[str, int]:
        """Per category the longest ``retention_days`` any purpose gives it (the sweeper's rule,
        :func:`privacy.dsr.retention.rules_from_policies`)."""
        longest: dict[str, int] = {}
        for purpose in self.purposes.purposes.values():
            for category, access in purpose.categories.items():
                longest[category] = max(longest.get(category, 0), access.retention_days)
        return longest

    def purpose_entry(self, purpose_id: str) -> dict[str, Any]:
        """A purpose with its description and lawful basis."""
        purpose = self.purposes.get(purpose_id)
        return {
            "purpose": purpose_id,
            "description": purpose.description if purpose else None,
            "lawful_basis": purpose.lawful_basis.value if purpose else None,
        }


_PROFILING_ACTIONS = {"read.audience": "audience", "read.export": "audience"}


def person_document(
    data: PersonData,
    vault: Vault,
    policy: IdentityPolicy,
    uses: Sequence[AuditEntry],
    recipient_name: Callable[[str], str],
    export_policy: ExportPolicy,
) -> dict[str, Any]:
    """The export section of one person (plain JSON types)."""
    raw_plain, raw_tampered = _open_all(vault, data.raw_identifiers)
    raw_values = dict(zip((f.node_id for f in data.raw_identifiers), raw_plain, strict=True))
    tampered_nodes = {
        f.node_id for f, bad in zip(data.raw_identifiers, raw_tampered, strict=True) if bad
    }
    fact_plain, fact_tampered = _open_all(vault, data.facts)
    identifiers = []
    link_sources: dict[str, set[str]] = {}
    for link in data.cluster.links:
        for end in (link.a, link.b):
            link_sources.setdefault(end, set()).add(link.source)
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
                # Where it came from: the sources that linked it (a lone identifier has no link:
                # its facts' sources say where it was seen).
                "sources": sorted(link_sources.get(node.node_id, set())),
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
            "original_signal": "not kept; proof_sha256 is the SHA-256 of it",
        }
        for c in data.consents
    ]
    base = {
        "person_id": data.person.person_id,
        "integrity": {"tampered_values": len(tampered_nodes) + sum(fact_tampered)},
        "created_at": _iso(data.person.created_at),
        "last_seen": _iso(data.person.last_seen),
        "identifiers": identifiers,
        "attributes": attributes,
        "events": events,
        "consents": consents,
    }
    if export_policy.portability:
        return base
    return {**base, **_processing(data, uses, recipient_name, export_policy, attributes, events)}


def _processing(
    data: PersonData,
    uses: Sequence[AuditEntry],
    recipient_name: Callable[[str], str],
    export_policy: ExportPolicy,
    attributes: Sequence[Mapping[str, Any]],
    events: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The Art. 15(1)(a)-(h) sections: processing, categories, retention, profiling."""
    used_purposes = sorted({e.purpose for e in uses if e.purpose is not None})
    recipients: dict[str, set[str]] = {}
    for e in uses:
        recipients.setdefault(recipient_name(e.actor), set()).add(e.purpose or "")
    retention = export_policy.retention_days()
    held: dict[str, int] = {}
    for item in (*attributes, *events):
        held[item["category"]] = held.get(item["category"], 0) + 1
    if data.raw_identifiers or data.cluster.nodes:
        held["identifiers"] = len(data.cluster.nodes)
    categories = [
        {
            "category": name,
            "items": count,
            "retention": (
                "kept as long as the person is active (no purpose-bound limit)"
                if name == "identifiers"
                else f"{retention[name]} days after it was recorded (the longest any purpose "
                "may read it), then deleted"
                if name in retention
                else f"read by no purpose: deleted {export_policy.unread_retention_days} days "
                "after it was recorded"
            ),
            "retention_days": retention.get(name) if name != "identifiers" else None,
        }
        for name, count in sorted(held.items())
    ]
    segments = sorted(
        {str(e.details.get("audience")) for e in uses if e.action in _PROFILING_ACTIONS} - {"None"}
    )
    feature_sets = []
    for purpose_id in sorted(
        {e.purpose for e in uses if e.action == "read.features" and e.purpose}
    ):
        purpose = export_policy.purposes.get(purpose_id)
        feature_sets.append(
            {"purpose": purpose_id, "features": list(purpose.features) if purpose else []}
        )
    return {
        "categories": categories,
        "processing": {
            "purposes": [export_policy.purpose_entry(p) for p in used_purposes],
            "recipients": [
                {"recipient": name, "purposes": sorted(p for p in purposes if p)}
                for name, purposes in sorted(recipients.items())
            ],
            "uses": [
                {
                    "at": _iso(e.at),
                    "purpose": e.purpose,
                    "lawful_basis": export_policy.purpose_entry(e.purpose or "")["lawful_basis"],
                    "action": e.action,
                    "recipient": recipient_name(e.actor),
                    "audience": e.details.get("audience"),
                }
                for e in uses
            ],
        },
        "profiling": {
            "segments": segments,
            "feature_sets": feature_sets,
            "automated_decisions": "none with legal or similarly significant effect are made "
            "by this service (Art. 22)",
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
    export_policy: ExportPolicy,
) -> list[dict[str, Any]]:
    """The export sections of ``person_ids`` (persons that no longer exist are skipped)."""
    documents = []
    for person_id in sorted(set(person_ids)):
        data = graph.read(lambda tx, pid=person_id: load_person(tx, pid, purposes))  # type: ignore[misc]
        if data is None:
            continue
        documents.append(
            person_document(
                data, vault, policy, _uses(audit, person_id), recipient_name, export_policy
            )
        )
    return documents


PORTABILITY_SCOPE = (
    "portability (Art. 20): the data you provided or that was observed about you (identifiers, "
    "attributes, events, consent decisions); records of how it was processed are in an access "
    "export (Art. 15)"
)
ACCESS_SCOPE = "access (Art. 15): your data and how it was processed"


def export_document(
    request_id: str,
    generated_at: datetime,
    persons: Sequence[Mapping[str, Any]],
    identities: Sequence[Mapping[str, Any]] = (),
    portability: bool = False,
) -> dict[str, Any]:
    """The whole export (JSON). ``identities`` says which subject identity (by its position in
    the request and its type) led to which person (``None``: not found)."""
    return {
        "format": EXPORT_FORMAT,
        "request_id": request_id,
        "generated_at": _iso(generated_at),
        "scope": PORTABILITY_SCOPE if portability else ACCESS_SCOPE,
        "identities": [dict(i) for i in identities],
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
        "uses": sum(len(p["processing"]["uses"]) for p in persons if "processing" in p),
    }


def _cell(value: object) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    # CSV injection: a cell starting with a formula character runs as a formula in spreadsheets.
    return "'" + text if text.startswith(_FORMULA_START) else text


def _csv_row(pid: str, section: str, item: Mapping[str, Any], name: str, value: str) -> list[str]:
    """One CSV row: ``name`` and ``value`` keys in their columns, the rest as JSON in detail."""
    rest = {k: v for k, v in item.items() if k not in (name, value, "category", "at")}
    return [
        pid,
        section,
        _cell(item.get(name)),
        _cell(item.get(value)),
        _cell(item.get("category")),
        _cell(item.get("at")),
        _cell(rest) if rest else "",
    ]


def _person_rows(person: Mapping[str, Any]) -> Iterator[list[str]]:
    """Every CSV row of one person's section, in the JSON's order."""
    pid = person["person_id"]
    for key in ("created_at", "last_seen", "integrity"):
        yield [pid, "person", key, _cell(person[key]), "", "", ""]
    sections: list[tuple[str, Any, str, str]] = [
        ("identifier", person["identifiers"], "type", "value"),
        ("attribute", person["attributes"], "name", "value"),
        ("event", person["events"], "name", "properties"),
        ("consent", person["consents"], "purpose", "granted"),
        ("category", person.get("categories", ()), "category", "items"),
    ]
    processing = person.get("processing")
    if processing is not None:
        sections += [
            ("purpose", processing["purposes"], "purpose", "lawful_basis"),
            ("recipient", processing["recipients"], "recipient", "purposes"),
            ("use", processing["uses"], "purpose", "recipient"),
        ]
    profiling = person.get("profiling")
    if profiling is not None:
        segments = [{"segment": s} for s in profiling["segments"]]
        sections += [
            ("segment", segments, "segment", ""),
            ("feature_set", profiling["feature_sets"], "purpose", "features"),
        ]
    for section, items, name, value in sections:
        for item in items:
            yield _csv_row(pid, section, item, name, value)
    if profiling is not None:
        note = _cell(profiling["automated_decisions"])
        yield [pid, "automated_decisions", "", note, "", "", ""]


def to_csv(document: Mapping[str, Any]) -> str:
    """The export as CSV with the JSON's content: one row per item of every section.

    Columns: ``person_id, section, name, value, category, at, detail``; ``detail`` holds the
    item's remaining fields as canonical JSON, so nothing of the JSON document is dropped.
    """
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(_CSV_COLUMNS)
    for key in ("format", "request_id", "generated_at", "scope"):
        writer.writerow(["", "document", key, _cell(document.get(key)), "", "", ""])
    for identity in document.get("identities", ()):
        writer.writerow(
            _csv_row(identity.get("person_id") or "", "identity", identity, "type", "index")
        )
    for person in document["persons"]:
        writer.writerows(_person_rows(person))
    return buffer.getvalue()
