"""Standard Webhooks verification, outbound signing and the replay guard.

Test vectors come from the Standard Webhooks reference libraries (github.com/standard-webhooks/
standard-webhooks, Apache-2.0):

* ``libraries/python/tests/test_webhooks.py`` (``test_sign_function``,
  ``test_invalid_signature_raises_error``, ``test_multi_sig_payload_is_valid``, the
  old/new-timestamp and missing-header tests);
* the same sign vector in ``libraries/go/webhook_test.go`` (``TestWebhookSign``) and
  ``libraries/javascript/src/webhook.test.ts`` ("sign function works"); the partial and
  short-signature cases come from the JavaScript tests ("invalid signature throws error",
  "partial signature throws error").

The scheme itself is ``spec/standard-webhooks.md`` in the same repository.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.errors import ConfigurationError, IdGraphError
from privacy.transport.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ReplayGuard,
    SqliteReplayGuard,
    VerifiedWebhook,
    WebhookVerificationError,
    WebhookVerifier,
    new_webhook_id,
    parse_secret,
    sign,
    sign_headers,
    verify_once,
)

# -- the reference vector (python test_sign_function; go TestWebhookSign; js "sign function") --
VECTOR_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
# python test_invalid_signature_raises_error: the vector with its last base64 digit changed.
VECTOR_WRONG_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="
# python/go/js multi-sig tests: a well-formed v1 signature that matches nothing.
OTHER_SIGNATURE = "Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="

NOW = 1_800_000_000
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()


def _clock(at: float) -> WebhookVerifier:
    return WebhookVerifier([VECTOR_SECRET], clock=lambda: at)


def _vector_headers(**override: str) -> dict[str, str]:
    headers = {
        HEADER_ID: VECTOR_ID,
        HEADER_TIMESTAMP: str(VECTOR_TS),
        HEADER_SIGNATURE: VECTOR_SIGNATURE,
    }
    headers.update(override)
    return headers


def _signed(secret: str, ts: int, msg_id: str = "msg_1", body: bytes = b"{}") -> dict[str, str]:
    return sign_headers([secret], msg_id, ts, body)


# -- spec / library vectors --------------------------------------------------------------------


def test_sign_matches_reference_vector() -> None:
    assert sign(VECTOR_SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE


def test_sign_matches_an_independent_hmac_of_the_spec_content() -> None:
    # The spec's signed content, computed here without our code: "{id}.{timestamp}.{body}".
    key = base64.b64decode(VECTOR_SECRET.removeprefix("whsec_"))
    content = f"{VECTOR_ID}.{VECTOR_TS}.".encode() + VECTOR_BODY
    mac = base64.b64encode(hmac.new(key, content, hashlib.sha256).digest()).decode()
    assert f"v1,{mac}" == VECTOR_SIGNATURE


def test_verify_accepts_reference_vector_when_clock_matches() -> None:
    verified = _clock(VECTOR_TS).verify(_vector_headers(), VECTOR_BODY)
    assert verified == VerifiedWebhook(VECTOR_ID, VECTOR_TS, VECTOR_BODY, 0)


def test_verify_matches_header_names_case_insensitively() -> None:
    headers = {
        "Webhook-Id": VECTOR_ID,
        "WEBHOOK-TIMESTAMP": str(VECTOR_TS),
        "webhook-Signature": VECTOR_SIGNATURE,
    }
    assert _clock(VECTOR_TS).verify(headers, VECTOR_BODY).webhook_id == VECTOR_ID


def test_verify_refuses_reference_wrong_signature() -> None:
    headers = _vector_headers(**{HEADER_SIGNATURE: VECTOR_WRONG_SIGNATURE})
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(headers, VECTOR_BODY)
    assert caught.value.reason == "no_valid_signature"


def test_verify_accepts_when_one_of_several_signatures_is_valid() -> None:
    # Reference multi-sig vector: bad v1, unknown v2, the valid one, bad v1 again.
    header = " ".join(
        [
            f"v1,{OTHER_SIGNATURE}",
            f"v2,{OTHER_SIGNATURE}",
            VECTOR_SIGNATURE,
            f"v1,{OTHER_SIGNATURE}",
        ]
    )
    verified = _clock(VECTOR_TS).verify(_vector_headers(**{HEADER_SIGNATURE: header}), VECTOR_BODY)
    assert verified.webhook_id == VECTOR_ID


def test_verify_ignores_unknown_versions_and_a_broken_entry_when_another_is_valid() -> None:
    header = f"v1a,not-ours==  garbage {VECTOR_SIGNATURE} v1,!!"
    verified = _clock(VECTOR_TS).verify(_vector_headers(**{HEADER_SIGNATURE: header}), VECTOR_BODY)
    assert verified.timestamp == VECTOR_TS


def test_verify_refuses_when_only_unknown_versions_are_present() -> None:
    header = f"v2,{OTHER_SIGNATURE} v1a,{OTHER_SIGNATURE}"
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(_vector_headers(**{HEADER_SIGNATURE: header}), VECTOR_BODY)
    assert caught.value.reason == "no_valid_signature"


def test_verify_refuses_when_the_body_was_changed() -> None:
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(_vector_headers(), b'{"test":2432232314}')
    assert caught.value.reason == "no_valid_signature"


def test_verify_refuses_when_the_id_was_changed() -> None:
    headers = _vector_headers(**{HEADER_ID: "msg_p5jXN8AQM9LWM0D4loKWxJeK"})
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(headers, VECTOR_BODY)
    assert caught.value.reason == "no_valid_signature"


def test_verify_refuses_when_secret_is_wrong() -> None:
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: VECTOR_TS)
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(_vector_headers(), VECTOR_BODY)
    assert caught.value.reason == "no_valid_signature"


# -- tolerance edges ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (-301, "stale_timestamp"),
        (-300, None),
        (0, None),
        (300, None),
        (301, "future_timestamp"),
    ],
)
def test_verify_timestamp_window_is_inclusive_at_five_minutes(
    offset: int, reason: str | None
) -> None:
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: NOW)
    headers = _signed(NEW_SECRET, NOW + offset)
    if reason is None:
        assert verifier.verify(headers, b"{}").timestamp == NOW + offset
    else:
        with pytest.raises(WebhookVerificationError) as caught:
            verifier.verify(headers, b"{}")
        assert caught.value.reason == reason


def test_verify_uses_configured_tolerance() -> None:
    verifier = WebhookVerifier([NEW_SECRET], tolerance_s=10, clock=lambda: NOW + 0.9)
    assert verifier.verify(_signed(NEW_SECRET, NOW - 10), b"{}").timestamp == NOW - 10
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(_signed(NEW_SECRET, NOW - 11), b"{}")
    assert caught.value.reason == "stale_timestamp"


def test_verify_refuses_reference_vector_with_real_clock() -> None:
    # The vector's timestamp (2021) is far outside the window of today's clock.
    with pytest.raises(WebhookVerificationError) as caught:
        WebhookVerifier([VECTOR_SECRET]).verify(_vector_headers(), VECTOR_BODY)
    assert caught.value.reason == "stale_timestamp"


# -- malformed headers -------------------------------------------------------------------------

LONG = "9" * (8 * 1024 + 1)


@pytest.mark.parametrize(
    ("override", "drop", "reason"),
    [
        ({}, HEADER_ID, "missing_header"),
        ({}, HEADER_TIMESTAMP, "missing_header"),
        ({}, HEADER_SIGNATURE, "missing_header"),
        ({HEADER_ID: ""}, None, "missing_header"),
        ({HEADER_TIMESTAMP: ""}, None, "missing_header"),
        ({HEADER_SIGNATURE: ""}, None, "missing_header"),
        ({HEADER_ID: "msg.with.dots"}, None, "malformed_id"),
        ({HEADER_ID: "msg with space"}, None, "malformed_id"),
        ({HEADER_ID: "msg\x00nul"}, None, "malformed_id"),
        ({HEADER_ID: "msg_é"}, None, "malformed_id"),
        ({HEADER_ID: "m" * 257}, None, "malformed_id"),
        ({HEADER_ID: "m" * (8 * 1024 + 1)}, None, "malformed_id"),
        ({HEADER_TIMESTAMP: "hello"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: f"{VECTOR_TS}.5"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "1e9"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "-1"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: f"+{VECTOR_TS}"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: f" {VECTOR_TS}"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "1_614_265_330"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "١٦١٤٢٦٥٣٣٠"}, None, "malformed_timestamp"),  # Arabic-Indic digits
        ({HEADER_TIMESTAMP: "nan"}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: "9" * 20}, None, "malformed_timestamp"),
        ({HEADER_TIMESTAMP: LONG}, None, "malformed_timestamp"),
        ({HEADER_SIGNATURE: "v1"}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1,"}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: ",abc"}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: "   "}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1,!!!notbase64!!!"}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1,abc"}, None, "malformed_signature"),  # bad padding
        ({HEADER_SIGNATURE: "v1,a,b"}, None, "malformed_signature"),
        ({HEADER_SIGNATURE: "v1,dawfeoifkpqwoekfpqoekf"}, None, "malformed_signature"),  # js
        ({HEADER_SIGNATURE: VECTOR_SIGNATURE[:8]}, None, "malformed_signature"),  # js partial
        ({HEADER_SIGNATURE: VECTOR_SIGNATURE[:-1]}, None, "malformed_signature"),  # no padding
        ({HEADER_SIGNATURE: "v1,ZmZm\u00e9ZmZm"}, None, "malformed_signature"),  # non-ASCII
        ({HEADER_SIGNATURE: "v1," + "A" * (8 * 1024)}, None, "malformed_signature"),
        (
            {HEADER_SIGNATURE: " ".join([VECTOR_SIGNATURE] * 200)},  # > 8 KiB, even if valid
            None,
            "malformed_signature",
        ),
    ],
)
def test_verify_raises_reason_when_headers_are_malformed(
    override: dict[str, str], drop: str | None, reason: str
) -> None:
    headers = _vector_headers(**override)
    if drop is not None:
        del headers[drop]
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(headers, VECTOR_BODY)
    assert caught.value.reason == reason
    assert isinstance(caught.value, IdGraphError)


def test_verify_error_message_never_repeats_header_values() -> None:
    marker = "attacker-text-1234"
    with pytest.raises(WebhookVerificationError) as caught:
        _clock(VECTOR_TS).verify(_vector_headers(**{HEADER_TIMESTAMP: marker}), VECTOR_BODY)
    assert marker not in str(caught.value)


def test_verify_accepts_a_body_that_is_not_utf8() -> None:
    body = b"\xff\xfe\x00binary"
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: NOW)
    assert verifier.verify(_signed(NEW_SECRET, NOW, body=body), body).body == body


header_text = st.text(max_size=80) | st.sampled_from(["v1,", VECTOR_SIGNATURE, "v1a,x"])


@settings(max_examples=300, deadline=None)
@given(
    msg_id=st.none() | header_text,
    timestamp=st.none() | header_text | st.integers(-(10**20), 10**20).map(str),
    signature=st.none() | header_text | st.lists(header_text, max_size=4).map(" ".join),
    body=st.binary(max_size=64),
)
def test_verify_raises_only_its_own_error_when_headers_are_arbitrary(
    msg_id: str | None, timestamp: str | None, signature: str | None, body: bytes
) -> None:
    headers = {
        name: value
        for name, value in (
            (HEADER_ID, msg_id),
            (HEADER_TIMESTAMP, timestamp),
            (HEADER_SIGNATURE, signature),
        )
        if value is not None
    }
    refusal: WebhookVerificationError | None = None
    try:
        verified = _clock(VECTOR_TS).verify(headers, body)
    except WebhookVerificationError as caught:
        refusal = caught
    if refusal is not None:
        assert refusal.reason, "a refusal names its reason"
    else:  # only a correctly signed vector can pass
        assert (verified.webhook_id, verified.timestamp, verified.body) == (
            msg_id,
            VECTOR_TS,
            body,
        )


# -- secrets and rotation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",  # no whsec_ prefix
        "whsec_",
        "whsec_not base64!",
        "whsec_a",
        "whsk_" + base64.b64encode(b"k" * 32).decode(),
        "whsec_" + base64.b64encode(b"short").decode(),  # < 24 bytes
        "whsec_" + base64.b64encode(b"x" * 65).decode(),  # > 64 bytes
    ],
)
def test_verifier_refuses_malformed_secret_at_configuration(secret: str) -> None:
    with pytest.raises(ConfigurationError):
        WebhookVerifier([secret])


def test_parse_secret_accepts_secret_without_padding() -> None:
    padded = "whsec_" + base64.b64encode(b"p" * 25).decode()
    assert padded.endswith("=")
    assert parse_secret(padded.rstrip("=")) == b"p" * 25


@pytest.mark.parametrize("bad", [[], "whsec_abc", ()])
def test_verifier_refuses_missing_secrets(bad: list[str]) -> None:
    with pytest.raises(ConfigurationError):
        WebhookVerifier(bad)


@pytest.mark.parametrize("tolerance", [0, -5])
def test_verifier_refuses_non_positive_tolerance(tolerance: int) -> None:
    with pytest.raises(ConfigurationError):
        WebhookVerifier([NEW_SECRET], tolerance_s=tolerance)


@pytest.mark.parametrize(("signed_with", "index"), [(OLD_SECRET, 0), (NEW_SECRET, 1)])
def test_verify_accepts_either_secret_when_rotating(signed_with: str, index: int) -> None:
    verifier = WebhookVerifier([OLD_SECRET, NEW_SECRET], clock=lambda: NOW)
    assert verifier.verify(_signed(signed_with, NOW), b"{}").secret_index == index


def test_verify_accepts_sender_signing_with_old_and_new_secret() -> None:
    headers = sign_headers([OLD_SECRET, NEW_SECRET], "msg_rot", NOW, b"{}")
    assert len(headers[HEADER_SIGNATURE].split(" ")) == 2
    assert WebhookVerifier([NEW_SECRET], clock=lambda: NOW).verify(headers, b"{}").secret_index == 0


def test_verify_refuses_retired_secret_after_rotation() -> None:
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: NOW)
    with pytest.raises(WebhookVerificationError) as caught:
        verifier.verify(_signed(OLD_SECRET, NOW), b"{}")
    assert caught.value.reason == "no_valid_signature"


# -- outbound ----------------------------------------------------------------------------------


def test_sign_then_verify_round_trips() -> None:
    msg_id = new_webhook_id()
    body = b'{"type":"erasure.completed","data":{"request_id":"dsr_1"}}'
    headers = sign_headers([NEW_SECRET], msg_id, NOW, body)
    verified = WebhookVerifier([NEW_SECRET], clock=lambda: NOW).verify(headers, body)
    assert (verified.webhook_id, verified.timestamp, verified.body) == (msg_id, NOW, body)


def test_new_webhook_id_is_unique_and_valid_for_signing() -> None:
    ids = {new_webhook_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("msg_") and "." not in i for i in ids)


@pytest.mark.parametrize("msg_id", ["", "a.b", "has space", "x" * 257])
def test_sign_refuses_malformed_id(msg_id: str) -> None:
    with pytest.raises(ValueError, match="webhook id"):
        sign(NEW_SECRET, msg_id, NOW, b"{}")


def test_sign_refuses_negative_timestamp() -> None:
    with pytest.raises(ValueError, match="timestamp"):
        sign(NEW_SECRET, "msg_1", -1, b"{}")


# -- replay guard ------------------------------------------------------------------------------


class _Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> _Clock:
    return _Clock(NOW)


@pytest.fixture
def guard(tmp_path: Path, clock: _Clock) -> Iterator[SqliteReplayGuard]:
    opened = SqliteReplayGuard(tmp_path / "webhooks.sqlite3", clock=clock)
    yield opened
    opened.close()


def test_replay_guard_satisfies_protocol(guard: SqliteReplayGuard) -> None:
    assert isinstance(guard, ReplayGuard)


def test_replay_guard_refuses_second_delivery_of_same_id(guard: SqliteReplayGuard) -> None:
    assert guard.check_and_record("cmp", "msg_1") is True
    assert guard.check_and_record("cmp", "msg_1") is False
    assert guard.check_and_record("other-cmp", "msg_1") is True  # ids are per source


def test_replay_guard_accepts_again_after_prune(guard: SqliteReplayGuard, clock: _Clock) -> None:
    assert guard.check_and_record("cmp", "msg_1")
    assert guard.prune(NOW + 600) == 0  # exactly 2 x tolerance old: kept
    assert not guard.check_and_record("cmp", "msg_1")
    assert guard.prune(NOW + 601) == 1
    clock.now = NOW + 601
    assert guard.check_and_record("cmp", "msg_1")


def test_replay_guard_forget_lets_the_retry_in(guard: SqliteReplayGuard) -> None:
    assert guard.check_and_record("cmp", "msg_1")
    guard.forget("cmp", "msg_1")
    assert guard.check_and_record("cmp", "msg_1")


def test_replay_guard_remembers_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.sqlite3"
    first = SqliteReplayGuard(path)
    assert first.check_and_record("cmp", "msg_1")
    first.close()
    second = SqliteReplayGuard(path)
    assert not second.check_and_record("cmp", "msg_1")
    second.close()


def test_replay_guard_file_is_owner_only(guard: SqliteReplayGuard) -> None:
    assert stat.S_IMODE(guard.path.stat().st_mode) == 0o600


def test_replay_guard_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "webhooks.sqlite3"
    path.touch(mode=0o644)
    path.chmod(0o644)
    with pytest.raises(ConfigurationError):
        SqliteReplayGuard(path)


@pytest.mark.parametrize(
    ("source", "webhook_id"),
    [("", "msg_1"), ("cmp", ""), ("cmp", "x" * 300), ("cmp\n", "msg_1"), ("cmp", "m\ud800")],
)
def test_replay_guard_refuses_empty_or_huge_keys(
    guard: SqliteReplayGuard, source: str, webhook_id: str
) -> None:
    with pytest.raises(ValueError, match="1-256"):
        guard.check_and_record(source, webhook_id)


def test_verify_once_refuses_replay_with_reason(guard: SqliteReplayGuard) -> None:
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: NOW)
    headers = _signed(NEW_SECRET, NOW, msg_id="msg_once")
    assert verify_once(verifier, guard, "cmp", headers, b"{}").webhook_id == "msg_once"
    with pytest.raises(WebhookVerificationError) as caught:
        verify_once(verifier, guard, "cmp", headers, b"{}")
    assert caught.value.reason == "replayed"


def test_verify_once_records_nothing_when_signature_is_bad(guard: SqliteReplayGuard) -> None:
    verifier = WebhookVerifier([NEW_SECRET], clock=lambda: NOW)
    forged = _signed(OLD_SECRET, NOW, msg_id="msg_target")
    with pytest.raises(WebhookVerificationError):
        verify_once(verifier, guard, "cmp", forged, b"{}")
    genuine = _signed(NEW_SECRET, NOW, msg_id="msg_target")
    assert verify_once(verifier, guard, "cmp", genuine, b"{}").webhook_id == "msg_target"
