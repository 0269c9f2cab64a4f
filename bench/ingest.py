"""Bulk-ingest benchmark: the real ``idgraph ingest`` path beside a floor measured in the same run.

Usage (from the repository root)::

    .venv/bin/python bench/ingest.py                      # --scale small: 5k persons, 20k ids
    .venv/bin/python bench/ingest.py --scale 1m           # 250k persons, 1,000,000 identifiers
    .venv/bin/python bench/ingest.py --identifiers 400 --json /tmp/bench.json
    .venv/bin/python bench/ingest.py --attributes 5       # + 5 traits per person, PII scan cost

The parent process generates one deterministic JSONL file (not timed), then runs each mode in its
own subprocess so that peak RSS is per mode:

* ``floor``: ``json.loads`` per line, HMAC-SHA256 of ``type:value`` with the same key, and an
  ``executemany`` INSERT into an indexed SQLite table (WAL, same ``synchronous``, one transaction
  per ``--batch-size`` events). The generated values are already normalized, so the floor skips
  normalization without hashing anything different from the real path. With ``--attributes``,
  every trait value is also AES-256-GCM encrypted (one key, random nonce) and inserted into an
  indexed facts table in the same transaction.
* ``real-noscan`` (only with ``--attributes``): the real path with ``Settings(pii_scan=False)``
  (``IDGRAPH_PII_SCAN=false``): everything but the PII scanner.
* ``real``: :func:`services.bulk.ingest_file` with the ingest service from
  :func:`bootstrap.container.build_container`,
  the code path of ``idgraph ingest FILE`` (PII scan on,
  the default).

With ``--store neo4j`` (``NEO4J_URI``/``NEO4J_USER``/``NEO4J_PASSWORD`` of a Neo4j you may wipe,
e.g. ``python3 tools/neo4j_local.py run -- .venv/bin/python bench/ingest.py --store neo4j``) both
modes write to that Neo4j instead, wiped first: ``floor`` reads and hashes the same way and
writes every identifier with ``UNWIND $rows AS row MERGE (:Identifier {type, key_id, digest})``
under the same uniqueness constraint, through the official driver, one transaction per batch;
``real`` is ``idgraph ingest`` on the Neo4j store.

See ``bench/README.md`` for what every figure means. The script exits 1 if a real run rejected
a row or did not store every trait as an active fact (the generator makes only valid rows and
clean values), and 2 if a mode failed.
"""

from __future__ import annotations

import argparse
import base64
import gc
import hashlib
import hmac
import itertools
import json
import os
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make the repository importable
    sys.path.insert(0, str(ROOT))

from bench.measure import load_average, measured, peak_rss_kib  # noqa: E402 - after the path set-up
from storage.sqlite import (  # noqa: E402 - pragmas only: stdlib + errors
    GRAPH_CACHE_MIB,
    Synchronous,
    configure_graph_connection,
    insert_rows,
    run_with_rows,
)

SCALES = {"small": 20_000, "1m": 1_000_000}
IDENTIFIERS_PER_PERSON = 4
KEY_FILE = "hash-keys.json"
DATA_FILE = "events.jsonl"
SOURCE = "bench"
GOAL_RATIO = 0.50
GOAL_SAME_WORK_RATIO = 0.80  # issue 14: real >= 80 % of the same-work floor's throughput
GOAL_REAL_RSS_MIB = 512
# Committed batches per young-generation collection (services.bulk.BATCHES_PER_COLLECTION).
BATCHES_PER_COLLECTION = 4
# Issue 16: ingest with the PII scan on keeps at least 90 % of the throughput without it.
GOAL_SCAN_RATIO = 0.90

# Which persons get a second event (deterministic, disjoint: 25 * k + 7 is never 100 * m + 42).
# Split persons arrive as two events that create two persons, and a later "bridge" event naming
# one identifier of each merges them. Conflict persons get a later event naming their email and
# the cookie of another (complete) person: linking would give one person two customer_ids, so
# the cookie is refused. Together about 5 % of persons appear in a second event.
SPLIT_EVERY, SPLIT_AT = 25, 7
CONFLICT_EVERY, CONFLICT_AT = 100, 42
MAX_DELAY_PERSONS = 1500  # a second event comes up to this many persons later (often a later batch)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
EMAIL_DOMAINS = ("bench-mail.de", "post.idgraph.dev", "mail.idgraph-bench.net", "inbox.bench.io")
GIVEN_NAMES = ("ann", "ben", "chloe", "dev", "emil", "fatma", "gus", "hana", "ivo", "jun")

# --attributes K: the first K of these traits (all declared in policies/categories.yaml) ride on
# each person's first event. favourite_category comes first so that any K >= 1 carries the
# phone numbers that exercise the redaction path; K = 5 adds city, age_band, interests and
# visit_count (strings, a string list and an integer).
ATTRIBUTE_ORDER = (
    "favourite_category",  # behavioural, string (redact)
    "city",  # location, string (redact)
    "age_band",  # demographic, string (reject)
    "interests",  # interests, string_list (redact)
    "visit_count",  # behavioural, integer
    "last_purchase_at",  # behavioural, datetime (an RFC 3339 string, scanned like any string)
    "lifetime_value",  # financial, number
    "newsletter_engagement",  # behavioural, string (redact)
)
# About 1 % of persons (disjoint from the split and conflict persons) have a favourite_category
# with a phone number in it: behavioural -> on_pii: redact, so the value is stored redacted.
PII_EVERY, PII_AT = 100, 77
CET = timezone(timedelta(hours=1), "CET")
PURCHASE_WINDOW_SECONDS = 180 * 86_400
# Clean marketing values: the PII scanner finds nothing in any of them.
# fmt: off
CITIES = (
    "Aachen", "Aarhus", "Alicante", "Amsterdam", "Antwerp", "Athens", "Augsburg", "Barcelona",
    "Bari", "Basel", "Bergamo", "Berlin", "Bern", "Bielefeld", "Bilbao", "Birmingham", "Bochum",
    "Bologna", "Bonn", "Bordeaux", "Bratislava", "Bremen", "Brest", "Brighton", "Brno", "Bruges",
    "Brussels", "Bucharest", "Budapest", "Bydgoszcz", "Cadiz", "Cagliari", "Cardiff", "Catania",
    "Charleroi", "Chemnitz", "Cluj-Napoca", "Coimbra", "Cologne", "Constanta", "Copenhagen",
    "Cordoba", "Cork", "Craiova", "Debrecen", "Dijon", "Dortmund", "Dresden", "Dublin",
    "Duisburg", "Dusseldorf", "Edinburgh", "Eindhoven", "Erfurt", "Essen", "Espoo", "Faro",
    "Florence", "Frankfurt", "Freiburg", "Galway", "Gdansk", "Gdynia", "Geneva", "Genoa", "Ghent",
    "Gijon", "Glasgow", "Gothenburg", "Granada", "Graz", "Grenoble", "Groningen", "Haarlem",
    "Halle", "Hamburg", "Hannover", "Heidelberg", "Helsinki", "Innsbruck", "Kaunas", "Karlsruhe",
    "Kassel", "Katowice", "Kiel", "Klagenfurt", "Kosice", "Krakow", "Larnaca", "Le Havre",
    "Leeds", "Leipzig", "Leuven", "Liege", "Lille", "Limassol", "Limerick", "Linz", "Lisbon",
    "Liverpool", "Ljubljana", "Lodz", "Lubeck", "Lublin", "Lugano", "Luxembourg", "Lyon",
    "Maastricht", "Madrid", "Magdeburg", "Mainz", "Malaga", "Malmo", "Manchester", "Mannheim",
    "Maribor", "Marseille", "Milan", "Montpellier", "Munich", "Munster", "Murcia", "Nantes",
    "Naples", "Nice", "Nicosia", "Nijmegen", "Nuremberg", "Odense", "Oldenburg", "Olomouc",
    "Oporto", "Oslo", "Osnabruck", "Ostrava", "Oulu", "Oviedo", "Padua", "Palermo", "Palma",
    "Pamplona", "Paris", "Parma", "Patras", "Pecs", "Perugia", "Pisa", "Plovdiv", "Plzen",
    "Porto", "Potsdam", "Poznan", "Prague", "Reims", "Rennes", "Regensburg", "Riga", "Rijeka",
    "Rome", "Rostock", "Rotterdam", "Rouen", "Saarbrucken", "Salamanca", "Salzburg",
    "San Sebastian", "Santander", "Seville", "Sibiu", "Siena", "Sofia", "Split", "Stockholm",
    "Strasbourg", "Stuttgart", "Szczecin", "Szeged", "Tallinn", "Tampere", "Tartu",
    "Thessaloniki", "Timisoara", "Toulouse", "Tours", "Trieste", "Trondheim", "Turin", "Turku",
    "Uppsala", "Utrecht", "Valencia", "Valladolid", "Valletta", "Varna", "Venice", "Verona",
    "Vienna", "Vigo", "Vilnius", "Warsaw", "Wiesbaden", "Wroclaw", "Wuppertal", "Zagreb",
    "Zaragoza", "Zurich", "Zwolle",
)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
CATEGORIES = (
    "running shoes", "trail running", "yoga mats", "cycling apparel", "road bikes", "camping gear",
    "hiking boots", "swimwear", "tennis rackets", "fitness trackers", "smartphones", "laptops",
    "headphones", "smart home", "cameras", "gaming consoles", "board games", "books",
    "e-readers", "vinyl records", "kitchenware", "coffee machines", "cookware", "tableware",
    "garden tools", "outdoor furniture", "lighting", "bedding", "bath towels", "rugs",
    "home office", "stationery", "toys", "baby care", "pet food", "pet accessories", "skincare",
    "fragrances", "haircare", "watches", "jewellery", "handbags", "sunglasses", "denim",
    "knitwear", "outerwear", "sneakers", "formal shoes", "wine", "specialty tea",
)
INTERESTS = (
    "running", "cycling", "hiking", "yoga", "swimming", "tennis", "football", "skiing",
    "climbing", "sailing", "photography", "cooking", "baking", "gardening", "travel",
    "city breaks", "camping", "reading", "podcasts", "film", "music", "concerts", "gaming",
    "board games", "technology", "design", "fashion", "beauty", "fitness", "wellness",
    "home decor", "diy", "pets", "wine", "coffee", "craft beer", "art", "theatre",
    "sustainability", "cars",
)
ENGAGEMENT = ("highly engaged", "engaged", "occasional", "dormant", "unsubscribed")
# fmt: on

# The floor's table: what storing one keyed hash minimally costs (digest, type, key id, indexed
# like the real `identifiers` table).
FLOOR_SCHEMA = """
CREATE TABLE IF NOT EXISTS identifiers (
    id     INTEGER PRIMARY KEY,
    type   TEXT NOT NULL,
    key_id TEXT NOT NULL,
    digest BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS identifiers_by_digest ON identifiers(digest, type, key_id);
CREATE TABLE IF NOT EXISTS facts (
    id     INTEGER PRIMARY KEY,
    anchor BLOB NOT NULL,
    name   TEXT NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS facts_by_anchor ON facts(anchor, name);
"""
FLOOR_INSERT = "INSERT OR IGNORE INTO identifiers (type, key_id, digest) VALUES (?, ?, ?)"
# The floor's facts table: the anchor identifier's digest, the attribute name and the sealed
# value (nonce + AES-256-GCM ciphertext and tag), indexed by anchor and name like `facts_by_node`.
FLOOR_FACT_INSERT = "INSERT INTO facts (anchor, name, sealed) VALUES (?, ?, ?)"
NONCE_BYTES = 12


# -- data generation ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Person:
    """The four identifiers of one synthetic person, already in normalized form."""

    customer_id: str
    email: str
    phone: str
    cookie_id: str


@dataclass(slots=True)
class DataSummary:
    """What the generator wrote and what the graph should look like after ingesting it."""

    persons: int = 0
    events: int = 0
    identifier_values: int = 0
    split_persons: int = 0
    conflict_events: int = 0
    attribute_names: tuple[str, ...] = ()  # the K traits on each person's first event
    attribute_values: int = 0  # traits written (one fact each; a list is one value)
    string_values: int = 0  # strings among them, list items counted one by one: what is scanned
    distinct_string_values: int = 0  # distinct such strings: what the scan cache really scans
    phone_values: int = 0  # favourite_category values holding a phone number (to be redacted)

    @property
    def distinct_identifiers(self) -> int:
        """Every person has four identifiers; second events only repeat known ones."""
        return self.persons * IDENTIFIERS_PER_PERSON

    def expected_stats(self) -> dict[str, int]:
        """Store counts a correct engine ends with.

        Each person is linked as a star of three links (one event of four identifiers, or two
        events of two plus a bridge); a conflict event links nothing and records one refusal.
        """
        return {
            "persons": self.persons,
            "identifiers": self.distinct_identifiers,
            "links": 3 * self.persons,
            "refusals": self.conflict_events,
        }

    def expected_facts(self) -> dict[str, int]:
        """Fact counts a correct ingest reports: every trait stored as an active fact."""
        return {"stored": self.attribute_values, "quarantined": 0}

    def expected_outcomes(self) -> dict[str, int]:
        """Event outcomes a correct engine reports."""
        return {
            "created": self.persons + self.split_persons,
            "merged": self.split_persons,
            "unchanged": self.conflict_events,
        }


def make_person(index: int, rng: random.Random) -> Person:
    """A person whose values are valid and already normalized (normalizing is the identity)."""
    name = GIVEN_NAMES[index % len(GIVEN_NAMES)]
    domain = EMAIL_DOMAINS[(index // len(GIVEN_NAMES)) % len(EMAIL_DOMAINS)]
    # German mobile numbers +49 151 xxxxxxxx are valid for libphonenumber. 7919 is coprime with
    # 10**8, so index -> 7919 * index + c (mod 10**8) is a permutation: unique, not sequential.
    subscriber = (7919 * index + 12_345) % 10**8
    return Person(
        customer_id=f"C{index:09d}",
        email=f"{name}.p{index:07d}@{domain}",
        phone=f"+49151{subscriber:08d}",
        cookie_id=f"ck-{index:08x}-{rng.getrandbits(64):016x}",
    )


def make_traits(index: int, names: tuple[str, ...], rng: random.Random) -> dict[str, Any]:
    """The traits ``names`` of person ``index``: clean values, except ~1 % phone numbers."""
    traits: dict[str, Any] = {}
    for name in names:
        if name == "favourite_category":
            value = rng.choice(CATEGORIES)
            if index % PII_EVERY == PII_AT:
                # A valid German mobile number, different for each person (104729 is coprime
                # with 10**8); presidio finds "+49 151 xxxxxxxx" after "call me" as PHONE_NUMBER.
                subscriber = (104_729 * index + 2_468) % 10**8
                value = f"{value} (call me +49 151 {subscriber:08d})"
            traits[name] = value
        elif name == "city":
            traits[name] = rng.choice(CITIES)
        elif name == "age_band":
            traits[name] = rng.choice(AGE_BANDS)
        elif name == "interests":
            traits[name] = rng.sample(INTERESTS, rng.randint(1, 3))
        elif name == "visit_count":
            traits[name] = 1 + int(rng.expovariate(1 / 12))
        elif name == "last_purchase_at":
            when = T0 - timedelta(seconds=rng.randrange(PURCHASE_WINDOW_SECONDS))
            traits[name] = when.astimezone(CET).isoformat()  # 2025-12-14T17:03:22+01:00
        elif name == "lifetime_value":
            traits[name] = round(rng.lognormvariate(5, 1), 2)
        elif name == "newsletter_engagement":
            traits[name] = rng.choice(ENGAGEMENT)
        else:  # pragma: no cover - ATTRIBUTE_ORDER and this function change together
            raise ValueError(f"no generator for attribute {name!r}")
    return traits


def _event(pairs: list[tuple[str, str]], at: datetime, traits: dict[str, Any] | None = None) -> str:
    event: dict[str, Any] = {
        "identifiers": [{"type": t, "value": v} for t, v in pairs],
        "source": SOURCE,
        "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if traits:
        event["traits"] = traits
    return json.dumps(event, separators=(",", ":"))


def generate_events(
    persons: int, seed: int, summary: DataSummary, attributes: int = 0
) -> Iterator[str]:
    """JSONL lines for ``persons`` synthetic persons, second events interleaved later.

    With ``attributes`` K > 0, each person's first event also carries the first K traits of
    :data:`ATTRIBUTE_ORDER`. They come from a second random generator, so the identifiers (and
    the second events) are the same for every K.
    """
    rng = random.Random(seed)
    trait_rng = random.Random(f"{seed}-attributes")
    names = ATTRIBUTE_ORDER[:attributes]
    distinct: set[str] = set()
    pending: dict[int, list[list[tuple[str, str]]]] = {}  # emit after person -> events
    complete: list[Person] = []  # persons already written in one event (conflict partners)
    summary.persons = persons
    summary.attribute_names = names

    def emit(pairs: list[tuple[str, str]], at: datetime) -> str:
        summary.events += 1
        summary.identifier_values += len(pairs)
        return _event(pairs, at)

    def emit_first(pairs: list[tuple[str, str]], at: datetime, index: int) -> str:
        if not names:
            return emit(pairs, at)
        traits = make_traits(index, names, trait_rng)
        summary.events += 1
        summary.identifier_values += len(pairs)
        summary.attribute_values += len(traits)
        for value in traits.values():
            strings = (
                value if isinstance(value, list) else [value] if isinstance(value, str) else []
            )
            summary.string_values += len(strings)
            distinct.update(strings)
        if index % PII_EVERY == PII_AT and "favourite_category" in traits:
            summary.phone_values += 1
        summary.distinct_string_values = len(distinct)
        return _event(pairs, at, traits)

    for index in range(persons):
        at = T0 + timedelta(seconds=index)
        person = make_person(index, rng)
        due = index + rng.randint(1, MAX_DELAY_PERSONS)
        if index % SPLIT_EVERY == SPLIT_AT:
            summary.split_persons += 1
            yield emit_first(
                [("customer_id", person.customer_id), ("email", person.email)], at, index
            )
            yield emit([("phone", person.phone), ("cookie_id", person.cookie_id)], at)
            pending.setdefault(due, []).append(
                [("email", person.email), ("cookie_id", person.cookie_id)]
            )
        else:
            yield emit_first(
                [
                    ("customer_id", person.customer_id),
                    ("email", person.email),
                    ("phone", person.phone),
                    ("cookie_id", person.cookie_id),
                ],
                at,
                index,
            )
            if index % CONFLICT_EVERY == CONFLICT_AT and complete:
                other = complete[-1 - rng.randrange(min(len(complete), 1000))]
                summary.conflict_events += 1
                pending.setdefault(due, []).append(
                    [("email", person.email), ("cookie_id", other.cookie_id)]
                )
            complete.append(person)
            if len(complete) > 2000:  # only recent partners are drawn; keep memory flat
                del complete[:1000]
        for pairs in pending.pop(index, ()):
            yield emit(pairs, at)
    last = T0 + timedelta(seconds=persons)
    for due in sorted(pending):
        for pairs in pending[due]:
            yield emit(pairs, last)


def write_data(path: Path, persons: int, seed: int, attributes: int = 0) -> DataSummary:
    """Write the JSONL file; returns what it holds."""
    summary = DataSummary()
    with path.open("w", encoding="utf-8") as handle:
        for line in generate_events(persons, seed, summary, attributes):
            handle.write(line + "\n")
    return summary


def create_key(work: Path) -> Path:
    """One hash key for both modes (the same key file the real path reads)."""
    from privacy.keys.hash_keys import create_key_file

    path = work / KEY_FILE
    if not path.exists():
        create_key_file(path, origin="generated")
    return path


# -- the modes (each runs in its own process) -----------------------------------------------------


def _primary_key(key_file: Path) -> tuple[str, bytes]:
    # Parsed with the stdlib so the floor process does not import idgraph (its RSS stays a floor).
    doc = json.loads(key_file.read_text(encoding="utf-8"))
    entry = next(k for k in doc["keys"] if k["id"] == doc["primary"])
    secret = entry["secret"]
    return entry["id"], base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))


def _neo4j_env() -> tuple[str, str, str]:
    uri = os.environ.get("NEO4J_URI")
    if not uri:
        raise SystemExit("bench: --store neo4j needs NEO4J_URI and NEO4J_PASSWORD")
    return uri, os.environ.get("NEO4J_USER", "neo4j"), os.environ.get("NEO4J_PASSWORD", "")


def _wipe_neo4j() -> None:
    """Empty the Neo4j graph (idgraph's labels); the schema stays."""
    from identity.store.neo4j import Neo4jGraphStore

    uri, user, password = _neo4j_env()
    store = Neo4jGraphStore(uri, user, password)
    try:
        store.wipe_for_tests()
    finally:
        store.close()


NEO4J_FLOOR_MERGE = """
UNWIND $rows AS row
MERGE (:Identifier {type: row.type, key_id: row.key_id, digest: row.digest})
"""


def run_neo4j_floor(data: Path, work: Path, batch_size: int) -> dict[str, Any]:
    """Read and hash every identifier value and MERGE it into Neo4j, one transaction per batch:
    the least an ingest into Neo4j must do (no persons, links or resolution)."""
    from neo4j import GraphDatabase  # noqa: TID251 - the floor talks to Neo4j directly

    uri, user, password = _neo4j_env()
    _wipe_neo4j()  # also creates the schema, the identifier uniqueness constraint included
    key_id, secret = _primary_key(work / KEY_FILE)
    keyed = hmac.new(secret, digestmod=hashlib.sha256)
    identifiers = events = 0
    rows: list[dict[str, str]] = []
    with GraphDatabase.driver(uri, auth=(user, password)) as driver, driver.session() as session:

        def flush() -> None:
            batch = list(rows)
            session.execute_write(lambda tx: tx.run(NEO4J_FLOOR_MERGE, rows=batch).consume())
            rows.clear()

        with measured() as span, data.open("rb") as handle:
            for raw in handle:
                event = json.loads(raw)
                for item in event["identifiers"]:
                    mac = keyed.copy()
                    mac.update(f"{item['type']}:{item['value']}".encode())
                    rows.append({"type": item["type"], "key_id": key_id, "digest": mac.hexdigest()})
                events += 1
                if events % batch_size == 0:
                    identifiers += len(rows)
                    flush()
            if rows:
                identifiers += len(rows)
                flush()
        stored = session.run("MATCH (i:Identifier) RETURN count(i) AS n").single(strict=True)["n"]
    return {
        "mode": "floor",
        "events": events,
        "identifiers": identifiers,
        "attribute_values": 0,
        **span.as_json(),
        "peak_rss_kib": peak_rss_kib(),
        "stored_identifiers": stored,
        "stored_facts": 0,
    }


def run_floor(data: Path, work: Path, batch_size: int, synchronous: Synchronous) -> dict[str, Any]:
    """Read, hash and insert every identifier value, encrypt and insert every trait value: the
    least any ingest must do."""
    key_id, secret = _primary_key(work / KEY_FILE)
    # The same pre-keyed-and-copied HMAC as identity.hashing.Keyring.hash, the fastest stdlib way.
    keyed = hmac.new(secret, digestmod=hashlib.sha256)
    aead: Any = None  # AESGCM, imported at the first trait: without traits the floor is stdlib only
    db = work / "floor" / "floor.sqlite3"
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    # The store's own pragmas and page cache (WAL, synchronous, secure_delete, 64 MiB): a floor
    # on SQLite's default 2 MiB cache would be slower than the store's setting and flatter it.
    configure_graph_connection(conn, synchronous, 10_000, GRAPH_CACHE_MIB, RuntimeError)
    conn.executescript(FLOOR_SCHEMA)

    def flush(
        rows: list[tuple[str, str, bytes]], fact_rows: list[tuple[bytes, str, bytes]]
    ) -> None:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(FLOOR_INSERT, rows)
        if fact_rows:
            conn.executemany(FLOOR_FACT_INSERT, fact_rows)
        conn.execute("COMMIT")
        rows.clear()
        fact_rows.clear()
        between_batches()

    identifiers = attribute_values = events = 0
    rows: list[tuple[str, str, bytes]] = []
    fact_rows: list[tuple[bytes, str, bytes]] = []
    with (
        measured() as span,
        _collector_between_batches() as between_batches,
        data.open("rb") as handle,
    ):
        for raw in handle:
            event = json.loads(raw)
            first = len(rows)
            for item in event["identifiers"]:
                mac = keyed.copy()
                mac.update(f"{item['type']}:{item['value']}".encode())
                rows.append((item["type"], key_id, mac.digest()))
            traits = event.get("traits")
            if traits:
                if aead is None:
                    aead = _floor_cipher()
                anchor = rows[first][2]  # the event's first identifier, as the real hub
                nonces = os.urandom(NONCE_BYTES * len(traits))
                for position, (name, value) in enumerate(traits.items()):
                    nonce = nonces[position * NONCE_BYTES : (position + 1) * NONCE_BYTES]
                    plain = json.dumps(value, separators=(",", ":")).encode()
                    fact_rows.append((anchor, name, nonce + aead.encrypt(nonce, plain, None)))
            events += 1
            if events % batch_size == 0:
                identifiers += len(rows)
                attribute_values += len(fact_rows)
                flush(rows, fact_rows)
        if rows or fact_rows:
            identifiers += len(rows)
            attribute_values += len(fact_rows)
            flush(rows, fact_rows)
        _final_checkpoint(conn)
    stored = conn.execute("SELECT count(*) FROM identifiers").fetchone()[0]
    stored_facts = conn.execute("SELECT count(*) FROM facts").fetchone()[0]
    conn.close()
    return {
        "mode": "floor",
        "events": events,
        "identifiers": identifiers,
        "attribute_values": attribute_values,
        **span.as_json(),
        "peak_rss_kib": peak_rss_kib(),
        "stored_identifiers": stored,
        "stored_facts": stored_facts,
    }


SAME_WORK_CHUNK = 500  # bound parameters per IN list of the key file, as the vault's statements
# The graph's batch lookups (identifiers, suppression list, message ids) bind as many digests per
# IN list as the store's own (storage.sqlite.WIDE_PARAMS).
SAME_WORK_LOOKUP = 16_384
DEK_CACHE = 10_000  # the vault's default DEK cache (privacy.keys.vault.Vault cache_size)
VALUE_AAD = b"idgraph-vault/1\x00"
DEK_AAD = b"idgraph-vault-dek/1\x00"


def _in_chunks(items: list[Any], size: int = SAME_WORK_CHUNK) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _SameWork:
    """The work an ingest of this file must do, done as leanly as the real schema allows.

    Per batch of events, on the store's real DDL and pragmas (and the vault key file's):

    * **normalization** of every identifier with the identity policy's own normalizers (the
      hashed form is the normalized one: an ingest cannot skip it);
    * **message ids**: every row's id derived as the bulk path derives it for a row without one
      (line + sha256 of the row), keyed and scoped to the source, looked up in and recorded into
      ``seen_messages`` in the graph transaction (the idempotency of issue 13);
    * **lookups**: every keyed digest of the batch in ``identifiers`` and in ``suppressed``
      (``IN`` lists as wide as the store's, :data:`SAME_WORK_LOOKUP`), the data keys of
      existing fact anchors not in the DEK cache, and
      (as the vault does) the shred references of new key owners in ``shredded_refs`` once the
      key file has shredded anything (before that, one single-row read per batch);
    * **persons**: one per event that names no known identifier; an event that names several
      persons merges them into the first (identifiers moved, the others deleted);
    * **identifiers**, **links** (a star from the event's first identifier, upserted), last-seen
      updates of the known identifiers and persons the batch touched;
    * **audience state**: the store's triggers keep the per-person event counters and consent
      state current on every write (the floor's graph has them, as the store's does);
    * **sealed raw values** of the ``keep_raw`` types and every trait, AES-256-GCM under the
      anchor's own data key (AAD bound to owner and field), as ``facts`` rows;
    * **keys** as the store makes them (graph schema 7): integer internal keys allocated in
      order, random person ids, time-ordered node and fact ids (the store's own generators);
    * **data keys**: 32 random bytes per new owner, wrapped (AES-256-GCM) under the KEK, stored
      in the vault key file and committed before the graph transaction that stores ciphertext
      under them.

    Written in the store's own statement forms: multi-row ``INSERT``s and set-based
    ``UPDATE ... FROM (VALUES ...)`` (:func:`storage.sqlite.insert_rows`, ``run_with_rows``), as
    the store's bulk writes are, so that the floor pays no per-row statement overhead the real
    path does not pay either (until stop 46 it used ``executemany``: the facts insert alone cost
    ~8.5 s CPU at 1M identifiers against the real path's ~3 s for the same rows).

    Left out, because they are decisions rather than work: the priority order, the per-type
    limits and blocked values (the refusal logic), and the PII scan. The generator's conflict
    events are therefore merged here instead of refused (one merge per ~100 persons).
    """

    def __init__(self, work: Path, synchronous: Synchronous) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        from identity.policy import load_identity_policy
        from identity.store import sqlite_audience
        from identity.store.sqlite import _SCHEMA as GRAPH_SCHEMA
        from privacy.keys.vault_sqlite import _SCHEMA as VAULT_SCHEMA
        from storage.sqlite import GRAPH_CACHE_MIB, configure_graph_connection

        self._aesgcm = AESGCM
        policy = load_identity_policy(ROOT / "policies" / "identity.yaml")
        self.policy = policy
        self.keep_raw = {name for name, rules in policy.types.items() if rules.keep_raw}
        self.key_id, secret = _primary_key(work / KEY_FILE)
        self.keyed = hmac.new(secret, digestmod=hashlib.sha256)
        self.kek = AESGCM(AESGCM.generate_key(bit_length=256))
        self.shred_mac = hmac.new(os.urandom(32), digestmod=hashlib.sha256)
        self.message_mac = hmac.new(os.urandom(32), digestmod=hashlib.sha256)
        folder = work / "same-work"
        folder.mkdir(parents=True, exist_ok=True)
        self.graph = sqlite3.connect(folder / "graph.sqlite3", isolation_level=None)
        configure_graph_connection(self.graph, synchronous, 10_000, GRAPH_CACHE_MIB, RuntimeError)
        self.graph.executescript(GRAPH_SCHEMA)
        # The audience state's tables and triggers are part of the store's DDL (installed after
        # the schema on every open): the counters, current consent and records a write keeps
        # current are work every ingest does, so the floor's writes fire the same triggers.
        self.graph.execute("BEGIN")
        sqlite_audience.install(self.graph)
        self.graph.execute("COMMIT")
        self.vault = sqlite3.connect(folder / "vault-keys.sqlite3", isolation_level=None)
        self.vault.execute("PRAGMA journal_mode=WAL")
        self.vault.execute("PRAGMA synchronous=FULL")  # as the real key file: keys before data
        self.vault.execute("PRAGMA secure_delete=ON")
        self.vault.executescript(VAULT_SCHEMA)
        # owner -> AESGCM, least recently used first: an OrderedDict like the vault's cache
        # (evicting from the front of a plain dict rescans its deleted slots every time).
        self.deks: OrderedDict[str, Any] = OrderedDict()

    def _next(self, table: str) -> int:
        row = self.graph.execute(f"SELECT max(pk) FROM {table}").fetchone()
        return 1 if row[0] is None else int(row[0]) + 1

    def _lookup(
        self, keys: list[tuple[str, bytes]]
    ) -> dict[tuple[str, bytes], tuple[str, int, int]]:
        """(type, digest) -> (node id, node key, person key) of the known identifiers."""
        digests = sorted({digest for _, digest in keys})
        found: dict[tuple[str, bytes], tuple[str, int, int]] = {}
        for chunk in _in_chunks(digests, SAME_WORK_LOOKUP):
            marks = ",".join("?" * len(chunk))
            for row in self.graph.execute(
                f"SELECT digest FROM suppressed WHERE digest IN ({marks})",
                chunk,
            ):
                raise RuntimeError(f"suppressed digest in bench data: {row}")
            for digest, kind, node, node_key, person in self.graph.execute(
                f"SELECT digest, type, node_id, pk, person FROM identifiers "
                f"WHERE digest IN ({marks}) AND key_id = ?",
                [*chunk, self.key_id],
            ):
                found[(kind, digest)] = (node, node_key, person)
        return found

    def _ciphers(self, owners: set[str], new_owners: set[str], now: int) -> dict[str, Any]:
        ciphers = {o: self.deks[o] for o in owners if o in self.deks}
        unknown = sorted(owners - ciphers.keys() - new_owners)
        for chunk in _in_chunks(unknown):
            marks = ",".join("?" * len(chunk))
            for owner, wrapped in self.vault.execute(
                f"SELECT owner, wrapped FROM data_keys WHERE owner IN ({marks})",
                chunk,
            ):
                dek = self.kek.decrypt(
                    wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], DEK_AAD + owner.encode()
                )
                ciphers[owner] = self._aesgcm(dek)
        missing = sorted((owners - ciphers.keys()) | (new_owners & owners))
        if missing:
            rows = []
            # The batch's data keys and wrap nonces in one draw each, as the vault draws them
            # (stop 46: one getrandom per key and per nonce cost the floor ~4 s more kernel CPU
            # than the real path at 1M, which flattered the real path's ratio).
            pool = os.urandom(32 * len(missing))
            nonces = os.urandom(NONCE_BYTES * len(missing))
            for index, owner in enumerate(missing):
                dek = pool[index * 32 : (index + 1) * 32]
                nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
                wrapped = nonce + self.kek.encrypt(nonce, dek, DEK_AAD + owner.encode())
                rows.append((owner, "kek-1", wrapped, now))
                ciphers[owner] = self._aesgcm(dek)
            self.vault.execute("BEGIN IMMEDIATE")
            # As the vault's insert_new: the per-owner shred references are computed and
            # probed only in a key file that has shredded something (checked in the insert's
            # own transaction). The bench's key file never has, so this is one single-row read.
            if self.vault.execute("SELECT 1 FROM shredded_refs LIMIT 1").fetchone():
                refs = []
                for owner in missing:
                    mac = self.shred_mac.copy()
                    mac.update(owner.encode())
                    refs.append(mac.hexdigest())
                for chunk in _in_chunks(refs):
                    marks = ",".join("?" * len(chunk))
                    if self.vault.execute(
                        f"SELECT ref FROM shredded_refs WHERE ref IN ({marks})",
                        chunk,
                    ).fetchone():
                        raise RuntimeError("a shredded owner in bench data")
            insert_rows(
                self.vault, "INSERT INTO data_keys (owner, kek_id, wrapped, created_at)", rows
            )
            self.vault.execute("COMMIT")  # keys durable before any ciphertext under them
        for owner, cipher in ciphers.items():
            self.deks[owner] = cipher
            self.deks.move_to_end(owner)
        while len(self.deks) > DEK_CACHE:
            self.deks.popitem(last=False)
        return ciphers

    def _messages(self, events: list[dict[str, Any]], first_line: int) -> list[tuple[bytes, int]]:
        """The rows' message ids as the bulk path derives and records them (line + sha256 of
        the row, keyed digest scoped to the source), looked up in ``seen_messages``."""
        digests = []
        for offset, event in enumerate(events):
            canonical = json.dumps(event, sort_keys=True, separators=(",", ":"))
            message_id = (
                f"bulk:{first_line + offset}:{hashlib.sha256(canonical.encode()).hexdigest()}"
            )
            source = event["source"].encode()
            mac = self.message_mac.copy()
            mac.update(len(source).to_bytes(4, "big") + source + message_id.encode())
            digests.append(mac.digest()[:16])
        for chunk in _in_chunks(digests, SAME_WORK_LOOKUP):
            marks = ",".join("?" * len(chunk))
            for row in self.graph.execute(
                f"SELECT digest FROM seen_messages WHERE digest IN ({marks})", chunk
            ):
                raise RuntimeError(f"a repeated message in bench data: {row}")
        now = int(time.time() * 1000)
        return [(digest, now) for digest in digests]

    def batch(self, events: list[dict[str, Any]], first_line: int = 1) -> tuple[int, int]:  # noqa: PLR0912, PLR0915 - one linear batch
        """Ingest ``events`` (the file's lines from ``first_line`` on) in one graph transaction;
        returns (identifiers, attribute values)."""
        from identity.model import new_fact_id, new_node_id, new_person_id

        messages = self._messages(events, first_line)
        hashed: list[list[tuple[str, bytes, str]]] = []
        for event in events:
            items = []
            region = event.get("region")
            for item in event["identifiers"]:
                # Normalized as ingest must (lower-cased emails, E.164 phones, ...) before hashing.
                value = self.policy.normalize(item["type"], item["value"], region).value
                mac = self.keyed.copy()
                mac.update(f"{item['type']}:{value}".encode())
                items.append((item["type"], mac.digest(), value))
            hashed.append(items)
        found = self._lookup([(t, d) for items in hashed for t, d, _ in items])
        node_of = {key: node for key, (node, _, _) in found.items()}
        key_of = {node: node_key for node, node_key, _ in found.values()}
        person_of = {node: person for node, _, person in found.values()}
        parent: dict[int, int] = {}

        def root(person: int) -> int:
            while person in parent:
                person = parent[person]
            return person

        next_person, next_node = self._next("persons"), self._next("identifiers")
        new_persons: dict[int, list[Any]] = {}  # person key -> [person id, created, last seen]
        seen: dict[int, int] = {}  # existing person key -> last seen
        new_nodes: dict[tuple[str, bytes], tuple[str, int, int, int]] = {}
        touched: dict[int, int] = {}
        links: dict[tuple[int, int, str], list[int]] = {}
        pending: list[tuple[str, str, bytes, str, str, int, str]] = []  # owner, field, plain, ...
        new_owners: set[str] = set()
        values = attributes = 0
        for event, items in zip(events, hashed, strict=True):
            at = int(datetime.fromisoformat(event["timestamp"]).timestamp() * 1000)
            source = event["source"]
            persons: list[int] = []
            for kind, digest, _ in items:
                key = (kind, digest)
                node = node_of.get(key)
                if node is not None:
                    person = root(person_of[node])
                    if person not in persons:
                        persons.append(person)
            if persons:
                person = persons[0]
                for other in persons[1:]:
                    parent[other] = person
            else:
                person, next_person = next_person, next_person + 1
                new_persons[person] = [new_person_id(), at, at]
            if person in new_persons:
                new_persons[person][2] = max(new_persons[person][2], at)
            else:
                seen[person] = max(seen.get(person, at), at)
            nodes = []
            for kind, digest, value in items:
                key = (kind, digest)
                node = node_of.get(key)
                if node is None:
                    node = new_node_id()
                    node_of[key] = node
                    key_of[node], next_node = next_node, next_node + 1
                    person_of[node] = person
                    new_nodes[key] = (node, key_of[node], person, at)
                    if kind in self.keep_raw:
                        new_owners.add(node)
                        pending.append(
                            (
                                node,
                                f"identifier:{kind}",
                                value.encode(),
                                "raw_identifier",
                                kind,
                                at,
                                source,
                            )
                        )
                elif key not in new_nodes:
                    touched[key_of[node]] = max(touched.get(key_of[node], at), at)
                nodes.append(node)
            values += len(items)
            hub = nodes[0]
            for member in nodes[1:]:
                low, high = (hub, member) if hub < member else (member, hub)
                span = links.setdefault((key_of[low], key_of[high], source), [at, at])
                span[0], span[1] = min(span[0], at), max(span[1], at)
            for name, value in (event.get("traits") or {}).items():
                plain = json.dumps(value, separators=(",", ":")).encode()
                pending.append((hub, f"attribute:{name}", plain, "attribute", name, at, source))
                attributes += 1
        now = int(time.time())
        fact_rows = []
        if pending:
            ciphers = self._ciphers({p[0] for p in pending}, new_owners, now)
            nonces = os.urandom(NONCE_BYTES * len(pending))
            next_fact = self._next("facts")
            for index, (owner, field, plain, kind, name, at, source) in enumerate(pending):
                nonce = nonces[index * NONCE_BYTES : (index + 1) * NONCE_BYTES]
                aad = VALUE_AAD + owner.encode() + b"\x00" + field.encode()
                sealed = b"\x01" + nonce + ciphers[owner].encrypt(nonce, plain, aad)
                category = "identifier" if kind == "raw_identifier" else "behavioural"
                fact_rows.append(
                    (
                        next_fact + index,
                        new_fact_id(),
                        key_of[owner],
                        kind,
                        name,
                        category,
                        at,
                        source,
                        "active",
                        sealed,
                        "",
                    )
                )
        merged = {person: root(person) for person in parent}
        g = self.graph
        g.execute("BEGIN IMMEDIATE")
        # Every write in the store's own statement form (identity.store.sqlite's apply): rows
        # inserted by multi-row INSERTs (storage.sqlite.insert_rows) and updates applied
        # set-based (run_with_rows), not one executemany step per row. The rows are the same;
        # executemany cost the facts insert alone ~2.8x the real path's CPU for the same 500k
        # facts at 1M identifiers (stop 45), which flattered the ratio.
        insert_rows(
            g,
            "INSERT INTO persons (pk, person_id, created_at, last_seen)",
            [(p, pid, c, s) for p, (pid, c, s) in new_persons.items() if p not in merged],
        )
        insert_rows(
            g,
            "INSERT INTO identifiers (pk, node_id, type, key_id, digest, person, first_seen, "
            "last_seen)",
            [
                (node_key, node, kind, self.key_id, digest, root(person), at, at)
                for (kind, digest), (node, node_key, person, at) in new_nodes.items()
            ],
        )
        run_with_rows(
            g,
            "UPDATE identifiers SET last_seen = max(last_seen, v.column2) FROM (VALUES {rows}) "
            "AS v WHERE identifiers.pk = v.column1",
            list(touched.items()),
        )
        absorbed = [
            (survivor, person) for person, survivor in merged.items() if person not in new_persons
        ]
        # Every survivor is a root: the moves do not depend on their order (as the store's).
        run_with_rows(
            g,
            "UPDATE identifiers SET person = v.column1 FROM (VALUES {rows}) AS v "
            "WHERE identifiers.person = v.column2",
            absorbed,
        )
        for chunk in _in_chunks([p for _, p in absorbed], SAME_WORK_LOOKUP):
            marks = ",".join("?" * len(chunk))
            g.execute(f"DELETE FROM persons WHERE pk IN ({marks})", chunk)
        run_with_rows(
            g,
            "UPDATE persons SET last_seen = max(last_seen, v.column2) FROM (VALUES {rows}) "
            "AS v WHERE persons.pk = v.column1",
            [(p, at) for p, at in seen.items() if p not in merged],
        )
        insert_rows(
            g,
            "INSERT INTO links (a, b, source, first_at, last_at)",
            [(a, b, source, f, last) for (a, b, source), (f, last) in links.items()],
            "ON CONFLICT (a, b, source) DO UPDATE SET "
            "first_at = min(first_at, excluded.first_at), last_at = max(last_at, excluded.last_at)",
        )
        insert_rows(
            g,
            "INSERT INTO facts (pk, fact_id, node, kind, name, category, at, source, status, "
            "sealed, pii)",
            fact_rows,
        )
        insert_rows(g, "INSERT INTO seen_messages (digest, seen_at)", messages)
        g.execute("COMMIT")
        return values, attributes

    def counts(self) -> dict[str, int]:
        """Row counts of the graph tables the floor wrote."""
        return {
            table: self.graph.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            for table in ("persons", "identifiers", "links", "facts", "seen_messages")
        }

    def close(self) -> None:
        """Close both files."""
        self.graph.close()
        self.vault.close()


@contextmanager
def _collector_between_batches() -> Iterator[Callable[[], None]]:
    """The garbage-collection policy of ``idgraph ingest`` (``services.bulk`` runs
    ``collected_every(BATCHES_PER_COLLECTION)``), for the floors: no automatic collection while
    the file is read, the young generation collected after every ``BATCHES_PER_COLLECTION``-th
    committed batch (the yielded callable is called after each; the same 4 as
    ``services.bulk.BATCHES_PER_COLLECTION``, ``tests/bench`` checks they agree).

    Every mode runs under the same policy, so the ratios compare the work done, not the
    collector's setting: a floor left on the default setting paid up to 15 % of its CPU for
    collections that free nothing (bulk objects form no cycles), which the real path does not
    pay. A copy rather than an import: the floor process imports nothing of idgraph.
    """
    enabled = gc.isenabled()
    gc.disable()
    committed = itertools.count(1)

    def between_batches() -> None:
        if enabled and next(committed) % BATCHES_PER_COLLECTION == 0:
            gc.collect(0)

    try:
        yield between_batches
    finally:
        if enabled:
            gc.enable()


def _final_checkpoint(conn: sqlite3.Connection) -> None:
    """Fold the WAL into the database file inside the measured span (every SQLite mode does).

    The graph store checkpoints per 64 MiB of WAL, so the last part of a run would otherwise be
    checkpointed only when the file is closed, outside the span, and its writes not counted."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def run_same_work(
    data: Path, work: Path, batch_size: int, synchronous: Synchronous
) -> dict[str, Any]:
    """The same-work floor (see :class:`_SameWork`), one transaction per ``batch_size`` events."""
    floor = _SameWork(work, synchronous)
    identifiers = attribute_values = events = 0
    pending: list[dict[str, Any]] = []
    with (
        measured() as span,
        _collector_between_batches() as between_batches,
        data.open("rb") as handle,
    ):
        for raw in handle:
            pending.append(json.loads(raw))
            events += 1
            if len(pending) == batch_size:
                done, traits = floor.batch(pending, events - len(pending) + 1)
                identifiers, attribute_values = identifiers + done, attribute_values + traits
                pending = []
                between_batches()
        if pending:
            done, traits = floor.batch(pending, events - len(pending) + 1)
            identifiers, attribute_values = identifiers + done, attribute_values + traits
            pending = []
            between_batches()
        _final_checkpoint(floor.graph)
    peak_kib = peak_rss_kib()  # the ingest's own peak, before the counts (as in run_real)
    stored = floor.counts()
    floor.close()
    return {
        "mode": "same-work",
        "events": events,
        "identifiers": identifiers,
        "attribute_values": attribute_values,
        **span.as_json(),
        "peak_rss_kib": peak_kib,
        "stored": stored,
    }


def _floor_cipher() -> Any:
    """AES-256-GCM with one random key for every value (the vault uses one key per identifier)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return AESGCM(AESGCM.generate_key(bit_length=256))


def ner_policy_dir(work: Path) -> Path:
    """The shipped policies with ``scanner.ner: true``, as a deployment turning the model on
    writes them: LOCATION and ORGANIZATION allowed where cities and brands belong."""
    import shutil

    import yaml

    target = work / "policies-ner"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(ROOT / "policies", target)
    path = target / "categories.yaml"
    policy = yaml.safe_load(path.read_text(encoding="utf-8"))
    policy["scanner"]["ner"] = True
    for name in ("contact", "location", "behavioural", "interests"):
        category = policy["categories"][name]
        allowed = category.get("allowed_pii", [])
        category["allowed_pii"] = [
            *allowed,
            *(t for t in ("LOCATION", "ORGANIZATION") if t not in allowed),
        ]
    path.write_text(yaml.safe_dump(policy, sort_keys=False), encoding="utf-8")
    return target


def run_real(
    data: Path,
    work: Path,
    batch_size: int,
    synchronous: str,
    *,
    scan: bool = True,
    store: str = "sqlite",
    ner: bool = False,
) -> dict[str, Any]:
    """``idgraph ingest FILE``'s code path: build_container + services.bulk.ingest_file.

    ``scan=False`` is ``IDGRAPH_PII_SCAN=false``: no scanner is built, nothing is scanned.
    """
    from bootstrap.container import build_container
    from bootstrap.settings import Settings
    from identity.store.sqlite import SqliteGraphStore
    from services.bulk import ingest_file

    mode = "real" if scan else "real-noscan"
    graph: dict[str, Any] = {}
    if store == "neo4j":
        _wipe_neo4j()
        uri, user, password = _neo4j_env()
        graph = {"store_url": uri, "neo4j_user": user, "neo4j_password": password}
    settings = Settings(
        env="test",
        data_dir=work / mode,
        # explicit, so an IDGRAPH_STORE_URL in the environment cannot redirect it
        store_url=graph.pop("store_url", None),
        **graph,
        hash_keys=None,
        hash_key_file=work / KEY_FILE,
        policy_dir=ner_policy_dir(work) if ner else ROOT / "policies",
        sqlite_synchronous=synchronous,
        pii_scan=scan,
    )
    container = build_container(settings, scanner_on_demand=True)  # as `idgraph ingest`
    # What start-up built leaves the collector's reach in both modes: build_scanner freezes it
    # (gc.freeze) once the scanner is built, and without the same here the scan-on/off ratio
    # would credit the scan with the collector's savings on everything else.
    gc.collect()
    gc.freeze()
    try:
        # By thread too: the reader (MainThread) and the writer (bulk-commit_0) apart, so a run
        # whose CPU moved says which thread's work moved (stop 50: 78-98 s for the same work).
        # children: the file's reader process (services.bulk_reader) is part of the real path;
        # its CPU counts with this process's (its peak RSS: below).
        with measured(threads=True, children=True) as span:
            report = ingest_file(container.ingest, data, actor="bench", batch_size=batch_size)
            if isinstance(container.store, SqliteGraphStore):
                container.store.checkpoint()  # counted, as in the floors: see _final_checkpoint
        # The ingest's own peak, taken before the counts: the store reads them through its read
        # map (storage/sqlite.py, GRAPH_READ_MMAP_BYTES), and the mapped pages of a 1M graph
        # (~400 MiB of file cache, reclaimable) would otherwise count as the ingest's RSS.
        # Plus the reader process's own peak (services.bulk_reader), which it reports: the two
        # ran side by side, so their peaks are added, an upper bound of what they held together.
        # Not getrusage(RUSAGE_CHILDREN): for a child started by fork+exec it counts this
        # process's resident set at the fork too (~180 MiB here, stop 52).
        peak_kib = peak_rss_kib(report.reader_peak_rss_kib)
        stats = container.store.stats()
    finally:
        container.close()
    identifiers, attribute_values = _count_values(data)
    return {
        "mode": mode,
        "events": report.events,
        "identifiers": identifiers,
        "attribute_values": attribute_values,
        **span.as_json(),
        "peak_rss_kib": peak_kib,
        # Of which the reader process's own (None: read inline), to tell the two apart.
        "reader_peak_rss_kib": report.reader_peak_rss_kib,
        "rows": report.rows,
        "rejected_rows": report.rejected_rows,
        "row_errors": [{"line": e.line, "problems": list(e.problems)} for e in report.errors[:5]],
        "outcomes": dict(report.outcomes),
        "new_identifiers": report.new_identifiers,
        "refused_identifiers": report.refused_identifiers,
        "merged_persons": report.merged_persons,
        "facts_stored": report.facts_stored,
        "facts_quarantined": report.facts_quarantined,
        "store": {
            "persons": stats.persons,
            "identifiers": stats.identifiers,
            "links": stats.links,
            "refusals": stats.refusals,
        },
    }


def _count_values(data: Path) -> tuple[int, int]:
    # After the timed section: the identifier and trait values the file holds (what every mode
    # processed).
    identifiers = attribute_values = 0
    with data.open("rb") as handle:
        for raw in handle:
            if raw.strip():
                event = json.loads(raw)
                identifiers += len(event["identifiers"])
                attribute_values += len(event.get("traits") or ())
    return identifiers, attribute_values


# -- the parent: generate, run the modes, report -------------------------------------------------


@dataclass(slots=True)
class Figures:
    """Everything the run measured, for the table and ``--json``.

    With ``--rounds N`` every mode ran N times, in alternating rounds (:func:`round_order`);
    ``runs`` holds each round's results. The figures of record are then medians: each ratio is
    the median of the per-round ratios (a round's modes ran back to back, so they saw about the
    same load), each mode's seconds, CPU seconds and bytes the median over its rounds, and its
    peak RSS the largest of its rounds (a peak). One round is exactly the one run.
    """

    summary: DataSummary
    batch_size: int
    synchronous: str
    runs: list[dict[str, dict[str, Any]]] = field(default_factory=list)
    orders: list[tuple[str, ...]] = field(default_factory=list)
    store: str = "sqlite"
    load_before: float = 0.0
    load_after: float = 0.0
    ner: bool = False  # the real mode scanned with the NER model (--ner)

    def add_round(self, order: tuple[str, ...], results: dict[str, dict[str, Any]]) -> None:
        """Record one round: the modes in the order they ran and each one's result."""
        self.orders.append(order)
        self.runs.append(results)

    @property
    def rounds(self) -> int:
        """How many rounds ran."""
        return len(self.runs)

    @property
    def modes(self) -> dict[str, dict[str, Any]]:
        """Each mode's figures: its one run, or with several rounds its medians (the last
        round's result with the median seconds, CPU seconds and bytes written and the largest
        peak RSS, with that round's reader share; the counts are the same in every round)."""
        if len(self.runs) == 1:
            return self.runs[0]
        merged: dict[str, dict[str, Any]] = {}
        for name in self.runs[0]:  # the first round's order: the modes' own
            each = [run[name] for run in self.runs]
            largest = max(each, key=lambda m: int(m["peak_rss_kib"]))
            merged[name] = {
                **each[-1],
                **{k: largest[k] for k in ("reader_peak_rss_kib",) if k in largest},
                **{
                    key: statistics.median(float(m.get(key, 0)) for m in each)
                    for key in ("seconds", "cpu_seconds", "bytes_written")
                },
                "peak_rss_kib": int(largest["peak_rss_kib"]),
                "load_before": min(float(m.get("load_before", 0.0)) for m in each),
                "load_after": max(float(m.get("load_after", 0.0)) for m in each),
            }
        return merged

    @property
    def with_attributes(self) -> bool:
        """Whether the data carries traits (``--attributes`` > 0)."""
        return bool(self.summary.attribute_names)

    @property
    def real_modes(self) -> tuple[str, ...]:
        """The real modes that ran, in the order they ran."""
        return tuple(m for m in ("real-noscan", "real") if m in self.runs[-1])

    def ratios_of(self, mode: str, floor: str = "floor", *, cpu: bool = False) -> list[float]:
        """``mode``'s throughput over ``floor``'s in each round (by CPU seconds with ``cpu``):
        every mode processes the same file, so this is the floor's seconds over ``mode``'s."""
        if cpu:
            return [_cpu(run[floor]) / max(_cpu(run[mode]), 1e-9) for run in self.runs]
        return [_rate(run[mode]) / _rate(run[floor]) for run in self.runs]

    def ratio_of(self, mode: str, floor: str = "floor") -> float:
        """``mode``'s throughput over ``floor``'s (higher is better; 1.0 = as fast as the floor),
        the median of the rounds."""
        return statistics.median(self.ratios_of(mode, floor))

    def cpu_ratio_of(self, mode: str, floor: str = "floor") -> float:
        """``floor``'s CPU seconds over ``mode``'s: the same ratio in CPU instead of wall time
        (less sensitive to the machine's load than wall time), the median of the rounds."""
        return statistics.median(self.ratios_of(mode, floor, cpu=True))

    @property
    def has_same_work(self) -> bool:
        """Whether the same-work floor ran (SQLite only)."""
        return "same-work" in self.runs[-1]

    @property
    def ratio(self) -> float:
        """Real throughput over floor throughput (higher is better; 1.0 = as fast as the floor)."""
        return self.ratio_of("real")

    @property
    def scan_on_over_off(self) -> float:
        """Throughput with the PII scan over throughput without it (t_noscan / t_real), the
        median of the rounds."""
        return statistics.median(
            float(run["real-noscan"]["seconds"]) / float(run["real"]["seconds"])
            for run in self.runs
        )

    @property
    def scan_seconds(self) -> float | None:
        """t_real - t_noscan: what the PII scan (and redaction) added, if both real modes ran
        (the median of the rounds)."""
        if "real-noscan" not in self.runs[-1]:
            return None
        return statistics.median(
            float(run["real"]["seconds"]) - float(run["real-noscan"]["seconds"])
            for run in self.runs
        )

    def ratio_figures(self) -> dict[str, float]:
        """The judged ratios (``ratio_real_over_floor``, ``cpu_ratio_real_over_floor`` and,
        with the same-work floor, ``ratio_real_over_same_work_floor`` and its CPU twin): each
        the median of the rounds, also as ``<key>_median``, with ``<key>_min`` / ``<key>_max``
        (the spread, as ``bench/load.py`` and ``bench/audience.py`` report theirs)."""
        floors = [("floor", "floor")]
        if self.has_same_work:
            floors.append(("same_work_floor", "same-work"))
        figures: dict[str, float] = {}
        for label, floor in floors:
            for prefix, cpu in (("ratio", False), ("cpu_ratio", True)):
                each = self.ratios_of("real", floor, cpu=cpu)
                key = f"{prefix}_real_over_{label}"
                figures[key] = figures[f"{key}_median"] = round(statistics.median(each), 4)
                figures[f"{key}_min"] = round(min(each), 4)
                figures[f"{key}_max"] = round(max(each), 4)
        return figures

    def round_figures(self) -> list[dict[str, Any]]:
        """Each round for ``--json``: its order, each mode's figures and its ratios."""
        out = []
        for number, (order, run) in enumerate(zip(self.orders, self.runs, strict=True), 1):
            ratios: dict[str, float] = {}
            for name in self.real_modes:
                for label, floor in (("floor", "floor"), ("same_work_floor", "same-work")):
                    if floor not in run:
                        continue
                    ratios[f"ratio_{name}_over_{label}".replace("-", "_")] = round(
                        _rate(run[name]) / _rate(run[floor]), 4
                    )
                    ratios[f"cpu_ratio_{name}_over_{label}".replace("-", "_")] = round(
                        _cpu(run[floor]) / max(_cpu(run[name]), 1e-9), 4
                    )
            out.append(
                {
                    "round": number,
                    "order": list(order),
                    "modes": {
                        name: {
                            "seconds": round(float(m["seconds"]), 4),
                            "cpu_seconds": round(_cpu(m), 4),
                            "bytes_written": int(m.get("bytes_written", 0)),
                            "peak_rss_mib": round(_mib(m), 1),
                            "load_before": m.get("load_before", 0.0),
                            "load_after": m.get("load_after", 0.0),
                            "settled": m.get("settled", {}),
                            "process": m.get("process", {}),
                            "thread_cpu_seconds": m.get("thread_cpu_seconds", {}),
                            "steal_seconds": m.get("steal_seconds", 0.0),
                        }
                        for name, m in run.items()
                    },
                    "ratios": ratios,
                }
            )
        return out

    def failures(self) -> list[str]:
        """Why the run should exit 1: rejected rows, or traits not stored as active facts."""
        problems = []
        expected = self.summary.expected_facts()
        for number, run in enumerate(self.runs, 1):
            where = f" (round {number})" if len(self.runs) > 1 else ""
            for name in self.real_modes:
                m = run[name]
                if m["rejected_rows"]:
                    problems.append(f"{name}{where} rejected {m['rejected_rows']:,} rows")
                facts = {"stored": m["facts_stored"], "quarantined": m["facts_quarantined"]}
                if facts != expected:
                    problems.append(f"{name}{where} facts {facts} != expected {expected}")
        return problems

    def as_json(self) -> dict[str, Any]:
        """The figures as a JSON document (with several rounds: the medians, their spread
        and every round)."""
        merged = self.modes
        s, real = self.summary, merged["real"]
        modes = {}
        for name, m in merged.items():
            modes[name] = {
                "identifiers": m["identifiers"],
                "seconds": round(m["seconds"], 4),
                "cpu_seconds": round(_cpu(m), 4),
                "bytes_written": int(m.get("bytes_written", 0)),
                "bytes_written_per_identifier": round(_written(m), 1),
                "load_before": m.get("load_before", 0.0),
                "load_after": m.get("load_after", 0.0),
                "identifiers_per_second": round(_rate(m), 1),
                "peak_rss_mib": round(_mib(m), 1),
            }
            if self.with_attributes:
                modes[name]["attribute_values"] = m["attribute_values"]
                modes[name]["attribute_values_per_second"] = round(_attribute_rate(m), 1)
            if name != "floor":
                modes[name]["ratio_over_floor"] = round(self.ratio_of(name), 4)
                modes[name]["cpu_ratio_over_floor"] = round(self.cpu_ratio_of(name), 4)
            if name in self.real_modes and self.has_same_work:
                modes[name]["ratio_over_same_work_floor"] = round(
                    self.ratio_of(name, "same-work"), 4
                )
                modes[name]["cpu_ratio_over_same_work_floor"] = round(
                    self.cpu_ratio_of(name, "same-work"), 4
                )
        doc: dict[str, Any] = {
            "persons": s.persons,
            "distinct_identifiers": s.distinct_identifiers,
            "events": s.events,
            "identifier_values": s.identifier_values,
            "batch_size": self.batch_size,
            "synchronous": self.synchronous,
            "modes": modes,
            "rounds": self.rounds,
            **self.ratio_figures(),
            "round_figures": self.round_figures(),
            "load_before": self.load_before,
            "load_after": self.load_after,
            "goals": {
                "ratio_min": GOAL_RATIO,
                "ratio_met": self.ratio >= GOAL_RATIO,
                "real_peak_rss_max_mib": GOAL_REAL_RSS_MIB,
                "real_peak_rss_met": _mib(real) < GOAL_REAL_RSS_MIB,
            },
            "store": real["store"],
            "expected_store": s.expected_stats(),
            "outcomes": real["outcomes"],
            "refused_identifiers": real["refused_identifiers"],
            "merged_persons": real["merged_persons"],
            "rejected_rows": real["rejected_rows"],
        }
        if self.has_same_work:
            same = self.ratio_of("real", "same-work")
            doc["same_work_store"] = merged["same-work"]["stored"]
            doc["goals"]["same_work_ratio_min"] = GOAL_SAME_WORK_RATIO
            doc["goals"]["same_work_ratio_met"] = same >= GOAL_SAME_WORK_RATIO
        if not self.with_attributes:
            return doc
        doc["attributes"] = {
            "per_person": len(s.attribute_names),
            "names": list(s.attribute_names),
            "attribute_values": s.attribute_values,
            "string_values": s.string_values,
            "distinct_string_values": s.distinct_string_values,
            "values_with_phone_number": s.phone_values,
        }
        doc["facts"] = {
            name: {
                "stored": merged[name]["facts_stored"],
                "quarantined": merged[name]["facts_quarantined"],
            }
            for name in self.real_modes
        }
        doc["expected_facts"] = s.expected_facts()
        if "real-noscan" in merged:
            noscan = merged["real-noscan"]
            doc["ratio_real_noscan_over_floor"] = round(self.ratio_of("real-noscan"), 4)
            doc["goals"]["ratio_real_noscan_met"] = self.ratio_of("real-noscan") >= GOAL_RATIO
            doc["goals"]["real_noscan_peak_rss_met"] = _mib(noscan) < GOAL_REAL_RSS_MIB
            doc["real_noscan"] = {
                key: noscan[key]
                for key in (
                    "store",
                    "outcomes",
                    "refused_identifiers",
                    "merged_persons",
                    "rejected_rows",
                )
            }
            scan = self.scan_seconds or 0.0
            doc["ratio_real_over_real_noscan"] = round(self.scan_on_over_off, 4)
            doc["scan_ner"] = self.ner
            doc["goals"]["scan_ratio_met"] = self.scan_on_over_off >= GOAL_SCAN_RATIO
            doc["scan_cost"] = {
                "seconds": round(scan, 4),
                "string_values": s.string_values,
                "distinct_string_values": s.distinct_string_values,
                "microseconds_per_string_value": round(_per(scan, s.string_values) * 1e6, 2),
                "microseconds_per_distinct_string_value": round(
                    _per(scan, s.distinct_string_values) * 1e6, 2
                ),
            }
        return doc


def _rate(mode: dict[str, Any]) -> float:
    return float(mode["identifiers"]) / max(float(mode["seconds"]), 1e-9)


def _attribute_rate(mode: dict[str, Any]) -> float:
    return float(mode["attribute_values"]) / max(float(mode["seconds"]), 1e-9)


def _cpu(mode: dict[str, Any]) -> float:
    return float(mode.get("cpu_seconds", 0.0))


def _written(mode: dict[str, Any]) -> float:
    """Bytes written per identifier value processed."""
    return float(mode.get("bytes_written", 0)) / max(int(mode["identifiers"]), 1)


def _per(seconds: float, count: int) -> float:
    return seconds / count if count else 0.0


def _mib(mode: dict[str, Any]) -> float:
    return float(mode["peak_rss_kib"]) / 1024


def _met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _row(mode: str, identifiers: str, seconds: str, rate: str, rss: str) -> str:
    return f"{mode:<6} {identifiers:>12} {seconds:>9} {rate:>14} {rss:>13}"


def _wide_row(cells: tuple[str, str, str, str, str, str, str]) -> str:
    mode, identifiers, values, seconds, rate, value_rate, rss = cells
    return (
        f"{mode:<11} {identifiers:>12} {values:>12} {seconds:>9} {rate:>14} {value_rate:>14} "
        f"{rss:>13}"
    )


def _spread(figures: Figures, mode: str, floor: str, *, cpu: bool = False) -> str:
    """``0.712`` for one round; ``median 0.712 (0.650-0.790 over 3 rounds)`` for several."""
    each = figures.ratios_of(mode, floor, cpu=cpu)
    median = statistics.median(each)
    if len(each) == 1:
        return f"{median:.3f}"
    return f"median {median:.3f} ({min(each):.3f}-{max(each):.3f} over {len(each)} rounds)"


def _round_lines(figures: Figures) -> list[str]:
    """One line per round (several rounds only): its order, each mode's wall and CPU seconds,
    and real's ratios over the floors in that round."""
    if figures.rounds < 2:
        return []
    lines = ["", "rounds (mode wall s / CPU s, in the order they ran; real's ratios in the round):"]
    for number, (order, run) in enumerate(zip(figures.orders, figures.runs, strict=True), 1):
        cells = [f"{name} {run[name]['seconds']:.2f} / {_cpu(run[name]):.2f}" for name in order]
        ratios = [
            f"real/{floor} {_rate(run['real']) / _rate(run[floor]):.3f} wall, "
            f"{_cpu(run[floor]) / max(_cpu(run['real']), 1e-9):.3f} CPU"
            for floor in ("floor", "same-work")
            if floor in run and "real" in run
        ]
        lines.append(f"round {number}: " + ", ".join(cells) + "; " + "; ".join(ratios))
        lines += _thread_line(run)
    return lines


def _thread_line(run: dict[str, Any]) -> list[str]:
    """The round's CPU by thread of the real modes, and the host's steal while each mode ran:
    which thread a round's extra CPU went to, and whether the host was contended meanwhile."""
    cells = []
    for name, m in run.items():
        threads = m.get("thread_cpu_seconds") or {}
        shown = ", ".join(f"{t} {cpu:.1f}" for t, cpu in threads.items() if cpu >= 0.05)
        steal = f"steal {float(m.get('steal_seconds', 0.0)):.1f}"
        cells.append(f"{name} {shown + '; ' if shown else ''}{steal}")
    return ["    CPU s by thread: " + " | ".join(cells)]


def render(figures: Figures) -> str:
    """The printed report (with several rounds: the medians, their spread and every round)."""
    s, modes = figures.summary, figures.modes
    lines = [
        (
            f"idgraph bulk-ingest benchmark: {s.persons:,} persons, {s.distinct_identifiers:,} "
            f"distinct identifiers, {s.events:,} events, {s.identifier_values:,} identifier "
            f"values; batch {figures.batch_size} events/transaction; "
            f"synchronous={figures.synchronous}; store={figures.store}"
            + (
                f"; {figures.rounds} alternating rounds, figures are medians"
                if figures.rounds > 1
                else ""
            )
        ),
    ]
    if figures.with_attributes:
        lines.append(
            f"attributes: {len(s.attribute_names)} per person ({', '.join(s.attribute_names)}): "
            f"{s.attribute_values:,} attribute values, {s.string_values:,} string values "
            f"({s.distinct_string_values:,} distinct), {s.phone_values:,} with a phone number"
        )
        lines += [
            "",
            _wide_row(
                (
                    "mode",
                    "identifiers",
                    "attr values",
                    "seconds",
                    "identifiers/s",
                    "attr values/s",
                    "peak RSS MiB",
                )
            ),
        ]
        for name in modes:
            m = modes[name]
            lines.append(
                _wide_row(
                    (
                        name,
                        f"{m['identifiers']:,}",
                        f"{m['attribute_values']:,}",
                        f"{m['seconds']:.3f}",
                        f"{_rate(m):,.0f}",
                        f"{_attribute_rate(m):,.0f}",
                        f"{_mib(m):.1f}",
                    )
                )
            )
    else:
        lines += ["", _row("mode", "identifiers", "seconds", "identifiers/s", "peak RSS MiB")]
        for name in modes:
            m = modes[name]
            lines.append(
                _row(
                    name,
                    f"{m['identifiers']:,}",
                    f"{m['seconds']:.3f}",
                    f"{_rate(m):,.0f}",
                    f"{_mib(m):.1f}",
                )
            )
    lines += [
        "",
        (
            f"{'mode':<11} {'CPU s':>9} {'MiB written':>12} {'bytes/identifier':>17} "
            f"{'load before':>12} {'load after':>11}"
        ),
    ]
    for name, m in modes.items():
        lines.append(
            f"{name:<11} {_cpu(m):>9.3f} {m.get('bytes_written', 0) / 2**20:>12.1f} "
            f"{_written(m):>17,.0f} {m.get('load_before', 0.0):>12.2f} "
            f"{m.get('load_after', 0.0):>11.2f}"
        )
    lines += _round_lines(figures)
    lines.append("")
    for name in figures.real_modes:
        ratio = figures.ratio_of(name)
        lines.append(
            f"ratio {name}/floor throughput: {_spread(figures, name, 'floor')} "
            f"(goal >= {GOAL_RATIO:.2f}: {_met(ratio >= GOAL_RATIO)}); "
            f"CPU {_spread(figures, name, 'floor', cpu=True)}"
        )
        if figures.has_same_work:
            same = figures.ratio_of(name, "same-work")
            lines.append(
                f"ratio {name}/same-work floor throughput: {_spread(figures, name, 'same-work')} "
                f"(goal >= {GOAL_SAME_WORK_RATIO:.2f}: {_met(same >= GOAL_SAME_WORK_RATIO)}); "
                f"CPU {_spread(figures, name, 'same-work', cpu=True)}"
            )
    for name in figures.real_modes:
        rss = _mib(modes[name])
        lines.append(
            f"{name} peak RSS: {rss:.1f} MiB "
            f"(goal < {GOAL_REAL_RSS_MIB} MiB: {_met(rss < GOAL_REAL_RSS_MIB)})"
        )
    scan = figures.scan_seconds
    if scan is not None:
        per_value = _per(scan, s.string_values) * 1e6
        per_distinct = _per(scan, s.distinct_string_values) * 1e6
        lines.append(
            f"scan cost per value: (t_real - t_noscan) / string values = {scan:.3f} s / "
            f"{s.string_values:,} = {per_value:,.1f} us"
        )
        lines.append(
            f"scan cost per distinct value: {scan:.3f} s / {s.distinct_string_values:,} distinct "
            f"string values = {per_distinct:,.1f} us (scan results are cached per distinct value)"
        )
        on_off = figures.scan_on_over_off
        how = "with NER" if figures.ner else "patterns only"
        cpu = [modes[m]["cpu_seconds"] for m in ("real-noscan", "real")]
        lines.append(
            f"ratio real/real-noscan throughput (scan {how}): {on_off:.3f} "
            f"(goal >= {GOAL_SCAN_RATIO:.2f}: {_met(on_off >= GOAL_SCAN_RATIO)}); by CPU "
            f"seconds of the ingest {cpu[0]:.2f} / {cpu[1]:.2f} = {cpu[0] / cpu[1]:.3f}; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
    expected = s.expected_stats()
    for name in figures.real_modes:
        m = modes[name]
        store, outcomes = m["store"], m["outcomes"]
        lines += [
            f"store after {name} run: "
            + ", ".join(f"{k}={v:,}" for k, v in store.items())
            + (
                ""
                if store == expected
                else "   (EXPECTED " + ", ".join(f"{k}={v:,}" for k, v in expected.items()) + ")"
            ),
            f"{name} outcomes: "
            + ", ".join(
                f"{k}={outcomes.get(k, 0):,}"
                for k in ("created", "linked", "merged", "unchanged", "refused")
            )
            + f"; refused identifiers={m['refused_identifiers']:,}"
            + f", persons merged={m['merged_persons']:,}"
            + f", rejected rows={m['rejected_rows']:,}",
        ]
        if figures.with_attributes:
            facts = {"stored": m["facts_stored"], "quarantined": m["facts_quarantined"]}
            want = s.expected_facts()
            lines.append(
                f"{name} facts: stored={facts['stored']:,}, quarantined={facts['quarantined']:,}"
                + (
                    ""
                    if facts == want
                    else "   (EXPECTED " + ", ".join(f"{k}={v:,}" for k, v in want.items()) + ")"
                )
            )
        for error in m["row_errors"]:
            lines.append(f"  rejected line {error['line']}: " + "; ".join(error["problems"]))
    return "\n".join(lines)


def _run_mode(mode: str, data: Path, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--mode",
        mode,
        "--data",
        str(data),
        "--work-dir",
        str(work),
        "--batch-size",
        str(args.batch_size),
        "--synchronous",
        args.synchronous,
        "--store",
        args.store,
        *(["--ner"] if args.ner else []),
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        print(f"bench: {mode} mode failed with exit code {done.returncode}", file=sys.stderr)
        raise SystemExit(2)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process"] = process_figures(before, after)
    return result


def process_figures(before: Any, after: Any) -> dict[str, Any]:
    """The whole mode process (start-up included) from two ``getrusage(RUSAGE_CHILDREN)``
    readings taken around it: user and system CPU seconds apart, and its voluntary and
    involuntary context switches.

    Why: the timed span gives CPU as one figure; these say where it went (a mode whose system
    seconds grow is waiting in the kernel, not computing) and how often the process gave up a
    core (``voluntary``: it blocked, e.g. a thread waiting for the GIL or an fsync;
    ``involuntary``: the scheduler took the core away, which a loaded machine does). A mode with
    many voluntary switches (the real path's two threads hand the GIL back and forth) loses a
    scheduling delay at each one when the machine is loaded, so its wall time moves with the
    load far more than a one-thread floor's."""
    return {
        "user_seconds": round(after.ru_utime - before.ru_utime, 3),
        "system_seconds": round(after.ru_stime - before.ru_stime, 3),
        "voluntary_switches": after.ru_nvcsw - before.ru_nvcsw,
        "involuntary_switches": after.ru_nivcsw - before.ru_nivcsw,
    }


def _unwritten_kib() -> int:
    """Dirty + Writeback kB of ``/proc/meminfo``: page cache not yet on disk, machine-wide
    (0 where ``/proc`` does not say)."""
    total = 0
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            name, _, value = line.partition(":")
            if name in ("Dirty", "Writeback"):
                total += int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return 0
    return total


def settle_disk(work: Path, modes: tuple[str, ...]) -> dict[str, Any]:
    """Before a mode runs (untimed): delete every mode's store and flush the page cache to disk
    (``sync``), so that each mode starts on an empty store and a quiet disk.

    Why: every mode commits with fsync (``synchronous``), and an fsync waits behind whatever
    else the disk is writing back; a mode run right after another could pay for pages its
    predecessor (or anything else on the machine) left dirty, while the mode that ran first in
    its round found a quiet disk. This takes that variable away; what a mode writes itself is
    still timed (its commits, checkpoints and final checkpoint). Measured (stop 39, 1M
    identifiers, load 5-7 from other jobs, floor and same-work before real): it is not what made
    real slow when orchestrated. Real took 176 and 159 s without a sync before it (0.3 GB and
    28 kB dirty), 101 and 137 s with one, at the same CPU seconds (58-64 s), while the
    one-thread same-work floor took 88-92 s every time: the real path's wall time moves with
    the machine's load (its two threads hand the GIL over ~40,000 times at 1M, see
    :func:`process_figures`), not with the disk.

    Returns the figures of the settling: ``seconds`` it took and ``unwritten_kib_before`` /
    ``unwritten_kib_after`` (Dirty + Writeback of ``/proc/meminfo``, machine-wide).
    """
    started = time.perf_counter()
    before = _unwritten_kib()
    for mode in modes:
        shutil.rmtree(work / mode, ignore_errors=True)
    os.sync()
    return {
        "seconds": round(time.perf_counter() - started, 3),
        "unwritten_kib_before": before,
        "unwritten_kib_after": _unwritten_kib(),
    }


def round_order(modes: tuple[str, ...], number: int) -> tuple[str, ...]:
    """The order of the modes in round ``number`` (0-based): rotated by one mode a round, so
    that over as many rounds as modes each mode runs first once (a mode that always ran first,
    or always after the heaviest, would carry the machine's drift into every ratio)."""
    shift = number % len(modes)
    return modes[shift:] + modes[:shift]


def orchestrate(args: argparse.Namespace) -> int:
    """Generate the data once, run the modes in subprocesses, print the figures.

    The modes run one after another: floor, same-work and real, or with ``--attributes``
    floor, same-work, real-noscan and real; with ``--rounds N`` N times, in the order of
    :func:`round_order`, each run on a fresh store and a settled disk (every mode's store
    deleted and the page cache flushed first, untimed: :func:`settle_disk`).
    """
    identifiers = args.identifiers or SCALES[args.scale]
    persons = max(1, identifiers // IDENTIFIERS_PER_PERSON)
    modes: tuple[str, ...] = (
        ("floor", "real-noscan", "real") if args.attributes else ("floor", "real")
    )
    if args.store == "sqlite":  # the same-work floor is written for the SQLite schema
        modes = (modes[0], "same-work", *modes[1:])
    with tempfile.TemporaryDirectory(prefix="idgraph-bench-", dir=args.tmp_dir) as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data = work / DATA_FILE
        generated = time.perf_counter()
        summary = write_data(data, persons, args.seed, args.attributes)
        create_key(work)
        print(
            f"generated {data.stat().st_size / 2**20:.1f} MiB of JSONL in "
            f"{time.perf_counter() - generated:.1f} s (not timed)",
            file=sys.stderr,
        )
        figures = Figures(
            summary, args.batch_size, args.synchronous, store=args.store, ner=args.ner
        )
        figures.load_before = load_average()
        for number in range(args.rounds):
            order = round_order(modes, number)
            results: dict[str, dict[str, Any]] = {}
            for mode in order:
                # Each run starts from an empty store (the floors would otherwise find their
                # rows, INSERT OR IGNORE, and the real path its identifiers from the last round)
                # and from a settled disk: see settle_disk.
                settled = settle_disk(work, modes)
                results[mode] = {**_run_mode(mode, data, work, args), "settled": settled}
            figures.add_round(order, results)
            if args.rounds > 1:
                print(f"round {number + 1}/{args.rounds} done", file=sys.stderr)
        figures.load_after = load_average()
    print(render(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures.as_json(), indent=2) + "\n", encoding="utf-8")
    problems = figures.failures()
    for problem in problems:
        print(f"bench: {problem}", file=sys.stderr)
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--scale",
        choices=sorted(SCALES),
        default="small",
        help="small = 20k identifiers (5k persons); 1m = 1,000,000 (250k persons)",
    )
    size.add_argument(
        "--identifiers",
        type=int,
        metavar="N",
        help="distinct identifiers to generate (4 per person)",
    )
    parser.add_argument(
        "--attributes",
        type=int,
        default=0,
        metavar="K",
        help=f"traits per person (0-{len(ATTRIBUTE_ORDER)}, default 0): the first K of "
        f"{', '.join(ATTRIBUTE_ORDER)}; adds the real-noscan mode and the scan cost",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=10_000,
        help="events per transaction (default 10,000: the default of `idgraph ingest`)",
    )
    parser.add_argument(
        "--synchronous",
        choices=("NORMAL", "FULL", "EXTRA"),
        default="FULL",
        help="SQLite synchronous pragma for every mode (default FULL, the default "
        "of the real store)",
    )
    parser.add_argument(
        "--store",
        choices=("sqlite", "neo4j"),
        default="sqlite",
        help="where floor and real write (neo4j: the server of NEO4J_URI, wiped first)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        metavar="N",
        help="run every mode N times in alternating rounds (default 1; the mode that runs "
        "first rotates); the ratios are the medians of the rounds, with their spread",
    )
    parser.add_argument("--seed", type=int, default=20261123, help="generator seed")
    parser.add_argument("--json", metavar="OUT", help="also write the figures as JSON here")
    parser.add_argument("--tmp-dir", help="parent directory of the temporary work directory")
    parser.add_argument("--work-dir", help="keep data, key and databases here (for --mode runs)")
    parser.add_argument(
        "--mode",
        choices=("generate", "floor", "same-work", "real-noscan", "real"),
        help="internal: run one mode in this process (or only generate data)",
    )
    parser.add_argument("--data", help="internal: the JSONL file for --mode floor|real*")
    parser.add_argument(
        "--ner",
        action="store_true",
        help="scan with the NER model on (scanner.ner: true, LOCATION/ORGANIZATION allowed "
        "in location, behavioural, interests and contact)",
    )
    args = parser.parse_args(argv)
    if (
        args.batch_size < 1
        or args.rounds < 1
        or (args.identifiers is not None and args.identifiers < 1)
    ):
        parser.error("--batch-size, --rounds and --identifiers must be positive")
    if not 0 <= args.attributes <= len(ATTRIBUTE_ORDER):
        parser.error(f"--attributes must be between 0 and {len(ATTRIBUTE_ORDER)}")
    if args.mode is None:
        return orchestrate(args)
    if args.work_dir is None:
        parser.error("--mode needs --work-dir")
    # A mode's stdout is its one JSON line and nothing else: log lines (a first run's
    # kek_generated / hash_key_generated warnings) go to stderr, as the service's do, redacted.
    # Unconfigured, structlog printed them to stdout ahead of the data line.
    from bootstrap.logging import configure_logging

    configure_logging("info", json_output=False)
    work = Path(args.work_dir)
    if args.mode == "generate":
        work.mkdir(parents=True, exist_ok=True)
        identifiers = args.identifiers or SCALES[args.scale]
        summary = write_data(work / DATA_FILE, max(1, identifiers // 4), args.seed, args.attributes)
        create_key(work)
        expected = {**summary.expected_stats()}
        if args.attributes:
            expected["facts"] = summary.expected_facts()["stored"]
        print(json.dumps({"data": str(work / DATA_FILE), **expected}))
        return 0
    data = Path(args.data) if args.data else work / DATA_FILE
    if args.mode == "floor" and args.store == "neo4j":
        if args.attributes:
            parser.error("--store neo4j measures identifiers only (no --attributes)")
        result = run_neo4j_floor(data, work, args.batch_size)
    elif args.mode == "floor":
        result = run_floor(data, work, args.batch_size, args.synchronous)
    elif args.mode == "same-work":
        result = run_same_work(data, work, args.batch_size, args.synchronous)
    else:
        result = run_real(
            data,
            work,
            args.batch_size,
            args.synchronous,
            scan=args.mode == "real",
            store=args.store,
            ner=args.ner,
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    if str(ROOT) not in sys.path:  # run as a script: make the repository importable
        sys.path.insert(0, str(ROOT))
    sys.exit(main())
