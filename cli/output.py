"""Where the CLI writes, for people and for scripts.

On a terminal, rich tables fit the window. Piped or redirected, rich would assume 80 columns and
cut long ids with an ellipsis; a script wants every character, so the width is then unbounded
(rows are as long as their content). ``--json`` on every listing and inspecting command prints
one JSON document instead, for ``jq`` and friends.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console

# Wide enough that no table column is ever cut when the output is not a terminal.
PIPED_WIDTH = 10_000


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else PIPED_WIDTH
    return Console(stderr=stderr, width=width, soft_wrap=width is not None)


def out_console() -> Console:
    """The standard-output console (full width when piped)."""
    return _console(stderr=False)


def err_console() -> Console:
    """The standard-error console (messages, progress)."""
    return _console(stderr=True)


def print_json(document: Any) -> None:
    """One JSON document on standard output (dates as ISO 8601 strings)."""
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=True, default=str) + "\n")
    sys.stdout.flush()


def _no_type(ctx: Any) -> None:
    return None


def tidy_help(command: Any, parent: Any = None) -> Any:
    """Help text for people: ``--port PORT`` instead of typer's ``--port <int>``, and docstring
    markup (````code````) shown as plain backticks. Applied to every subcommand in place."""
    # typer (0.29) carries its own copy of click: its classes are used, duck-typed.
    ctx = command.context_class(command, parent=parent)
    for text_attr in ("help", "short_help"):
        text = getattr(command, text_attr, None)
        if isinstance(text, str):
            setattr(command, text_attr, text.replace("``", "`"))
    for param in command.params:
        if getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        if param.metavar is not None or param.name is None:
            continue
        display = getattr(param, "display_type", None)
        label = str(display(ctx)) if callable(display) else ""
        # typer's labels: `<str>`, `<int>`, `<path>`, ... and `<a|b|c>` for choices.
        inner = label.removeprefix("<").removesuffix(">")
        param.metavar = f"[{inner}]" if "|" in inner else param.name.upper()
        if param.param_type_name == "argument":
            # An argument's help row is its name and then the type label: the name says it.
            param.display_type_rich = _no_type
        help_text = getattr(param, "help", None)
        if isinstance(help_text, str):
            param.help = help_text.replace("``", "`")
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub, ctx)
    return command
