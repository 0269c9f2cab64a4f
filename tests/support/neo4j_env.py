"""Where the live Neo4j of a test run is: one reading of the ``NEO4J_*`` variables.

``make test-neo4j`` starts a throwaway local server and sets ``NEO4J_URI`` and ``NEO4J_PASSWORD``
(``NEO4J_USER`` and ``NEO4J_DATABASE`` default to ``neo4j``). Each suite decides what a missing
server means: the live and contract suites skip with the reason, a run with
``IDGRAPH_TEST_STORE=neo4j`` fails.
"""

from __future__ import annotations

import os

SKIP_REASON = "needs a live Neo4j: NEO4J_URI (make test-neo4j starts one)"


def live_neo4j_settings() -> dict[str, str] | None:
    """``uri``, ``user``, ``password`` and ``database`` of the live server, or None without one."""
    uri = os.environ.get("NEO4J_URI")
    if not uri:
        return None
    return {
        "uri": uri,
        "user": os.environ.get("NEO4J_USER", "neo4j"),
        "password": os.environ.get("NEO4J_PASSWORD", ""),
        "database": os.environ.get("NEO4J_DATABASE", "neo4j"),
    }
