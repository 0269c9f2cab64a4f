"""CLI for data-subject requests and retention (``idgraph dsr …``, ``idgraph retention run``).

Subject identities are given as ``TYPE=VALUE``; ``TYPE=-`` reads the value from standard input,
which keeps it out of the shell history and the process list (prefer it for real requests).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.table import Table

from bootstrap.container import Container
from cli.common import CLI_ACTOR, running_container
from cli.output import err_console, out_console, print_json
from identity.errors import BatchValidationError
from privacy.dsr.export import to_csv
from privacy.dsr.model import (
    DsrAction,
    DsrCaller,
    DsrStatus,
    DsrSubmission,
    DsrType,
    MultiplePersonsError,
)
from services.dsr_views import dsr_out

console = err_console()
out = out_console()

dsr_app = typer.Typer(help="Data-subject requests (erasure, access, ...).", no_args_is_help=True)
retention_app = typer.Typer(help="Retention: delete what is kept too long.", no_args_is_help=True)

# An operator at the console: sees every owner's requests; what it submits is owned by "cli".
CLI_CALLER = DsrCaller(CLI_ACTOR, CLI_ACTOR, sees_all=True)


def _print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def _show(container: Container, request_id: str) -> None:
    request = container.dsr.get(request_id, CLI_CALLER)
    _print_json(dsr_out(request, container.dsr.clock()).model_dump(mode="json"))


@dsr_app.command("submit")
def submit(
    request_id: Annotated[str, typer.Option("--id", help="Your request id (idempotent).")],
    request_type: Annotated[DsrType, typer.Option("--type")],
    subjects: Annotated[
        list[str], typer.Option("--subject", help="TYPE=VALUE (TYPE=- reads stdin); repeatable.")
    ],
    regulation: Annotated[Optional[str], typer.Option()] = None,  # noqa: UP045 - typer needs Optional
    purposes: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--purpose", help="Objection: a purpose; repeatable."),
    ] = None,
    rectified: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option(
            "--rectified",
            help="Rectification: the name of a corrected attribute, event or identifier type "
            "(never its value: correct the value through ingest first); repeatable.",
        ),
    ] = None,
    lift: Annotated[bool, typer.Option(help="Restriction/objection: lift it.")] = False,
    submitted: Annotated[
        Optional[datetime],  # noqa: UP045
        typer.Option(help="When the subject asked (default: now, UTC)."),
    ] = None,
    confirm_multiple_persons: Annotated[
        bool, typer.Option(help="The subjects resolve to several persons that are one subject.")
    ] = False,
) -> None:
    """Submit a request; it is processed by the worker or `idgraph dsr process`."""
    pairs: list[tuple[str, str]] = []
    for index, text in enumerate(subjects):
        kind, sep, value = text.partition("=")
        if not sep:
            console.print(f"[red]--subject #{index + 1} must look like TYPE=VALUE[/red]")
            raise typer.Exit(2)
        pairs.append((kind, sys.stdin.readline().rstrip("\n") if value == "-" else value))
    at = submitted.replace(tzinfo=UTC) if submitted and not submitted.tzinfo else submitted
    submission = DsrSubmission(
        request_id=request_id,
        type=request_type,
        action=DsrAction.LIFT if lift else DsrAction.APPLY,
        subject_identities=pairs,
        submitted_at=at,
        regulation=regulation,
        purposes=tuple(purposes or ()),
        rectified=tuple(rectified or ()),
        confirm_multiple_persons=confirm_multiple_persons,
    )
    with running_container() as container:
        try:
            result = container.dsr.submit(submission, CLI_CALLER)
        except BatchValidationError as exc:
            for error in exc.errors:
                console.print(f"[red]{error.field}: {error.message}[/red]")
            raise typer.Exit(2) from None
        except MultiplePersonsError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        if not result.created:
            console.print("already submitted with the same content: showing the stored request")
        _show(container, request_id)


@dsr_app.command("status")
def status(request_id: str) -> None:
    """Show one request (status, due date, result, export, webhook deliveries)."""
    with running_container() as container:
        _show(container, request_id)


@dsr_app.command("list")
def list_requests(
    state: Annotated[Optional[DsrStatus], typer.Option("--status")] = None,  # noqa: UP045
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List requests (by request id)."""
    with running_container() as container:
        found = container.dsr.list_requests(state, "", limit)
        if as_json:
            now = container.dsr.clock()
            print_json([dsr_out(r, now).model_dump(mode="json") for r in found])
            return
        table = Table("request id", "type", "status", "regulation", "due", "finished", "result")
        for r in found:
            table.add_row(
                r.request_id,
                r.type.value + (" (lift)" if r.action is DsrAction.LIFT else ""),
                r.status.value,
                r.regulation,
                r.due_at.date().isoformat(),
                r.finished_at.isoformat(timespec="seconds") if r.finished_at else "",
                ", ".join(f"{k}={v}" for k, v in sorted(r.result.items())),
            )
        out.print(table)


@dsr_app.command("process")
def process(limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100) -> None:
    """Process pending requests, send due webhooks and destroy expired exports (one pass)."""
    with running_container() as container:
        report = container.dsr.run_once(limit)
        depth, age = container.dsr.publish_queue()
    _print_json({**asdict(report), "queue_depth": depth, "oldest_age_seconds": round(age, 1)})


@dsr_app.command("cancel")
def cancel(request_id: str) -> None:
    """Cancel a pending request."""
    with running_container() as container:
        container.dsr.cancel(request_id, CLI_CALLER)
        _show(container, request_id)


@dsr_app.command("extend")
def extend(
    request_id: str,
    reason: Annotated[str, typer.Option(help="Sent to the subject; no personal data.")],
) -> None:
    """Extend the due date once by the regulation's extension (before the due date)."""
    with running_container() as container:
        try:
            container.dsr.extend(request_id, CLI_CALLER, reason)
        except BatchValidationError as exc:
            for error in exc.errors:
                console.print(f"[red]{error.field}: {error.message}[/red]")
            raise typer.Exit(2) from None
        _show(container, request_id)


@dsr_app.command("download")
def download(
    request_id: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="File to write (mode 0600).")],
    fmt: Annotated[str, typer.Option("--format", help="json or csv")] = "json",
) -> None:
    """Write the export of an access/portability request to a file (owner-only)."""
    render: Callable[[dict[str, Any]], str] = (
        to_csv if fmt == "csv" else lambda d: json.dumps(d, indent=2, ensure_ascii=False)
    )
    if fmt not in ("json", "csv"):
        console.print("[red]--format must be json or csv[/red]")
        raise typer.Exit(2)
    with running_container() as container:
        document = container.dsr.download(request_id, CLI_CALLER)
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
        handle.write(render(document))
    console.print(f"wrote {output}")


@retention_app.command("run")
def retention_run(batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000) -> None:
    """Delete facts past their category's retention (and inactive persons, if configured)."""
    with running_container() as container:
        report = container.retention.run(batch_size=batch_size, actor=CLI_ACTOR)
    _print_json(asdict(report))
