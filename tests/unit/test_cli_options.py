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
    for command in ("report", "orphans", "unreachable", "diff"):
        assert "--fail-on-leak" in options(command), command


def test_every_listing_command_takes_the_same_top():
    """--top N: rows of the text tables, 20 by default, 0 for all."""
    for command in ("slab", "stacks", "orphans", "report"):
        top = options(command)["--top"]
        assert top.default == 20 and top.show_default and "(0: all)" in top.help, command


def test_quiet_means_no_progress_but_on_diff():
    """--quiet is "no progress on stderr" on every analysing command; diff
    has no progress and keeps git's meaning (print nothing, exit status)."""
    for name in main.commands:
        quiet = options(name).get("--quiet")
        if name == "diff":
            assert "print nothing" in quiet.help
        elif quiet is not None:
            assert "progress" in quiet.help, (name, quiet.help)


def test_watch_takes_no_core():
    assert "-c" not in options("watch") and "-s" in options("watch")
    run = CliRunner().invoke(main, ["watch", "-c", "vmcore"])
    assert run.exit_code == 2 and "No such option" in run.output


def test_every_command_has_help_text():
    for name in main.commands:
        run = CliRunner().invoke(main, [name, "--help"])
        assert run.exit_code == 0 and run.output.startswith("Usage:"), name


def test_every_command_ends_its_help_with_examples():
    for name in main.commands:
        run = CliRunner().invoke(main, [name, "--help"])
        examples = run.output[run.output.index("Examples:"):]
        assert f"vmcore-tools {name}" in examples, (name, run.output)


def test_shell_completion_names_the_commands():
    """click's own completion: eval "$(_VMCORE_TOOLS_COMPLETE=bash_source vmcore-tools)"."""
    run = CliRunner().invoke(main, [], prog_name="vmcore-tools", env={
        "_VMCORE_TOOLS_COMPLETE": "bash_complete", "COMP_WORDS": "vmcore-tools or", "COMP_CWORD": "1"})
    assert run.output.split() == ["plain,orphans"], run.output


def test_every_command_answers_bad_input_with_one_line_and_exit_2():
    """The shared exit code of bad input, on every command: one line on stderr, exit 2, no traceback."""
    missing = "/nonexistent"
    special = {"diff": [f"{missing}/a.json", f"{missing}/b.json"], "compare": [f"{missing}/fleet"],
               "page": ["1", "-c", f"{missing}/vmcore", "-s", f"{missing}/vmlinux"],
               "watch": ["-s", f"{missing}/vmlinux", "--count", "1"]}
    for name in main.commands:
        args = special.get(name, ["-c", f"{missing}/vmcore", "-s", f"{missing}/vmlinux"])
        run = CliRunner().invoke(main, [name, *args])
        lines = run.output.strip().splitlines()
        assert run.exit_code == 2 and len(lines) == 1 and lines[0].startswith("vmcore-tools: error: "), \
            (name, run.output)
