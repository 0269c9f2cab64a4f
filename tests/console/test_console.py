"""The operator console through the real app (TestClient): sign-in, sessions, CSRF, lockout,
roles, and that every action goes through the services and lands in the audit log with the
operator as actor. The same flows run in a real browser in tests/browser/."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from console.security import LOGIN_COOKIE, SESSION_COOKIE
from identity.model import FactKind, FactStatus
from privacy.access.api_keys import Scope
from privacy.access.operators import ROLE_SCOPES, AccessPolicy, ConsoleScope, Role
from privacy.dsr.model import DsrCaller, DsrSubmission, DsrType
from privacy.keys.keyprovider import LocalFileKeyProvider
from privacy.keys.vault import Vault
from privacy.keys.vault_sqlite import SqliteVaultKeyStore

# The CLI's view of the queue (every owner), for checks behind the console's back.
ADMIN_DSR = DsrCaller("cli", "cli", sees_all=True)

PASSWORD = "correct horse battery staple"
EMAIL = "ann.lee@shop.de"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Console:
    """The app with operator accounts, and a way to sign in."""

    client: TestClient
    container: Container
    ingest: dict[str, str]

    def sign_in(self, username: str, password: str = PASSWORD, code: str = "") -> Any:
        page = self.client.get("/console/login")
        token = CSRF.search(page.text)
        assert token is not None
        return self.client.post(
            "/console/login",
            data={
                "csrf_token": token.group(1),
                "username": username,
                "password": password,
                "totp": code,
                "next": "/",
            },
            follow_redirects=False,
        )

    def csrf(self, path: str = "/console/") -> str:
        page = self.client.get(path)
        found = CSRF.search(page.text)
        assert found is not None, page.text
        return found.group(1)

    def audit(self, action: str) -> list[Any]:
        return [e for e in self.container.audit.entries(limit=10_000) if e.action == action]


@pytest.fixture
def console_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"console_secure_cookies": False, "pii_scan": False})


@pytest.fixture
def console(console_settings: Settings, log_stream: io.StringIO) -> Iterator[Console]:
    container = build_container(console_settings)
    ops = container.operators
    ops.create_operator("alice", PASSWORD, Role.PRIVACY_OFFICER, ["*"])
    ops.create_operator("mark", PASSWORD, Role.MARKETING_OPS, ["marketing_email"])
    _, token = container.api_keys.create("ingest", frozenset({Scope.INGEST}))
    app = create_app(container=container)
    with TestClient(app, raise_server_exceptions=False, base_url="http://testserver") as client:
        yield Console(client, container, {"Authorization": f"Bearer {token}"})
    container.close()


def test_pages_redirect_to_sign_in_when_signed_out(console: Console) -> None:
    response = console.client.get("/console/dsr", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login?next=/dsr"


def test_every_console_route_but_sign_in_needs_a_session(console: Console) -> None:
    import fastapi.routing
    from fastapi.routing import APIRoute
    from starlette.routing import Mount

    (mount,) = [r for r in console.client.app.routes if getattr(r, "path", "") == "/console"]  # type: ignore[attr-defined]
    assert isinstance(mount, Mount)
    checked = 0
    expand = getattr(fastapi.routing, "iter_route_contexts", None)
    routes: list[Any] = list(expand(mount.routes)) if expand is not None else list(mount.routes)
    for route in routes:
        if not isinstance(getattr(route, "original_route", route), APIRoute):
            continue
        if route.path == "/login":
            continue
        path = "/console" + route.path.replace("{request_id}", "r1").replace("{audience_id}", "a1")
        for method in sorted(route.methods or ()):
            response = console.client.request(method, path, follow_redirects=False)
            if method == "GET":
                assert response.status_code == 303, (method, path)
                assert "/console/login" in response.headers["location"]
            else:
                assert response.status_code == 401, (method, path)
            checked += 1
    assert checked >= 15


def test_sign_in_sets_a_strict_http_only_session_cookie_when_credentials_match(
    console: Console,
) -> None:
    response = console.sign_in("alice")
    assert response.status_code == 303
    cookie = next(
        c for c in response.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "=")
    )
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    assert "Path=/console" in cookie
    assert console.client.get("/console/").status_code == 200
    (entry,) = [e for e in console.audit("console.sign_in") if e.decision == "allow"]
    assert entry.actor == "op_alice"


def test_session_cookie_is_secure_when_not_in_development(settings: Settings) -> None:
    container = build_container(settings.model_copy(update={"pii_scan": False}))
    container.operators.create_operator("alice", PASSWORD, Role.ADMIN)
    try:
        with TestClient(create_app(container=container), base_url="https://testserver") as client:
            page = client.get("/console/login")
            token = CSRF.search(page.text)
            assert token is not None
            response = client.post(
                "/console/login",
                data={"csrf_token": token.group(1), "username": "alice", "password": PASSWORD},
                follow_redirects=False,
            )
    finally:
        container.close()
    assert response.status_code == 303
    assert all("Secure" in c for c in response.headers.get_list("set-cookie"))


def test_wrong_password_is_refused_with_one_message_for_every_cause(console: Console) -> None:
    wrong = console.sign_in("alice", "not the password!")
    unknown = console.sign_in("nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert "wrong username, password or one-time code" in wrong.text
    assert "wrong username, password or one-time code" in unknown.text
    assert SESSION_COOKIE not in console.client.cookies


def _issued(response: Any) -> str:
    """The session token a sign-in response sets."""
    for cookie in response.headers.get_list("set-cookie"):
        if cookie.startswith(SESSION_COOKIE + "="):
            return str(cookie.split(";", 1)[0].split("=", 1)[1])
    raise AssertionError("no session cookie set")


def test_sign_in_mints_a_new_session_when_the_browser_presents_one(console: Console) -> None:
    """Session fixation: a token set before sign-in (by an attacker) is never promoted."""
    console.client.cookies.set(
        SESSION_COOKIE, "attacker-chosen-token", domain="testserver.local", path="/console"
    )
    first = console.sign_in("alice")
    assert first.status_code == 303
    issued = _issued(first)
    assert issued != "attacker-chosen-token"
    assert console.container.operators.session("attacker-chosen-token") is None
    assert console.container.operators.session(issued) is not None
    # Signing in again in the same browser issues yet another token.
    second = console.sign_in("alice")
    assert _issued(second) not in (issued, "attacker-chosen-token")


def test_sign_out_ends_the_session_on_the_server(console: Console) -> None:
    token = _issued(console.sign_in("alice"))
    response = console.client.post(
        "/console/logout", data={"csrf_token": console.csrf()}, follow_redirects=False
    )
    assert response.status_code == 303
    assert console.container.operators.session(token) is None
    # A copy of the cookie kept by someone else is useless now.
    console.client.cookies.set(SESSION_COOKIE, token, domain="testserver.local", path="/console")
    assert console.client.get("/console/", follow_redirects=False).status_code == 303
    assert console.audit("console.sign_out")[0].actor == "op_alice"


def test_state_changes_are_refused_without_the_csrf_token(console: Console) -> None:
    console.sign_in("alice")
    form = {
        "request_id": "dsr-csrf-1",
        "type": "erasure",
        "regulation": "gdpr",
        "subject_type": "email",
        "subject_value": EMAIL,
    }
    missing = console.client.post("/console/dsr", data=form)
    wrong = console.client.post("/console/dsr", data=form | {"csrf_token": "x" * 43})
    assert missing.status_code == wrong.status_code == 403
    assert "Form expired" in missing.text
    assert console.container.dsr.list_requests() == []


def test_state_changes_are_refused_from_another_origin(console: Console) -> None:
    console.sign_in("alice")
    response = console.client.post(
        "/console/audit/verify",
        data={"csrf_token": console.csrf()},
        headers={"Origin": "https://evil.example"},
    )
    assert response.status_code == 403


def test_sign_in_is_refused_without_the_login_form_token(console: Console) -> None:
    console.client.get("/console/login")
    console.client.cookies.delete(LOGIN_COOKIE, path="/console")
    response = console.client.post(
        "/console/login", data={"csrf_token": "forged", "username": "alice", "password": PASSWORD}
    )
    assert response.status_code == 403
    assert SESSION_COOKIE not in console.client.cookies


def test_account_locks_after_repeated_failures_and_refuses_the_right_password(
    console: Console,
) -> None:
    policy = AccessPolicy()
    for _ in range(policy.lockout_failures - 1):
        assert console.sign_in("alice", "wrong password!!").status_code == 401
    locked = console.sign_in("alice", "wrong password!!")
    assert locked.status_code == 423
    assert "locked until" in locked.text
    assert console.sign_in("alice").status_code == 423
    (entry,) = console.audit("console.locked_out")
    assert entry.actor == "op_alice"
    assert entry.reason == "too_many_failures"


def test_sign_in_attempts_are_rate_limited_per_account(console: Console) -> None:
    console.container.operators.policy = AccessPolicy(
        max_attempts_per_window=3, lockout_failures=100
    )
    codes = [console.sign_in("mark", "wrong password!!").status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    assert console.sign_in("mark").status_code == 429  # even the right password, for now


def test_totp_is_required_and_a_code_works_once(console: Console) -> None:
    created = console.container.operators.create_operator("tess", PASSWORD, Role.AUDITOR, totp=True)
    assert created.totp_uri is not None
    totp = pyotp.parse_uri(created.totp_uri)
    assert isinstance(totp, pyotp.TOTP)
    assert console.sign_in("tess").status_code == 401  # no code
    assert (
        console.sign_in("tess", code="000000" if totp.now() != "000000" else "111111").status_code
        == 401
    )
    code = totp.now()
    assert console.sign_in("tess", code=code).status_code == 303
    console.client.cookies.clear()
    assert console.sign_in("tess", code=code).status_code == 401  # replayed


def test_pages_outside_the_role_answer_403(console: Console) -> None:
    console.sign_in("mark")
    for path in ("/console/dsr", "/console/people", "/console/quarantine", "/console/audit"):
        response = console.client.get(path)
        assert response.status_code == 403, path
        assert "lacks the" in response.text
    assert console.client.get("/console/audiences").status_code == 200
    nav = console.client.get("/console/").text
    assert 'href="/console/audiences"' in nav
    assert 'href="/console/dsr"' not in nav


def test_every_role_maps_onto_known_scopes() -> None:
    api_scopes = {s.value for s in Scope}
    console_only = {ConsoleScope.AUDIT.value, ConsoleScope.QUARANTINE.value}
    for scopes in ROLE_SCOPES.values():
        assert {s.value for s in scopes} <= api_scopes | console_only


def test_pages_carry_a_strict_content_security_policy(console: Console) -> None:
    response = console.client.get("/console/login")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["cache-control"] == "no-store"
    assert "http://" not in response.text.replace("http://testserver", "")
    assert "https://" not in response.text


def test_dsr_submitted_in_the_console_is_the_operators_and_audited(console: Console) -> None:
    console.sign_in("alice")
    response = console.client.post(
        "/console/dsr",
        data={
            "csrf_token": console.csrf(),
            "request_id": "dsr-console-1",
            "type": "erasure",
            "action": "apply",
            "regulation": "gdpr",
            "subject_type": ["email", "email"],
            "subject_value": [EMAIL, ""],
        },
        follow_redirects=False,
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/console/dsr/dsr-console-1"
    request = console.container.dsr.get("dsr-console-1", ADMIN_DSR)
    assert request.requester == "op_alice"
    assert console.audit("dsr.received")[0].actor == "op_alice"
    detail = console.client.get("/console/dsr/dsr-console-1")
    assert detail.status_code == 200
    assert EMAIL not in detail.text
    extended = console.client.post(
        "/console/dsr/dsr-console-1/extend",
        data={"csrf_token": console.csrf(), "reason": "complex request"},
    )
    assert extended.status_code == 200
    assert console.container.dsr.get("dsr-console-1", ADMIN_DSR).extended
    no_reason = console.client.post(
        "/console/dsr/dsr-console-1/cancel", data={"csrf_token": console.csrf()}
    )
    assert no_reason.status_code == 422
    assert console.container.dsr.get("dsr-console-1", ADMIN_DSR).status.value == "pending"
    cancelled = console.client.post(
        "/console/dsr/dsr-console-1/cancel",
        data={"csrf_token": console.csrf(), "reason": "duplicate of dsr-7"},
    )
    assert cancelled.status_code == 200
    assert console.container.dsr.get("dsr-console-1", ADMIN_DSR).status.value == "cancelled"
    (entry,) = console.audit("dsr.cancelled")
    assert (entry.actor, entry.reason) == ("op_alice", "duplicate of dsr-7")


def test_dsr_form_errors_name_the_field_and_write_nothing(console: Console) -> None:
    console.sign_in("alice")
    response = console.client.post(
        "/console/dsr",
        data={
            "csrf_token": console.csrf(),
            "request_id": "dsr-bad",
            "type": "erasure",
            "regulation": "gdpr",
            "subject_type": "email",
            "subject_value": "not-an-email",
        },
    )
    assert response.status_code == 422
    assert "subject_identities/0/value" in response.text
    assert "not-an-email" not in response.text
    assert console.container.dsr.list_requests() == []


def test_queue_highlights_overdue_requests(console: Console) -> None:
    console.sign_in("alice")
    long_ago = datetime.now(UTC) - timedelta(days=60)
    console.container.dsr.submit(
        DsrSubmission("dsr-old", DsrType.ACCESS, [("email", EMAIL)], submitted_at=long_ago),
        ADMIN_DSR,
    )
    page = console.client.get("/console/dsr?overdue=true")
    assert page.status_code == 200
    assert 'class="overdue"' in page.text
    assert "dsr-old" in page.text


def _grant_marketing_email(console: Console) -> None:
    """The person of EMAIL consents to marketing_email, through the API as a CMP does."""
    _, token = console.container.api_keys.create("cmp", frozenset({Scope.CONSENT}))
    granted = console.client.post(
        "/v1/consent",
        json={
            "identifiers": [{"type": "email", "value": EMAIL}],
            "decisions": {"marketing_email": True},
        },
        headers={"Authorization": f"Bearer {token}"},
    )
    assert granted.status_code == 200, granted.text


def _ingest(console: Console, **extra: Any) -> None:
    body = {
        "identifiers": [
            {"type": "email", "value": EMAIL},
            {"type": "cookie_id", "value": "ck-console-1"},
        ],
        "source": "web",
        **extra,
    }
    response = console.client.post("/v1/identify", json=body, headers=console.ingest)
    assert response.status_code == 200, response.text


def test_person_lookup_shows_the_cluster_without_raw_values_and_is_audited(
    console: Console, log_stream: io.StringIO
) -> None:
    _ingest(console)
    console.sign_in("alice")
    page = console.client.post(
        "/console/people",
        data={"csrf_token": console.csrf(), "identifier_type": "email", "value": EMAIL},
    )
    assert page.status_code == 200
    assert "<svg" in page.text
    assert "cookie_id" in page.text
    assert EMAIL not in page.text
    assert "ck-console-1" not in page.text
    assert EMAIL not in log_stream.getvalue()
    (entry,) = console.audit("console.lookup")
    assert entry.actor == "op_alice"
    assert (entry.person_id or "").startswith("r_")


def test_lookup_of_an_unknown_identifier_says_so(console: Console) -> None:
    console.sign_in("alice")
    page = console.client.post(
        "/console/people",
        data={"csrf_token": console.csrf(), "identifier_type": "email", "value": EMAIL},
    )
    assert page.status_code == 404
    assert "No person has that identifier" in page.text


def test_why_shows_the_policy_denial_reason_and_is_audited(console: Console) -> None:
    _ingest(console)
    person = console.container.engine.resolve(
        console.container.identity_policy.normalize("email", EMAIL, "GB")
    )
    assert person is not None
    console.sign_in("alice")
    page = console.client.post(
        "/console/people/why",
        data={"csrf_token": console.csrf(), "person_id": person, "purpose": "marketing_email"},
    )
    assert page.status_code == 200
    assert "is <strong>denied</strong>" in page.text
    assert "no_consent" in page.text
    (entry,) = console.audit("console.explain_read")
    assert (entry.actor, entry.decision, entry.reason) == ("op_alice", "deny", "no_consent")
    assert entry.purpose == "marketing_email"


def test_quarantine_reveal_is_audited_and_release_makes_the_value_readable(
    console: Console,
) -> None:
    _ingest(console, events=[{"name": "wishlist_add", "properties": {"sku": "s-1"}}])
    (held,) = console.container.store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 10))
    console.sign_in("alice")
    listing = console.client.get("/console/quarantine")
    assert held.fact_id in listing.text
    assert "s-1" not in listing.text  # no value before an explicit reveal
    assert console.audit("quarantine.revealed") == []
    revealed = console.client.post(
        "/console/quarantine/reveal", data={"csrf_token": console.csrf(), "fact_id": held.fact_id}
    )
    assert revealed.status_code == 200
    assert "s-1" in revealed.text
    (entry,) = console.audit("quarantine.revealed")
    assert entry.actor == "op_alice"
    assert entry.details["fact"] == held.fact_id
    console.client.post(
        "/console/quarantine/release",
        data={"csrf_token": console.csrf("/console/quarantine"), "fact_id": held.fact_id},
    )
    assert (
        console.container.store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 10)) == []
    )
    assert console.audit("quarantine.released")[0].actor == "op_alice"


def test_a_quarantined_value_whose_data_key_was_shredded_is_never_shown_and_the_attempt_audited(
    console: Console, console_settings: Settings
) -> None:
    # Another process shredded the key of the node holding the quarantined value while the
    # graph still holds it. The reveal used to audit an "allow" and then fail with a 500.
    _ingest(console, events=[{"name": "wishlist_add", "properties": {"sku": "s-1"}}])
    (held,) = console.container.store.read(lambda tx: tx.facts_page(FactStatus.QUARANTINED, "", 10))
    keys = SqliteVaultKeyStore(console_settings.vault_keys_path)
    try:
        other = Vault(keys, LocalFileKeyProvider(console_settings.resolved_kek_file))
        assert other.shred({held.node_id}) == 1
    finally:
        keys.close()
    console.sign_in("alice")
    console.client.get("/console/quarantine")

    revealed = console.client.post(
        "/console/quarantine/reveal", data={"csrf_token": console.csrf(), "fact_id": held.fact_id}
    )

    assert revealed.status_code == 410, revealed.text
    assert "s-1" not in revealed.text
    assert "data key was destroyed" in revealed.text
    (entry,) = console.audit("quarantine.revealed")
    assert (entry.actor, entry.decision, entry.reason) == (
        "op_alice",
        "deny",
        "data_keys_destroyed",
    )
    assert entry.details["fact"] == held.fact_id
    assert console.container.audit.verify().ok


def test_audit_page_verifies_the_chain(console: Console) -> None:
    console.sign_in("alice")
    page = console.client.post("/console/audit/verify", data={"csrf_token": console.csrf()})
    assert page.status_code == 200
    assert "The chain holds" in page.text
    listing = console.client.get("/console/audit?actor=op_alice")
    assert "console.sign_in" in listing.text


def test_api_docs_load_only_local_assets(console: Console) -> None:
    for path in ("/docs", "/redoc"):
        page = console.client.get(path)
        assert page.status_code == 200
        urls = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert urls
        assert all(u.startswith("/") for u in urls), urls
        for url in urls:
            assert console.client.get(url).status_code == 200, url


def test_operator_accounts_refuse_bad_input(tmp_path: Path, console: Console) -> None:
    ops = console.container.operators
    from identity.errors import InvalidFieldError
    from privacy.access.operators import OperatorExistsError

    with pytest.raises(InvalidFieldError, match="12 to 256"):
        ops.create_operator("bob", "short", Role.ADMIN)
    with pytest.raises(InvalidFieldError, match="username"):
        ops.create_operator("bob@example.org", PASSWORD, Role.ADMIN)
    with pytest.raises(InvalidFieldError, match="unknown purpose"):
        ops.create_operator("bob", PASSWORD, Role.MARKETING_OPS, ["nope"])
    with pytest.raises(OperatorExistsError):
        ops.create_operator("alice", PASSWORD, Role.ADMIN)
    path = console.container.settings.operators_db_path
    raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
    assert PASSWORD.encode() not in raw
    assert b"$argon2id$" in raw


def test_kept_raw_values_show_only_where_the_operators_purpose_allows(console: Console) -> None:
    _ingest(console)
    ops = console.container.operators
    ops.create_operator("nora", PASSWORD, Role.PRIVACY_OFFICER)  # no purposes
    ops.create_operator("mia", PASSWORD, Role.ADMIN, ["marketing_email"])

    def lookup(username: str) -> str:
        console.client.cookies.clear()
        assert console.sign_in(username).status_code == 303
        page = console.client.post(
            "/console/people",
            data={"csrf_token": console.csrf(), "identifier_type": "email", "value": EMAIL},
        )
        assert page.status_code == 200
        return str(page.text)

    assert EMAIL not in lookup("mia")  # marketing_email needs consent, and there is none
    _grant_marketing_email(console)
    assert EMAIL not in lookup("nora")  # no purpose of hers activates anything
    assert console.audit("console.kept_values") == []
    shown = lookup("mia")
    assert EMAIL in shown  # marketing_email activates email, and the person consented
    assert "ck-console-1" not in shown  # cookie ids are no activation type of the purpose
    (entry,) = console.audit("console.kept_values")
    assert (entry.actor, entry.purpose, entry.decision) == ("op_mia", "marketing_email", "allow")


def test_kept_raw_values_are_withheld_and_the_denial_audited_when_the_data_keys_were_shredded(
    console: Console, console_settings: Settings
) -> None:
    # The graph still names the person but another process shredded the data key of the email
    # node (not a state an erasure leaves: it deletes the graph first). The lookup used to fail
    # with a 500 after auditing an "allow"; now it shows the person without kept values and
    # audits the denial.
    _ingest(console)
    console.container.operators.create_operator("mia", PASSWORD, Role.ADMIN, ["marketing_email"])
    _grant_marketing_email(console)
    container = console.container
    person = container.engine.resolve(container.identity_policy.normalize("email", EMAIL, "GB"))
    assert person is not None
    raws = container.store.read(
        lambda tx: tx.person_facts(person, (FactKind.RAW_IDENTIFIER,), FactStatus.ACTIVE)
    )
    keys = SqliteVaultKeyStore(console_settings.vault_keys_path)
    try:
        other = Vault(keys, LocalFileKeyProvider(console_settings.resolved_kek_file))
        assert other.shred({f.node_id for f in raws if f.name == "email"}) == 1
    finally:
        keys.close()
    assert console.sign_in("mia").status_code == 303

    page = console.client.post(
        "/console/people",
        data={"csrf_token": console.csrf(), "identifier_type": "email", "value": EMAIL},
    )

    assert page.status_code == 200, page.text
    assert EMAIL not in page.text
    (entry,) = console.audit("console.kept_values")
    assert (entry.purpose, entry.decision, entry.reason) == (
        "marketing_email",
        "deny",
        "data_keys_destroyed",
    )
    assert entry.person_id == container.audit.person_ref(person)
    assert container.audit.verify().ok


def test_a_rectification_submitted_in_the_console_names_the_corrected_data(
    console: Console,
) -> None:
    # Issue 20 follow-up: rectification (Art. 16) was in the API only; the console form could
    # not name what was corrected, so the service refused every console rectification.
    console.sign_in("alice")
    form = {
        "csrf_token": console.csrf(),
        "request_id": "dsr-console-rect",
        "type": "rectification",
        "action": "apply",
        "regulation": "gdpr",
        "subject_type": "email",
        "subject_value": EMAIL,
        "rectified": "city, last_name",
    }
    response = console.client.post("/console/dsr", data=form, follow_redirects=False)

    assert response.status_code == 303, response.text
    request = console.container.dsr.get("dsr-console-rect", ADMIN_DSR)
    assert (request.type, request.rectified) == (DsrType.RECTIFICATION, ("city", "last_name"))
    assert request.requester == "op_alice"
    detail = console.client.get("/console/dsr/dsr-console-rect")
    assert re.search(r'id="rectified-names">city, last_name<', detail.text)


def test_a_console_rectification_naming_a_value_is_refused_without_echoing_it(
    console: Console,
) -> None:
    console.sign_in("alice")
    form = {
        "csrf_token": console.csrf(),
        "request_id": "dsr-console-rect-bad",
        "type": "rectification",
        "action": "apply",
        "regulation": "gdpr",
        "subject_type": "email",
        "subject_value": EMAIL,
        "rectified": "Lisbon Street 7",
    }
    response = console.client.post("/console/dsr", data=form)

    assert response.status_code == 422
    assert "rectified/0" in response.text
    assert "Lisbon Street 7" not in response.text
    assert console.container.dsr.list_requests() == []
