"""Third-party loggers whose DEBUG lines carry data stay at INFO even when the service logs at
DEBUG (the Neo4j driver logs each Bolt message with its parameters: node ids, keyed digests)."""

from __future__ import annotations

import io
import logging

from bootstrap.logging import configure_logging


def test_the_neo4j_drivers_bolt_records_never_reach_the_log_at_debug_level(
    log_stream: io.StringIO,
) -> None:
    configure_logging("debug", json_output=True)
    handler = logging.StreamHandler(log_stream)
    root = logging.getLogger()
    handler.setFormatter(root.handlers[0].formatter)
    root.addHandler(handler)
    try:
        logging.getLogger("neo4j.io").debug(
            "[#0000]  C: RUN 'MATCH (n {node_id: $n})' {'n': 'n_secretnode'}"
        )
        logging.getLogger("idgraph.test").debug("service debug line")
        logging.getLogger("neo4j.pool").warning("pool warning")
    finally:
        root.removeHandler(handler)
    out = log_stream.getvalue()
    assert "n_secretnode" not in out
    assert "service debug line" in out  # the service itself still logs at DEBUG
    assert "pool warning" in out  # the driver's warnings still come through


def test_the_data_loggers_follow_a_level_above_info_and_keep_a_higher_one() -> None:
    driver = logging.getLogger("neo4j")
    driver.setLevel(logging.NOTSET)
    configure_logging("debug", json_output=True)
    assert driver.level == logging.INFO
    configure_logging("warning", json_output=True)
    assert driver.level == logging.WARNING
    configure_logging("debug", json_output=True)
    assert driver.level == logging.WARNING  # never lowered below a level set higher
    driver.setLevel(logging.NOTSET)
    configure_logging("info", json_output=True)
