"""Tokens are a cost (issue 28): `ask` binds the tools its request needs, with compact schemas, after a prefix that
is the same for every request (tools/binding.py, graphs/assistant.py, graphs/planning.py)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.utils.function_calling import convert_to_openai_tool

from agent.settings import Settings
from evals.cases import CASES, call
from evals.fake_openai import scripted_model
from evals.runner import START, run_case
from graphs.context import Services
from prompts import load_prompt
from sandbox import Sandbox
from tests.test_assistant import Chat
from tools.binding import MORE_TOOLS, compact_tool, select_tools

CONSTRAINTS = ("type", "required", "enum", "format", "minimum", "maximum", "minLength", "minItems", "items")


def names(services: Services) -> set[str]:
    return {spec.name for spec in services.toolbox.catalog}


async def test_a_booking_binds_what_it_needs_and_no_more(services: Services) -> None:
    chosen = select_tools(services.toolbox.catalog, "Book 'Intake - Jenkins' tomorrow at 10:00 for 45 minutes")
    assert {"create_a_coviu_session", "get_single_coviu_session_by_id", "list_all_coviu_sessions"} <= set(chosen)
    assert set(chosen) < names(services)
    # nothing the request does not ask for: no cancel, no queue, no forms (the quoted name is not a form)
    assert not [n for n in chosen if n.startswith("delete") or "waiting" in n or "submission" in n]


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.graph == "ask" and c.kind in ("hero", "scenario")], ids=lambda c: c.id
)
async def test_each_hero_request_gets_the_tools_its_eval_expects(
    case: Any, services: Services, sandbox: Sandbox
) -> None:
    assert sandbox.store.demo is not None
    chosen = select_tools(services.toolbox.catalog, case.request(sandbox.store.demo))
    assert set(case.expect.calls) <= set(chosen), chosen
    assert len(chosen) <= len(names(services)) // 2


@pytest.mark.parametrize(
    ("request_text", "needed"),
    [
        ("Move session S to 4pm", {"update_a_coviu_session_by_id", "get_single_coviu_session_by_id"}),
        (
            "Where is the recording of session S?",
            {"list_all_coviu_submissions", "get_single_coviu_audio_recording_by_id"},
        ),
        ("Remove Dr Lee from session S", {"delete_a_coviu_participant_by_id", "list_all_coviu_participants"}),
        ("Did anyone attend session S?", {"get_single_coviu_session_summary_by_id"}),
    ],
)
async def test_other_wordings_get_what_they_need(request_text: str, needed: set[str], services: Services) -> None:
    chosen = select_tools(services.toolbox.catalog, request_text)
    assert needed <= set(chosen), chosen
    assert len(chosen) < len(names(services))


async def test_a_tool_selection_missed_is_bound_on_request_and_a_cancel_still_waits_for_a_person(
    services: Services, sandbox: Sandbox
) -> None:
    """ "Check the waiting queue" binds no session tools; the model asks for the cancel with `more_tools`, gets it on
    its next step, and the cancel still waits for approval (approvals are by the tool, never by what was bound)."""
    assert sandbox.store.demo is not None
    future = sandbox.store.demo.sessions["future"]
    bound: list[list[str]] = []

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        bound.append(list(tools))
        answered = [m for m in messages if isinstance(m, ToolMessage)]
        if not answered:
            return AIMessage("", tool_calls=[call(MORE_TOOLS, {"names": ["delete_a_coviu_session_by_id"]}, "m1")])
        if len(answered) == 1:
            return AIMessage("", tool_calls=[call("delete_a_coviu_session_by_id", {"id": future}, "d1")])
        return AIMessage("Cancelled.")

    chat = Chat(services, script)
    await chat.say("Check the waiting queue")
    assert "delete_a_coviu_session_by_id" not in bound[0] and MORE_TOOLS in bound[0]
    assert "delete_a_coviu_session_by_id" in bound[1]  # the fallback: bound from the next step on
    assert [p["name"] for p in await chat.pending()] == ["delete_a_coviu_session_by_id"]  # shown for approval
    assert sandbox.store.sessions[future].canceled_time is None  # nothing sent before a person says yes
    state = await chat.answer_all(approved=True)
    assert sandbox.store.sessions[future].canceled_time is not None
    # `more_tools` is answered by the graph: never an outcome, never sent
    assert [(o["tool"], o["status"]) for o in state["outcomes"]] == [("delete_a_coviu_session_by_id", "done")]


async def test_a_catalog_tool_called_without_being_bound_runs_and_stays_bound(
    services: Services, sandbox: Sandbox
) -> None:
    assert sandbox.store.demo is not None
    session = sandbox.store.demo.sessions["future"]
    bound: list[list[str]] = []

    def script(messages: list[BaseMessage], tools: list[str]) -> AIMessage:
        bound.append(list(tools))
        if not [m for m in messages if isinstance(m, ToolMessage)]:
            return AIMessage("", tool_calls=[call("list_all_coviu_participants", {"session_id": session}, "p1")])
        return AIMessage("Two people.")

    chat = Chat(services, script)
    state = await chat.say("Who is in the waiting queue?")
    assert "list_all_coviu_participants" not in bound[0]
    assert "list_all_coviu_participants" in bound[1]
    assert [(o["tool"], o["status"]) for o in state["outcomes"]] == [("list_all_coviu_participants", "done")]


def _constraints(schema: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "required" and not value:
                continue  # an empty list says nothing (compaction drops it)
            if key in CONSTRAINTS:
                yield f"{path}/{key}", json.dumps(value, sort_keys=True) if key != "items" else "items"
            if key == "properties":
                yield f"{path}/properties", json.dumps(sorted(value))
                for name, sub in value.items():
                    yield from _constraints(sub, f"{path}/{name}")
            elif key == "items":
                yield from _constraints(value, f"{path}[]")


async def test_compact_schemas_keep_every_argument_required_field_and_enum(services: Services) -> None:
    full_size = compact_size = 0
    for tool in services.toolbox.executor.langchain_tools():
        full = convert_to_openai_tool(tool)
        compact = compact_tool(full)
        assert compact["function"]["name"] == full["function"]["name"]
        kept = set(_constraints(compact["function"]["parameters"]))
        assert kept == set(_constraints(full["function"]["parameters"])), tool.name
        assert compact["function"]["description"]
        full_size, compact_size = full_size + len(json.dumps(full)), compact_size + len(json.dumps(compact))
    assert any(path.endswith("/enum") for t in services.toolbox.executor.langchain_tools() for path, _ in
               _constraints(compact_tool(convert_to_openai_tool(t))["function"]["parameters"]))  # fmt: skip
    assert compact_size < 0.9 * full_size


async def _first_prompt(case_id: str, start_offset: timedelta, tmp_path: Path) -> str:
    case = next(c for c in CASES if c.id == case_id)
    model, server = scripted_model(case.script)
    settings = Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / f"{case_id}.sqlite"))  # type: ignore[call-arg]
    result = await run_case(case, "default", model, settings, start=START + start_offset)
    assert result.passed, result.failures
    return str(server.requests[0]["prompt"])


async def test_the_prompt_prefix_is_byte_identical_for_two_requests_at_two_times(tmp_path: Path) -> None:
    """What a provider caches (the instructions, then the tools, as the request is laid out) is the same for two
    different requests a day and some hours apart: the rules, then `more_tools`, before anything that changes."""
    booking = await _first_prompt("hero-1-book", timedelta(0), tmp_path)
    cancel = await _first_prompt("hero-6-cancel", timedelta(days=1, hours=5), tmp_path)
    common = os.path.commonprefix([booking, cancel])  # noqa: RUF071 (the strings' common prefix)
    assert json.dumps(load_prompt("assistant"))[1:-1] in common  # all of the rules
    assert f'"name": "{MORE_TOOLS}"' in common and "Now is" not in common


@pytest.mark.parametrize(
    "request_text", ["Who dropped out of the 3pm?", "Was the 3pm delayed?", "Did Ava's call drop?"]
)
async def test_a_question_about_a_dropped_or_delayed_call_binds_no_change(
    request_text: str, services: Services
) -> None:
    """A call "drops" and a session is "delayed" in a question: these words are no request to change anything."""
    chosen = select_tools(services.toolbox.catalog, request_text)
    assert not [n for n in chosen if n.startswith(("delete", "update", "create"))], chosen


@pytest.mark.parametrize(
    ("request_text", "needed"),
    [
        # a person removed from / added to a session: the participant's write, not only the session's
        ("Remove Ava from the 3pm", {"delete_a_coviu_participant_by_id", "list_all_coviu_participants"}),
        ("Uninvite Ava from session S", {"delete_a_coviu_participant_by_id"}),
        ("Kick Ava out of the 3pm", {"delete_a_coviu_participant_by_id"}),
        ("Add Ava to the 3pm", {"create_a_coviu_participant"}),
        # attendance and billing are in the session's summary
        ("Did Ava join the 3pm?", {"get_single_coviu_session_summary_by_id"}),
        ("Who was a no show yesterday?", {"get_single_coviu_session_summary_by_id"}),
        ("How many minutes can we bill for session S?", {"get_single_coviu_session_summary_by_id"}),
        ("How long did the 3pm go for?", {"get_single_coviu_session_summary_by_id"}),
        ("Did Ava leave early?", {"get_single_coviu_session_summary_by_id"}),
        # forms by other names
        ("Has Ava filled in her questionnaire?", {"list_all_coviu_submissions"}),
        # a session made longer is changed, not booked
        ("Make the 3pm 30 minutes longer", {"update_a_coviu_session_by_id"}),
        ("Push the 3pm back an hour", {"update_a_coviu_session_by_id"}),
        # a summary word in a change: the variant serves the summary as a custom method, which counted as the
        # named resource's write, so the session's update was left out
        ("Reschedule the 3pm to 4pm, Ava is running late", {"update_a_coviu_session_by_id"}),
    ],
)
async def test_wordings_that_selection_missed_get_the_tool_that_answers_them(
    request_text: str, needed: set[str], services: Services
) -> None:
    """Each of these bound only the session reads (or the session's own delete/create for a person's removal or
    addition): the model could not answer from what it had, and was offered cancelling the whole session where
    one person was to be taken off it, or not offered the update a reschedule needs."""
    chosen = select_tools(services.toolbox.catalog, request_text)
    assert needed <= set(chosen), chosen
    assert len(chosen) < len(names(services))


def test_compaction_keeps_every_validation_keyword_an_upstream_schema_may_state() -> None:
    """A catalog is the account's to write: whatever JSON Schema constraint it states reaches the model (the
    validator enforces it, and a call the model could not know was wrong costs a turn). Only annotations (title,
    default, examples, ...) go. Before, a fixed list of kept keys dropped multipleOf, patternProperties, not,
    if/then/else, contains, prefixItems, min/maxProperties, dependentRequired; and it filtered the keys of a
    `patternProperties` map and of an enum's or const's object values as if they were keywords."""
    constraints = {
        "duration_minutes": {"type": "integer", "multipleOf": 5, "title": "Minutes", "default": 30},
        "metadata": {
            "type": "object",
            "patternProperties": {"^x-[a-z]+$": {"type": "string", "maxLength": 64, "examples": ["x-ab"]}},
            "propertyNames": {"pattern": "^x-"},
            "minProperties": 1,
            "maxProperties": 10,
            "dependentRequired": {"x-start": ["x-end"]},
        },
        "tags": {
            "type": "array",
            "contains": {"const": "clinic"},
            "minContains": 1,
            "prefixItems": [{"type": "string"}],
        },
        "role": {"not": {"const": "owner"}, "if": {"const": "guest"}, "then": {"type": "string"}, "else": {}},
        "preset": {"enum": [{"type": "audio", "minimum": 1}], "const": {"title": "kept: a value, not a schema"}},
    }
    tool = {"type": "function", "function": {"name": "t", "description": "A tool.", "parameters": {
        "type": "object", "properties": constraints, "required": ["duration_minutes"]}}}  # fmt: skip
    compact = compact_tool(tool)["function"]["parameters"]["properties"]
    assert compact["duration_minutes"] == {"type": "integer", "multipleOf": 5}
    assert compact["metadata"] == {
        "type": "object",
        "patternProperties": {"^x-[a-z]+$": {"type": "string", "maxLength": 64}},
        "propertyNames": {"pattern": "^x-"},
        "minProperties": 1,
        "maxProperties": 10,
        "dependentRequired": {"x-start": ["x-end"]},
    }
    assert compact["tags"] == constraints["tags"]
    assert compact["role"] == constraints["role"]
    assert compact["preset"] == constraints["preset"]
