"""``python -m vmcore_tools.cli``: the command line, as the ``vmcore-tools`` script runs it."""

from vmcore_tools.cli.main import main

main()
