"""What every ``idgraph`` command group shares: the audit actor of commands and one way to run a
command against the service's container (its errors printed, never a traceback)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from bootstrap.container import Container, build_container
from bootstrap.settings import Settings
from cli.output import err_console
from identity.errors import IdGraphError

CLI_ACTOR = "cli"  # the audit actor of commands run by an operator

_err = err_console()


@contextmanager
def running_container() -> Iterator[Container]:
    """Build the container from the environment's settings, run the block, close it.

    A start-up failure (invalid settings, a refused key file) exits 2; an ``IdGraphError`` the
    block raises exits 1. Both print the error's message, which never holds a raw identifier.
    """
    try:
        container = build_container(Settings(), scanner_on_demand=True)
    except (IdGraphError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        _err.print(f"[red]cannot start:[/red] {exc}")
        raise typer.Exit(2) from None
    try:
        yield container
    except IdGraphError as exc:
        _err.print(f"[red]{type(exc).__name__}:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        container.close()
