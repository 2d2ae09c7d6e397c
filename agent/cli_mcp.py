"""CLI commands registered on `agent.cli.app` (this module is imported by agent/cli.py).

Placeholder until its issue lands.
"""
