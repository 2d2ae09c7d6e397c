"""Which tools a model is given for a request, and how they are written: tokens are a cost.

- **Selection.** `select_tools` picks the catalog tools a request needs by a deterministic look-up of the request's
  words: resources by their names and the clinic's words for them (a "link" is a participant, "billable minutes" a
  session summary), writes only when the request asks for that change ("cancel" → delete), the session reads with
  any change (each is checked against its session first). What selection misses is never out of reach: the model is
  also given `more_tools` (every catalog name as an enum) and a call to it binds those tools for its next step; a
  catalog tool the model calls without having been given it is run as usual and stays bound. Approvals are by the
  tool's method, never by what was bound.
- **Compact schemas.** `compact_tool` keeps a description's first sentence (the rules live in the system prompt and
  are enforced by the guards) and every keyword a schema states (type, required, enum, bounds, format, items,
  and any other), and drops its annotations (`ANNOTATIONS`: titles, defaults, examples, ...) and the descriptions
  of the arguments the system prompt explains (the clinic's ids, filled in by the graph; paging).
- **A stable prefix.** Tools are bound in one order (`more_tools`, the session reads, then by name), and the system
  prompt's first message holds nothing that changes between requests, so a provider's prompt cache serves it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from tools.catalog import READ_METHODS, ToolSpec

MORE_TOOLS = "more_tools"
ALWAYS = ("list_all_coviu_sessions", "get_single_coviu_session_by_id")
WRITE_METHODS = ("create", "update", "delete")
SESSION_BOUND = frozenset({"sessions", "session_summaries", "participants"})  # what a session's reads go with

# The clinic's words for each resource (a request word matches a word here exactly, or by its start when the word
# here has 4 letters or more: "cancelled" matches "cancel"). A resource not listed is matched by its own name's words.
RESOURCE_WORDS: Mapping[str, tuple[str, ...]] = {
    "sessions": ("session", "appointment", "consult", "booking", "book", "meeting"),
    "session_summaries": (
        "billable", "summary", "summaries", "ended", "finish", "happen", "attend", "actual", "overran", "overrun",
        "no-show", "noshow", "late", "bill", "join", "left", "leave", "early", "long", "duration",
    ),
    "participants": (
        "participant", "link", "guest", "host", "invite", "join", "entry", "attendee", "people", "doctor", "dr",
        "clinician",
    ),
    "waiting_queue_calls": ("waiting", "queue", "wait"),
    "waiting_calls": ("waiting", "queue", "wait"),
    "collections": ("collection", "intake", "form", "consent", "recording"),
    "submissions": (
        "submission", "submit", "intake", "form", "consent", "locked", "recording", "file", "questionnaire",
        "paperwork", "fill",
    ),
    "submission_files": ("file", "recording", "video", "download", "attachment"),
    "audio_recordings": ("audio", "recording", "download"),
}  # fmt: skip
VERB_WORDS: Mapping[str, tuple[str, ...]] = {
    "create": ("book", "create", "add", "generate", "make", "new", "schedule", "invite", "set", "arrange"),
    "update": (
        "change", "move", "reschedule", "rename", "update", "edit", "shift", "postpone", "bring", "extend", "push",
        "swap", "longer", "shorter",
    ),
    "delete": ("cancel", "delete", "remove", "revoke", "kick", "uninvite", "scrap"),
}  # fmt: skip
# A removal from (off, out of) a session, or an addition to one, may be of one of its people ("Remove Ava from the
# 3pm", "Add Ava to session S"): unless the request names another resource, the participant's writes come too.
PEOPLE_WORDS: Mapping[str, frozenset[str]] = {
    "delete": frozenset({"from", "off", "out"}),
    "create": frozenset({"to", "into"}),
}

_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")
_QUOTED = re.compile(r"\"[^\"]*\"|(?<!\w)'[^']*'(?!\w)|“[^”]*”|‘[^’]*’")
_NO_SHOW = re.compile(r"\bno[\s_]+shows?\b")


def request_words(text: str) -> set[str]:
    """The request's words, lower case, without what it quotes (a session named 'Intake - Jenkins' is no form)."""
    text = _NO_SHOW.sub("no-show", _QUOTED.sub(" ", text).lower())
    return {w.strip("'-") for w in _WORD.findall(text)}


def _matches(words: set[str], keys: Iterable[str]) -> bool:
    return any(key in words or (len(key) >= 4 and any(w.startswith(key) for w in words)) for key in keys)


def _resource_keys(resource: str) -> tuple[str, ...]:
    return RESOURCE_WORDS.get(resource) or tuple(w.removesuffix("s") for w in resource.split("_") if len(w) > 2)


def bind_order(names: Iterable[str]) -> list[str]:
    """One order for every request: the session reads first (always bound), then by name."""
    unique = set(names)
    return [n for n in ALWAYS if n in unique] + sorted(unique - set(ALWAYS))


def select_tools(catalog: Iterable[ToolSpec], text: str, *, also: Iterable[str] = ()) -> list[str]:
    """The catalog tools `text` needs, in `bind_order`; `also` (tools already used in the conversation) are kept.

    Reads (and custom methods) of every resource the request names; a write only of a named resource and only when
    the request asks for that change (a change of no named resource is a session's, and a removal from or an
    addition to a session may be one of its people's: `PEOPLE_WORDS`). The session reads come with
    any change (each is checked against its session first), with a session's people or summary, and when nothing
    else is named."""
    catalog = list(catalog)
    words = request_words(text)
    resources = {spec.resource for spec in catalog if _matches(words, _resource_keys(spec.resource))}
    verbs = {method for method, keys in VERB_WORDS.items() if _matches(words, keys)}
    # (a custom method, e.g. the session summary served as `summary`, is no write a verb asks for)
    writable = {s.resource for s in catalog if s.method in WRITE_METHODS and s.resource in resources}
    if verbs and not writable:
        resources.add("sessions")
    if writable <= {"sessions"} and any(words & PEOPLE_WORDS.get(verb, frozenset()) for verb in verbs):
        resources.add("participants")
    known = {spec.name for spec in catalog}
    chosen = {n for n in also if n in known}
    if verbs or not resources or resources & SESSION_BOUND:
        chosen.update(n for n in ALWAYS if n in known)
    for spec in catalog:
        if spec.resource not in resources:
            continue
        # a custom method (e.g. `summary`) says nothing a verb could match: it comes with its resource
        if spec.method in READ_METHODS or spec.method in verbs or spec.method not in WRITE_METHODS:
            chosen.add(spec.name)
    return bind_order(chosen)


# --- compact schemas ------------------------------------------------------------------------------------------

# What a JSON schema says that the model need not see: annotations, which constrain nothing (and vendor `x-` keys).
# Every other keyword is kept, whatever the upstream writes (a validation keyword dropped here would still be
# enforced by the validator: the model could not know its call was wrong); descriptions are cut to their first
# sentence.
ANNOTATIONS = frozenset(
    {"title", "default", "examples", "example", "$comment", "deprecated", "readOnly", "writeOnly", "$schema"}
)
# Keywords whose value maps names (of properties, patterns, definitions) to schemas: the names are not keywords.
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"})
# Keywords whose value is data (values, names), never a schema: kept as written.
DATA_KEYWORDS = frozenset({"enum", "const", "required", "dependentRequired", "type", "pattern", "format"})
# Arguments the assistant's system prompt explains once (the ids the graph fills in, paging): no description each.
EXPLAINED_IN_PROMPT = frozenset({"team_id", "waiting_queue_id", "collection_id", "limit", "next_cursor"})
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\bDr)[.!?](?=\s+[A-Z`(])")
_DEFAULT_NOTE = re.compile(r"\s*\((?:default|defaults to)\b[^()]*\)", re.IGNORECASE)


def first_sentence(text: str) -> str:
    text = _DEFAULT_NOTE.sub("", " ".join(text.split()))
    match = _SENTENCE_END.search(text)
    return text[: match.start() + 1] if match else text


def compact_schema(schema: Any) -> Any:
    """The schema with every constraint kept and only the first sentence of each description."""
    if isinstance(schema, list):
        return [compact_schema(item) for item in schema]
    if not isinstance(schema, Mapping):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ANNOTATIONS or key.startswith("x-"):
            continue
        if key == "description":
            if isinstance(value, str) and value.strip():
                out[key] = first_sentence(value)
        elif key == "required" and not value:
            continue  # an empty list says nothing
        elif key in DATA_KEYWORDS:
            out[key] = value
        elif key == "properties" and isinstance(value, Mapping):
            out[key] = {name: _compact_property(name, sub) for name, sub in value.items()}
        elif key in NAMED_SCHEMAS and isinstance(value, Mapping):
            out[key] = {name: compact_schema(sub) for name, sub in value.items()}
        else:
            out[key] = compact_schema(value)
    return out


def _compact_property(name: str, schema: Any) -> Any:
    compact = compact_schema(schema)
    if name in EXPLAINED_IN_PROMPT and isinstance(compact, dict):
        compact.pop("description", None)
    return compact


def compact_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """An OpenAI function tool (`convert_to_openai_tool`'s shape) with a compact description and schema."""
    function = dict(tool.get("function") or {})
    if isinstance(function.get("description"), str):
        function["description"] = first_sentence(function["description"])
    if isinstance(function.get("parameters"), Mapping):
        function["parameters"] = compact_schema(function["parameters"])
    return {**tool, "function": function}


def more_tools_schema(catalog: Iterable[ToolSpec]) -> dict[str, Any]:
    """The fallback tool's OpenAI definition: the same for every request of an account (part of the stable prefix)."""
    return {
        "type": "function",
        "function": {
            "name": MORE_TOOLS,
            "description": "Get more of the clinic's tools for your next step when those you have do not fit.",
            "parameters": {
                "type": "object",
                "properties": {
                    "names": {
                        "type": "array",
                        "items": {"type": "string", "enum": sorted(spec.name for spec in catalog)},
                        "minItems": 1,
                    }
                },
                "required": ["names"],
            },
        },
    }


def requested_tools(args: Mapping[str, Any], catalog: Iterable[ToolSpec]) -> tuple[list[str], list[str]]:
    """A `more_tools` call's names: (catalog tools, names that are not tools)."""
    raw = args.get("names")
    names = [str(n) for n in raw] if isinstance(raw, list) else ([str(raw)] if raw else [])
    known = {spec.name for spec in catalog}
    return [n for n in names if n in known], [n for n in names if n not in known]
