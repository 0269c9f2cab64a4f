"""``idgraph links``: the do-not-link rules that make an unlink stick.

``idgraph unlink A B`` (and ``POST /v1/links/unlink``) records a rule when the two identifiers end
up in different persons; from then on an event naming identifiers of both sides links neither
across (the one that would is refused with ``do_not_link``). These commands are how an operator
sees those rules and takes one back after a mistaken unlink. Rules show opaque node ids, types and
person ids only, never a value. Removing a rule is audited (``links.rule_removed``, actor ``cli``)
and merges nothing by itself: the next event naming both sides links them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console

from bootstrap.container import build_container
from bootstrap.settings import Settings
from identity.errors import IdGraphError
from services.links import LinkService

console = Console(stderr=True)
out = Console()

CLI_ACTOR = "cli"
T = TypeVar("T")

links_app = typer.Typer(
    help="Do-not-link rules recorded by unlink (list, remove).", no_args_is_help=True
)


def _on_links(action: Callable[[LinkService], T]) -> T:
    """Run ``action`` on the configured link service; an idgraph error exits 1."""
    container = build_container(Settings(), scanner_on_demand=True)
    try:
        return action(container.links)
    except IdGraphError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        container.close()


@links_app.command("rules")
def list_rules(
    after: Annotated[str, typer.Option("--after", help="Start after this rule id (paging).")] = "",
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
) -> None:
    """List do-not-link rules in id order: the two identifier nodes, their types and persons."""
    entries = _on_links(lambda links: links.do_not_link_rules(after, limit))
    # One line per rule, never wrapped or cut: the id is what `allow` takes.
    out.print(f"{len(entries)} do-not-link rule(s)", soft_wrap=True)
    for entry in entries:
        rule = entry.rule
        out.print(
            f"{rule.rule_id}  {rule.created_at.isoformat(timespec='seconds')}  "
            f"{entry.type_a} {rule.a} ({entry.person_a})  {entry.type_b} {rule.b} "
            f"({entry.person_b})",
            soft_wrap=True,
            highlight=False,
        )


@links_app.command("allow")
def remove_rule(
    rule_id: Annotated[
        str, typer.Argument(help="The rule id (dnl_...) from `idgraph links rules`.")
    ],
) -> None:
    """Remove a do-not-link rule: later events may link the two sides again (audited)."""
    entry = _on_links(lambda links: links.remove_rule(rule_id, actor=CLI_ACTOR))
    out.print(
        f"removed {entry.rule.rule_id}: {entry.type_a} {entry.rule.a} and {entry.type_b} "
        f"{entry.rule.b} may be linked again by a later event"
    )
