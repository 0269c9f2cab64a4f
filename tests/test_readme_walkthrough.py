"""The README's walk-through, run as written against a live server (issue 19).

Every ```sh block preceded by ``<!-- walkthrough -->`` in README.md is run, in order, in one
bash session, from a fresh directory that looks like a fresh clone after ``make run`` (``.venv``
and ``policies`` linked from this checkout; the server started there as ``make run`` starts it,
with the environment of the block marked ``<!-- walkthrough:server-env -->``). After each
command, the ``#`` lines that follow it directly are its documented output: they must equal what
the command printed, with ids, tokens and times masked and whitespace ignored. A command with no
such lines must succeed; its output is not compared.

So the README cannot drift: a changed answer, a renamed field or a command that stopped working
fails this test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.crash_harness import free_port

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARK = "<!-- walkthrough -->"
ENV_MARK = "<!-- walkthrough:server-env -->"
README_PORT = "127.0.0.1:8000"
# What differs from run to run: random ids, secrets, times, digests.
MASKS = [
    (re.compile(r"\b(p|n|aud|ps|r|msg|key|idg)_[A-Za-z0-9_-]+"), r"\1_<id>"),
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)?"), "<time>"),
    (re.compile(r"\d{4}-\d\d-\d\d"), "<date>"),
    (re.compile(r"\b[0-9a-f]{64}\b"), "<sha256>"),
    (re.compile(r'"size_bytes":\s*\d+'), '"size_bytes":<n>'),  # holds times and ids
    (re.compile(r"\s+"), ""),
]


@dataclass(frozen=True)
class Step:
    """One command of a walk-through block and its documented output (may be empty)."""

    line: int
    command: str
    expected: str | None


def _blocks(text: str, mark: str) -> list[tuple[int, str]]:
    found = []
    for match in re.finditer(re.escape(mark) + r"\s*\n```sh\n(.*?)```", text, re.DOTALL):
        found.append((text.count("\n", 0, match.start(1)) + 1, match.group(1)))
    return found


def steps(text: str) -> list[Step]:
    """The walk-through's commands with their documented outputs, in README order."""
    result: list[Step] = []
    for first_line, block in _blocks(text, MARK):
        lines = block.splitlines()
        index = 0
        while index < len(lines):
            line = lines[index]
            if not line.strip() or line.lstrip().startswith("#"):
                index += 1  # a blank line or an explanation before a command
                continue
            start = index
            command = [line]
            while command[-1].rstrip().endswith("\\") or _open_quote("\n".join(command)):
                index += 1
                command.append(lines[index])
            index += 1
            expected = []
            while index < len(lines) and lines[index].startswith("#"):
                expected.append(lines[index][1:])
                index += 1
            result.append(
                Step(
                    first_line + start,
                    "\n".join(command),
                    "\n".join(expected) if expected else None,
                )
            )
    return result


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def server_env(text: str) -> dict[str, str]:
    """``export NAME='value'`` lines of the server-environment block."""
    env: dict[str, str] = {}
    for _, block in _blocks(text, ENV_MARK):
        for name, value in re.findall(r"^export (\w+)='([^']*)'", block, re.MULTILINE):
            env[name] = value
    return env


def mask(text: str) -> str:
    """``text`` with the run-dependent parts replaced and whitespace removed."""
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def test_steps_parse_commands_outputs_and_explanations() -> None:
    text = (
        "<!-- walkthrough -->\n```sh\nA=1\n\n# explanation\ncurl -s x \\\n  -d '{\n"
        '"a": 1}\'\n# {"a":\n#  1}\necho hi\n```\n'
    )
    assert steps(text) == [
        Step(3, "A=1", None),
        Step(6, "curl -s x \\\n  -d '{\n\"a\": 1}'", ' {"a":\n  1}'),
        Step(11, "echo hi", None),
    ]
    assert mask('{"person_id":"p_5c0f8e1a", "at": "2026-03-01T09:00:00Z"}') == (
        '{"person_id":"p_<id>","at":"<time>"}'
    )


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """A directory laid out like a fresh clone after ``make run`` created its venv."""
    work = tmp_path / "clone"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.prefix))
    (work / "policies").symlink_to(ROOT / "policies")
    (work / "clients").symlink_to(ROOT / "clients")
    return work


def _wait_ready(port: int, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 600  # a safety net against hangs, not a timing assertion
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    pytest.fail("the server did not become ready")


def test_readme_walkthrough_runs_as_written_against_a_live_server(fresh_clone: Path) -> None:
    text = README.read_text()
    walk = steps(text)
    assert len(walk) >= 15, "the walk-through lost its commands"
    port = free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IDGRAPH_") and key != "VIRTUAL_ENV"
    }
    env |= {"IDGRAPH_PORT": str(port), "PATH": os.environ["PATH"]}
    server_environment = env | server_env(text)
    log = fresh_clone / "server.log"
    with log.open("wb") as sink:
        server = subprocess.Popen(
            [str(fresh_clone / ".venv/bin/idgraph"), "serve"],
            cwd=fresh_clone,
            env=server_environment,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(port, server, log)
        outputs = _run(walk, fresh_clone, env, port)
    finally:
        server.terminate()
        server.wait(timeout=60)
    failures = []
    for step, (code, output) in zip(walk, outputs, strict=True):
        if code != 0:
            failures.append(f"README line {step.line}: exit {code}\n{step.command}\n{output}")
        elif step.expected is not None and mask(output) != mask(step.expected):
            failures.append(
                f"README line {step.line}:\n{step.command}\n"
                f"--- README says:\n{step.expected}\n--- the server said:\n{output}"
            )
    assert not failures, "\n\n".join(failures)


def _run(walk: list[Step], cwd: Path, env: dict[str, str], port: int) -> list[tuple[int, str]]:
    """Run every step in one bash session (variables carry over); each one's exit and output."""
    outputs = cwd / "outputs"
    outputs.mkdir()
    script = ["set -u"]
    for number, step in enumerate(walk):
        command = step.command.replace(README_PORT, f"127.0.0.1:{port}")
        script.append(
            f"{{\n{command}\n}} > {outputs}/{number}.out 2>&1 < /dev/null; "
            f"echo $? > {outputs}/{number}.rc"
        )
    subprocess.run(
        ["/bin/bash", "-c", "\n".join(script)], cwd=cwd, env=env, check=False, timeout=600
    )
    results = []
    for number in range(len(walk)):
        rc = outputs / f"{number}.rc"
        code = int(rc.read_text()) if rc.exists() else -1
        out = outputs / f"{number}.out"
        results.append((code, out.read_text() if out.exists() else ""))
    return results
