"""CLI commands for the vault and PII quarantine: KEK files and rotation, bulk re-hash after a
hash-key rotation, and review of quarantined values (``idgraph keys …``, ``idgraph quarantine …``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from bootstrap.container import Container, build_container, open_pkcs11_provider
from bootstrap.settings import Settings
from cli.common import CLI_ACTOR, running_container
from cli.output import err_console, out_console, print_json
from identity.errors import IdGraphError
from privacy.keys.keyprovider import create_kek_file, read_kek_file, remove_kek, rotate_kek_file
from services.quarantine import QuarantineReview

console = err_console()
out = out_console()

quarantine_app = typer.Typer(
    help="Review values quarantined by the PII scanner.", no_args_is_help=True
)


def _settings() -> Settings:
    return Settings()


def _progress(label: str) -> Progress:
    return Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        console=console,
        disable=not console.is_terminal,
    )


def register_key_commands(keys_app: typer.Typer) -> None:
    """Add the vault and re-hash commands to ``idgraph keys``."""

    @keys_app.command("create-kek-file")
    def create_kek(
        path: Annotated[Optional[Path], typer.Option(help="Default: IDGRAPH_KEK_FILE.")] = None,  # noqa: UP045
    ) -> None:
        """Create a key-encryption-key file with one operator KEK (mode 0600)."""
        target = path or _settings().resolved_kek_file
        if target.exists():
            console.print(f"[red]{target} already exists; refusing to overwrite it[/red]")
            raise typer.Exit(2)
        keks = create_kek_file(target, origin="operator")
        out.print(f"created {target} with KEK {keks.primary}; back it up in your secret store")

    @keys_app.command("rotate-kek")
    def rotate_kek(
        batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
        retire_old: Annotated[
            bool, typer.Option(help="Remove old KEKs from the file once nothing uses them.")
        ] = False,
    ) -> None:
        """Add a new KEK, make it primary and re-wrap every data key under it.

        No value is re-encrypted: only the 32-byte data keys are re-wrapped, in batches that
        each commit on their own. Interrupted? Run it again without rotating twice:
        `idgraph keys rewrap`.
        """
        settings = _settings()
        if settings.key_provider == "pkcs11":
            hsm = open_pkcs11_provider(settings)
            try:
                kek_id = hsm.create_kek()  # generated inside the token, never extractable
            finally:
                hsm.close()
        else:
            kek_id = rotate_kek_file(settings.resolved_kek_file)
        console.print(f"new primary KEK {kek_id}")
        _rewrap(settings, batch_size, retire_old)

    @keys_app.command("rewrap")
    def rewrap(
        batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000,
        retire_old: Annotated[
            bool, typer.Option(help="Remove unused old KEKs afterwards.")
        ] = False,
    ) -> None:
        """Re-wrap data keys still under an older KEK (resumes an interrupted rotate-kek)."""
        _rewrap(_settings(), batch_size, retire_old)

    @keys_app.command("rehash")
    def rehash(batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 1000) -> None:
        """Re-hash identifiers still under an older hash key, using their kept raw values.

        Types without `keep_raw` cannot be re-hashed without being seen again; they stay
        findable under their old key (keep it in the key file) and move on next sight.
        Resumable: each batch commits on its own.
        """
        container = build_container(_settings(), scanner_on_demand=True)
        rehashed = without = unreadable = 0
        after = ""
        try:
            with _progress("re-hashing") as progress:
                task = progress.add_task("rehash", total=None)
                while True:
                    page = container.engine.rehash_page(after, batch_size)
                    if page.last_node_id is None:
                        break
                    after = page.last_node_id
                    rehashed += page.rehashed
                    without += page.without_raw_value
                    unreadable += page.unreadable_raw_value
                    progress.update(task, completed=rehashed + without)
        except IdGraphError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(2) from None
        finally:
            container.close()
        out.print(
            f"re-hashed {rehashed} identifier(s) under {container.keyring.primary_key_id}; "
            f"{without} without a kept value stay under their old key until seen again"
            + (
                f" ({unreadable} of them: the kept value's data key was shredded)"
                if unreadable
                else ""
            )
        )


def _rewrap(settings: Settings, batch_size: int, retire_old: bool) -> None:
    container = build_container(settings, scanner_on_demand=True)
    retired: tuple[str, ...] = ()
    try:
        counts = container.vault.count_by_kek()
        with _progress("re-wrapping") as progress:
            task = progress.add_task("rewrap", total=sum(counts.values()))
            step = lambda n: progress.update(task, completed=n)  # noqa: E731
            if retire_old:
                # Retire first, then re-wrap: from the retirement on, no process can store a
                # key under an old KEK, so removing it below cannot strand a key.
                retirement = container.vault.retire_old_keks(batch_size, progress=step)
                kek_id, rewrapped, retired = (
                    retirement.kek_id,
                    retirement.rewrapped,
                    retirement.retired,
                )
            else:
                report = container.vault.rewrap(batch_size, progress=step)
                kek_id, rewrapped = report.kek_id, report.rewrapped
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        container.close()
    out.print(f"re-wrapped {rewrapped} data key(s) under {kek_id}")
    if settings.key_provider == "pkcs11":
        hsm = open_pkcs11_provider(settings)
        try:
            for old in retired:
                if hsm.holds(old):
                    hsm.destroy_kek(old)
                    out.print(f"removed retired KEK {old}")
        finally:
            hsm.close()
        return
    path = settings.resolved_kek_file
    for old in retired:
        if old in read_kek_file(path).key_ids:
            remove_kek(path, old)
            out.print(f"removed retired KEK {old}")


def _review(container: Container) -> QuarantineReview:
    return QuarantineReview(container.store, container.vault, container.audit)


@quarantine_app.command("list")
def quarantine_list(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")] = False,
) -> None:
    """List quarantined values: ids, field, category and entity types found (never values)."""
    container = build_container(_settings(), scanner_on_demand=True)
    try:
        facts = _review(container).pending(limit)
    finally:
        container.close()
    if as_json:
        print_json(
            [
                {
                    "fact_id": fact.fact_id,
                    "kind": fact.kind.value,
                    "name": fact.name,
                    "category": fact.category,
                    "found": list(fact.pii),
                    "at": fact.at.isoformat(),
                    "source": fact.source,
                }
                for fact in facts
            ]
        )
        return
    # One line per value, id first and never truncated: operators copy ids into release/drop.
    for fact in facts:
        found = ", ".join(fact.pii) or "(undeclared)"
        out.print(
            f"{fact.fact_id}  {fact.kind.value}:{fact.name}  category={fact.category}  "
            f"found={found}  at={fact.at.isoformat(timespec='seconds')}  source={fact.source}",
            soft_wrap=True,
        )
    if not facts:
        out.print("no quarantined values")


@quarantine_app.command("release")
def quarantine_release(fact_ids: list[str]) -> None:
    """Make quarantined values visible to reads (after review; audited)."""
    _settle(fact_ids, "release")


@quarantine_app.command("drop")
def quarantine_drop(fact_ids: list[str]) -> None:
    """Delete quarantined values (audited)."""
    _settle(fact_ids, "drop")


def _settle(fact_ids: list[str], decision: Literal["release", "drop"]) -> None:
    # Exit 1 when some ids were not (or no longer) quarantined: a script must notice.
    with running_container() as container:
        review = _review(container)
        settle = review.release if decision == "release" else review.drop
        changed = settle(CLI_ACTOR, fact_ids)
    out.print(f"{'released' if decision == 'release' else 'dropped'} {changed} value(s)")
    if changed != len(fact_ids):
        raise typer.Exit(1)
