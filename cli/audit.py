"""``idgraph audit …``: verify the hash-chained audit log and print its head.

Mounted by the main CLI (``app.add_typer(audit_app, name="audit")`` in :mod:`cli.main`). Only the
audit file is opened (no store, no keys): an auditor can run it on a copy of that file alone.

Anchoring: ``idgraph audit head`` prints ``SEQ:DIGEST``; keep that line somewhere the service's
writers cannot change (a ticket, a WORM bucket). ``idgraph audit verify --anchor SEQ:DIGEST``
then also detects truncation and a full rewrite of everything up to that entry (see
:mod:`privacy.auditing.log`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import ValidationError
from rich.console import Console

from bootstrap.settings import Settings
from identity.errors import IdGraphError
from privacy.auditing.heads import HEAD_KEY_INFO, read_signed_heads
from privacy.auditing.log import AuditHead, SqliteAuditLog

audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)
_ANCHOR = re.compile(r"(\d{1,18}):([0-9a-f]{64})")


def _open() -> SqliteAuditLog:
    try:
        settings = Settings()
    except ValidationError as exc:
        _err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    path = settings.audit_db_path
    if not path.exists():
        _err.print(f"[red]no audit log at {path}[/red]")
        raise typer.Exit(2)
    try:
        return SqliteAuditLog(path)
    except IdGraphError as exc:
        _err.print(f"[red]cannot open the audit log:[/red] {exc}")
        raise typer.Exit(2) from None


def parse_anchor(text: str) -> AuditHead:
    """``SEQ:DIGEST`` (as ``idgraph audit head`` prints it) as an :class:`AuditHead`."""
    match = _ANCHOR.fullmatch(text.strip().lower())
    if match is None:
        raise typer.BadParameter("expected SEQ:DIGEST, e.g. 1842:9f86d081…(64 hex digits)")
    return AuditHead(int(match.group(1)), match.group(2))


@audit_app.command()
def verify(
    anchor: Annotated[
        Optional[str],  # noqa: UP045 - typer needs Optional
        typer.Option(help="SEQ:DIGEST recorded earlier with `idgraph audit head`."),
    ] = None,
    heads: Annotated[
        Optional[Path],  # noqa: UP045 - typer needs Optional
        typer.Option(help="Signed heads file (IDGRAPH_AUDIT_HEADS_FILE); checks the newest."),
    ] = None,
) -> None:
    """Recompute the chain; exit 1 naming the first edited, deleted or reordered entry."""
    if anchor is not None and heads is not None:
        raise typer.BadParameter("give --anchor or --heads, not both")
    head = parse_anchor(anchor) if anchor is not None else None
    if heads is not None:
        head = _newest_signed_head(heads)
    log = _open()
    try:
        result = log.verify(anchor=head)
    finally:
        log.close()
    if result.ok:
        anchored = f", anchor {head.seq} matches" if head is not None else ""
        _out.print(f"ok: {result.entries_checked} entries verified{anchored}")
        return
    _out.print(
        f"BROKEN: {result.problem} entry at seq {result.first_bad_seq} "
        f"({result.entries_checked} entries verified before it)"
    )
    raise typer.Exit(1)


def _newest_signed_head(path: Path) -> AuditHead | None:
    """The newest head of a signed heads file; exit 1 if any line is forged or edited."""
    from bootstrap.container import open_vault  # the signing key is a vault reference subkey

    vault, keys = open_vault(Settings())
    try:
        key = vault.reference_key(HEAD_KEY_INFO)
    finally:
        keys.close()
    try:
        signed = read_signed_heads(path, key)
    except IdGraphError as exc:
        _out.print(f"BROKEN: {exc}")
        raise typer.Exit(1) from None
    return signed[-1].head if signed else None


@audit_app.command()
def head() -> None:
    """Print ``SEQ:DIGEST`` of the newest entry: record it outside this host as an anchor."""
    log = _open()
    try:
        newest = log.head()
    finally:
        log.close()
    _out.print(f"{newest.seq}:{newest.digest}")
