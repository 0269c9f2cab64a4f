#!/usr/bin/env python3
"""Run a real single-node Apache Kafka broker (KRaft mode) from Maven Central, without Docker.

    python3 tools/kafka-server/kafka_server.py start  [--data-dir DIR] [--port N]
    python3 tools/kafka-server/kafka_server.py stop   [--data-dir DIR]
    python3 tools/kafka-server/kafka_server.py status [--data-dir DIR]

`start` resolves the broker's class path with Maven (the jars are cached in ~/.m2, the class
path under the data dir keyed by the pom's digest, so a second start downloads nothing),
formats the KRaft storage on first start, runs `kafka.Kafka` in the background on 127.0.0.1
and waits until the broker reports it has started. It prints the bootstrap address.
`--port 0` (the tests' choice) picks a free port at run time; the port is remembered in the
data dir so a restart keeps it. Standard library only: it runs before any venv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"
LOG4J_CONFIG = HERE / "log4j2.xml"
DEFAULT_DATA_DIR = Path(".idgraph") / "kafka"
STARTED_MARKER = "Kafka Server started"
# One broker on a 2-core machine shared with other services: a small heap is plenty for
# development and tests, and KAFKA_HEAP_OPTS overrides it like the stock scripts do.
DEFAULT_HEAP = "-Xms256m -Xmx512m"


class KafkaServerError(Exception):
    """The broker could not be prepared, started or stopped."""


class _PortTakenError(KafkaServerError):
    """The broker exited at start because one of its ports was taken meanwhile."""


def free_port() -> int:
    """A TCP port that is free on loopback right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (FileNotFoundError, ValueError):
        return None


def classpath(data_dir: Path) -> str:
    """The broker class path, resolved once per pom version and cached under the data dir."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:16]
    cache = data_dir / f"classpath-{digest}.txt"
    if cache.exists():
        cp = cache.read_text(encoding="utf-8").strip()
        if all(Path(jar).exists() for jar in cp.split(os.pathsep)):
            return cp
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaServerError("Maven (mvn) is not on PATH: install it (apt-get install maven)")
    tmp = cache.with_suffix(".tmp")
    result = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:build-classpath", f"-Dmdep.outputFile={tmp}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not tmp.exists():
        raise KafkaServerError(f"mvn could not resolve the broker:\n{result.stdout}{result.stderr}")
    tmp.replace(cache)
    return cache.read_text(encoding="utf-8").strip()


def server_properties(data_dir: Path, port: int, controller_port: int) -> str:
    """A single-node KRaft broker+controller on loopback only."""
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            # A static voter set (not --standalone's recorded endpoint) so the controller port may
            # change between restarts without re-formatting.
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={data_dir / 'data'}",
            "num.partitions=3",
            # Topics are created on purpose (idgraph consume --create-topics, or ops tooling):
            # a typo in a topic name fails loudly instead of creating an empty topic.
            "auto.create.topics.enable=false",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            # Single node: no reason to wait for more members before the first rebalance.
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=168",
            "",
        ]
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of this process still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def running_pid(data_dir: Path) -> int | None:
    pid = _read_int(data_dir / "kafka.pid")
    if pid is not None and _pid_alive(pid):
        return pid
    return None


def start(data_dir: Path, port: int | None, timeout: float) -> str:
    """Start the broker (formatting storage first if needed) and return its bootstrap address."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if (pid := running_pid(data_dir)) is not None:
        known = _read_int(data_dir / "kafka.port")
        return f"127.0.0.1:{known}" if known else f"already running (pid {pid})"
    if port is None:
        port = _read_int(data_dir / "kafka.port") or 9092
    # A port picked here is free when picked, not when the JVM binds it seconds later: another
    # process (a parallel suite, another broker) can take it meanwhile. The broker then exits
    # with "Address already in use"; with ports of our own choosing, pick new ones and retry.
    attempts = 3 if port == 0 else 1
    for attempt in range(attempts):
        client_port = free_port() if port == 0 else port
        controller_port = free_port()
        while controller_port == client_port:
            controller_port = free_port()
        try:
            return _start_once(data_dir, client_port, controller_port, timeout)
        except _PortTakenError:
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _start_once(data_dir: Path, port: int, controller_port: int, timeout: float) -> str:
    java = shutil.which("java")
    if java is None:
        raise KafkaServerError("java is not on PATH: Kafka 4 needs a JDK 17 or newer")
    cp = classpath(data_dir)
    config = data_dir / "server.properties"
    config.write_text(server_properties(data_dir, port, controller_port), encoding="utf-8")
    (data_dir / "logs").mkdir(exist_ok=True)
    jvm = [
        java,
        *os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP).split(),
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
        f"-Dkafka.logs.dir={data_dir / 'logs'}",
        "-cp",
        cp,
    ]
    if not (data_dir / "data" / "meta.properties").exists():
        cluster_id = _cluster_id(data_dir)
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "--ignore-formatted",
                "-t",
                cluster_id,
                "-c",
                str(config),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise KafkaServerError(f"formatting the storage failed:\n{fmt.stdout}{fmt.stderr}")
    log_path = data_dir / "logs" / "server.log"
    console_path = data_dir / "logs" / "console.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
    console_offset = console_path.stat().st_size if console_path.exists() else 0
    with console_path.open("ab") as console:
        proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=console,
            start_new_session=True,  # survives the make/pytest process that started it
        )
    (data_dir / "kafka.pid").write_text(f"{proc.pid}\n", encoding="ascii")
    (data_dir / "kafka.port").write_text(f"{port}\n", encoding="ascii")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            (data_dir / "kafka.pid").unlink(missing_ok=True)
            logs = b"".join(
                path.read_bytes()[start:]
                for path, start in ((log_path, offset), (console_path, console_offset))
                if path.exists()
            )
            error = _PortTakenError if b"Address already in use" in logs else KafkaServerError
            raise error(f"the broker exited with {proc.returncode}; see {data_dir / 'logs'}")
        if log_path.exists():
            with log_path.open("rb") as log:
                log.seek(offset)
                if STARTED_MARKER.encode() in log.read():
                    return f"127.0.0.1:{port}"
        time.sleep(0.25)
    stop(data_dir)
    raise KafkaServerError(f"the broker did not start within {timeout:.0f}s; see {log_path}")


def _cluster_id(data_dir: Path) -> str:
    """The KRaft cluster id, kept in the data dir once made (see `new_cluster_id`)."""
    path = data_dir / "cluster.id"
    if path.exists():
        kept = path.read_text(encoding="ascii").strip()
        if kept and not kept.startswith("-"):
            return kept
    cluster_id = new_cluster_id()
    path.write_text(cluster_id + "\n", encoding="ascii")
    return cluster_id


def new_cluster_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """16 random bytes, base64url without padding, never starting with ``-``.

    One id in 64 would start with ``-``; the storage tool's argument parser then reads it as an
    option ("argument --cluster-id/-t: expected one argument") and formatting fails. Kafka's own
    ``Uuid.randomUuid`` draws again in that case, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def stop(data_dir: Path, timeout: float = 60.0) -> bool:
    """Stop the broker this data dir started: SIGTERM (a clean shutdown), SIGKILL if it hangs."""
    data_dir = data_dir.resolve()
    pid = running_pid(data_dir)
    if pid is None:
        (data_dir / "kafka.pid").unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    if _pid_alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _pid_alive(pid):
            time.sleep(0.1)
    (data_dir / "kafka.pid").unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["start", "stop", "status", "classpath"])
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("KAFKA_DATA_DIR", DEFAULT_DATA_DIR)),
        help="broker state: storage, logs, pid and port (default .idgraph/kafka)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="client port on 127.0.0.1; 0 picks a free one (default: the "
        "port of the last start, else 9092)",
    )
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the broker to start"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            print(start(args.data_dir, args.port, args.timeout))
        elif args.command == "stop":
            print("stopped" if stop(args.data_dir) else "not running")
        elif args.command == "classpath":
            args.data_dir.mkdir(parents=True, exist_ok=True)
            print(classpath(args.data_dir.resolve()))
        else:
            pid = running_pid(args.data_dir.resolve())
            port = _read_int(args.data_dir / "kafka.port")
            print(f"running pid {pid} on 127.0.0.1:{port}" if pid else "not running")
            return 0 if pid else 3
    except KafkaServerError as exc:
        print(f"kafka-server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
