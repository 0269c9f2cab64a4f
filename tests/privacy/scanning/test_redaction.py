"""The log redaction backstop."""

from __future__ import annotations

import io
import logging

import pytest
import structlog

from privacy.scanning.redaction import redact_text, redact_value


@pytest.mark.parametrize(
    "text",
    [
        "user ann.lee@shop.de signed up",
        "call +44 20 7946 0958 now",
        "mobile 07700900123",
        "(650) 253-0000",
    ],
)
def test_email_and_phone_like_text_is_redacted(text: str) -> None:
    redacted = redact_text(text)
    assert "[redacted]" in redacted
    assert "@shop.de" not in redacted
    for digits in ("7946", "900123", "253-0000"):
        assert digits not in redacted


@pytest.mark.parametrize(
    "text",
    ["2026-11-23T10:00:00Z", "key hk-20261123-3f9a1c", "took 12.5 ms", "port 8000", "p_1a2b3c4d"],
)
def test_ordinary_log_values_are_kept(text: str) -> None:
    assert redact_text(text) == text


def test_nested_values_are_redacted() -> None:
    assert redact_value({"a": ["ann@shop.de", 3]}) == {"a": ["[redacted]", 3]}


def test_stdlib_and_structlog_lines_are_redacted(log_stream: io.StringIO) -> None:
    logging.getLogger("some.library").warning("failed for %s", "bob@shop.de")
    structlog.get_logger("idgraph.test").info("oops", detail="phone +44 20 7946 0958")
    output = log_stream.getvalue()
    assert "bob@shop.de" not in output
    assert "7946 0958" not in output
    assert output.count("[redacted]") == 2
