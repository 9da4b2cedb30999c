from __future__ import annotations

import re

from egressmail import __version__
from tests.conftest import run_cli


def test_version_is_the_package_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"egressmail, version {__version__}"


def test_help_lists_every_part() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    for group in ("config", "env", "network", "gateway", "send", "outbox", "doctor", "demo"):
        assert re.search(rf"^\s+{group}\s", result.stdout, re.M), group


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("frobnicate")
    assert result.returncode == 2
    assert "No such command" in result.stderr


def test_help_names_the_cloudmanager_commands_and_each_resolves() -> None:
    listing = run_cli("--help").stdout
    for name in ("cloudmanager:set-environment-variables", "cloudmanager:environment:set-variables",
                 "cloudmanager:list-environment-variables", "cloudmanager:environment:list-variables"):
        assert name in listing
        result = run_cli(name, "--help")
        assert result.returncode == 0, name
        assert "Cloud Manager" in result.stdout


def _all_command_paths() -> list[list[str]]:
    import click

    from egressmail.cli.main import cli

    paths: list[list[str]] = []

    def walk(group: click.Group, prefix: list[str]) -> None:
        ctx = click.Context(group)
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            paths.append([*prefix, name])
            if isinstance(command, click.Group):
                walk(command, [*prefix, name])

    walk(cli, [])
    paths += [[name] for name in ("cloudmanager:set-environment-variables",
                                  "cloudmanager:list-environment-variables")]
    return paths


def test_every_help_renders_cleanly() -> None:
    """Click's paragraph marker must be the backspace character: a raw docstring's literal '\\b'
    would print, and its line continuations would fold examples into one line."""
    from click.testing import CliRunner

    from egressmail.cli.main import cli

    paths = _all_command_paths()
    assert len(paths) > 25
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(cli, [*path, "--help"], terminal_width=120)
        assert result.exit_code == 0, (path, result.output)
        assert "\\b" not in result.output, path
        assert "Usage: " in result.output, path
