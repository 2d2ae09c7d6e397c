"""LangSmith tracing, by LangChain's own variables, with patient data kept out of what it uploads.

`LANGSMITH_TRACING=true` (and `LANGSMITH_API_KEY`, optionally `LANGSMITH_ENDPOINT`, `LANGSMITH_PROJECT`; the older
`LANGCHAIN_*` names work too) turns LangChain's tracer on. Runs' inputs and outputs carry what the tools and the
model saw (patient names, intake answers), so the LangSmith client is given an anonymizer (`hide_personal`): the
structure, the ids, times, numbers and names of things are kept; every other string becomes `[hidden: N chars]`,
and an error keeps only its exception type. The anonymizer runs on the client, before anything leaves the process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from tools.textsafety import redact, register_secrets

TRACING_VARIABLES = ("LANGSMITH_TRACING", "LANGSMITH_TRACING_V2", "LANGCHAIN_TRACING_V2", "LANGCHAIN_TRACING")
# Fields that name or reach a person, whatever their value looks like.
PERSONAL_KEYS = frozenset(
    {
        "name",
        "display_name",
        "patient_name",
        "host_name",
        "session_name",
        "participant_name",
        "email",
        "phone",
        "mobile",
        "content",
        "text",
        "notes",
        "reply",
        "entry_url",
        "url",
        "answers",
        "transcript",
    }
)
_ID_LIKE = re.compile(r"[A-Za-z0-9._:/#+=-]{1,200}")
_EXCEPTION = re.compile(r"[A-Za-z_][\w.]*")


def _keeps(key: str, text: str) -> bool:
    """An id, a time, a number, or a lower-case name of a thing (a tool, a type, a status); never a person's."""
    if key.lower() in PERSONAL_KEYS or redact(text) != text or not _ID_LIKE.fullmatch(text):
        return False
    return any(c.isdigit() for c in text) or text == text.lower()


def hide_personal(value: Any, key: str = "") -> Any:
    """`value` (a run's inputs, outputs or error, as JSON) with every string that may be personal hidden."""
    if isinstance(value, Mapping):
        return {k: hide_personal(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [hide_personal(v, key) for v in value]
    if isinstance(value, str):
        if _keeps(key, value):
            return value
        if key == "error":
            kind = _EXCEPTION.match(value)
            return f"{kind.group(0) if kind else 'error'} [details hidden]"
        return f"[hidden: {len(value)} chars]"
    return value


def langsmith_requested(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip().lower() == "true" for name in TRACING_VARIABLES)


def configure_langsmith(environ: Mapping[str, str] | None = None) -> Any:
    """When LangChain's variables ask for LangSmith tracing: its client, with `hide_personal` as the anonymizer, made
    the one LangChain's tracer uses; else None (nothing imported)."""
    env = os.environ if environ is None else environ
    if not langsmith_requested(env):
        return None
    import langsmith

    api_key = env.get("LANGSMITH_API_KEY") or env.get("LANGCHAIN_API_KEY")
    register_secrets([api_key])
    client = langsmith.Client(
        api_url=env.get("LANGSMITH_ENDPOINT") or env.get("LANGCHAIN_ENDPOINT") or None,
        api_key=api_key,
        anonymizer=hide_personal,
    )
    langsmith.configure(client=client, enabled=True)
    return client
