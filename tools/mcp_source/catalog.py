"""The catalog from MCP `tools/list`: resource and method from each tool's `_meta`, else from Truto's naming
convention; a discovery-only server is refused."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from mcp import types

from tools.catalog import ToolCatalog, ToolSpec
from tools.mcp_source.errors import McpRefusedError


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


_NAME_PATTERNS = (
    (re.compile(r"^list_all_(?P<rest>.+)$"), "list"),
    (re.compile(r"^get_single_(?P<rest>.+)_by_id$"), "get"),
    (re.compile(r"^create_an?_(?P<rest>.+)$"), "create"),
    (re.compile(r"^update_an?_(?P<rest>.+)_by_id$"), "update"),
    (re.compile(r"^delete_an?_(?P<rest>.+)_by_id$"), "delete"),
)


def _plural(word: str) -> str:
    if re.search(r"[^aeiou]y$", word):
        return word[:-1] + "ies"
    if re.search(r"(s|x|z|ch|sh)$", word):
        return word + "es"
    return word + "s"


def _truto_meta(tool: types.Tool) -> dict[str, Any]:
    """resource/method/tags from the tool's `_meta` (flat, `truto/…` keys or a `truto` object) or annotations."""
    found: dict[str, Any] = {}
    sources: list[Mapping[str, Any]] = []
    if isinstance(tool.meta, dict):
        if isinstance(tool.meta.get("truto"), dict):
            sources.append(tool.meta["truto"])
        sources.append({k.removeprefix("truto/").removeprefix("truto_"): v for k, v in tool.meta.items()})
    if tool.annotations is not None and tool.annotations.model_extra:
        sources.append(tool.annotations.model_extra)
    for source in sources:
        for key in ("resource", "method", "tags"):
            if key not in found and source.get(key):
                found[key] = source[key]
    return found


def _integration_prefix(rests: list[str], integration: str | None) -> str:
    if integration and rests and all(r.startswith(f"{integration}_") for r in rests):
        return f"{integration}_"
    if len(rests) < 2:
        return rests[0].split("_", 1)[0] + "_" if rests else ""
    first, last = min(rests), max(rests)
    common = first[: next((i for i, (a, b) in enumerate(zip(first, last, strict=False)) if a != b), len(first))]
    return common[: common.rfind("_") + 1] if "_" in common else ""


def infer_resource_and_method(names: Iterable[str], integration: str | None = "coviu") -> dict[str, tuple[str, str]]:
    """The fallback: resource + method for each tool name by Truto's naming convention (see module doc)."""
    matched: dict[str, tuple[str, str]] = {}
    for name in names:
        for pattern, method in _NAME_PATTERNS:
            m = pattern.match(name)
            if m:
                matched[name] = (method, m.group("rest"))
                break
    prefix = _integration_prefix([rest for _, rest in matched.values()], integration)
    listed = {rest.removeprefix(prefix) for method, rest in matched.values() if method == "list"}
    out: dict[str, tuple[str, str]] = {}
    for name in names:
        if name not in matched:
            out[name] = (name, "custom")
            continue
        method, rest = matched[name]
        noun = rest.removeprefix(prefix)
        if method == "list":
            resource = noun
        else:
            resource = next((r for r in sorted(listed) if r == noun or _plural(noun) == r), _plural(noun))
        out[name] = (resource, method)
    return out


def catalog_from_mcp(tools: Iterable[types.Tool], *, integration: str | None = "coviu") -> ToolCatalog:
    """ToolSpecs from MCP `tools/list`: the input schema as one (query) schema, so `args_schema` validates the same."""
    tools = list(tools)
    inferred = infer_resource_and_method([t.name for t in tools], integration)
    specs: list[ToolSpec] = []
    for tool in tools:
        meta = _truto_meta(tool)
        guess_resource, guess_method = inferred[tool.name]
        schema = _dict(tool.inputSchema)
        properties = _dict(schema.get("properties"))
        required = _list(schema.get("required"))
        tags = meta.get("tags")
        specs.append(
            ToolSpec(
                name=tool.name,
                description=tool.description or "",
                resource=str(meta.get("resource") or guess_resource),
                method=str(meta.get("method") or guess_method),
                query_schema={"type": "object", "properties": dict(properties)},
                body_schema={},
                required=tuple(str(r) for r in required),
                tags=tuple(str(t) for t in tags) if isinstance(tags, list | tuple) else (),
            )
        )
    return ToolCatalog(specs, source="mcp")


DISCOVERY_TOOLS = frozenset({"search_tools", "get_tool_schema", "call_tool"})


def check_exposure(catalog: ToolCatalog) -> None:
    """Refuse a server made with `tool_exposure: "discovery"`: its meta-tools hide the schemas the graphs need."""
    if set(catalog.names) and set(catalog.names) <= DISCOVERY_TOOLS:
        raise McpRefusedError(
            "the MCP server in TRUTO_MCP_URL exposes only discovery meta-tools (tool_exposure 'discovery'); "
            "create one with tool_exposure 'all' (`coviu-agent mcp create` does)"
        )
