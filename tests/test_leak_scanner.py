"""Leak scanner: 1,000 people's raw emails, phone numbers and names, then a grep for every one.

A seeded population of distinct people goes through every input path (``INPUT_PATHS``), every
lookup path (``LOOKUP_PATHS``) and invalid payloads that carry the values (``ERROR_PATHS``).
Then every raw value, in every form it could take (as sent, lowercased, E.164, national digits,
UTF-16), is searched for in every file of the data dir (graph DB and its WAL and SHM, vault
keys, control DB, audit log, whatever else is there), the captured log, the CLI output,
``/metrics`` and every response. Expected: no hit anywhere.

Add a path by appending a function to one of the lists: it gets the :class:`LeakRun` and its
share of the population, sends what it likes through ``run.post``/``run.cli`` (which record
every response and output) and returns what it did, for the report.

Traits and events are sealed by the vault (AES-GCM) whatever their category, so names in free
text are ciphertext at rest: the grep must find nothing there either.
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import phonenumbers
import pytest
from typer.testing import CliRunner

from bootstrap.settings import Settings
from cli.main import app as cli_app
from tests.support.response_checks import assert_clean_response

from .conftest import POLICY_DIR, Api

SEED = 20261123
POPULATION = 1000
BATCH = 50

FIRST_NAMES = [
    "Annika", "Bartholomew", "Cordelia", "Dietrich", "Evangeline", "Fridolin", "Gwendolyn",
    "Hieronymus", "Isolde", "Jürgen", "Kunigunde", "Leopold", "Mechthild", "Nikodemus",
    "Ottilie", "Pankraz", "Quirina", "Rüdiger", "Sieglinde", "Theodor", "Ulrike", "Valentin",
    "Walburga", "Xaver", "Yolanda", "Zacharias", "Ambrose", "Benedikta", "Cornelius",
    "Dorothea", "Eberhard", "Felicitas", "Gottfried", "Hildegard", "Ignatius", "Josefine",
    "Konstantin", "Leokadia", "Maximilian", "Notburga",
]  # fmt: skip
LAST_NAMES = [
    "Abercrombie", "Brandstätter", "Cholmondeley", "Dinkelacker", "Eichhörnchen",
    "Featherstonehaugh", "Grünewald", "Hinterhuber", "Ironmonger", "Jägermeister",
    "Kaltenbrunner", "Lichtenstein", "Marjoribanks", "Niederländer", "Oberhauser",
    "Pfefferkorn", "Quackenbush", "Rosenkranz", "Schwarzenegger", "Tolliver", "Unterberger",
    "Vandersloot", "Wolkenstein", "Xylander", "Youngblood", "Zauberflöte", "Ashbourne",
    "Birkenstock", "Cavendish", "Drachenfels",
]  # fmt: skip
DOMAINS = ["posteo.de", "web.de", "mailbox.org", "shop-mail.co.uk", "privacy-shop.eu", "gmx.at"]


@dataclass(frozen=True)
class Person:
    """One synthetic person: raw values as a caller would send them."""

    index: int
    name: str
    email: str
    phone: str
    e164: str
    national_digits: str

    def identifiers(self) -> list[dict[str, str]]:
        return [{"type": "email", "value": self.email}, {"type": "phone", "value": self.phone}]

    def needles(self) -> set[str]:
        """Every form of this person's values that must not be found anywhere."""
        return {
            self.name,
            self.email,
            self.email.lower(),
            self.phone,
            self.e164,
            self.e164.lstrip("+"),
            self.national_digits,
        }


def _ascii(text: str) -> str:
    return text.replace("ü", "ue").replace("ö", "oe").replace("ä", "ae")


def _phone(rng: random.Random) -> tuple[str, str, str]:
    """A valid GB or DE mobile number: (as sent, E.164, national digits)."""
    while True:
        region, base = rng.choice([("GB", "+447400"), ("GB", "+447700"), ("DE", "+49151")])
        digits = 6 if region == "GB" else 8
        candidate = base + "".join(rng.choice("0123456789") for _ in range(digits))
        number = phonenumbers.parse(candidate)
        if not phonenumbers.is_valid_number(number):
            continue
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        international = phonenumbers.format_number(
            number, phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
        # The default region of the test service is GB: GB numbers may come in national form.
        forms = [e164, international] + ([national] if region == "GB" else [])
        return rng.choice(forms), e164, re.sub(r"\D", "", national)


def population(size: int = POPULATION, seed: int = SEED) -> list[Person]:
    """``size`` distinct people, the same ones on every run."""
    rng = random.Random(seed)
    names = rng.sample([f"{f} {s}" for f in FIRST_NAMES for s in LAST_NAMES], size)
    people: list[Person] = []
    seen: set[str] = set()
    for index, name in enumerate(names):
        first, last = (_ascii(part) for part in name.split(" "))
        while True:
            local = rng.choice([f"{first}.{last}", f"{first[0]}{last}", f"{last}.{first}"])
            email = f"{local}{rng.randrange(10, 10_000)}@{rng.choice(DOMAINS)}"
            email = email.lower() if rng.random() < 0.5 else email  # mixed case half the time
            raw_phone, e164, national = _phone(rng)
            if email.lower() not in seen and e164 not in seen:
                break
        seen |= {email.lower(), e164}
        people.append(Person(index, name, email, raw_phone, e164, national))
    return people


# --- scanning -------------------------------------------------------------------------------


def _trie_pattern(needles: Iterable[bytes]) -> re.Pattern[bytes]:
    """One regex matching any needle; a trie, so a scan costs about one pass per blob."""
    trie: dict[int, Any] = {}
    for needle in needles:
        node = trie
        for byte in needle:
            node = node.setdefault(byte, {})
        node[-1] = {}  # a needle ends here: matching this far is enough

    def build(node: dict[int, Any]) -> bytes:
        if -1 in node:
            return b""
        branches = [re.escape(bytes([byte])) + build(child) for byte, child in node.items()]
        return branches[0] if len(branches) == 1 else b"(?:" + b"|".join(branches) + b")"

    return re.compile(build(trie))


@dataclass
class Scanner:
    """Finds any form of any person's values in a blob (ASCII case-insensitively)."""

    people: Sequence[Person]
    owners: dict[bytes, str] = field(init=False)
    pattern: re.Pattern[bytes] = field(init=False)

    def __post_init__(self) -> None:
        self.owners = {}
        for person in self.people:
            for value in person.needles():
                for encoding in ("utf-8", "utf-16-le"):
                    self.owners[value.encode(encoding).lower()] = f"person {person.index}"
        self.pattern = _trie_pattern(self.owners)

    def hits(self, blob: bytes) -> list[str]:
        found = {m.group().decode("utf-8", "replace") for m in self.pattern.finditer(blob.lower())}
        return sorted(found)[:5]


# --- the run --------------------------------------------------------------------------------


@dataclass
class LeakRun:
    """The app, a place for input files, and every output the paths produced."""

    api: Api
    workdir: Path
    monkeypatch: pytest.MonkeyPatch
    outputs: list[tuple[str, bytes]] = field(default_factory=list)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
        """POST as admin (or with ``headers``); record the response; it must be clean."""
        response: httpx.Response = self.api.client.post(
            path, json=body, headers=headers or self.api.admin
        )
        self.record(f"POST {path} -> {response.status_code}", response)
        return response

    def post_raw(self, path: str, body: bytes) -> httpx.Response:
        headers = self.api.admin | {"Content-Type": "application/json"}
        response: httpx.Response = self.api.client.post(path, content=body, headers=headers)
        self.record(f"POST {path} (raw) -> {response.status_code}", response)
        return response

    def record(self, label: str, response: httpx.Response) -> None:
        assert_clean_response(response)
        headers = json.dumps(dict(response.headers)).encode()
        self.outputs.append((label, response.content + b"\n" + headers))

    def cli(self, *args: str) -> int:
        """Run ``idgraph ARGS`` against the same data dir; record its output."""
        settings = self.api.container.settings
        for name, value in {
            "IDGRAPH_DATA_DIR": str(settings.data_dir),
            "IDGRAPH_POLICY_DIR": str(POLICY_DIR),
            "IDGRAPH_DEFAULT_REGION": settings.default_region or "GB",
            "IDGRAPH_ENV": "test",
        }.items():
            self.monkeypatch.setenv(name, value)
        result = CliRunner().invoke(cli_app, list(args))
        assert result.exception is None or isinstance(result.exception, SystemExit)
        self.outputs.append((f"idgraph {args[0]}", result.output.encode()))
        return result.exit_code

    def has_route(self, method: str, path: str) -> bool:
        paths = self.api.client.app.openapi()["paths"]  # type: ignore[attr-defined]
        return method.lower() in paths.get(path, {})


InputPath = Callable[[LeakRun, Sequence[Person]], str]


def _event(person: Person, source: str = "web") -> dict[str, Any]:
    """An identify payload carrying the person's name in a trait and in free text.

    Two scanned strings per event: the PII scanner costs milliseconds per string, and a few
    hundred events per path are what the time budget of this test allows.
    """
    return {
        "identifiers": person.identifiers(),
        "source": source,
        "traits": {"last_name": person.name},
        "events": [
            {
                "name": "support_message",
                "properties": {
                    "topic": "callback",
                    "text": f"Hello, I am {person.name}. Call me on {person.phone} "
                    f"or write to {person.email}.",
                },
            }
        ],
    }


def _chunks(people: Sequence[Person], size: int = BATCH) -> Iterator[Sequence[Person]]:
    for start in range(0, len(people), size):
        yield people[start : start + size]


def identify(run: LeakRun, people: Sequence[Person]) -> str:
    for person in people:
        assert run.post("/v1/identify", _event(person), run.api.ingest).status_code == 200
    return f"POST /v1/identify x{len(people)}"


def batch_ingest(run: LeakRun, people: Sequence[Person]) -> str:
    for chunk in _chunks(people):
        body = {"events": [_event(p, "crm") for p in chunk]}
        assert run.post("/v1/ingest", body, run.api.ingest).status_code == 200
    return f"POST /v1/ingest, {len(people)} events"


def bulk_jsonl(run: LeakRun, people: Sequence[Person]) -> str:
    path = run.workdir / "people.jsonl"
    lines = [json.dumps(_event(p, "import")) for p in people]
    # Rows that are rejected: the report names the line, never the value.
    lines += [
        json.dumps({"identifiers": [{"type": "email", "value": p.email + "@"}], "source": "x"})
        for p in people[:20]
    ]
    lines += [f'{{"identifiers": [{{"type": "email", "value": "{p.email}"' for p in people[:5]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run.cli("ingest", str(path)) == 1  # some rows were rejected
    return f"idgraph ingest people.jsonl, {len(people)} rows + 25 bad"


def bulk_csv(run: LeakRun, people: Sequence[Person]) -> str:
    path = run.workdir / "people.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "email", "phone", "email.2"])
        for person in people:
            writer.writerow(["crm", person.email, person.phone, ""])
        for person in people[:20]:  # invalid: the value doubled into one cell
            writer.writerow(["crm", person.email + person.email, person.phone + "99", ""])
    assert run.cli("ingest", str(path)) == 1
    return f"idgraph ingest people.csv, {len(people)} rows + 20 bad"


def consent(run: LeakRun, people: Sequence[Person]) -> str:
    if not run.has_route("POST", "/v1/consent"):
        return "POST /v1/consent: no such route yet, nothing sent"
    for person in people:
        body = {"identifiers": person.identifiers(), "decisions": {"analytics": True}}
        run.post("/v1/consent", body, headers=run.api.admin | {"Sec-GPC": "1"})
    return f"POST /v1/consent x{len(people)}"


def lookups(run: LeakRun, people: Sequence[Person]) -> str:
    # Every second person, by email or by phone in turn (each request costs ~10 ms).
    for person in people[::4]:
        run.post("/v1/resolve", {"identifier": {"type": "email", "value": person.email}})
    for person in people[2::4]:
        run.post("/v1/resolve", {"identifier": {"type": "phone", "value": person.phone}})
    pairs = list(zip(people[1::40], people[3::40], strict=False))
    for person, other in pairs:
        for path in ("/v1/links/explain", "/v1/links/unlink"):
            a, b = person.identifiers()
            run.post(path, {"a": a, "b": b})  # linked: explained, then split
            run.post(path, {"a": a, "b": other.identifiers()[0]})  # not linked: 409/404
    return f"resolve x{len(people[::2])}, explain and unlink x{len(pairs) * 4}"


def error_paths(run: LeakRun, people: Sequence[Person]) -> str:
    for chunk in _chunks(people):
        broken = [
            {
                "identifiers": [
                    {"type": "email", "value": p.email + "@@"},
                    {"type": "phone", "value": p.phone + "1234567"},
                    {"type": "passport", "value": p.name},
                ],
                "source": "web",
                "traits": {"first_name": 42, "nickname": p.name},
            }
            for p in chunk
        ]
        run.post("/v1/ingest", {"events": broken})
        keyed: dict[str, Any] = {"identifiers": chunk[0].identifiers(), "source": "web"}
        keyed["traits"] = {p.email: p.name for p in chunk}  # values as keys
        run.post("/v1/identify", keyed)
        run.post_raw("/v1/identify", json.dumps(keyed).encode()[:-3])  # truncated JSON
        run.post("/v1/resolve", {"identifier": {"type": "email", "value": chunk[0].name}})
        run.post("/v1/resolve", {"identifier": {"type": chunk[0].email, "value": "x"}})
        run.post(
            "/v1/links/explain",
            {"a": {"type": "phone", "value": chunk[1].name}, "b": chunk[2].identifiers()[0]},
        )
    return f"invalid payloads carrying {len(people)} people's values"


# Each input path gets its own share of the population; lookups and errors see everyone.
INPUT_PATHS: list[InputPath] = [identify, batch_ingest, bulk_jsonl, bulk_csv, consent]
LOOKUP_PATHS: list[InputPath] = [lookups]
ERROR_PATHS: list[InputPath] = [error_paths]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The shared test settings without rate limiting (thousands of requests on purpose) and
    without an fsync per commit (durability is another test's subject)."""
    return settings.model_copy(update={"rate_limit_per_minute": 0, "sqlite_synchronous": "NORMAL"})


def test_no_raw_value_of_1000_people_is_found_anywhere_after_every_input_path(
    api: Api, log_stream: io.StringIO, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    people = population()
    assert len({p.email.lower() for p in people}) == len({p.e164 for p in people}) == POPULATION
    run = LeakRun(api, tmp_path / "input", monkeypatch)
    run.workdir.mkdir()
    share = POPULATION // len(INPUT_PATHS)
    done = [path(run, people[i * share : (i + 1) * share]) for i, path in enumerate(INPUT_PATHS)]
    done += [path(run, people) for path in (*LOOKUP_PATHS, *ERROR_PATHS)]
    # The data did arrive (as hashes): not a vacuous scan.
    assert api.container.store.stats().identifiers >= 2 * share * 4, done

    scanner = Scanner(people)
    assert scanner.hits((run.workdir / "people.jsonl").read_bytes()), "the scanner finds nothing"
    blobs = list(run.outputs)
    blobs.append(("log", log_stream.getvalue().encode()))
    if run.has_route("GET", "/metrics"):
        metrics = api.client.get("/metrics", headers=api.admin)
        assert metrics.status_code == 200
        blobs.append(("GET /metrics", metrics.content))
    data_files = sorted(p for p in api.container.settings.data_dir.rglob("*") if p.is_file())
    assert {p.name for p in data_files} >= {"graph.sqlite3", "graph.sqlite3-wal"}
    blobs += [(f"file {p.name}", p.read_bytes()) for p in data_files]

    leaks = {label: found for label, blob in blobs if (found := scanner.hits(blob))}
    assert leaks == {}, f"raw values found: {leaks}"
