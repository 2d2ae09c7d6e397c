"""`python -m agent` runs the coviu-agent CLI (the same entry point as the `coviu-agent` script)."""

from agent.cli import main

main()
