"""`python -m agent` runs the coviu-agent CLI (the same entry point as the `coviu-agent` script).

Importing `agent.cli` by name (not running it as `__main__`) keeps one module, so every command registers.
"""

from agent.cli import main

main()
