"""The `stellar` command line (click): help for every option with its default, the version, the
serving commands handed to the server's own parser, and bad flags named."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from stellar_app.cli import main, stellar

BIN = Path(sys.executable).parent
SERVING = ("serve", "classify", "model-info", "reload")


def own_commands() -> list[click.Command]:
    """The commands with options of their own (the serving ones hand theirs to the server's parser)."""
    return [command for name, command in stellar.commands.items()
            if name not in SERVING and any(isinstance(p, click.Option) for p in command.params)]


@pytest.mark.parametrize("command", own_commands(), ids=lambda c: c.name)
def test_every_option_has_help_text_and_a_default_shown_when_it_has_one(command):
    shown = CliRunner().invoke(stellar, [command.name, "--help"], prog_name="stellar")
    assert shown.exit_code == 0, shown.output
    page = " ".join(shown.output.split())  # help text is wrapped
    options = [p for p in command.params if isinstance(p, click.Option)]
    for option in options:
        assert option.help, f"stellar {command.name} {option.opts[0]} has no help text"
        assert option.opts[0] in page
        if option.default not in (None, False):
            assert f"[default: {option.default}]" in page, f"{option.opts[0]}'s default is not shown"


def test_the_installed_entry_point_is_this_cli_and_prints_the_version():
    done = subprocess.run([str(BIN / "stellar"), "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"stellar {metadata.version('stellar')} (API stellar.v1)"


def test_the_readme_commands_are_all_there():
    assert set(stellar.commands) == {"demo", "ingest", "ui", "settings", *SERVING}
    demo = {o.opts[0] for o in stellar.commands["demo"].params}
    ingest = {o.opts[0] for o in stellar.commands["ingest"].params}
    assert demo == {"--first-week", "--last-week", "--whole-survey"}
    assert ingest == {"--first-week", "--last-week", "--allow-shrink"}


def test_whole_survey_with_a_range_is_refused_before_anything_runs(capsys):
    assert main(["demo", "--whole-survey", "--first-week", "2008-03-02"]) == 2
    assert "--whole-survey replays every week" in capsys.readouterr().err


def test_an_unknown_command_is_named(capsys):
    assert main(["replay-all"]) == 2
    assert "No such command 'replay-all'" in capsys.readouterr().err


@pytest.mark.parametrize("name", SERVING)
def test_serving_commands_reach_the_servers_own_parser(name, capsys):
    assert main([name, "--help"]) == 0
    assert f"usage: stellar {name}" in capsys.readouterr().out


def test_a_serving_command_names_a_bad_flag(capsys):
    assert main(["classify", "--no-such-flag"]) == 2
    assert "--no-such-flag" in capsys.readouterr().err


def test_settings_lists_the_apps_and_the_code_locations_variables_without_secret_values(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:pw-123@mlflow:5000")
    monkeypatch.setenv("STELLAR_REPLAY_FIRST_WEEK", "2010-01-03")
    shown = CliRunner().invoke(stellar, ["settings"], prog_name="stellar")
    assert shown.exit_code == 0, shown.output
    assert "STELLAR_REPLAY_FIRST_WEEK=2010-01-03" in shown.output
    assert "MLFLOW_TRACKING_URI=(set)" in shown.output and "pw-123" not in shown.output
    assert "STELLAR_TRAINING_WINDOW_WEEKS=" in shown.output  # a code location setting
