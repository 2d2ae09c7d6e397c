"""The tool catalog: Truto's tool definitions turned into validated, dispatchable specs.

One `ToolSpec` per entry of `GET /integrated-account/{id}/tools` (or MCP `tools/list`); argument
schemas are merged, validated with jsonschema-rs before any request, and split into path/query/body.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from tools.errors import ToolArgumentError, UnknownToolError
from tools.timeparse import parse_time

READ_METHODS = frozenset({"list", "get"})
MAX_STRING_LENGTH = 4096


def _is_date_time(value: object) -> bool:
    """ISO-8601 (with an offset or Z) or RFC-1123, the two forms Coviu takes; never a bare epoch number."""
    if not isinstance(value, str):
        return True
    try:
        return not _EPOCH_TEXT.fullmatch(value.strip()) and parse_time(value, allow_naive=False) is not None
    except (ValueError, TypeError):
        return False


_EPOCH_TEXT = re.compile(r"^[+-]?\d+(\.\d+)?$")


@dataclass(frozen=True)
class ToolSpec:
    """One Truto tool: its name, what it runs (resource + method) and its argument schema."""

    name: str
    description: str
    resource: str
    method: str
    query_schema: Mapping[str, Any] = field(default_factory=dict)
    body_schema: Mapping[str, Any] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()

    @classmethod
    def from_truto(cls, entry: Mapping[str, Any]) -> ToolSpec:
        for key in ("name", "resource", "method"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ValueError(f"tool definition without a `{key}`: {str(entry)[:200]}")
        return cls(
            name=entry["name"],
            description=str(entry.get("description") or ""),
            resource=entry["resource"],
            method=entry["method"],
            query_schema=entry.get("query_schema") or {},
            body_schema=entry.get("body_schema") or {},
            required=tuple(entry.get("required") or ()),
            tags=tuple(entry.get("tags") or ()),
        )

    @property
    def query_properties(self) -> Mapping[str, Any]:
        return dict(self.query_schema.get("properties") or {})

    @property
    def body_properties(self) -> Mapping[str, Any]:
        return dict(self.body_schema.get("properties") or {})

    @cached_property
    def args_schema(self) -> dict[str, Any]:
        """The merged JSON schema the model sees: query ∪ body properties (body wins), Truto's `required`."""
        properties = {**self.query_properties, **self.body_properties}
        required = [r for r in self.required if r in properties or r == "id"]
        if "id" in required and "id" not in properties:
            properties["id"] = {"type": "string", "description": "The record's id."}
        return {"type": "object", "properties": properties, "required": required}

    @property
    def argument_names(self) -> frozenset[str]:
        return frozenset(self.args_schema["properties"])

    def wants(self, argument: str) -> bool:
        """Whether this tool's schema has an argument of this name."""
        return argument in self.argument_names

    @property
    def is_read_only(self) -> bool:
        return self.method in READ_METHODS

    @property
    def needs_approval(self) -> bool:
        """Anything but list/get may change the account (a custom method such as `cancel` too): a human approves
        it in the assistant. Graphs that write on their own (triage) allow their tools by name instead."""
        return not self.is_read_only

    @cached_property
    def _validator(self) -> Any:
        """The schema compiled once, on first use (jsonschema-rs: a few microseconds a call, ~12 ms to import, and
        only by a command that sends something; the pure-Python jsonschema took ~10-60 us a call and ~30 ms to
        import on triage's way to its links)."""
        import jsonschema_rs

        return jsonschema_rs.validator_for(
            self.args_schema, formats={"date-time": _is_date_time}, validate_formats=True
        )

    def validate(self, arguments: Mapping[str, Any]) -> None:
        """Raise `ToolArgumentError` naming the first bad field; nothing is sent before this passes."""
        if not isinstance(arguments, Mapping):
            raise ToolArgumentError(self.name, "", "an object of named arguments", arguments)
        known = self.argument_names
        for key, value in arguments.items():
            if key not in known:
                raise ToolArgumentError(
                    self.name, key, f"no such argument; known arguments: {', '.join(sorted(known)) or 'none'}"
                )
            _check_string_sizes(self.name, key, value)
        errors = sorted(
            self._validator.iter_errors(dict(arguments)),
            key=lambda e: (len(e.instance_path), [str(p) for p in e.instance_path]),
        )
        if errors:
            raise _argument_error(self.name, self.args_schema, errors[0])

    def split(self, arguments: Mapping[str, Any]) -> tuple[str | None, dict[str, Any], dict[str, Any]]:
        """(path id, query, body) by schema membership; `id` goes into the path for get/update/delete."""
        query_keys = set(self.query_properties)
        body_keys = set(self.body_properties)
        record_id: str | None = None
        query: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for key, value in arguments.items():
            if key == "id" and self.method in ("get", "update", "delete"):
                record_id = str(value)
            elif key in body_keys:
                body[key] = value
            elif key in query_keys:
                query[key] = value
        return record_id, query, body


def _check_string_sizes(tool: str, path: str, value: Any) -> None:
    if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
        raise ToolArgumentError(tool, path, f"a string of at most {MAX_STRING_LENGTH} characters, got {len(value)}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_string_sizes(tool, f"{path}.{k}", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_string_sizes(tool, f"{path}[{i}]", v)


def _subschema(schema: Mapping[str, Any], schema_path: Iterable[str | int]) -> Mapping[str, Any]:
    """The schema an error's keyword belongs to: its path without the keyword itself."""
    path = list(schema_path)[:-1]
    node: Any = schema
    for part in path:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return {}
    return node if isinstance(node, Mapping) else {}


def _argument_error(tool: str, schema: Mapping[str, Any], error: Any) -> ToolArgumentError:
    """`error`: a `jsonschema_rs.ValidationError` (its `kind` names the keyword and carries its value)."""
    path = ".".join(str(p) for p in error.instance_path)
    kind = error.kind
    validator = kind.name
    if validator == "required":
        missing = str(getattr(kind, "property", "?"))
        field_name = f"{path}.{missing}" if path else missing
        return ToolArgumentError(tool, field_name, "a value (it is required)")
    if validator == "type":
        types = list(getattr(kind, "types", []))
        expected = f"type {types[0] if len(types) == 1 else types}"
    elif validator == "enum":
        expected = "one of " + ", ".join(repr(v) for v in list(getattr(kind, "options", [])))
    elif validator == "format":
        expected_format = getattr(kind, "format", "")
        if expected_format == "date-time":
            expected = "an ISO-8601 date-time with a time zone (e.g. 2026-11-25T10:00:00Z) or an RFC-1123 date"
        else:
            expected = f"format {expected_format}"
    elif validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        expected = f"{validator} {getattr(kind, 'limit', '?')}"
    else:
        expected = str(error.message)
    description = _subschema(schema, error.schema_path).get("description")
    if description and validator != "required":
        expected = f"{expected} ({str(description)[:120]})"
    return ToolArgumentError(tool, path, f"{expected}; got {error.instance!r}"[:400], error.instance)


class ToolCatalog:
    """The account's tools, found by name, executed by resource + method."""

    def __init__(self, specs: Iterable[ToolSpec], *, source: str = "tools") -> None:
        self.source = source
        self._by_name: dict[str, ToolSpec] = {}
        for spec in specs:
            self._by_name[spec.name] = spec

    @classmethod
    def from_truto_response(cls, payload: Any, *, source: str = "tools") -> ToolCatalog:
        """Accept Truto's envelope with `result` or `results` (the docs and the SDK disagree)."""
        if isinstance(payload, Mapping):
            entries = payload.get("result")
            if entries is None:
                entries = payload.get("results")
        else:
            entries = payload
        if not isinstance(entries, list):
            raise ValueError("the /tools response has neither a `result` nor a `results` list")
        return cls((ToolSpec.from_truto(e) for e in entries), source=source)

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    @property
    def names(self) -> list[str]:
        return sorted(self._by_name)

    def get(self, name: str) -> ToolSpec:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownToolError(name, self.names) from None

    def find(self, resource: str, method: str) -> ToolSpec | None:
        for spec in self._by_name.values():
            if spec.resource == resource and spec.method == method:
                return spec
        return None

    def subset(self, predicate: Any) -> ToolCatalog:
        return ToolCatalog((s for s in self if predicate(s)), source=self.source)
