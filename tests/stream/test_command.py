"""``idgraph consume --help``: found through the entry point, every option documented."""

from __future__ import annotations

import inspect

import typer
from typer.testing import CliRunner

from cli.main import app, register_plugin_commands
from stream.command import consume


def test_idgraph_consume_is_registered_and_its_help_documents_every_option() -> None:
    target = typer.Typer()
    target.command("noop")(lambda: None)
    register_plugin_commands(target)
    result = CliRunner().invoke(target, ["consume", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    group = typer.main.get_command(target)
    command = group.commands["consume"]  # type: ignore[attr-defined]
    options = [param for param in command.params if param.param_type_name == "option"]
    for option in options:
        assert option.help, f"{option.opts} has no help text"
        assert option.opts[0] in result.output
    assert len(options) == len(inspect.signature(consume).parameters)


def test_the_console_script_registers_consume() -> None:
    register_plugin_commands(app)
    result = CliRunner().invoke(app, ["consume", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0
    assert "exactly once" in result.output


def test_a_malformed_kafka_config_is_refused_before_anything_connects() -> None:
    target = typer.Typer()
    target.command("noop")(lambda: None)
    register_plugin_commands(target)
    result = CliRunner().invoke(target, ["consume", "--kafka-config", "no-equals-sign"])
    assert result.exit_code == 2
    assert "KEY=VALUE" in result.output
