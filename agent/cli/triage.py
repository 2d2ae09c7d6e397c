"""`coviu-agent triage`: scenario 1 (check the queue, alert on long waits, create a session with two links)."""

from __future__ import annotations

import uuid
from typing import Any

import typer

from agent.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_UPSTREAM,
    check_id,
    emit_json,
    err,
    fail,
    load_settings,
    open_services,
    out,
    run_async,
)
from agent.errors import BadInput
from agent.redact import styled
from tools.textsafety import has_unsafe_chars


def triage(
    request: str = typer.Argument("", help="The request, e.g. 'A priority patient needs a duty nurse now'."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id (default COVIU_TEAM_ID)."),
    queue_id: str | None = typer.Option(None, "--queue-id", help="Waiting queue id (default COVIU_WAITING_QUEUE_ID)."),
    patient_name: str | None = typer.Option(
        None,
        "--patient-name",
        help="The patient's display name (required, unless the request ends with 'Patient: <name>').",
    ),
    host_name: str = typer.Option("Duty clinician", "--host-name", help="The clinician's display name."),
    duration_minutes: int = typer.Option(30, "--duration-minutes", help="Session length in minutes (1 to 720)."),
    wait_threshold_minutes: float = typer.Option(
        15, "--wait-threshold-minutes", help="Alert on patients waiting longer than this many minutes."
    ),
    thread_id: str | None = typer.Option(None, "--thread-id", help="Resume this triage thread."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Read the queue and print the calls triage would make; create nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    verbose: int = typer.Option(0, "-v", "--verbose", count=True, help="-v: debug logs; -vv: libraries too."),
) -> None:
    """Scenario 1: check the queue, alert on long waits, create a session now with two links.

    A triage needs the patient's name: --patient-name, or 'Patient: <name>' in the request.
    """
    try:
        if not 1 <= duration_minutes <= 720:
            raise BadInput(f"--duration-minutes: expected 1 to 720 minutes, got {duration_minutes}")
        if not 0 <= wait_threshold_minutes <= 1440:
            raise BadInput(f"--wait-threshold-minutes: expected 0 to 1440, got {wait_threshold_minutes}")
        for label, value in (("--patient-name", patient_name), ("--host-name", host_name)):
            if value is not None and (not value.strip() or len(value) > 120):
                raise BadInput(f"{label}: expected a non-empty name of at most 120 characters")
            if value is not None and has_unsafe_chars(value):
                raise BadInput(f"{label}: control or bidi characters are not allowed in a display name")
        if len(request) > 4000:
            raise BadInput("REQUEST: expected at most 4000 characters")
        check_id("--team-id", team_id)
        check_id("--queue-id", queue_id)
        check_id("--thread-id", thread_id)
        if not thread_id:
            patient_name = patient_name or _patient_in(request)
    except BadInput as exc:
        fail(EXIT_BAD_INPUT, str(exc), as_json=as_json)
    settings = load_settings(verbose, as_json)
    if not thread_id and not patient_name and settings.effective_planner == "rules":
        # the rules planner reads only a 'Patient:' label; with an LLM the graph asks the model, then refuses alike
        fail(
            EXIT_BAD_INPUT,
            "--patient-name: a triage needs the patient's name (or end the request with 'Patient: <name>'); "
            "nothing was sent",
            as_json=as_json,
        )

    async def body() -> dict[str, Any]:
        from langchain_core.messages import HumanMessage
        from langchain_core.runnables import RunnableConfig

        from agent.checkpoint import open_checkpointer
        from graphs.context import Context
        from graphs.triage import compile_triage

        services = await open_services(settings)
        try:
            async with open_checkpointer(settings.state) as saver:
                graph = compile_triage(saver)
                inputs: dict[str, Any] = {
                    "messages": [HumanMessage(content=request or "Triage the waiting queue now.")],
                    "host_name": host_name,
                    "duration_minutes": duration_minutes,
                    "wait_threshold_minutes": wait_threshold_minutes,
                }
                if patient_name:
                    inputs["patient_name"] = patient_name
                if dry_run:
                    inputs["dry_run"] = True
                thread = thread_id or triage_thread(
                    team_id or services.team_id,
                    queue_id or services.waiting_queue_id,
                    patient_name,
                    request + ("|dry-run" if dry_run else ""),
                    services.clock.now().astimezone(services.zone).date().isoformat(),
                )
                config: RunnableConfig = {"configurable": {"thread_id": thread}, "recursion_limit": 60}
                context = Context(team_id=team_id, waiting_queue_id=queue_id, services=services)
                snapshot = await graph.aget_state(config)
                if snapshot.next:
                    # an interrupted run of the same triage (crash, kill): finish it, don't start a second
                    err.print(f"resuming triage thread {thread}", highlight=False)
                    state = await graph.ainvoke(None, config, context=context, durability="sync")
                else:
                    if snapshot.values and not thread_id:
                        config = {
                            "configurable": {"thread_id": f"{thread}:{uuid.uuid4().hex[:8]}"},
                            "recursion_limit": 60,
                        }
                    state = await graph.ainvoke(inputs, config, context=context, durability="sync")  # type: ignore[call-overload]
            waits = services.toolbox.rate_limit_waits
        finally:
            await services.toolbox.aclose()
        return {**state, "figures": {"rate_limit_waits": waits}}

    state = run_async(body, as_json=as_json)
    result = {
        "team_id": state.get("team_id"),
        "queue_id": state.get("waiting_queue_id"),
        "queue": state.get("queue"),
        "alerts": state.get("alerts", []),
        "session": state.get("session"),
        "participants": state.get("participants", []),
        "reply": state.get("reply", ""),
    }
    if dry_run:
        result["dry_run"] = True
        result["planned_calls"] = state.get("planned_calls") or []
    result["figures"] = state.get("figures")
    failure = state.get("failure")
    if failure:
        code = EXIT_BAD_INPUT if state.get("queue") is None and "404" in str(state.get("last_error")) else EXIT_UPSTREAM
        if as_json:
            emit_json({**result, "error": failure, "exit_code": code})
        err.print(styled("triage did not finish:", "bold red", str(failure)), highlight=False)
        raise typer.Exit(code)
    if as_json:
        emit_json(result)
    else:
        out.print(result["reply"], highlight=False)


def _patient_in(request: str) -> str | None:
    from graphs.triage import patient_from_request

    return patient_from_request(request)


def triage_thread(team: str | None, queue: str | None, patient: str | None, request: str, day: str) -> str:
    """The default triage thread: the same request on the same day resumes an interrupted run.

    Hashed, so no patient name is stored in a thread id.
    """
    import hashlib

    key = "|".join([team or "", queue or "", patient or "", request, day])
    return f"triage:{hashlib.sha256(key.encode()).hexdigest()[:24]}"
