"""Crash-safety harness: run the real service and the bulk CLI as subprocesses, SIGKILL them at
random points, and check what the data dir holds afterwards.

Pieces (used by ``tests/identity/store/test_crash_safety.py``):

* :class:`ServerProcess` runs ``idgraph serve`` on a free port with its own data dir and waits
  for ``/readyz``; :func:`run_cli` / :class:`CliProcess` run other ``idgraph`` commands.
* :class:`Workload` makes requests from a seeded RNG: identify calls with several identifiers,
  traits and a marker event, links to known persons, merges of two persons, limit conflicts,
  all-or-nothing ``/v1/ingest`` batches (one of which is invalid on purpose), and writes to
  optional endpoints (consent, DSR) when the running app's OpenAPI document lists them.
* :class:`Driver` sends requests from several threads while a killer thread SIGKILLs the server
  after a random number of acknowledgments, so requests are in flight when it dies.
* :class:`Snapshot` reads every SQLite file of the data dir directly (control, audit and vault
  keys; the graph too on the embedded store) and, when the service runs on Neo4j
  (:class:`GraphTarget`, ``IDGRAPH_TEST_STORE=neo4j``), the graph through the official driver in
  one read transaction; :func:`check_snapshot` / :func:`check_events` say what is wrong, the
  same on both stores: integrity checks, the audit chain, graph invariants (connected clusters,
  no dangling links or facts, a data key for every fact's anchor) and, per request,
  "acknowledged means present" and "unknown means all or nothing".

Every event the workload sends carries a unique marker: a ``purchase`` event with a timestamp no
other event has and an ``order_id`` naming the event. Identifiers are either *fresh* (made for
this event, used again only once the event was acknowledged) or taken from acknowledged events.
So an event whose outcome is unknown is applied exactly when its marker fact exists, and then its
fresh identifiers must all exist (as nodes or as recorded refusals) in the marker's person, and
otherwise none of them may exist anywhere.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from neo4j import Driver as Neo4jDriver
from neo4j import GraphDatabase, ManagedTransaction

from identity.hashing import Keyring
from identity.policy import IdentityPolicy, load_identity_policy
from privacy.access.api_keys import ApiKeyStore, Scope
from privacy.auditing.log import SqliteAuditLog
from privacy.keys import vault as vault_module
from privacy.keys.hash_keys import create_key_file, keyring, read_key_file
from privacy.keys.keyprovider import LocalFileKeyProvider, create_kek_file
from privacy.keys.vault import Vault, VaultError
from privacy.keys.vault_sqlite import SqliteVaultKeyStore
from tests.support.neo4j_env import live_neo4j_settings
from tests.support.waits import wait_until

REPO = Path(__file__).resolve().parents[2]
POLICY_DIR = REPO / "policies"
REGION = "GB"
# Marker events are spaced a second apart from here: unique, in the past, valid RFC 3339.
MARKER_BASE = datetime(2026, 1, 1, tzinfo=UTC)
MARKER_EVENT = "purchase"
# Seconds; only a net against hangs, never an assertion about speed. Generous because CI has two
# cores shared with a JVM: a restarted server with PII scanning on needed more than 60 s to answer
# /readyz at load ~20 (the scanner's model loads at start-up), which failed kill rounds that had
# done nothing wrong.
SAFETY_TIMEOUT = 300.0
OPTIONAL_WRITE_PATHS = ("/v1/consent", "/v1/dsr")


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class GraphTarget:
    """Where the service under test keeps its graph: the data dir's SQLite file (``uri`` is
    ``None``) or a live Neo4j. The control database, the audit log and the vault keys stay
    SQLite files in the data dir either way."""

    uri: str | None = None
    user: str = "neo4j"
    password: str = ""
    database: str = "neo4j"

    @classmethod
    def from_env(cls) -> GraphTarget:
        """Neo4j when ``IDGRAPH_TEST_STORE=neo4j`` (``NEO4J_URI``/``NEO4J_PASSWORD`` of the
        throwaway server ``make test-neo4j`` starts), else the embedded store."""
        if os.environ.get("IDGRAPH_TEST_STORE", "sqlite") != "neo4j":
            return cls()
        where = live_neo4j_settings()
        if where is None:
            raise RuntimeError("IDGRAPH_TEST_STORE=neo4j needs NEO4J_URI and NEO4J_PASSWORD")
        return cls(where["uri"], where["user"], where["password"], where["database"])

    @property
    def is_neo4j(self) -> bool:
        """Whether the graph lives in Neo4j."""
        return self.uri is not None

    def service_env(self, data_dir: Path) -> dict[str, str]:
        """The settings pointing a service at this graph (the password as a 0600 file, as in
        compose)."""
        if self.uri is None:
            return {}
        secret = data_dir / "neo4j-password"
        if not secret.exists():
            fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.password)
        return {
            "IDGRAPH_STORE_URL": self.uri,
            "IDGRAPH_NEO4J_USER": self.user,
            "IDGRAPH_NEO4J_PASSWORD_FILE": str(secret),
            "IDGRAPH_NEO4J_DATABASE": self.database,
        }

    @contextlib.contextmanager
    def driver(self) -> Iterator[Neo4jDriver]:
        """An official-driver connection to the Neo4j graph."""
        assert self.uri is not None
        driver = GraphDatabase.driver(self.uri, auth=(self.user, self.password))
        try:
            yield driver
        finally:
            driver.close()

    def wipe(self) -> None:
        """Empty the Neo4j graph (a test's start; the schema stays). No-op on SQLite."""
        if self.uri is None:
            return
        from identity.store.neo4j import Neo4jGraphStore

        store = Neo4jGraphStore(self.uri, self.user, self.password, database=self.database)
        try:
            store.wipe_for_tests()
        finally:
            store.close()

    @contextlib.contextmanager
    def event_counter(self, data_dir: Path) -> Iterator[Callable[[], int]]:
        """A function counting the ``event`` facts committed right now (polled while a writer
        runs: a read-only SQLite view, whose WAL readers never block the writer, or one Neo4j
        driver kept open for the poll)."""
        if self.uri is None:
            yield functools.partial(_sqlite_event_count, data_dir / "graph.sqlite3")
            return
        with self.driver() as driver:

            def count() -> int:
                records, _, _ = driver.execute_query(
                    "MATCH (f:Fact {kind: 'event'}) RETURN count(f) AS n", database_=self.database
                )
                return int(records[0]["n"])

            yield count


def _sqlite_event_count(graph: Path) -> int:
    if not graph.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{graph}?mode=ro", uri=True) as conn:
            (count,) = conn.execute("SELECT count(*) FROM facts WHERE kind = 'event'").fetchone()
    except sqlite3.OperationalError:  # schema not created yet
        return 0
    return int(count)


GRAPH = GraphTarget.from_env()


def idgraph_command() -> list[str]:
    """The ``idgraph`` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("idgraph")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cli.main import main; main()"]


# The ingest applier's tally file (IDGRAPH_INGEST_APPLIER_TALLY_FILE) in a data dir.
APPLIER_TALLY_FILE = "applier-tally.json"


def service_env(
    data_dir: Path, *, pii_scan: bool = False, tally_file: bool = True
) -> dict[str, str]:
    """Environment for a service or CLI on ``data_dir`` (test env; keys made beforehand).

    The PII scanner is off by default: building presidio costs seconds per restart and the
    scanner only decides *what* is stored, not *how* it is committed.

    The ingest applier's tally file is :data:`APPLIER_TALLY_FILE` in ``data_dir`` (the test's
    own tmp dir): left unset, ``idgraph serve`` makes a ``/tmp/idgraph-*`` directory for it and
    removes it when it shuts down, which a SIGKILLed server never does. ``tally_file=False``
    leaves it unset, for a test of that default.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDGRAPH_")}
    env.update(
        {
            "IDGRAPH_ENV": "test",
            "IDGRAPH_DATA_DIR": str(data_dir),
            # Kept in the data dir so one copy of it holds everything (test env only;
            # production refuses a KEK next to the vault key file).
            "IDGRAPH_KEK_FILE": str(data_dir / "kek.json"),
            "IDGRAPH_POLICY_DIR": str(POLICY_DIR),
            "IDGRAPH_DEFAULT_REGION": REGION,
            "IDGRAPH_PII_SCAN": "true" if pii_scan else "false",
            "IDGRAPH_LOG_LEVEL": "warning",
            # The harness is one API key hammering the service on purpose; 0 turns the
            # per-key rate limit off (429s would only hide what the kills do).
            "IDGRAPH_RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    if tally_file:
        env["IDGRAPH_INGEST_APPLIER_TALLY_FILE"] = str(data_dir / APPLIER_TALLY_FILE)
    env.update(GRAPH.service_env(data_dir))
    return env


def prepare_data_dir(data_dir: Path, keys_from: Path | None = None) -> None:
    """Create the hash-key and KEK files (or copy them from ``keys_from``, so two data dirs
    hash and seal alike)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in ("hash-keys.json", "kek.json"):
        target = data_dir / name
        if keys_from is not None:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write((keys_from / name).read_bytes())
    if keys_from is None:
        create_key_file(data_dir / "hash-keys.json", origin="generated")
        create_kek_file(data_dir / "kek.json", origin="generated")


def create_key(data_dir: Path, name: str, scopes: frozenset[Scope]) -> str:
    """An API key with ``scopes`` in the data dir's control database (the service reads the
    same file); its token."""
    store = ApiKeyStore(data_dir / "control.sqlite3")
    try:
        _, token = store.create(name, scopes)
    finally:
        store.close()
    return token


def bearer(data_dir: Path, name: str, scopes: frozenset[Scope]) -> dict[str, str]:
    """Request headers carrying a new API key (``name``, ``scopes``) of the data dir's control
    database: ``{"Authorization": "Bearer <token>"}``."""
    return {"Authorization": f"Bearer {create_key(data_dir, name, scopes)}"}


def create_admin_key(data_dir: Path) -> str:
    """An admin API key in the data dir's control database (the service reads the same file)."""
    return create_key(data_dir, "crash-harness", frozenset({Scope.ADMIN}))


def sigkill(process: subprocess.Popen[bytes]) -> bool:
    """SIGKILL ``process`` and reap it; ``True`` if it was still running when killed."""
    alive = process.poll() is None
    if alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=SAFETY_TIMEOUT)
    return alive


def child_pids(pid: int) -> list[int]:
    """The child processes of ``pid`` now (``/proc/<pid>/task/*/children``; none elsewhere)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in (task / "children").read_text().split()]
    return found


def bulk_readers(pid: int) -> list[int]:
    """The bulk-file reader processes (``services.bulk_reader``) ``pid`` has running now."""
    found = []
    for child in child_pids(pid):
        with contextlib.suppress(OSError):
            if b"services.bulk_reader" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


def running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped by init does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


class ServerProcess:
    """``idgraph serve`` in a subprocess on 127.0.0.1 and a free port."""

    def __init__(
        self, data_dir: Path, log_dir: Path, *, pii_scan: bool = False, tally_file: bool = True
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.pii_scan = pii_scan
        self.tally_file = tally_file  # service_env's: False leaves serve its own tally directory
        # Settings of the next start on top of service_env's (IDGRAPH_* names).
        self.extra_env: dict[str, str] = {}
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base_url(self) -> str:
        """Where the running server listens."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the server and wait until ``/readyz`` answers 200."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("the server is already running")
        # The port is free when picked, not necessarily when the server binds it seconds later
        # (other suites run on the same host): a start that lost its port is retried on another.
        for attempt in range(3):
            self.starts += 1
            self.port = free_port()
            log = self.log_dir / f"server-{self.starts}.log"
            with log.open("wb") as handle:
                self.process = subprocess.Popen(
                    [*idgraph_command(), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                    cwd=REPO,
                    env=service_env(
                        self.data_dir, pii_scan=self.pii_scan, tally_file=self.tally_file
                    )
                    | self.extra_env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                )
            try:
                self._wait_ready(log)
            except RuntimeError:
                lost_port = "address already in use" in log.read_text(errors="replace").lower()
                if not lost_port or attempt == 2:
                    raise
                self.process = None
            else:
                return

    def _wait_ready(self, log: Path) -> None:
        assert self.process is not None
        ready = threading.Event()
        deadline = threading.Timer(SAFETY_TIMEOUT, ready.set)
        deadline.start()
        try:
            with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
                while not ready.is_set():
                    if self.process.poll() is not None:
                        raise RuntimeError(
                            f"the server exited with {self.process.returncode}:\n"
                            + log.read_text(errors="replace")[-4000:]
                        )
                    with contextlib.suppress(httpx.TransportError):
                        if client.get("/readyz").status_code == 200:
                            return
                    ready.wait(0.05)
        finally:
            deadline.cancel()
        raise RuntimeError(f"the server did not get ready within {SAFETY_TIMEOUT:.0f} s")

    def kill(self) -> bool:
        """SIGKILL the server (no shutdown, no checkpoint); ``True`` if it was running.

        Returns once the server's child processes (``idgraph serve``'s ingest applier) are gone
        too: a child notices its server died within half a second and closes its stores, and
        SQLite then deletes the ``-wal``/``-shm`` files a test may be reading (a check of the
        data directory right after a kill failed with FileNotFoundError now and then). A real
        restart is no different: the supervisor restarts the server with its children gone."""
        if self.process is None:
            return False
        children = child_pids(self.process.pid)
        try:
            return sigkill(self.process)
        finally:
            self.process = None
            wait_until(
                lambda: not any(map(running, children)),
                "the killed server's children exited",
                timeout_s=SAFETY_TIMEOUT,
                poll_s=0.02,
            )

    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process is not None else None


def run_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``idgraph ARGS`` to completion on ``data_dir``."""
    return subprocess.run(
        [*idgraph_command(), *args],
        cwd=REPO,
        env=service_env(data_dir),
        capture_output=True,
        timeout=SAFETY_TIMEOUT * 3,
        check=False,
    )


def start_cli(data_dir: Path, log: Path, *args: str, niceness: int = 0) -> subprocess.Popen[bytes]:
    """Start ``idgraph ARGS`` on ``data_dir`` without waiting; output goes to ``log``.

    ``niceness`` > 0 runs it under ``nice`` (which execs it: the pid is the command's), so a
    test polling it to kill it mid-run gets the CPU first on a loaded machine.
    """
    prefix = ["nice", "-n", str(niceness)] if niceness > 0 else []
    with log.open("wb") as handle:
        return subprocess.Popen(
            [*prefix, *idgraph_command(), *args],
            cwd=REPO,
            env=service_env(data_dir),
            stdout=handle,
            stderr=subprocess.STDOUT,
        )


# -- the workload -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ident:
    """An identifier as a client sends it."""

    type: str
    value: str

    def as_json(self) -> dict[str, str]:
        """The request form."""
        return {"type": self.type, "value": self.value}


class Result(enum.Enum):
    """What the client learned about a request."""

    PENDING = "pending"
    ACKED = "acked"  # 2xx: must be present, entirely
    REJECTED = "rejected"  # 4xx: must be absent, entirely
    UNKNOWN = "unknown"  # the connection died (or 5xx): all or nothing


@dataclass(slots=True)
class EventSpec:
    """One event of a request, with what the checks need to know about it."""

    marker: int  # unique: the marker event's timestamp is MARKER_BASE + marker seconds
    identifiers: tuple[Ident, ...]
    fresh: tuple[Ident, ...]  # made for this event; nobody else used them before its ack
    traits: dict[str, Any]
    invalid: bool = False  # sent broken on purpose (the request must get a 4xx)
    refused: frozenset[int] = frozenset()  # positions the 2xx answer said were not linked

    @property
    def order_id(self) -> str:
        """The marker event's ``order_id`` (checked after decrypting the stored fact)."""
        return f"crash-{self.marker}"

    @property
    def at(self) -> datetime:
        """The marker event's timestamp."""
        return MARKER_BASE + timedelta(seconds=self.marker)

    def body(self) -> dict[str, Any]:
        """The ``/v1/identify`` body (also one element of a ``/v1/ingest`` batch)."""
        identifiers = [i.as_json() for i in self.identifiers]
        if self.invalid:
            identifiers.append({"type": "email", "value": "not-an-email"})
        return {
            "source": "crash",
            "timestamp": self.at.isoformat(),
            "identifiers": identifiers,
            "traits": self.traits,
            "events": [
                {
                    "name": MARKER_EVENT,
                    "timestamp": self.at.isoformat(),
                    "properties": {"order_id": self.order_id, "amount": 9.5, "currency": "EUR"},
                }
            ],
        }

    def linked(self) -> list[Ident]:
        """The identifiers the answer did not refuse (only meaningful once acknowledged)."""
        return [i for n, i in enumerate(self.identifiers) if n not in self.refused]


@dataclass(slots=True)
class Op:
    """One HTTP request of the workload."""

    op_id: int
    path: str
    events: tuple[EventSpec, ...] = ()
    body: dict[str, Any] | None = None  # for optional endpoints: sent as is
    result: Result = Result.PENDING
    status: int | None = None

    def request_body(self) -> dict[str, Any]:
        """What is sent."""
        if self.body is not None:
            return self.body
        if self.path == "/v1/ingest":
            return {"events": [e.body() for e in self.events]}
        return self.events[0].body()

    def record(self, response: httpx.Response) -> None:
        """Classify the answer; for 2xx, note which identifiers were refused."""
        self.status = response.status_code
        if 200 <= response.status_code < 300:
            self.result = Result.ACKED
            if self.events:
                payload = response.json()
                results = payload["results"] if self.path == "/v1/ingest" else [payload]
                for event, item in zip(self.events, results, strict=True):
                    event.refused = frozenset(
                        int(r["pointer"].rsplit("/", 1)[1]) for r in item["refused"]
                    )
        elif 400 <= response.status_code < 500:
            self.result = Result.REJECTED
        else:
            self.result = Result.UNKNOWN


def _phone(n: int) -> str:
    return f"+49151{n:08d}"  # German mobile range: valid for libphonenumber, plenty of numbers


TRAIT_CHOICES: dict[str, Sequence[Any]] = {
    "city": ("Lisbon", "Berlin", "Porto", "Lyon"),
    "age_band": ("18-24", "25-34", "35-44"),
    "visit_count": (1, 2, 3, 5, 8),
    "interests": (["running"], ["chess", "tea"], []),
}


class Workload:
    """Makes requests from a seeded RNG and remembers every one for the checks.

    Thread-safe: workers call :meth:`next_op` and :meth:`settle` concurrently.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.tag = f"{seed:x}"
        self.optional_paths: tuple[str, ...] = ()
        self.ops: list[Op] = []
        self._counter = 0
        self._marker = 0
        self._lock = threading.Lock()
        # Identifiers of acknowledged events, grouped by event: what later requests may reuse.
        self._known: list[list[Ident]] = []
        self._with_customer_id: list[list[Ident]] = []
        # Acknowledged events set aside for optional writes (consent, DSR): never reused by the
        # identity workload, so an erasure cannot take an identifier another check relies on.
        self._optional_targets: list[Ident] = []
        self.acked = 0
        self.optional_statuses: Counter[str] = Counter()
        self.schemas: Mapping[str, Any] = {}

    def enable_optional(self, openapi: Mapping[str, Any]) -> tuple[str, ...]:
        """Include writes to the optional endpoints (consent, DSR) the app's OpenAPI lists."""
        paths, schemas = optional_write_paths(openapi)
        with self._lock:
            self.optional_paths, self.schemas = tuple(paths), schemas
        return self.optional_paths

    def offline_events(self, count: int, invalid_share: float) -> list[EventSpec]:
        """Events for a bulk file: later rows reuse the fresh cookie of earlier rows (links and
        merges inside the file); a few rows are invalid on purpose."""
        events: list[EventSpec] = []
        with self._lock:
            for _ in range(count):
                kind = self.rng.choices(("new", "link", "merge"), weights=(60, 25, 15), k=1)[0]
                event = self._event(kind)
                if self.rng.random() < invalid_share:
                    event.invalid = True
                else:
                    self._known.append([i for i in event.fresh if i.type == "cookie_id"])
                events.append(event)
        return events

    def _fresh(self, identifier_type: str) -> Ident:
        self._counter += 1
        n = self._counter
        value = {
            "customer_id": f"C-{self.tag}-{n}",
            "email": f"u{n}.{self.tag}@crash-shop.de",
            "phone": _phone(int(self.tag, 16) % 1000 * 100_000 + n),
            "idfa": f"{int(self.tag[-6:], 16):08x}-0000-4000-8000-{n:012x}",
            "cookie_id": f"ck-{self.tag}-{n}",
            "anonymous_id": f"anon-{self.tag}-{n}",
        }[identifier_type]
        return Ident(identifier_type, value)

    def _event(self, kind: str) -> EventSpec:
        rng = self.rng
        self._marker += 1
        # Every event has a fresh cookie: it is what "applied or not" is decided by, with the
        # marker fact.
        fresh = [self._fresh("cookie_id")]
        for identifier_type, chance in (("email", 0.5), ("phone", 0.3), ("idfa", 0.3)):
            if rng.random() < chance:
                fresh.append(self._fresh(identifier_type))
        reused: list[Ident] = []
        if kind == "new" and rng.random() < 0.4:
            fresh.append(self._fresh("customer_id"))
        elif kind == "link" and self._known:
            reused.append(rng.choice(rng.choice(self._known)))
        elif kind == "merge" and len(self._known) >= 2:
            for group in rng.sample(self._known, 2):
                reused.append(rng.choice(group))
        elif kind == "conflict" and self._with_customer_id:
            # A second customer id for a person that has one: the lower-priority side loses.
            fresh.append(self._fresh("customer_id"))
            reused.append(rng.choice(rng.choice(self._with_customer_id)))
        identifiers = fresh + reused
        rng.shuffle(identifiers)
        traits = {
            key: rng.choice(values) for key, values in TRAIT_CHOICES.items() if rng.random() < 0.5
        }
        return EventSpec(self._marker, tuple(identifiers), tuple(fresh), traits)

    def _kind(self) -> str:
        return self.rng.choices(
            ("new", "link", "merge", "conflict"), weights=(35, 30, 25, 10), k=1
        )[0]

    def next_op(self) -> Op:
        """The next request to send."""
        with self._lock:
            rng = self.rng
            self_id = len(self.ops)
            roll = rng.random()
            if self.optional_paths and self._optional_targets and roll < 0.1:
                op = self._optional_op(self_id)
            elif roll < 0.25:
                events = tuple(self._event(self._kind()) for _ in range(rng.randint(2, 4)))
                if rng.random() < 0.15:
                    events[-1].invalid = True  # one bad event refuses the whole batch
                op = Op(self_id, "/v1/ingest", events)
            else:
                op = Op(self_id, "/v1/identify", (self._event(self._kind()),))
            self.ops.append(op)
            return op

    def _optional_op(self, op_id: int) -> Op:
        path = self.rng.choice(self.optional_paths)
        target = self.rng.choice(self._optional_targets)
        body = fill_schema(self.schemas.get(path, {}), self.schemas, self.rng, target)
        return Op(op_id, path, body=body if isinstance(body, dict) else {})

    def settle(self, op: Op) -> None:
        """Note an answered request; acknowledged identifiers become reusable."""
        with self._lock:
            if op.body is not None:
                self.optional_statuses[f"{op.path} {op.status}"] += 1
            if op.result is not Result.ACKED:
                return
            self.acked += 1
            for event in op.events:
                linked = event.linked()
                if not linked:
                    continue
                if (
                    self.optional_paths
                    and len(self._optional_targets) < 20
                    and event.marker % 3 == 0
                    and all(i in event.fresh for i in event.identifiers)
                ):
                    self._optional_targets.append(linked[0])
                    continue
                self._known.append(linked)
                if any(i.type == "customer_id" for i in linked):
                    self._with_customer_id.append(linked)

    @property
    def optional_target_set(self) -> frozenset[Ident]:
        """Identifiers handed to optional writes (their persons may be erased)."""
        with self._lock:
            return frozenset(self._optional_targets)


def fill_schema(
    schema: Mapping[str, Any],
    components: Mapping[str, Any],
    rng: random.Random,
    target: Ident,
    name: str = "",
) -> Any:
    """A value for a JSON schema of the app's OpenAPI document (optional endpoints only).

    Good enough for request bodies of consent and DSR endpoints whose shape the harness does not
    know in advance: objects with ``type``/``value`` properties become ``target``; consts, enums
    and documented examples are used when present; optional properties are sent only when the
    schema documents an example (anything else would be a guess the app rightly refuses);
    strings named like ids are made unique.
    """
    if "$ref" in schema:
        ref = str(schema["$ref"]).rsplit("/", 1)[-1]
        return fill_schema(components.get(ref, {}), components, rng, target, name)
    fixed = (
        schema.get("enum")
        or schema.get("examples")
        or ([schema["const"]] if "const" in schema else None)
    )
    if fixed:
        value = rng.choice(fixed)
        unique = isinstance(value, str) and name.endswith("id")
        return f"{value}-{rng.getrandbits(48):012x}" if unique else value
    options = [s for s in schema.get("anyOf", schema.get("oneOf", ())) if s.get("type") != "null"]
    if options or "allOf" in schema:
        chosen = rng.choice(options) if options else schema["allOf"][0]
        return fill_schema(chosen, components, rng, target, name)
    properties: Mapping[str, Any] = schema.get("properties", {})
    if schema.get("type") == "object" or properties:
        if {"type", "value"} <= properties.keys():
            return target.as_json()
        required = set(schema.get("required", ()))
        return {
            key: fill_schema(sub, components, rng, target, key)
            for key, sub in properties.items()
            if key in required or "examples" in sub
        }
    return _leaf(schema, components, rng, target, name)


def _leaf(
    schema: Mapping[str, Any],
    components: Mapping[str, Any],
    rng: random.Random,
    target: Ident,
    name: str,
) -> Any:
    kind = schema.get("type")
    if kind == "array":
        return [fill_schema(schema.get("items", {}), components, rng, target, name)]
    if kind == "boolean":
        return rng.random() < 0.5
    if kind in ("integer", "number"):
        return int(schema.get("minimum", 1))
    if kind == "string" and schema.get("format") == "date-time":
        return datetime.now(UTC).isoformat()
    return f"crash-{rng.getrandbits(48):012x}" if kind == "string" else None


def optional_write_paths(openapi: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The optional write endpoints the running app has, and the schemas to fill their bodies:
    ``{path: request schema, component name: schema, ...}``."""
    paths: Mapping[str, Any] = openapi.get("paths", {})
    found: list[str] = []
    schemas: dict[str, Any] = dict(openapi.get("components", {}).get("schemas", {}))
    for path in OPTIONAL_WRITE_PATHS:
        post = paths.get(path, {}).get("post")
        if post is None:
            continue
        content = post.get("requestBody", {}).get("content", {})
        body_schema = content.get("application/json", {}).get("schema")
        if body_schema is not None:
            found.append(path)
            schemas[path] = body_schema
    return found, schemas


# -- driving and killing ------------------------------------------------------------------------


@dataclass(slots=True)
class KillRound:
    """What one run-until-killed round did."""

    sent: int = 0
    acked: int = 0
    unknown: int = 0
    killed_running: bool = False


class Driver:
    """Sends the workload from several threads; a killer thread SIGKILLs the server once
    ``kill_after`` more requests were acknowledged (plus a random sub-request delay)."""

    def __init__(self, workload: Workload, token: str, workers: int = 4) -> None:
        self.workload = workload
        self.token = token
        self.workers = workers
        self.server_errors: list[Op] = []  # 5xx answers (the test fails on them)

    def run_round(self, server: ServerProcess, kill_after: int, jitter: float) -> KillRound:
        """Drive ``server`` until it is killed; returns the round's counts."""
        round_ = _Round(self, server)
        threads = [threading.Thread(target=round_.worker, daemon=True) for _ in range(self.workers)]
        killer = threading.Thread(target=round_.killer, args=(kill_after, jitter), daemon=True)
        for thread in [*threads, killer]:
            thread.start()
        killer.join(timeout=SAFETY_TIMEOUT * 2)
        round_.stop.set()
        server.kill()  # a no-op unless the killer gave up
        for thread in threads:
            thread.join(timeout=SAFETY_TIMEOUT)
        if round_.errors:
            raise round_.errors[0]
        return round_.stats


class _Round:
    """The shared state of one run-until-killed round."""

    def __init__(self, driver: Driver, server: ServerProcess) -> None:
        self.driver = driver
        self.server = server
        self.stats = KillRound()
        self.stop = threading.Event()
        self.acked = threading.Semaphore(0)
        self.lock = threading.Lock()
        self.errors: list[Exception] = []

    def worker(self) -> None:
        headers = {"Authorization": f"Bearer {self.driver.token}"}
        try:
            with httpx.Client(
                base_url=self.server.base_url, headers=headers, timeout=SAFETY_TIMEOUT
            ) as client:
                while not self.stop.is_set() and self._send(client):
                    pass
        except Exception as exc:  # noqa: BLE001 - handed to the test's thread, re-raised there
            self.errors.append(exc)
        if not self.stop.is_set():  # died before the kill (or failed): wake the killer up
            self.stop.set()
            self.acked.release()

    def _send(self, client: httpx.Client) -> bool:
        """Send one request; ``False`` once the connection died."""
        op = self.driver.workload.next_op()
        try:
            op.record(client.post(op.path, json=op.request_body()))
        except httpx.TransportError:
            op.result = Result.UNKNOWN
        self.driver.workload.settle(op)
        with self.lock:
            self.stats.sent += 1
            self.stats.acked += op.result is Result.ACKED
            self.stats.unknown += op.result is Result.UNKNOWN
        if op.result is Result.ACKED:
            self.acked.release()
        elif op.status is not None and op.status >= 500:
            self.driver.server_errors.append(op)
        return op.status is not None

    def killer(self, kill_after: int, jitter: float) -> None:
        for _ in range(kill_after):
            if not self.acked.acquire(timeout=SAFETY_TIMEOUT) or self.stop.is_set():
                break
        # A random point inside the next requests, so some are mid-transaction when it dies.
        self.stop.wait(jitter)
        self.stats.killed_running = self.server.kill()
        self.stop.set()


# -- reading the data dir -----------------------------------------------------------------------


def sqlite_files(data_dir: Path) -> list[Path]:
    """Every SQLite database of the data dir (not their -wal/-shm files)."""
    return sorted(
        p for p in data_dir.iterdir() if p.is_file() and p.suffix in (".sqlite3", ".sqlite", ".db")
    )


def _connect(path: Path) -> sqlite3.Connection:
    # A plain connection: opening replays a WAL left behind by a killed process, as the service
    # itself would on restart.
    return sqlite3.connect(path, isolation_level=None)


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


@dataclass(slots=True)
class FactRow:
    """One row of the facts table."""

    fact_id: str
    node_id: str
    kind: str
    name: str
    at_ms: int
    status: str
    sealed: bytes


@dataclass(slots=True)
class Snapshot:
    """Everything the checks need, read from the data dir while no process runs."""

    data_dir: Path
    keyring: Keyring
    policy: IdentityPolicy
    problems: list[str] = field(default_factory=list)
    persons: set[str] = field(default_factory=set)
    nodes: dict[str, tuple[str, bytes, str]] = field(default_factory=dict)  # id: type, digest, p
    by_digest: dict[tuple[str, bytes], str] = field(default_factory=dict)  # -> node id
    links: list[tuple[str, str, str, int, int]] = field(default_factory=list)
    refusals: list[tuple[str, bytes, str]] = field(default_factory=list)
    facts: list[FactRow] = field(default_factory=list)
    plaintexts: dict[str, bytes] = field(default_factory=dict)  # fact id -> payload
    data_keys: set[str] = field(default_factory=set)
    shredded: set[str] = field(default_factory=set)
    shred_refs: dict[str, str] = field(default_factory=dict)  # owner -> keyed shred ref
    audit_entries: int = 0
    marker_facts: dict[int, list[FactRow]] = field(default_factory=dict)  # by timestamp (ms)
    refused: set[tuple[str, bytes]] = field(default_factory=set)  # (type, digest) refused once

    @classmethod
    def read(cls, data_dir: Path, graph: GraphTarget | None = None) -> Snapshot:
        """Read the data dir, and the graph from ``graph`` (default: this run's store);
        file-level problems (integrity, audit chain) go to ``problems``."""
        graph = GRAPH if graph is None else graph
        snap = cls(
            data_dir,
            keyring(read_key_file(data_dir / "hash-keys.json")),
            load_identity_policy(POLICY_DIR / "identity.yaml"),
        )
        for path in sqlite_files(data_dir):
            snap._read_file(path, graph_in_file=not graph.is_neo4j)
        if graph.is_neo4j:
            with graph.driver() as driver, driver.session(database=graph.database) as session:
                session.execute_read(snap._read_neo4j_graph)
        snap._load_shred_refs()
        snap._decrypt()
        for fact in snap.facts:
            if fact.kind == "event" and fact.name == MARKER_EVENT:
                snap.marker_facts.setdefault(fact.at_ms, []).append(fact)
        snap.refused = {(t, d) for t, d, _ in snap.refusals}
        return snap

    def _read_file(self, path: Path, *, graph_in_file: bool = True) -> None:
        conn = _connect(path)
        try:
            integrity = conn.execute("PRAGMA integrity_check").fetchall()
            if integrity != [("ok",)]:
                self.problems.append(f"{path.name}: integrity_check {integrity[:5]}")
            dangling = conn.execute("PRAGMA foreign_key_check").fetchall()
            if dangling:
                self.problems.append(f"{path.name}: foreign_key_check {dangling[:5]}")
            tables = _tables(conn)
            if "identifiers" in tables:
                if not graph_in_file:
                    self.problems.append(f"{path.name}: a graph table, but the graph is in Neo4j")
                self._read_graph(conn)
            if "data_keys" in tables:
                self.data_keys = {r[0] for r in conn.execute("SELECT owner FROM data_keys")}
                # Shredded owners: in clear (vault schema 1) or as digests (schema 2).
                for table, column in (("shredded", "owner"), ("shredded_refs", "ref")):
                    if table in tables:
                        rows = conn.execute(f"SELECT {column} FROM {table}")  # noqa: S608 - fixed names
                        self.shredded.update(r[0] for r in rows)
        finally:
            conn.close()
        if "audit_log" in tables:
            log = SqliteAuditLog(path)
            try:
                verdict = log.verify()
            finally:
                log.close()
            self.audit_entries += verdict.entries_checked
            if not verdict.ok:
                self.problems.append(f"{path.name}: audit chain broken: {verdict}")

    def _read_graph(self, conn: sqlite3.Connection) -> None:
        self.persons = {r[0] for r in conn.execute("SELECT person_id FROM persons")}
        # Graph schema 7: rows refer to each other by integer keys; read back the public ids.
        for node_id, type_, digest, person in conn.execute(
            "SELECT i.node_id, i.type, i.digest, coalesce(p.person_id, '') FROM identifiers i "
            "LEFT JOIN persons p ON p.pk = i.person"
        ):
            self.nodes[node_id] = (type_, bytes(digest), person)
            self.by_digest[(type_, bytes(digest))] = node_id
        self.links = list(
            conn.execute(
                "SELECT a.node_id, b.node_id, l.source, l.first_at, l.last_at FROM links l "
                "JOIN identifiers a ON a.pk = l.a JOIN identifiers b ON b.pk = l.b"
            )
        )
        self.refusals = [
            (t, bytes(d), r)
            for t, d, r in conn.execute("SELECT type, digest, reason FROM refusals")
        ]
        self.facts = [
            FactRow(f, n, k, name, at, status, bytes(sealed))
            for f, n, k, name, at, status, sealed in conn.execute(
                "SELECT f.fact_id, coalesce(i.node_id, ''), f.kind, f.name, f.at, f.status, "
                "f.sealed FROM facts f LEFT JOIN identifiers i ON i.pk = f.node"
            )
        ]

    def _read_neo4j_graph(self, tx: ManagedTransaction) -> None:
        """The same rows as :meth:`_read_graph`, from Neo4j (digests are hex strings there)."""
        self.persons = {r["id"] for r in tx.run("MATCH (p:Person) RETURN p.person_id AS id")}
        for r in tx.run(
            "MATCH (i:Identifier) OPTIONAL MATCH (p:Person)-[:HAS_IDENTIFIER]->(i) "
            "RETURN i.node_id AS id, i.type AS type, i.digest AS digest, "
            "collect(p.person_id) AS persons"
        ):
            persons = list(r["persons"])
            if len(persons) != 1:
                self.problems.append(f"node {r['id']} belongs to {len(persons)} persons")
            person = persons[0] if persons else ""
            digest = bytes.fromhex(r["digest"])
            self.nodes[r["id"]] = (r["type"], digest, person)
            self.by_digest[(r["type"], digest)] = r["id"]
        self.links = [
            (r["a"], r["b"], r["source"], r["first_at"], r["last_at"])
            for r in tx.run(
                "MATCH (a:Identifier)-[l:LINKED]->(b:Identifier) RETURN a.node_id AS a, "
                "b.node_id AS b, l.source AS source, l.first_at AS first_at, l.last_at AS last_at"
            )
        ]
        self.refusals = [
            (r["type"], bytes.fromhex(r["digest"]), r["reason"])
            for r in tx.run(
                "MATCH (r:Refusal) RETURN r.type AS type, r.digest AS digest, r.reason AS reason"
            )
        ]
        for r in tx.run(
            "MATCH (f:Fact) OPTIONAL MATCH (i:Identifier)-[:HAS_FACT]->(f) "
            "RETURN f.fact_id AS id, collect(i.node_id) AS anchors, f.kind AS kind, "
            "f.name AS name, f.at AS at, f.status AS status, f.sealed AS sealed"
        ):
            anchors = list(r["anchors"])
            if len(anchors) > 1:
                self.problems.append(f"fact {r['id']} has {len(anchors)} anchors")
            self.facts.append(
                FactRow(
                    r["id"],
                    anchors[0] if anchors else "",
                    r["kind"],
                    r["name"],
                    r["at"],
                    r["status"],
                    bytes(r["sealed"]),
                )
            )

    def _load_shred_refs(self) -> None:
        """Keyed shred refs (schema 3) of every fact's anchor, computed with the real vault."""
        if vault_module.REFS_OWNER not in self.data_keys:
            return  # nothing was ever shredded under a keyed ref
        keys = SqliteVaultKeyStore(self.data_dir / "vault-keys.sqlite3")
        try:
            vault = Vault(keys, LocalFileKeyProvider(self.data_dir / "kek.json"))
            owners = {f.node_id for f in self.facts} | set(self.nodes)
            self.shred_refs = {owner: vault.shred_ref(owner) for owner in owners}
        finally:
            keys.close()

    def _decrypt(self) -> None:
        readable = [f for f in self.facts if not self.is_shredded(f.node_id)]
        if not readable or not (self.data_dir / "vault-keys.sqlite3").exists():
            return
        keys = SqliteVaultKeyStore(self.data_dir / "vault-keys.sqlite3")
        try:
            vault = Vault(keys, LocalFileKeyProvider(self.data_dir / "kek.json"))
            for fact in readable:
                try:
                    (plain,) = vault.decrypt_many(
                        [(fact.node_id, f"{fact.kind}:{fact.name}", fact.sealed)]
                    )
                except VaultError as exc:
                    self.problems.append(f"fact {fact.fact_id} does not decrypt: {exc.code}")
                    continue
                self.plaintexts[fact.fact_id] = plain
        finally:
            keys.close()

    # -- lookups --------------------------------------------------------------------------

    def is_shredded(self, owner: str) -> bool:
        """Whether the vault destroyed ``owner``'s data key on purpose (crypto-shredding)."""
        legacy = getattr(vault_module, "_legacy_shred_ref", None)  # schema 2: unkeyed digests
        return (
            owner in self.shredded
            or self.shred_refs.get(owner) in self.shredded
            or (legacy is not None and legacy(owner) in self.shredded)
        )

    def digest(self, ident: Ident) -> tuple[str, bytes]:
        """The (type, primary-key digest) the service stores ``ident`` under."""
        hashed = self.keyring.hash(self.policy.normalize(ident.type, ident.value, REGION))
        return hashed.type, hashed.digest

    def person_of(self, ident: Ident) -> str | None:
        """The person ``ident`` belongs to in the store, or ``None``."""
        node = self.by_digest.get(self.digest(ident))
        return self.nodes[node][2] if node is not None else None


def check_snapshot(snap: Snapshot) -> list[str]:
    """Graph invariants that hold whatever was sent: no dangling rows, connected persons, a data
    key (or a recorded shred) for every fact's anchor. Returns the problems found."""
    problems = list(snap.problems)
    members: dict[str, list[str]] = {}
    for node_id, (_, _, person) in snap.nodes.items():
        members.setdefault(person, []).append(node_id)
        if person not in snap.persons:
            problems.append(f"node {node_id} belongs to missing person {person}")
    problems.extend(f"person {p} has no identifiers" for p in snap.persons - members.keys())
    parent = {node_id: node_id for node_id in snap.nodes}

    def find(node: str) -> str:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for a, b, source, _, _ in snap.links:
        if a not in snap.nodes or b not in snap.nodes:
            problems.append(f"link {a}-{b} ({source}) has a missing endpoint")
            continue
        if snap.nodes[a][2] != snap.nodes[b][2]:
            problems.append(f"link {a}-{b} joins two persons")
        parent[find(a)] = find(b)
    for person, nodes in members.items():
        if len({find(n) for n in nodes}) > 1:
            problems.append(f"person {person} is not connected ({len(nodes)} identifiers)")
    for fact in snap.facts:
        if fact.node_id not in snap.nodes:
            problems.append(f"fact {fact.fact_id} is anchored to missing node {fact.node_id}")
        if fact.node_id not in snap.data_keys and not snap.is_shredded(fact.node_id):
            problems.append(f"fact {fact.fact_id}: no data key for anchor {fact.node_id}")
    return problems


def marker_ms(event: EventSpec) -> int:
    return int(event.at.timestamp() * 1000)


def event_problems(
    snap: Snapshot,
    event: EventSpec,
    result: Result,
    shared: frozenset[Ident] = frozenset(),
    *,
    repeats_ok: bool = False,
) -> list[str]:
    """Per event: acknowledged means present in full; unknown means all or nothing;
    rejected means absent. ``shared``: identifiers other events reuse whatever this one's fate
    (bulk files), so their existence says nothing about this event. ``repeats_ok``: the event
    may have been applied more than once (a bulk file ingested again after a kill)."""
    where = f"event {event.marker} ({result.value})"
    markers = snap.marker_facts.get(marker_ms(event), [])
    refused = snap.refused
    own = [i for i in event.fresh if i not in shared]
    fresh_found = [snap.digest(i) in snap.by_digest or snap.digest(i) in refused for i in own]
    present = bool(markers)
    if result is Result.REJECTED or (result is Result.UNKNOWN and not present):
        if any(fresh_found):
            return [f"{where}: no marker but {sum(fresh_found)} of its new identifiers exist"]
        return [f"{where}: marker stored for a rejected request"] if present else []
    if not present:
        return [f"{where}: marker event missing"]
    problems: list[str] = []
    if len(markers) != 1 and not repeats_ok:
        problems.append(f"{where}: {len(markers)} marker facts")
    owners = {snap.nodes[m.node_id][2] if m.node_id in snap.nodes else None for m in markers}
    if len(owners) != 1:
        problems.append(f"{where}: marker facts in {len(owners)} persons")
    for marker in markers:
        payload = snap.plaintexts.get(marker.fact_id)
        stored = json.loads(payload).get("properties", {}) if payload is not None else None
        if stored is not None and stored.get("order_id") != event.order_id:
            problems.append(f"{where}: marker fact holds another event's payload")
    person = owners.pop()
    if not all(fresh_found):
        problems.append(f"{where}: half applied: marker present, new identifiers missing")
    expected = event.linked() if result is Result.ACKED else own
    for ident in expected:
        got = snap.person_of(ident)
        if result is Result.UNKNOWN and got is None:
            continue  # a fresh identifier refused by a limit: recorded as a refusal (above)
        if got != person:
            problems.append(f"{where}: {ident.type} identifier not in the marker's person")
    return problems


def check_events(
    snap: Snapshot, ops: Sequence[Op], skip: frozenset[Ident] = frozenset()
) -> list[str]:
    """Check every request of the workload against the snapshot. ``skip``: identifiers whose
    persons optional writes may have erased (their events are not checked)."""
    problems: list[str] = []
    for op in ops:
        if not op.events or op.result is Result.PENDING:
            continue
        batch = [(e, event_problems(snap, e, op.result)) for e in op.events]
        batch = [(e, p) for e, p in batch if not (set(e.identifiers) & skip)]
        for _, found in batch:
            problems.extend(found)
        if op.path == "/v1/ingest" and op.result is Result.UNKNOWN:
            states = {marker_ms(e) in snap.marker_facts for e, _ in batch}
            if len(states) > 1:
                problems.append(f"batch {op.op_id}: some events applied, others not")
    return problems


# -- canonical state (for "the re-run converges to an uninterrupted run") -----------------------


@dataclass(frozen=True, slots=True)
class CanonicalState:
    """The graph with every random id (person, node, fact) replaced by what it stands for."""

    clusters: frozenset[frozenset[tuple[str, bytes]]]
    links: frozenset[tuple[tuple[str, bytes], tuple[str, bytes], str, int, int]]
    attributes: frozenset[tuple[tuple[str, bytes], str, int, bytes]]
    raw_identifiers: frozenset[tuple[tuple[str, bytes], bytes]]
    events: Counter[tuple[tuple[str, bytes], str, int, bytes]]
    refusals: frozenset[tuple[str, bytes, str]]


def canonical(snap: Snapshot) -> CanonicalState:
    """The canonical form of a snapshot (plaintexts included: sealing uses random nonces)."""

    def key(node_id: str) -> tuple[str, bytes]:
        type_, digest, _ = snap.nodes[node_id]
        return type_, digest

    clusters: dict[str, set[tuple[str, bytes]]] = {}
    for node_id, (_, _, person) in snap.nodes.items():
        clusters.setdefault(person, set()).add(key(node_id))
    facts = [(f, key(f.node_id), snap.plaintexts.get(f.fact_id, b"")) for f in snap.facts]
    return CanonicalState(
        clusters=frozenset(frozenset(c) for c in clusters.values()),
        links=frozenset(
            (*sorted((key(a), key(b))), source, first, last)  # type: ignore[misc]
            for a, b, source, first, last in snap.links
        ),
        attributes=frozenset(
            (anchor, f.name, f.at_ms, plain) for f, anchor, plain in facts if f.kind == "attribute"
        ),
        raw_identifiers=frozenset(
            (anchor, plain) for f, anchor, plain in facts if f.kind == "raw_identifier"
        ),
        events=Counter(
            (anchor, f.name, f.at_ms, plain) for f, anchor, plain in facts if f.kind == "event"
        ),
        refusals=frozenset(snap.refusals),
    )


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a JSONL file (skipping lines that are not objects)."""
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            row = json.loads(line)
            if isinstance(row, dict):
                yield row
