"""`coviu-agent tools`: the tools Truto serves for this account."""

from __future__ import annotations

import typer

from agent.cli.common import emit_json, load_settings, open_services, out, run_async


def tools(
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
) -> None:
    """List the tools Truto serves for this account: name, resource, method, required args."""
    settings = load_settings(verbose, as_json)

    async def body() -> None:
        services = await open_services(settings)
        try:
            catalog = services.toolbox.catalog
            rows = [
                {
                    "name": s.name,
                    "resource": s.resource,
                    "method": s.method,
                    "required": list(s.args_schema["required"]),
                }
                for s in sorted(catalog, key=lambda s: s.name)
            ]
            if as_json:
                emit_json({"source": catalog.source, "count": len(rows), "tools": rows})
                return
            from rich.table import Table

            table = Table(title=f"{len(rows)} tools (source: {catalog.source})")
            for col in ("name", "resource", "method", "required"):
                table.add_column(col)
            for r in rows:
                table.add_row(r["name"], r["resource"], r["method"], ", ".join(r["required"]))
            out.print(table)
        finally:
            await services.toolbox.aclose()

    run_async(body, as_json=as_json)
