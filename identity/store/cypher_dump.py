"""Print the Cypher statements and the lint schema as JSON.

Run as ``python -m identity.store.cypher_dump``.

``scripts/cypher-lint.sh`` feeds this to ``scripts/cypher-lint/lint.mjs``, which lints each
statement offline against a DbSchema built from :mod:`identity.store.cypher`'s vocabularies, so
the lint and the adapter can never disagree about labels, properties or parameters.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from identity.store import cypher


def lint_input() -> dict[str, Any]:
    """The statements by constant name, and a DbSchema of ``@neo4j-cypher/language-support``."""
    return {
        "statements": cypher.statements(),
        "schema": {
            "labels": sorted(label.value for label in cypher.Label),
            "relationshipTypes": sorted(rel.value for rel in cypher.Rel),
            "propertyKeys": cypher.property_keys(),
            "parameters": dict(cypher.PARAMETERS),
        },
    }


def main() -> None:
    """Write :func:`lint_input` to stdout."""
    json.dump(lint_input(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
