"""``idgraph store …``: schema migration and copying a graph between stores.

Mounted by the main CLI (``app.add_typer(store_app, name="store")`` in :mod:`cli.main`). Stores
are opened only through :func:`bootstrap.container.open_store`, the one place that chooses adapters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bootstrap.container import open_copy_source, open_store
from bootstrap.settings import Settings
from cli.output import err_console, out_console
from identity.errors import ConfigurationError, IdGraphError
from identity.model import StoreStats
from identity.store.copy import (
    DEFAULT_BATCH_SIZE,
    CopyProgress,
    CopyReport,
    CopySource,
    copy_graph,
)

store_app = typer.Typer(
    help="Graph-store administration: create the schema, copy a graph between stores.",
    no_args_is_help=True,
)
_out = out_console()
_err = err_console()


def _fail(exc: IdGraphError) -> typer.Exit:
    # idgraph errors never hold raw identifiers, so their message is safe to show.
    _err.print(f"[bold red]error[/] ({exc.code}): {exc}")
    return typer.Exit(code=1)


def sqlite_path(url: str) -> Path:
    """The file of an ``sqlite:`` store URL (``sqlite:///abs/path`` or ``sqlite:rel/path``).

    The same rule as :func:`bootstrap.container.open_store`.
    """
    if not url.startswith("sqlite:"):
        raise ConfigurationError("the copy source must be an SQLite store URL (sqlite:PATH)")
    raw = url.removeprefix("sqlite:")
    return Path("/" + raw.removeprefix("///")) if raw.startswith("///") else Path(raw)


@store_app.command()
def migrate() -> None:
    """Create or upgrade the configured store's schema (IDGRAPH_STORE_URL); safe to re-run.

    Both adapters migrate when they open (SQLite tables; Neo4j constraints and indexes, all
    ``IF NOT EXISTS``), so this opens the store, prints its counts and closes it. Run it once
    before the first ``serve`` against a new Neo4j database.
    """
    try:
        store = open_store(Settings())
        try:
            stats = store.stats()
        finally:
            store.close()
    except IdGraphError as exc:
        raise _fail(exc) from exc
    _out.print(
        f"schema ready: {stats.persons} persons, {stats.identifiers} identifiers, "
        f"{stats.links} links, {stats.refusals} refusals, {stats.facts} facts"
    )


@store_app.command()
def copy(
    source: Annotated[
        str,
        typer.Option(
            "--from",
            help="store to copy from: sqlite:.idgraph/graph.sqlite3 or neo4j://localhost:7687",
        ),
    ],
    target: Annotated[
        str,
        typer.Option(
            "--to", help="store to copy into, e.g. neo4j://localhost:7687 or sqlite:copy.sqlite3"
        ),
    ],
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=1, max=100_000, help="persons per target transaction"),
    ] = DEFAULT_BATCH_SIZE,
) -> None:
    """Copy a graph between stores, in batches: SQLite into Neo4j, or Neo4j into an SQLite file.

    Resumable into Neo4j: a Neo4j target records how far the copy got in the same transaction as
    each batch, so re-running the same command after an interruption continues where it stopped.
    An SQLite target must be empty (delete the file and re-run after an interruption).
    Neo4j credentials (of the source or the target) come from IDGRAPH_NEO4J_USER /
    IDGRAPH_NEO4J_PASSWORD(_FILE) / IDGRAPH_NEO4J_DATABASE. The source is only read: an SQLite
    source as a read-only snapshot; a Neo4j source page by page, so stop its writers first.
    """
    try:
        if (
            source.startswith("sqlite:")
            and target.startswith("sqlite:")
            and sqlite_path(target).resolve() == sqlite_path(source).resolve()
        ):
            raise ConfigurationError("--from and --to name the same SQLite file")
        if source == target:
            raise ConfigurationError("--from and --to name the same store")
        settings = Settings()
        reader = open_copy_source(settings.model_copy(update={"store_url": source}))
        try:
            report, stats = _copy_into(reader, settings, target, batch_size)
        finally:
            if isinstance(reader, CopySource):
                reader.close()
    except IdGraphError as exc:
        raise _fail(exc) from exc
    verb = "resumed and copied" if report.resumed else "copied"
    _out.print(
        f"{verb} {report.persons} persons, {report.identifiers} identifiers, {report.links} "
        f"links, {report.refusals} refusals, {report.facts} facts in {report.batches} batch(es); "
        f"target now holds {stats.persons} persons, {stats.identifiers} identifiers, "
        f"{stats.links} links, {stats.refusals} refusals, {stats.facts} facts"
    )


def _copy_into(
    reader: Path | CopySource, settings: Settings, target: str, batch_size: int
) -> tuple[CopyReport, StoreStats]:
    """Open ``target`` and copy ``reader`` into it with a progress bar; the report and the
    target's counts afterwards."""
    store = open_store(settings.model_copy(update={"store_url": target}))
    try:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=_err,
        ) as bar:
            persons = bar.add_task("persons", total=None)
            refusals = bar.add_task("refusals", total=None)

            def show(p: CopyProgress) -> None:
                bar.update(persons, completed=p.persons_done, total=p.persons_total)
                bar.update(refusals, completed=p.refusals_done, total=p.refusals_total)

            report = copy_graph(reader, store, batch_size=batch_size, progress=show)
        return report, store.stats()
    finally:
        store.close()
