#!/usr/bin/env python3
"""Build, start, stop and use the local Neo4j of ``tools/neo4j-server`` (no Docker).

Standard library only, so it runs before and outside the project's virtualenv.

    neo4j_local.py start --home DIR [--port N]   start in the background, wait for Bolt, print URI
    neo4j_local.py stop --home DIR               SIGTERM, wait for the clean shutdown
    neo4j_local.py env --home DIR                print NEO4J_* / IDGRAPH_* exports of a running one
    neo4j_local.py run -- CMD ...                a throwaway server: start, run CMD with NEO4J_URI,
                                                 NEO4J_USER, NEO4J_PASSWORD set, stop, delete it

The Java side (``tools/neo4j-server``) is built with Maven once; the class path it resolves
(``target/classpath.txt``, jars in ``~/.m2``) is reused, so later starts run plain ``java`` and
download nothing. The Bolt port is chosen at run time (``--port 0``, the default) unless given,
so several servers on one shared machine never collide; the URI is written to
``DIR/bolt-uri`` and the generated password to ``DIR/password`` (0600).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = Path(__file__).resolve().parent / "neo4j-server"
CLASSES = MODULE / "target" / "classes"
CLASSPATH_FILE = MODULE / "target" / "classpath.txt"
MAIN = "dev.idgraph.neo4jserver.LocalNeo4j"
# Module openings Neo4j 5 needs on Java 17 (the same list its own launcher passes).
JVM_OPENS = (
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens=java.base/java.lang=ALL-UNNAMED",
    "--add-opens=java.base/java.util=ALL-UNNAMED",
    "--add-opens=java.base/java.util.concurrent=ALL-UNNAMED",
    "--add-opens=java.base/java.net=ALL-UNNAMED",
    "--add-exports=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
)
BOLT_MAGIC = bytes.fromhex("6060b017")


def _fail(message: str) -> SystemExit:
    print(f"neo4j: {message}", file=sys.stderr)
    return SystemExit(1)


def build() -> list[str]:
    """Compile the server and resolve its class path (Maven, only when the sources changed)."""
    sources = [MODULE / "pom.xml", *MODULE.glob("src/**/*.java")]
    newest = max(path.stat().st_mtime for path in sources)
    if not CLASSPATH_FILE.exists() or CLASSPATH_FILE.stat().st_mtime < newest:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise _fail("Maven (mvn) is not installed; see docs/neo4j.md")
        print("neo4j: building tools/neo4j-server (first run downloads Neo4j into ~/.m2)")
        subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "compile",
                "dependency:build-classpath",
                f"-Dmdep.outputFile={CLASSPATH_FILE}",
            ],
            cwd=MODULE,
            check=True,
        )
    return [str(CLASSES), *CLASSPATH_FILE.read_text().strip().split(os.pathsep)]


def bolt_answers(uri: str, timeout: float = 2.0) -> bool:
    """Whether a Bolt server answers the handshake at ``bolt://host:port``."""
    host, port = uri.split("://", 1)[1].rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            # Magic preamble and four proposed versions (5.x ranges, then 4.4); a Bolt server
            # answers with the one it picked, anything else closes or sends nothing.
            sock.sendall(BOLT_MAGIC + bytes.fromhex("00040405000004040000000300000000"))
            return len(sock.recv(4)) == 4
    except OSError:
        return False


def _pid(home: Path) -> int | None:
    try:
        pid = int((home / "server.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _uri(home: Path) -> str | None:
    try:
        return (home / "bolt-uri").read_text().strip() or None
    except OSError:
        return None


def start(home: Path, port: int, heap: str, timeout: float) -> str:
    """Start the server in the background (unless it runs already); return its Bolt URI."""
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    uri = _uri(home)
    if _pid(home) is not None and uri and bolt_answers(uri):
        return uri
    java = shutil.which("java")
    if java is None:
        raise _fail("no java on PATH (Neo4j 5.26 needs Java 17 or 21)")
    classpath = build()
    (home / "bolt-uri").unlink(missing_ok=True)
    log = (home / "server.log").open("ab")
    process = subprocess.Popen(
        [
            java,
            f"-Xms{heap}",
            f"-Xmx{heap}",
            "-XX:+UseG1GC",
            *JVM_OPENS,
            "-cp",
            os.pathsep.join(classpath),
            MAIN,
            "--home",
            str(home),
            "--port",
            str(port),
            "--password-file",
            str(home / "password"),
            "--ready-file",
            str(home / "bolt-uri"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # not killed by the terminal's Ctrl-C; `stop` ends it
    )
    (home / "server.pid").write_text(f"{process.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise _fail(f"the server exited with {process.returncode}; see {home / 'server.log'}")
        uri = _uri(home)
        if uri and bolt_answers(uri):
            return uri
        time.sleep(0.5)
    stop(home)
    raise _fail(f"Bolt did not answer within {timeout:.0f}s; see {home / 'server.log'}")


def stop(home: Path, timeout: float = 90.0) -> bool:
    """SIGTERM the server of ``home`` and wait for its clean shutdown; whether one ran."""
    pid = _pid(home)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            finished, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not our child (started by an earlier command)
            finished = 0 if _pid(home) else pid
        if finished == pid:
            break
        time.sleep(0.2)
    else:
        print(f"neo4j: no clean shutdown after {timeout:.0f}s; killing {pid}", file=sys.stderr)
        os.kill(pid, signal.SIGKILL)
    (home / "server.pid").unlink(missing_ok=True)
    return True


def exports(home: Path) -> dict[str, str]:
    """The environment a client of the running server needs."""
    uri = _uri(home)
    if uri is None or _pid(home) is None:
        raise _fail(f"no server running in {home}; start it with `make neo4j`")
    password = (home / "password").read_text().strip()
    return {
        "NEO4J_URI": uri,
        "NEO4J_USER": "neo4j",
        "NEO4J_PASSWORD": password,
        "IDGRAPH_STORE_URL": uri,
        "IDGRAPH_NEO4J_USER": "neo4j",
        "IDGRAPH_NEO4J_PASSWORD": password,
    }


def main(argv: list[str]) -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("start", "stop", "env", "run"):
        cmd = sub.add_parser(name)
        if name != "run":
            cmd.add_argument("--home", type=Path, required=True)
        if name in ("start", "run"):
            cmd.add_argument("--port", type=int, default=0, help="Bolt port; 0 = any free one")
            cmd.add_argument("--heap", default=os.environ.get("NEO4J_HEAP", "1g"))
            cmd.add_argument("--timeout", type=float, default=300.0)
        if name == "run":
            cmd.add_argument("command_line", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.command == "start":
        print(start(args.home, args.port, args.heap, args.timeout))
    elif args.command == "stop":
        print("neo4j: stopped" if stop(args.home.resolve()) else "neo4j: was not running")
    elif args.command == "env":
        for key, value in exports(args.home.resolve()).items():
            print(f"export {key}='{value}'")
    else:
        command = [c for c in args.command_line if c != "--"] or [sys.executable, "-c", "pass"]
        home = Path(tempfile.mkdtemp(prefix="idgraph-neo4j-"))
        try:
            uri = start(home, args.port, args.heap, args.timeout)
            print(f"neo4j: throwaway server at {uri} (home {home})", flush=True)
            env = {**os.environ, **exports(home), "NEO4J_HOME_DIR": str(home)}
            return subprocess.run(command, env=env, check=False).returncode
        finally:
            stop(home)
            shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
