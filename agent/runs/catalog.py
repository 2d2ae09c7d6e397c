"""The account's tool catalog (`coviu-agent tools`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.runs.base import _services

if TYPE_CHECKING:  # agent.settings (pydantic-settings) is not needed to list the commands: `--help` stays fast
    from agent.settings import Settings
    from graphs.context import Services


@dataclass(frozen=True)
class ToolListing:
    """The tools Truto serves for the account, sorted by name."""

    source: str
    tools: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """The result object of `tools --json` (`catalog`: "tools" or "mcp"; the CLI adds the data's `source`)."""
        return {"catalog": self.source, "count": len(self.tools), "tools": self.tools}


async def run_tools(settings: Settings, *, services: Services | None = None) -> ToolListing:
    """The account's tool catalog: name, resource, method and required arguments of each tool."""
    async with _services(settings, services) as svc:
        catalog = svc.toolbox.catalog
        rows = [
            {"name": s.name, "resource": s.resource, "method": s.method, "required": list(s.args_schema["required"])}
            for s in sorted(catalog, key=lambda s: s.name)
        ]
        return ToolListing(str(catalog.source), rows)
