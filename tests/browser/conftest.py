"""Browser tests: a real idgraph server (``idgraph serve`` in a subprocess, on a free port, in a
temp data dir) driven by Playwright through Debian's Chromium.

Chromium is the system one (``/usr/bin/chromium``, ``make test-browser`` installs it with
apt-get); Playwright never downloads a browser. Without Chromium (or the ``playwright``
package) every test here is skipped with the reason. Chromium runs headless, without the
sandbox (CI runs as root), and with background networking, component updates and sync off, so
the only traffic is to the server under test, which each test also checks.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Request,
    Route,
    expect,
    sync_playwright,
)

CHROMIUM = Path(os.environ.get("IDGRAPH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--no-first-run",
    "--disable-features=Translate,OptimizationHints,MediaRouter",
]
PASSWORD = "correct horse battery staple"
EMAIL = "ann.lee@shop.de"
REPO = Path(__file__).resolve().parents[2]
AXE = Path(__file__).parent / "vendor" / "axe.min.js"
IDGRAPH = Path(sys.executable).with_name("idgraph")
SERVER_START_TIMEOUT_S = 300
# Playwright waits for a locator's condition for 5 s by default and for an action or a
# navigation for 30 s; on two cores shared with other suites a page can take longer than that to
# render, so the waits get a generous net. They are waits for a condition, never a timed
# assertion: a correct page passes at any speed.
WAIT_TIMEOUT_MS = 120_000
expect.set_options(timeout=WAIT_TIMEOUT_MS)


@pytest.hookimpl(trylast=True)  # after `-m` deselection: `make test` never selects these
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip (with the reason) when there is no browser to drive; in CI, fail instead."""
    if CHROMIUM.exists():
        return
    reason = f"no Chromium at {CHROMIUM}: run `make test-browser` (apt-get install chromium)"
    if os.environ.get("CI") == "true" and any("tests/browser/" in i.nodeid for i in items):
        raise pytest.UsageError(reason)  # CI installs it: a skip there would hide a failure
    for item in items:
        if "tests/browser/" in item.nodeid:
            item.add_marker(pytest.mark.skip(reason=reason))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    """A running idgraph with its URL, data dir and API key."""

    url: str
    data_dir: Path
    env: dict[str, str]
    api_key: str
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(IDGRAPH), *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )

    def api(self, method: str, path: str, body: object | None = None) -> Any:
        request = urllib.request.Request(  # noqa: S310 - the local test server
            self.url + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: {exc.code} {exc.read()!r}") from None


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``idgraph serve`` the way README's quick start runs it (development, embedded store)."""
    data_dir = tmp_path_factory.mktemp("console") / "data"
    port = _free_port()
    env = {
        **os.environ,
        "IDGRAPH_DATA_DIR": str(data_dir),
        "IDGRAPH_POLICY_DIR": str(REPO / "policies"),
        "IDGRAPH_ENV": "development",
        "IDGRAPH_PII_SCAN": "false",
        "IDGRAPH_DSR_WORKER_INTERVAL_SECONDS": "1",
        "IDGRAPH_DEFAULT_REGION": "GB",
    }
    log = data_dir.parent / "server.log"
    setup = Server(f"http://127.0.0.1:{port}", data_dir, env, "", None, log)  # type: ignore[arg-type]
    setup.cli("init")
    for name, role, purposes in (
        ("alice", "privacy_officer", ["*"]),
        ("mark", "marketing_ops", ["marketing_email"]),
        ("lou", "privacy_officer", []),
        ("fixie", "auditor", []),
        ("otto", "auditor", []),
    ):
        args = ["console", "create-operator", name, "--role", role, "--password-stdin"]
        for purpose in purposes:
            args += ["--purpose", purpose]
        setup.cli(*args, stdin=PASSWORD + "\n")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(IDGRAPH), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        # /readyz, not /healthz: `idgraph serve` opens its store in the background, so the
        # process answers /healthz before the API can serve the first test's writes (503).
        # The deadline is only a net for a server that never comes up (CI: two loaded cores).
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                with urllib.request.urlopen(setup.url + "/readyz", timeout=10):  # noqa: S310
                    break
            except OSError:  # refused, a 503 (HTTPError) or slow to answer
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("idgraph serve did not start:\n" + log.read_text()) from None
                time.sleep(0.3)
        key = (data_dir / "local-api-key").read_text().strip()
        yield Server(setup.url, data_dir, env, key, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (never a downloaded browser)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@dataclass
class Tab:
    """A browser page and every URL it requested."""

    page: Page
    context: BrowserContext
    base: str
    requested: list[str] = field(default_factory=list)
    escaped: list[str] = field(default_factory=list)  # reached the network layer, not local

    def goto(self, path: str) -> Any:
        return self.page.goto(self.base + path)

    def sign_in(self, username: str, password: str = PASSWORD) -> None:
        self.goto("/console/login")
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_load_state()

    def outside(self) -> list[str]:
        """Requests that tried to leave the browser for anywhere but the server under test.

        Every request the page issues to the network passes the context's route handler,
        which lets the server's through and records (and aborts) any other; a request the
        page's CSP refuses never gets that far.
        """
        return list(self.escaped)

    def axe(self) -> list[dict[str, Any]]:
        """axe-core's WCAG 2 A/AA violations on the current page."""
        self.page.evaluate(AXE.read_text(encoding="utf-8"))
        result: dict[str, Any] = self.page.evaluate(
            "async () => await axe.run(document, {runOnly: {type: 'tag', values: "
            "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice']}})"
        )
        return [
            {"id": v["id"], "impact": v["impact"], "nodes": [n["target"] for n in v["nodes"]]}
            for v in result["violations"]
        ]

    def shot(self, name: str) -> None:
        """A screenshot for docs/console.md when IDGRAPH_SCREENSHOTS names a directory."""
        where = os.environ.get("IDGRAPH_SCREENSHOTS")
        if where:
            Path(where).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(where) / f"{name}.png"), full_page=True)


@pytest.fixture
def tab(browser: Browser, server: Server) -> Iterator[Tab]:
    """A fresh browser context (no cookies) recording every request."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_TIMEOUT_MS)
    context.set_default_navigation_timeout(WAIT_TIMEOUT_MS)
    page = context.new_page()
    opened = Tab(page, context, server.url)

    def record(request: Request) -> None:
        opened.requested.append(request.url)

    def guard(route: Route) -> None:
        if route.request.url.startswith(server.url + "/"):
            route.continue_()
        else:
            opened.escaped.append(route.request.url)
            route.abort()

    context.on("request", record)
    context.route("**/*", guard)
    yield opened
    context.close()
