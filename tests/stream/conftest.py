"""A real Apache Kafka broker for the stream tests (``make test-kafka``).

The broker is started once per session from ``tools/kafka-server`` (KRaft, Maven Central, on a
free loopback port, data in a temp dir) and stopped at the end. It runs when
``IDGRAPH_TEST_KAFKA=1`` (what ``make test-kafka`` and ``.ci/run`` set) or when
``KAFKA_BOOTSTRAP`` names a broker already running; the tests are skipped with the reason
otherwise, so the default suite needs no JVM.
"""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tests.conftest import REPO

KAFKA_SERVER = REPO / "tools" / "kafka-server" / "kafka_server.py"


@dataclass(frozen=True)
class KafkaBroker:
    """A live broker: its bootstrap address, and its data directory when this session started
    it (``None`` for a broker ``KAFKA_BOOTSTRAP`` names)."""

    bootstrap: str
    data_dir: Path | None


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: KafkaBroker) -> str:
    """The bootstrap address of a live broker."""
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def kafka_broker_pid(kafka_broker: KafkaBroker) -> int:
    """The process id of the broker this session started (for tests that freeze it)."""
    if kafka_broker.data_dir is None:
        pytest.skip("freezes the broker: needs the one the session starts, not KAFKA_BOOTSTRAP")
    return int((kafka_broker.data_dir / "kafka.pid").read_text(encoding="ascii"))


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A live broker (started here unless ``KAFKA_BOOTSTRAP`` names one)."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield KafkaBroker(given, None)
        return
    if os.environ.get("IDGRAPH_TEST_KAFKA") != "1":
        pytest.skip("Kafka tests need IDGRAPH_TEST_KAFKA=1 (make test-kafka) or KAFKA_BOOTSTRAP")
    data_dir: Path = tmp_path_factory.mktemp("kafka")
    started = subprocess.run(
        # Generous nets: the class path may need Maven on a cold cache, and a JVM starting on
        # two loaded cores can take minutes.
        [
            sys.executable,
            str(KAFKA_SERVER),
            "start",
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
            "--timeout",
            "600",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    if started.returncode != 0:
        pytest.fail(f"the Kafka broker did not start:\n{started.stderr}")
    try:
        yield KafkaBroker(started.stdout.strip().splitlines()[-1], data_dir)
    finally:
        # Clients the tests left to the garbage collector (a worker's producer in a reference
        # cycle, say) go before the broker does: alive after it, librdkafka keeps reconnecting
        # to the stopped port and logs a refused connection every second until the process ends.
        gc.collect()
        subprocess.run(
            [sys.executable, str(KAFKA_SERVER), "stop", "--data-dir", str(data_dir)],
            capture_output=True,
            check=False,
            timeout=120,
        )


TopicFactory = Callable[..., str]


@pytest.fixture
def new_topic(kafka_bootstrap: str) -> TopicFactory:
    """Create a fresh topic (a unique name per call) and return its name."""
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def make(prefix: str = "t", partitions: int = 1) -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:10]}"
        futures = admin.create_topics([NewTopic(name, partitions, 1)])
        futures[name].result(timeout=60)
        return name

    return make
