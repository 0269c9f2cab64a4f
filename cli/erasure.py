"""``idgraph dsr lift-suppression``: the one documented way to take an erased identifier off the
suppression list (:meth:`privacy.dsr.erasure.ErasureService.lift_suppression`).

Only for a fresh opt-in by the subject: suppression is what keeps an erasure from being undone by
the next import of an old data set. The command asks for confirmation (``--yes`` skips it in
scripts), writes an audit entry (``dsr.suppression_lifted``: actor ``cli``, the request id, the
count) and never prints the value. ``--value -`` reads the value from standard input, which keeps
it out of the shell history and the process list.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console

from cli.common import CLI_ACTOR, running_container

console = Console(stderr=True)
out = Console()


def register_suppression_commands(dsr_app: typer.Typer) -> None:
    """Add ``lift-suppression`` to the ``idgraph dsr`` command group."""

    @dsr_app.command("lift-suppression")
    def lift_suppression(
        identifier_type: Annotated[str, typer.Option("--type", help="Identifier type (email).")],
        value: Annotated[str, typer.Option("--value", help="The value; - reads standard input.")],
        request_id: Annotated[
            str, typer.Option("--request-id", help="The opt-in's reference, for the audit log.")
        ],
        yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    ) -> None:
        """Lift the suppression of one erased identifier after a fresh opt-in by its subject."""
        if value == "-":
            value = sys.stdin.readline().strip()
        if not yes and not typer.confirm(
            "Lift the suppression of this identifier? Only do this after a fresh opt-in by the "
            "person it belongs to: it can be ingested and linked again afterwards.",
            default=False,
            err=True,
        ):
            console.print("nothing changed")
            raise typer.Exit(1)
        with running_container() as container:
            identifier = container.identity_policy.normalize(
                identifier_type, value, container.settings.default_region
            )
            lifted = container.erasure.lift_suppression([identifier], request_id, CLI_ACTOR)
        if lifted:
            out.print(f"suppression lifted ({identifier_type}); audited as {request_id}")
        else:
            out.print(f"this {identifier_type} was not suppressed; nothing changed")
            raise typer.Exit(3)
