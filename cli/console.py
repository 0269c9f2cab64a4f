"""``idgraph console …``: operator accounts for the privacy-operations console.

Opens only what accounts need (the operator database, the audit log and the purposes policy):
no graph store, no keys, no PII scanner. Passwords are read from a hidden prompt, or from
standard input with ``--password-stdin`` (for provisioning scripts); never from an argument,
where the shell history and the process list would keep them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Annotated, Optional

import typer
from pydantic import ValidationError

from bootstrap.settings import Settings
from bootstrap.validation import load_all_policies
from cli.output import err_console, out_console, print_json
from identity.errors import BatchValidationError, IdGraphError
from privacy.access.operators import OperatorAccess, Role, SqliteOperatorStore
from privacy.auditing.log import SqliteAuditLog

console_app = typer.Typer(help="Operator accounts of the web console.", no_args_is_help=True)
_out = out_console()
_err = err_console()


@contextmanager
def _access() -> Iterator[OperatorAccess]:
    try:
        settings = Settings()
    except ValidationError as exc:
        _err.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from None
    with ExitStack() as stack:
        try:
            _, _, purposes = load_all_policies(settings)
            audit = SqliteAuditLog(settings.audit_db_path)
            stack.callback(audit.close)
            store = SqliteOperatorStore(settings.operators_db_path)
            stack.callback(store.close)
        except IdGraphError as exc:
            _err.print(f"[red]cannot start:[/red] {exc}")
            raise typer.Exit(2) from None
        yield OperatorAccess(store, audit, purposes.ids)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _fail(exc: IdGraphError) -> typer.Exit:
    errors = exc.errors if isinstance(exc, BatchValidationError) else [exc]
    for error in errors:
        _err.print(f"[red]{error}[/red]")
    return typer.Exit(1)


@console_app.command("create-operator")
def create_operator(
    username: str,
    role: Annotated[Role, typer.Option(help="What the operator does.")] = Role.PRIVACY_OFFICER,
    purpose: Annotated[
        Optional[list[str]],  # noqa: UP045 - typer reads Optional
        typer.Option(help="A purpose the operator may read for (repeat; '*' for all)."),
    ] = None,
    totp: Annotated[bool, typer.Option(help="Require a one-time code at sign-in.")] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create an operator account (argon2id password, optional TOTP)."""
    password = _password(password_stdin)
    with _access() as access:
        try:
            created = access.create_operator(username, password, role, purpose or (), totp=totp)
        except IdGraphError as exc:
            raise _fail(exc) from None
    operator = created.operator
    _out.print(
        f"created operator {operator.username} ({operator.role.value}; purposes: "
        f"{', '.join(sorted(operator.purposes)) or 'none'})"
    )
    if created.totp_uri:
        _out.print("Add this to an authenticator app now; it is not shown again:")
        _out.print(created.totp_uri, soft_wrap=True, markup=False)


@console_app.command("list-operators")
def list_operators(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """Operator accounts: username, role, purposes, TOTP, disabled."""
    with _access() as access:
        operators = access.list_operators()
    if as_json:
        print_json(
            [
                {
                    "username": op.username,
                    "role": op.role.value,
                    "purposes": sorted(op.purposes),
                    "totp": op.totp,
                    "disabled": op.disabled,
                }
                for op in operators
            ]
        )
        return
    for op in operators:
        flags = ", ".join(f for f, on in (("totp", op.totp), ("disabled", op.disabled)) if on)
        _out.print(
            f"{op.username}  {op.role.value}  purposes={','.join(sorted(op.purposes)) or '-'}"
            + (f"  ({flags})" if flags else "")
        )
    if not operators:
        _out.print("no operators; create one with `idgraph console create-operator NAME`")


@console_app.command("reset-password")
def reset_password(
    username: str,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Set a new password (unlocks the account and ends its sessions)."""
    password = _password(password_stdin)
    with _access() as access:
        try:
            access.reset_password(username, password)
        except IdGraphError as exc:
            raise _fail(exc) from None
    _out.print(f"password of {username} reset; its sessions ended")


def _set_disabled(username: str, disabled: bool) -> None:
    with _access() as access:
        try:
            access.set_disabled(username, disabled)
        except IdGraphError as exc:
            raise _fail(exc) from None
    _out.print(f"{username} {'disabled' if disabled else 'enabled'}")


@console_app.command("disable-operator")
def disable_operator(username: str) -> None:
    """Disable an account and end its sessions."""
    _set_disabled(username, True)


@console_app.command("enable-operator")
def enable_operator(username: str) -> None:
    """Re-enable a disabled account."""
    _set_disabled(username, False)
