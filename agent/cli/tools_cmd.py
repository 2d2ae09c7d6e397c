"""`coviu-agent tools`: the tools Truto serves for this account."""

from __future__ import annotations

from typing import Any

import typer

from agent.cli.common import QUIET, VERBOSE, emit_json, load_settings, out, run_async
from agent.runs import run_tools


def tools(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """List the tools Truto serves for this account: name, resource, method, required args."""
    settings = load_settings(-1 if quiet else verbose, as_json)
    listing = run_async(lambda: run_tools(settings), as_json=as_json)
    if as_json:
        emit_json(listing.as_dict())
    else:
        print_tools(listing.tools, listing.source)


def print_tools(rows: list[dict[str, Any]], source: str) -> None:
    """Tool names are never cut: at a terminal a table whose other columns wrap; in a pipe, one tab-separated line
    per tool (name, resource, method, required), after a header line."""
    if not out.is_terminal:
        import sys

        from tools.textsafety import clean_text, redact

        lines = [f"# {len(rows)} tools (source: {source})", "name\tresource\tmethod\trequired"]
        for r in rows:
            fields = [r["name"], str(r["resource"]), str(r["method"]), ",".join(r["required"])]
            lines.append("\t".join(redact(clean_text(f)) for f in fields))
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.table import Table

    table = Table(title=f"{len(rows)} tools (source: {source})")
    longest = max((len(r["name"]) for r in rows), default=4)
    table.add_column("name", no_wrap=True, min_width=longest)
    for col in ("resource", "method", "required"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["name"], r["resource"], r["method"], ", ".join(r["required"]))
    out.print(table)
