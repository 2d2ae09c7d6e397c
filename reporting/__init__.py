"""The audit's files: the report rendered as Markdown, JSON and HTML (with its chart) and written atomically.

Imported by the audit graph (`graphs/audit.py`) and the CLI's summary line; it knows nothing of graphs or the CLI.
"""
