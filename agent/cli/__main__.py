"""`python -m agent.cli`: the coviu-agent CLI."""

from agent.cli import main

main()
