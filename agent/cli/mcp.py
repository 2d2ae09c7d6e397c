"""`coviu-agent mcp create|list|delete`: the account's Truto MCP servers (`/integrated-account/{id}/mcp`).

agent/mcp_servers.py does the I/O. An MCP server's URL carries its token, so it is a secret: `mcp create` prints
it once (Truto shows it only at creation) and nothing logs it; `mcp list` never shows it. Set it as TRUTO_MCP_URL
to run every command through MCP. Exit codes: 0 done; 2 bad input (nothing sent, or Truto refused it); 3 Truto
unreachable or failing.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from typing import TYPE_CHECKING, Any

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, err, fail, load_settings, out, run_async
from agent.errors import EXIT_BAD_INPUT, BadInput

if TYPE_CHECKING:
    pass

mcp_app = typer.Typer(no_args_is_help=True, help="The account's Truto MCP servers (the MCP tool source).")

_METHOD = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def split_list(option: str, value: str | None, pattern: re.Pattern[str]) -> list[str]:
    """A comma-separated option (`read,write`), each item checked."""
    if value is None:
        return []
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise BadInput(f"{option}: expected a comma-separated list, got {value!r}")
    for item in items:
        if not pattern.match(item):
            raise BadInput(f"{option}: {item!r} is not a valid entry")
    return items


def check_expires_at(value: str | None) -> str | None:
    """ISO-8601 with a zone, or None (never expires)."""
    if value is None:
        return None
    from tools.timeparse import parse_iso

    moment = parse_iso(value)
    if moment is None:
        raise BadInput(f"--expires-at: expected an ISO-8601 time such as 2026-12-31T00:00:00Z, got {value!r}")
    if moment.tzinfo is None:
        raise BadInput(f"--expires-at: {value!r} has no time zone (add Z or an offset such as +10:00)")
    return moment.isoformat()


def _say(message: str) -> None:
    err.print(message, highlight=False)


@mcp_app.command("create")
def mcp_create(
    name: str = typer.Option("coviu-agent", "--name", help="A name to recognise the server by."),
    methods: str | None = typer.Option(
        None, "--methods", help="Comma-separated: read, write, list, get, create, update, delete, custom."
    ),
    tags: str | None = typer.Option(None, "--tags", help="Comma-separated tool tags (AND with --methods)."),
    expires_at: str | None = typer.Option(None, "--expires-at", help="ISO-8601 expiry (default: never)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"id", "name", "url"}.'),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Create an MCP server for this account and print its URL once (a secret: store it as TRUTO_MCP_URL)."""
    try:
        if not name.strip() or len(name) > 200:
            raise BadInput("--name: expected a non-empty name of at most 200 characters")
        config: dict[str, Any] = {}
        if methods is not None:
            config["methods"] = split_list("--methods", methods, _METHOD)
        if tags is not None:
            config["tags"] = split_list("--tags", tags, _TAG)
        expiry = check_expires_at(expires_at)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(-1 if quiet else verbose, as_json)

    from agent.mcp_servers import run_mcp_create

    made = run_async(
        lambda: run_mcp_create(settings, name=name.strip(), config=config, expires_at=expiry, on_event=_say),
        as_json=as_json,
    )
    result = {"id": made.id, "name": made.name, "url": made.url}
    from tools.textsafety import REDACTOR

    with REDACTOR.revealing(result["url"]):  # printed on purpose, once; every other output redacts MCP tokens
        if as_json:
            emit_json(result)
            return
        err.print(
            f"created MCP server {result['id']} ({result['name']}). Its URL is a secret and is shown only now: "
            "store it as TRUTO_MCP_URL.",
            highlight=False,
        )
        sys.stdout.write(result["url"] + "\n")
        sys.stdout.flush()


@mcp_app.command("list")
def mcp_list(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """List the account's MCP servers (never their URLs)."""
    settings = load_settings(-1 if quiet else verbose, as_json)

    from agent.mcp_servers import run_mcp_list

    listed = run_async(lambda: run_mcp_list(settings, on_event=_say), as_json=as_json)
    servers = [dataclasses.asdict(s) for s in listed]
    if as_json:
        emit_json({"count": len(servers), "servers": servers})
        return
    print_servers(servers, at_terminal=sys.stdout.isatty())


def print_servers(servers: list[dict[str, Any]], *, at_terminal: bool) -> None:
    """A table at a terminal; piped, one tab-separated line per server (id, name, methods, tags, expiry) for
    `cut`/`awk`, with no title. "never" for no expiry, "all" for every method."""

    def row(s: dict[str, Any]) -> list[str]:
        return [
            str(s["id"]),
            str(s["name"] or ""),
            ",".join(s["methods"]) or "all",
            ",".join(s["tags"]),
            str(s["expires_at"]) if s["expires_at"] else "never",
        ]

    if not at_terminal:
        from tools.textsafety import clean_line

        for s in servers:  # each cell redacted and escaped to one line; tabs only between cells
            sys.stdout.write("\t".join(clean_line(cell).replace("\t", " ") for cell in row(s)) + "\n")
        sys.stdout.flush()
        return
    from rich.table import Table

    table = Table(title=f"{len(servers)} MCP server{'' if len(servers) == 1 else 's'}")
    for col in ("id", "name", "methods", "tags", "expires"):
        table.add_column(col)
    for s in servers:
        table.add_row(*row(s))
    out.print(table)


@mcp_app.command("delete")
def mcp_delete(
    mcp_id: str = typer.Argument(..., metavar="ID", help="The MCP server's id (from `mcp list`)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Delete an MCP server: its URL stops working at once."""
    try:
        check_id("ID", mcp_id)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(-1 if quiet else verbose, as_json)

    from agent.mcp_servers import run_mcp_delete

    run_async(lambda: run_mcp_delete(settings, mcp_id, on_event=_say), as_json=as_json)
    if as_json:
        emit_json({"deleted": mcp_id})
    else:
        out.print(f"deleted MCP server {mcp_id}", highlight=False)
