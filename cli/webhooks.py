"""``idgraph webhooks``: the consent-webhook sources of this configuration, checked locally.

``idgraph webhooks check SOURCE`` verifies one delivery (its three Standard Webhooks headers and
its exact body) against the secrets ``idgraph serve`` would load for ``SOURCE``, without a server
and without recording the webhook id: the answer to "why does my CMP get 401?". Secrets are never
printed; only which one (by position) matched.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from bootstrap.container import load_webhook_secrets
from bootstrap.settings import Settings
from cli.output import err_console
from identity.errors import IdGraphError
from privacy.transport.webhooks import (
    HEADER_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    WebhookVerificationError,
    WebhookVerifier,
)

console = err_console()

webhooks_app = typer.Typer(
    help="Consent-webhook sources: list them, check a delivery's signature locally.",
    no_args_is_help=True,
)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None


def _secrets(settings: Settings) -> dict[str, list[str]]:
    try:
        return load_webhook_secrets(settings)
    except IdGraphError as exc:
        console.print(f"[red]cannot read the webhook secrets:[/red] {exc}")
        raise typer.Exit(2) from None


def _emit(document: dict[str, object], text: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(document, sort_keys=True))
    else:
        typer.echo(text)


@webhooks_app.command("list")
def list_sources(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The configured sources, their payload format and how many secrets each has."""
    settings = _settings()
    secrets = _secrets(settings)
    rows = [
        {"source": name, "format": config.format, "secrets": len(secrets.get(name, []))}
        for name, config in sorted(settings.webhook_sources.items())
    ]
    if as_json:
        typer.echo(json.dumps(rows))
        return
    if not rows:
        typer.echo("no consent-webhook sources (IDGRAPH_WEBHOOK_SOURCES is empty)")
    for row in rows:
        typer.echo(f"{row['source']}\tformat={row['format']}\tsecrets={row['secrets']}")


def _parse_headers(values: list[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise typer.BadParameter(f"expected 'Name: value', got {value[:40]!r}", param_hint="-H")
        headers[name.strip().lower()] = content.strip()
    return headers


@webhooks_app.command("check")
def check(
    source: Annotated[str, typer.Argument(help="The source name, as in the URL path.")],
    body: Annotated[
        Path, typer.Option("--body", help="File with the exact request body; - reads stdin.")
    ] = Path("-"),
    header: Annotated[
        list[str] | None,
        typer.Option("-H", "--header", help="A request header, 'Name: value' (repeatable)."),
    ] = None,
    webhook_id: Annotated[str | None, typer.Option("--id", help="The webhook-id header.")] = None,
    timestamp: Annotated[
        str | None, typer.Option("--timestamp", help="The webhook-timestamp header.")
    ] = None,
    signature: Annotated[
        str | None, typer.Option("--signature", help="The webhook-signature header.")
    ] = None,
    ignore_time: Annotated[
        bool,
        typer.Option(
            "--ignore-time", help="Check the signature of an old delivery (skip the ±5 min check)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Verify one delivery's signature against SOURCE's configured secrets (exit 0 if valid).

    Exit 1 with the same reason the server would answer (missing_header, stale_timestamp,
    no_valid_signature, ...); exit 2 if SOURCE is not configured or has no secret. The webhook
    id is not recorded, so a checked delivery can still be sent.
    """
    settings = _settings()
    secrets = _secrets(settings)
    configured = sorted(settings.webhook_sources)
    if source not in settings.webhook_sources or not secrets.get(source):
        problem = "not configured" if source not in settings.webhook_sources else "has no secret"
        _emit(
            {"source": source, "valid": False, "reason": "source_" + problem.replace(" ", "_")},
            f"source {source!r} {problem} in this environment "
            f"(IDGRAPH_WEBHOOK_SOURCES: {', '.join(configured) or 'none'}); the server refuses "
            "its deliveries with 401 no_valid_signature. Set IDGRAPH_WEBHOOK_SOURCES and "
            "IDGRAPH_WEBHOOK_SECRETS, then restart the server.",
            as_json,
        )
        raise typer.Exit(2)
    headers = _parse_headers(header or [])
    for name, value in ((HEADER_ID, webhook_id), (HEADER_TIMESTAMP, timestamp)):
        if value is not None:
            headers[name] = value
    if signature is not None:
        headers[HEADER_SIGNATURE] = signature
    payload = sys.stdin.buffer.read() if str(body) == "-" else body.read_bytes()
    stamp = headers.get(HEADER_TIMESTAMP, "")
    clock = (lambda: float(stamp)) if ignore_time and stamp.isdigit() else None
    try:
        verifier = (
            WebhookVerifier(secrets[source], clock=clock)
            if clock
            else WebhookVerifier(secrets[source])
        )
        verified = verifier.verify(headers, payload)
    except WebhookVerificationError as exc:
        _emit(
            {"source": source, "valid": False, "reason": exc.reason},
            f"refused: {exc.reason} ({exc})",
            as_json,
        )
        raise typer.Exit(1) from None
    except IdGraphError as exc:
        console.print(f"[red]cannot check:[/red] {exc}")
        raise typer.Exit(2) from None
    _emit(
        {
            "source": source,
            "valid": True,
            "webhook_id": verified.webhook_id,
            "secret_index": verified.secret_index,
        },
        f"valid: signed with secret #{verified.secret_index + 1} of {len(secrets[source])} "
        f"(webhook-id {verified.webhook_id})",
        as_json,
    )
