#!/usr/bin/env bash
# Lint every Cypher constant of identity/store/cypher.py offline (no Neo4j server needed).
# Needs node and npm; without them it says so and succeeds, so `make test` runs anywhere.
set -euo pipefail

# Checked first, with shell builtins only, so the skip works even on a bare PATH.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "cypher-lint: node not found; skipped"
    exit 0
fi

script_dir="${BASH_SOURCE[0]%/*}"
[[ "$script_dir" == "${BASH_SOURCE[0]}" ]] && script_dir="."
cd "$script_dir/.."
python="${PYTHON:-.venv/bin/python}"
lint_dir="scripts/cypher-lint"

# Install the pinned linter from package-lock.json once, and again when the lock changes.
# After that the lint runs offline.
stamp="$lint_dir/node_modules/.idgraph-lock-stamp"
if [[ ! -f "$stamp" ]] || ! cmp -s "$lint_dir/package-lock.json" "$stamp"; then
    # engine-strict off: the package declares node >=24 but works on node 20 (the Debian
    # package); tests/identity/store/test_cypher.py proves the lint still finds errors on the node in use.
    (cd "$lint_dir" && npm ci --no-audit --no-fund --loglevel=error --engine-strict=false)
    cp "$lint_dir/package-lock.json" "$stamp"
fi

dump="$(mktemp)"
trap 'rm -f "$dump"' EXIT
"$python" -m identity.store.cypher_dump >"$dump"
node "$lint_dir/lint.mjs" "$dump"
