"""The ``idgraph`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import tempfile
import threading
from collections.abc import Callable
from importlib.metadata import entry_points, version
from pathlib import Path
from typing import Annotated, Optional, TypeVar, get_args

import typer
from pydantic import ValidationError
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from bootstrap.container import (
    APPLIER_EXITS,
    STORE_GAVE_UP,
    Container,
    build_container,
    load_keyring,
)
from bootstrap.settings import Environment, Settings
from bootstrap.validation import load_all_policies
from cli.applier import CANNOT_START, ApplierChild, run_applier
from cli.audit import audit_app
from cli.common import CLI_ACTOR
from cli.console import console_app
from cli.dsr import dsr_app, retention_app
from cli.erasure import register_suppression_commands
from cli.links import links_app
from cli.output import err_console, out_console, print_json, tidy_help
from cli.privacy import quarantine_app, register_key_commands
from cli.store import store_app
from cli.webhooks import webhooks_app
from identity.errors import BatchValidationError, IdGraphError
from privacy.access.api_keys import ApiKeyStore, Scope
from privacy.keys.hash_keys import create_key_file, rotate_key_file
from privacy.keys.secretfile import write_secret_file
from services.bulk import (
    DEFAULT_BATCH_EVENTS,
    BulkFileError,
    BulkReport,
    FileFormat,
    ReaderMode,
    ingest_file,
)
from services.links import LinkService
from services.metrics import TalliedMetrics, TallyFile

app = typer.Typer(
    help="idgraph: privacy-first identity graph.",
    no_args_is_help=True,
    # Help is plain text: docstrings are written for people, not as RST or rich markup.
    rich_markup_mode=None,
)
keys_app = typer.Typer(help="API keys and hash keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(store_app, name="store")
app.add_typer(quarantine_app, name="quarantine")
app.add_typer(dsr_app, name="dsr")
register_suppression_commands(dsr_app)
app.add_typer(retention_app, name="retention")
app.add_typer(audit_app, name="audit")
app.add_typer(console_app, name="console")
app.add_typer(links_app, name="links")
app.add_typer(webhooks_app, name="webhooks")
register_key_commands(keys_app)

console = err_console()
out = out_console()

LOCAL_KEY_FILE = "local-api-key"
HTTP_APP_FACTORY = "api.app:serve_app"


JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"idgraph {version('idgraph')}")
        raise typer.Exit


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """idgraph: privacy-first identity graph."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:  # names the variable and the problem
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _container(
    settings: Settings, *, store_in_background: bool = False, scanner_on_demand: bool = True
) -> Container:
    """The container of a command; its PII scanner is built by the first scan unless
    ``scanner_on_demand`` is false (servers: see :func:`bootstrap.container.build_container`)."""
    try:
        return build_container(
            settings,
            store_in_background=store_in_background,
            scanner_on_demand=scanner_on_demand,
        )
    except IdGraphError as exc:
        console.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(2) from None


def ensure_local_setup(settings: Settings) -> Path | None:
    """Development convenience: data dir, hash key and a local all-scopes API key.

    Returns the path of the local API key file (created once, mode 0600), or ``None`` outside
    development, where nothing is generated.
    """
    if settings.env is not Environment.DEVELOPMENT:
        return None
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    load_keyring(settings)  # creates the development hash key if missing
    key_file = settings.data_dir / LOCAL_KEY_FILE
    if not key_file.exists():
        store = ApiKeyStore(settings.control_db_path)
        try:
            # Every scope and every purpose: a key for trying things out on your own machine.
            _, token = store.create(
                "local-development", frozenset(Scope), purposes=frozenset({"*"})
            )
        finally:
            store.close()
        write_secret_file(key_file, token + "\n")
        console.print(
            f"created a local API key (all scopes and purposes) in [bold]{key_file}[/bold]"
        )
    return key_file


@app.command()
def init() -> None:
    """Create the local data dir, a development hash key and a local API key (development only)."""
    settings = _settings()
    key_file = ensure_local_setup(settings)
    if key_file is None:
        console.print("[red]init is for development; production keys are made on purpose[/red]")
        raise typer.Exit(2)
    out.print(f"data dir: {settings.data_dir}\nAPI key file: {key_file}")


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option(help="Bind address (IDGRAPH_HOST).")] = None,  # noqa: UP045 - typer needs Optional
    port: Annotated[Optional[int], typer.Option(help="Port (IDGRAPH_PORT).")] = None,  # noqa: UP045
) -> None:
    """Serve the HTTP API."""
    import uvicorn

    from bootstrap.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    key_file = ensure_local_setup(settings)
    # Fail fast, with exit 2 and the reason, on bad settings, policies or keys: the same
    # container the app builds (the presidio scanner is built once per process either way).
    # A Neo4j that is not up yet is not waited for here: the server answers /readyz 503 while
    # it connects in the background (docs/neo4j.md).
    probe = _container(settings, store_in_background=True, scanner_on_demand=False)
    try:
        # IDGRAPH_INGEST_APPLIER=process or auto (the default): the journal's applier runs as
        # this process's child (cli/applier.py), on the SQLite store only (the one with a
        # journal).
        own_applier = settings.ingest_applier != "thread" and probe.async_ingest is not None
    finally:
        probe.close()
    if key_file is not None:
        console.print(
            f"idgraph on http://{host or settings.host}:{port or settings.port}  "
            f"(store: {settings.resolved_store_url}; API key: {key_file}; docs: /docs)"
        )
    # The HTTP entrypoint is started by its ASGI factory's name, as any ASGI server would start
    # it: entrypoints never import each other (docs/ARCHITECTURE.md). uvicorn's default loop and
    # HTTP implementation ("auto") are uvloop and httptools, dependencies of the package.
    # The applier child and its tally file's directory, if any: closed after the server's
    # shutdown.
    applier = contextlib.ExitStack()

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            await super().shutdown(sockets)
            # The applier child stops after the server (no batch is accepted for an applier
            # that is gone), and its directory is removed, before uvicorn re-raises a SIGTERM it
            # caught (which ends this process without running what follows server.run()).
            await asyncio.to_thread(applier.close)

    server = Server(
        uvicorn.Config(
            HTTP_APP_FACTORY,
            factory=True,
            host=host or settings.host,
            port=port or settings.port,
            access_log=False,
            log_config=None,
        )
    )

    def stop_when_the_store_gives_up() -> None:
        STORE_GAVE_UP.wait()
        server.should_exit = True  # a graceful shutdown, as on SIGTERM

    threading.Thread(target=stop_when_the_store_gives_up, daemon=True).start()
    applier_failed = threading.Event()

    def applier_cannot_start() -> None:
        applier_failed.set()
        server.should_exit = True  # its reason is in its own output, as for the server's

    with applier:  # closed here too if the server never got to its shutdown
        if own_applier:
            # The app this process builds applies nothing, and reads the child's counts from a
            # file of this server's own (unless one was set) for its /metrics.
            os.environ["IDGRAPH_INGEST_APPLIER"] = "process"
            if settings.ingest_applier_tally_file is None:
                tallies = applier.enter_context(tempfile.TemporaryDirectory(prefix="idgraph-"))
                os.environ["IDGRAPH_INGEST_APPLIER_TALLY_FILE"] = str(Path(tallies, "applier.json"))
            # New at each start: the child writes it into the tally file once it has looked at
            # the journal, and this server's /readyz waits for it (services.metrics.ApplierStart);
            # a file an earlier server's child left behind holds another.
            os.environ["IDGRAPH_INGEST_APPLIER_RUN_ID"] = secrets.token_hex(16)
            child = ApplierChild(os.environ, applier_cannot_start, on_exit=APPLIER_EXITS.record)
            child.start()
            applier.callback(child.stop)
        server.run()
    if STORE_GAVE_UP.is_set():  # the store never came up within its start-up timeout
        raise typer.Exit(3)
    if applier_failed.is_set():
        raise typer.Exit(2)


@app.command("ingest-applier")
def ingest_applier(
    parent_pid: Annotated[
        Optional[int],  # noqa: UP045 - typer needs Optional
        typer.Option(hidden=True, help="Stop when this process is gone (set by serve)."),
    ] = None,
) -> None:
    """Apply the queued async ingest batches (POST /v1/ingest with Prefer: respond-async) in
    this process until stopped (SIGTERM or Ctrl-C): run one beside apps started with
    IDGRAPH_INGEST_APPLIER=process (`idgraph serve` starts one itself by default)."""
    import structlog

    from bootstrap.logging import configure_logging

    settings = _settings()
    configure_logging(settings.log_level, settings.log_json)
    structlog.contextvars.bind_contextvars(process="ingest-applier")
    container = _container(settings, scanner_on_demand=False)
    try:
        jobs = container.async_ingest
        if jobs is None:
            console.print(
                "[red]cannot start:[/red] no ingest journal: asynchronous ingest needs the "
                "embedded SQLite store (IDGRAPH_STORE_URL is not sqlite)"
            )
            raise typer.Exit(CANNOT_START)
        tally_file = settings.ingest_applier_tally_file
        if tally_file is None:
            run_applier(jobs, parent_pid)
        else:  # counted where the server's /metrics reads them (services.metrics.TallyFile)
            counted = TalliedMetrics(TallyFile(tally_file), settings.ingest_applier_run_id)
            run_applier(
                jobs.with_ingest(container.ingest.with_metrics(counted)),
                parent_pid,
                counted.flush,
                counted.mark_started,  # the server's /readyz waits for it
            )
    finally:
        container.close()


def _parse_identifier(text: str, name: str) -> tuple[str, str]:
    """``TYPE=VALUE`` (``VALUE`` ``-`` reads one line of stdin) as a raw pair; exit 2 if not."""
    identifier_type, sep, value = text.partition("=")
    if not sep:
        console.print(f"[red]{name} must look like TYPE=VALUE (e.g. email=ann@example.org)[/red]")
        raise typer.Exit(2)
    if value == "-":
        value = sys.stdin.readline().rstrip("\n")
    return identifier_type, value


def _bad_input(exc: BatchValidationError) -> typer.Exit:
    for error in exc.errors:
        console.print(f"[red]{error.field}: {error.message}[/red]")
    return typer.Exit(2)


IdentifierArg = Annotated[
    str, typer.Argument(help="TYPE=VALUE, e.g. email=ann@example.org; VALUE '-' reads stdin.")
]


@app.command()
def resolve(identifier: IdentifierArg, as_json: JsonOption = False) -> None:
    """Print the person id an identifier resolves to (exit 1 if unknown)."""
    pair = _parse_identifier(identifier, "identifier")
    container = _container(_settings())
    try:
        person = container.links.resolve(pair)
    except BatchValidationError as exc:
        raise _bad_input(exc) from None
    finally:
        container.close()
    if as_json:
        # The type only: the value is what the caller typed and stays out of any output.
        print_json({"type": pair[0], "person_id": person})
    if person is None:
        if not as_json:
            console.print("not found")
        raise typer.Exit(1)
    if not as_json:
        out.print(person)


T = TypeVar("T")


def _on_pair(
    a: str,
    b: str,
    action: Callable[[LinkService, tuple[str, str], tuple[str, str]], T],
) -> T:
    """Parse two TYPE=VALUE arguments and run ``action`` on them; bad input exits 2, errors 1."""
    first, second = _parse_identifier(a, "a"), _parse_identifier(b, "b")
    container = _container(_settings())
    try:
        return action(container.links, first, second)
    except BatchValidationError as exc:
        raise _bad_input(exc) from None
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        container.close()


@app.command()
def explain(a: IdentifierArg, b: IdentifierArg, as_json: JsonOption = False) -> None:
    """Show the chain of links that joins two identifiers (exit 1 if they are not linked)."""
    result = _on_pair(a, b, LinkService.explain)
    if as_json:
        print_json(
            {
                "linked": result.linked,
                "person_id": result.person_id,
                "hops": [
                    {
                        "from": {"type": hop.from_type, "node": hop.from_node},
                        "to": {"type": hop.to_type, "node": hop.to_node},
                        "sources": list(hop.sources),
                        "first_linked_at": hop.first_linked_at.isoformat(),
                        "last_linked_at": hop.last_linked_at.isoformat(),
                    }
                    for hop in result.hops
                ],
            }
        )
        raise typer.Exit(0 if result.linked else 1)
    if not result.linked:
        out.print("not linked: the identifiers resolve to different persons")
        for entry in result.do_not_link:
            out.print(
                f"kept apart by do-not-link rule {entry.rule.rule_id} "
                f"({entry.type_a} {entry.rule.a} / {entry.type_b} {entry.rule.b}, "
                f"since {entry.rule.created_at.isoformat(timespec='seconds')})"
            )
        raise typer.Exit(1)
    table = Table("from", "to", "sources", "first linked", "last linked", title=result.person_id)
    for hop in result.hops:
        table.add_row(
            f"{hop.from_type} {hop.from_node}",
            f"{hop.to_type} {hop.to_node}",
            ", ".join(hop.sources),
            hop.first_linked_at.isoformat(timespec="seconds"),
            hop.last_linked_at.isoformat(timespec="seconds"),
        )
    out.print(table)


@app.command()
def unlink(a: IdentifierArg, b: IdentifierArg) -> None:
    """Remove the direct link between two identifiers; split the person if it falls apart."""
    result = _on_pair(
        a, b, lambda service, first, second: service.unlink(first, second, actor=CLI_ACTOR)
    )
    out.print(
        f"removed {result.removed_links} link(s); "
        + (
            f"split into {result.person_id_a} and {result.person_id_b}"
            if result.split
            else f"still one person {result.person_id_a} (linked through other identifiers)"
        )
    )
    if result.rule_id is not None:
        out.print(f"do-not-link rule {result.rule_id} keeps them apart (idgraph links rules)")


@app.command()
def ingest(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL or CSV file.")],
    file_format: Annotated[
        Optional[str], typer.Option("--format", help="jsonl or csv (default: by extension).")  # noqa: UP045
    ] = None,
    source: Annotated[
        Optional[str], typer.Option(help="Source for rows that name none.")  # noqa: UP045
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            min=1,
            max=100_000,
            help="Events per transaction (fewer once they carry 40,000 identifiers and traits).",
        ),
    ] = DEFAULT_BATCH_EVENTS,
    reader: Annotated[
        str,
        typer.Option(
            help="Where rows are read and validated: process (a second process, on another "
            "core), inline (this process), or auto (process for files of 16 MiB or more)."
        ),
    ] = "auto",
    as_json: JsonOption = False,
) -> None:
    """Stream a JSONL or CSV file into the graph, with progress and a summary."""
    if file_format not in (None, "jsonl", "csv"):
        console.print("[red]--format must be jsonl or csv[/red]")
        raise typer.Exit(2)
    if reader not in get_args(ReaderMode):
        console.print("[red]--reader must be auto, process or inline[/red]")
        raise typer.Exit(2)
    fmt: FileFormat | None = file_format  # type: ignore[assignment]
    settings = _settings()
    container = _container(settings)
    progress = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("ingest", total=file.stat().st_size)
            report = ingest_file(
                container.ingest,
                file,
                actor=CLI_ACTOR,
                file_format=fmt,
                default_source=source,
                batch_size=batch_size,
                progress=lambda n: progress.advance(task, n),
                reader=reader,  # type: ignore[arg-type]
            )
    except (BulkFileError, IdGraphError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        container.close()
    if as_json:
        print_json(_ingest_summary(file, report))
        raise typer.Exit(1 if report.rejected_rows else 0)
    table = Table(
        "rows",
        "events",
        "created",
        "linked",
        "merged",
        "unchanged",
        "refused ids",
        "persons merged",
        "rejected rows",
        title=f"ingested {file.name}",
    )
    table.add_row(
        str(report.rows),
        str(report.events),
        str(report.outcomes["created"]),
        str(report.outcomes["linked"]),
        str(report.outcomes["merged"]),
        str(report.outcomes["unchanged"]),
        str(report.refused_identifiers),
        str(report.merged_persons),
        str(report.rejected_rows),
    )
    out.print(table)
    if report.refusals:
        # Which kinds of identifiers were refused and why, never which values.
        out.print(
            "refused identifiers: "
            + ", ".join(
                f"{count} {kind} ({reason})"
                for (kind, reason), count in sorted(report.refusals.items())
            )
        )
    for error in report.errors:
        out.print(f"line {error.line}: " + "; ".join(error.problems))
    if report.rejected_rows > len(report.errors):
        out.print(f"... and {report.rejected_rows - len(report.errors)} more rejected rows")
    if report.rejected_rows:
        raise typer.Exit(1)


def _ingest_summary(file: Path, report: BulkReport) -> dict[str, object]:
    return {
        "file": file.name,
        "rows": report.rows,
        "events": report.events,
        "outcomes": {name: report.outcomes[name] for name in sorted(report.outcomes)},
        "new_identifiers": report.new_identifiers,
        "refused_identifiers": report.refused_identifiers,
        "refusals": [
            {"type": kind, "reason": reason, "count": count}
            for (kind, reason), count in sorted(report.refusals.items())
        ],
        "facts_stored": report.facts_stored,
        "facts_quarantined": report.facts_quarantined,
        "persons_merged": report.merged_persons,
        "rejected_rows": report.rejected_rows,
        "errors": [{"line": e.line, "problems": list(e.problems)} for e in report.errors],
    }


@app.command("policy-check")
def policy_check(as_json: JsonOption = False) -> None:
    """Validate every policy file and their cross-references (exit 2 naming file and field)."""
    settings = _settings()
    try:
        policy, facts, purposes = load_all_policies(settings)
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    if as_json:
        print_json(
            {
                "ok": True,
                "identifier_types": list(policy.type_names),
                "data_categories": len(facts.categories),
                "attributes": len(facts.attributes),
                "purposes": list(purposes.ids),
            }
        )
        return
    out.print(f"ok: {len(policy.types)} identifier types ({', '.join(policy.type_names)})")
    out.print(f"ok: {len(facts.categories)} data categories, {len(facts.attributes)} attributes")
    out.print(f"ok: {len(purposes.purposes)} purposes ({', '.join(purposes.ids)})")


# -- keys ----------------------------------------------------------------------------------------


@keys_app.command("create-api-key")
def create_api_key(
    scope: Annotated[list[Scope], typer.Option(help="Repeat for several scopes.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "api-key",
    purpose: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer needs Optional
        typer.Option(help="A purpose the key may read for (repeat; '*' = all). Needs `read`."),
    ] = None,
    consumer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="The downstream system (keys feature pseudonyms; default: key id)."),
    ] = None,
) -> None:
    """Create an API key; the key is printed once and stored only as a hash."""
    settings = _settings()
    purposes = frozenset(purpose or ())
    if purposes:
        from privacy.access.policy_engine import ALL_PURPOSES
        from privacy.access.purposes import load_purposes_policy

        try:
            known = load_purposes_policy(settings.policy_dir / "purposes.yaml").ids
        except IdGraphError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        unknown = sorted(purposes - {*known, ALL_PURPOSES})
        if unknown:
            console.print(
                f"[red]unknown purpose(s) {', '.join(unknown)}; valid: {', '.join(known)}[/red]"
            )
            raise typer.Exit(2)
        if not {Scope.READ, Scope.ADMIN} & set(scope):
            console.print("[yellow]note: purposes only matter with the read scope[/yellow]")
    store = ApiKeyStore(settings.control_db_path)
    try:
        key, token = store.create(name, frozenset(scope), purposes=purposes, consumer=consumer)
    finally:
        store.close()
    console.print(f"created key {key.key_id} ({', '.join(sorted(key.scopes))}); shown only once:")
    out.print(token)


@keys_app.command("list-api-keys")
def list_api_keys(as_json: JsonOption = False) -> None:
    """List API keys: id, name, scopes, purposes, consumer, dates (never secrets)."""
    store = ApiKeyStore(_settings().control_db_path)
    try:
        keys = store.list()
    finally:
        store.close()
    if as_json:
        print_json(
            [
                {
                    "key_id": key.key_id,
                    "name": key.name,
                    "scopes": sorted(key.scopes),
                    "purposes": sorted(key.purposes),
                    "consumer": key.consumer or key.key_id,
                    "created_at": key.created_at.isoformat(),
                    "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
                }
                for key in keys
            ]
        )
        return
    table = Table("key id", "name", "scopes", "purposes", "consumer", "created", "revoked")
    for key in keys:
        table.add_row(
            key.key_id,
            key.name,
            ", ".join(sorted(key.scopes)),
            ", ".join(sorted(key.purposes)),
            key.consumer or key.key_id,
            key.created_at.isoformat(timespec="seconds"),
            key.revoked_at.isoformat(timespec="seconds") if key.revoked_at else "",
        )
    out.print(table)


@keys_app.command("revoke-api-key")
def revoke_api_key(key_id: str) -> None:
    """Revoke an API key by id; a running server refuses it within IDGRAPH_API_KEY_CACHE_SECONDS
    (1 s)."""
    store = ApiKeyStore(_settings().control_db_path)
    try:
        revoked = store.revoke(key_id)
    finally:
        store.close()
    if not revoked:
        console.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    out.print(f"revoked {key_id}")


@keys_app.command("create-hash-key-file")
def create_hash_key_file(
    path: Annotated[Optional[Path], typer.Option(help="Default: IDGRAPH_HASH_KEY_FILE.")] = None,  # noqa: UP045
) -> None:
    """Create a hash-key file with one operator key (mode 0600). Refuses to overwrite."""
    target = path or _settings().resolved_hash_key_file
    try:
        keys = create_key_file(target, origin="operator")
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out.print(f"created {target} with key {keys.primary}; back it up in your secret store")


@keys_app.command("rotate-hash-key")
def rotate_hash_key() -> None:
    """Add a new hash key and make it primary; older keys stay for lookups.

    Identifiers hashed under an older key are found by trying every key and are re-hashed under
    the new primary key the next time they are seen. Restart the service to load the new key.
    """
    settings = _settings()
    if settings.hash_keys is not None:
        console.print(
            "[red]keys come from IDGRAPH_HASH_KEYS; rotate them in your secret store[/red]"
        )
        raise typer.Exit(2)
    try:
        keys = rotate_key_file(settings.resolved_hash_key_file)
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    out.print(f"new primary hash key {keys.primary}; {len(keys.entries)} keys known")


def register_plugin_commands(target: typer.Typer) -> None:
    """Add the commands other entrypoints contribute (``idgraph consume`` from ``stream/``).

    Found through the ``idgraph.commands`` entry-point group (pyproject.toml) rather than an
    import, so this shell never imports another entrypoint and each stays optional.
    """
    for entry in entry_points(group="idgraph.commands"):
        register = entry.load()
        register(target)


def main() -> None:
    """Console-script entry point."""
    register_plugin_commands(app)
    tidy_help(typer.main.get_command(app))()
