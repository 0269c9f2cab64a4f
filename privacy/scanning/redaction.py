"""Last-line defence against raw identifiers in log output.

Code in idgraph never logs identifier values (they are hashed before anything else happens), but a
log line can still carry one by accident: an exception message from a library, a request path, a
value a developer added while debugging. This filter scrubs anything that *looks* like an email
address or a phone number from every log event before it is written. False positives cost a
little readability; a false negative would be a personal-data leak into a log pipeline that
usually has weaker access control and longer retention than the database.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

EMAIL_LIKE = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}")
# International or long digit runs with common separators: +44 20 7946 0958, (650) 253-0000.
PHONE_LIKE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().\-]{6,}\d(?![\w.])")
REDACTED = "[redacted]"
_DATE_LIKE = re.compile(r"\d{4}-\d{2}-\d{2}")


def redact_text(text: str) -> str:
    """Replace email- and phone-looking substrings with ``[redacted]``."""
    if "@" in text:
        text = EMAIL_LIKE.sub(REDACTED, text)
    return PHONE_LIKE.sub(_phone_or_keep, text)


def _phone_or_keep(match: re.Match[str]) -> str:
    text = match.group(0)
    digits = sum(ch.isdigit() for ch in text)
    if _DATE_LIKE.match(text.strip()):
        return text  # ISO dates and times are not phone numbers
    # National numbers have 9+ digits almost everywhere; with a leading + even short ones count.
    # Shorter runs (counts, ports, yyyymmdd stamps in key ids) are left alone.
    looks_like_phone = digits >= 9 or (text.lstrip().startswith("+") and digits >= 7)
    return REDACTED if looks_like_phone else text


def redact_value(value: Any) -> Any:
    """Redact strings inside ``value`` (recursing into mappings and sequences)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact_value(item) for item in value)
    return value


def redact_event(_logger: object, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: redact every string in the event dict."""
    return {key: redact_value(item) for key, item in event.items()}
