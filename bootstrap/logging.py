"""Structured logging: JSON lines via structlog, request ids, and redaction of anything that
looks like an email or phone number (see :mod:`privacy.scanning.redaction`).

Standard-library loggers (uvicorn, libraries) go through the same processors, so nothing reaches
the output unredacted. uvicorn's access log is off: it logs client IP addresses, which are
personal data; :mod:`api.middleware` logs method, route template, status and duration instead.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from privacy.scanning.redaction import redact_event, redact_text

_DATA_LOGGERS = ("neo4j",)


class _RedactingFilter(logging.Filter):
    """Redact the rendered message of stdlib records before any handler sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = ()
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        return True


def configure_logging(level: str = "info", json_output: bool = True) -> None:
    """Configure structlog and stdlib logging once for the process."""
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.format_exc_info,
        redact_event,  # before the timestamp is added, so timestamps are never touched
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        # The level check first: without it every processor (redaction included) ran for lines
        # below the level, which the stdlib logger then dropped.
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True
    # Libraries whose DEBUG lines carry data, not events: the Neo4j driver logs every Bolt
    # message with its parameters (node ids, keyed digests, person ids, sealed values).
    # Redaction only catches what looks like an email or a phone number, so these loggers never
    # go below INFO, whatever the service's level; a level set higher elsewhere stays. (presidio
    # is guarded inside its scanner package: privacy.scanning.presidio_scanner.)
    floor = max(root.level, logging.INFO)
    for name in _DATA_LOGGERS:
        data_logger = logging.getLogger(name)
        if data_logger.level < floor:
            data_logger.setLevel(floor)
