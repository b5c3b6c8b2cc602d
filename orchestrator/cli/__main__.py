"""`python -m orchestrator.cli`: the same as the `e2e` command."""

from orchestrator.cli.entry import main

main()
