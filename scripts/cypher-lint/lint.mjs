// Lint idgraph's Cypher constants offline with Neo4j's own language support (the parser and
// semantic checks the Neo4j tools use). Reads the JSON of `python -m identity.store.cypher_dump`
// from the file named by the first argument (or stdin) and exits 1 if any statement has a
// diagnostic of severity Error or Warning. Warnings fail too: they are unknown labels, property
// keys or deprecated syntax, which are bugs in a fixed set of statements.
import { readFileSync } from 'node:fs';
import { lintCypherQuery } from '@neo4j-cypher/language-support';

// LSP DiagnosticSeverity: 1 Error, 2 Warning, 3 Information, 4 Hint.
const SEVERITY = { 1: 'error', 2: 'warning', 3: 'information', 4: 'hint' };
const FAILING = new Set([1, 2]);

const input = JSON.parse(readFileSync(process.argv[2] ?? 0, 'utf8'));
const { statements, schema } = input;
const names = Object.keys(statements).sort();
if (names.length === 0) {
  console.error('cypher-lint: no statements to lint (is the dump empty?)');
  process.exit(1);
}

let failures = 0;
for (const name of names) {
  const query = statements[name];
  const { diagnostics } = lintCypherQuery(query, schema);
  for (const d of diagnostics) {
    const severity = SEVERITY[d.severity] ?? `severity-${d.severity}`;
    const line = (d.range?.start?.line ?? 0) + 1;
    const column = (d.range?.start?.character ?? 0) + 1;
    console.log(`${name}:${line}:${column}: ${severity}: ${d.message}`);
    if (FAILING.has(d.severity)) failures += 1;
  }
}

if (failures > 0) {
  console.log(`cypher-lint: ${failures} problem(s) in ${names.length} statement(s)`);
  process.exit(1);
}
console.log(`cypher-lint: ${names.length} statement(s) OK`);
