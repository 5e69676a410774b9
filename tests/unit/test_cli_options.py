"""The commands' options, read from the command line itself: every option
says what it does, the leak-finding commands share --fail-on-leak, and a
command that only samples the running kernel takes no -c."""

from __future__ import annotations

from click.testing import CliRunner

from vmcore_tools.cli.main import main


def options(command: str) -> dict[str, object]:
    return {o: p for p in main.commands[command].params if p.param_type_name == "option" for o in p.opts}


def test_every_option_of_every_command_has_help():
    missing = [(name, p.opts) for name, cmd in main.commands.items() for p in cmd.params
               if p.param_type_name == "option" and not p.help]
    assert not missing


def test_every_leak_command_takes_fail_on_leak():
    for command in ("report", "orphans", "unreachable"):
        assert "--fail-on-leak" in options(command), command


def test_watch_takes_no_core():
    assert "-c" not in options("watch") and "-s" in options("watch")
    run = CliRunner().invoke(main, ["watch", "-c", "vmcore"])
    assert run.exit_code == 2 and "No such option" in run.output


def test_every_command_has_help_text():
    for name in main.commands:
        run = CliRunner().invoke(main, [name, "--help"])
        assert run.exit_code == 0 and run.output.startswith("Usage:"), name
