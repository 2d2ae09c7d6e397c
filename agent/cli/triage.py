"""`coviu-agent triage`: check the queue, alert on long waits, create a session with two links."""

from __future__ import annotations

import typer

from agent.cli.common import QUIET, VERBOSE, check_id, emit_json, err, fail, load_settings, out, run_async, say
from agent.errors import EXIT_BAD_INPUT, BadInput
from agent.redact import styled
from agent.runs import TriageArgs, run_triage
from tools.textsafety import has_unsafe_chars


def triage(
    request: str = typer.Argument("", help="The request, e.g. 'A priority patient needs a duty nurse now'."),
    team_id: str | None = typer.Option(None, "--team-id", help="Coviu team id.  [env var: COVIU_TEAM_ID]"),
    queue_id: str | None = typer.Option(
        None, "--queue-id", help="Waiting queue id.  [env var: COVIU_WAITING_QUEUE_ID]"
    ),
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
    verbose: int = VERBOSE,
    quiet: bool = QUIET,
) -> None:
    """Check the waiting queue, alert on long waits, create a session now with its patient and clinician links.

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
    settings = load_settings(-1 if quiet else verbose, as_json)
    if not thread_id and not patient_name and settings.effective_planner == "rules":
        # the rules planner reads only a 'Patient:' label; with an LLM the graph asks the model, then refuses alike
        fail(
            EXIT_BAD_INPUT,
            "--patient-name: a triage needs the patient's name (or end the request with 'Patient: <name>'); "
            "nothing was sent",
            as_json=as_json,
        )

    args = TriageArgs(
        request=request,
        team_id=team_id,
        queue_id=queue_id,
        patient_name=patient_name,
        host_name=host_name,
        duration_minutes=duration_minutes,
        wait_threshold_minutes=wait_threshold_minutes,
        thread_id=thread_id,
        dry_run=dry_run,
    )
    result = run_async(lambda: run_triage(settings, args, on_event=say), as_json=as_json)
    payload = result.as_dict()
    if payload.get("planner_note"):  # the rules planned (part of) an LLM run: said, whatever the output format
        err.print(f"note: planned by the rules ({payload['planner']}): {payload['planner_note']}", highlight=False)
    if result.failure:
        if as_json:
            emit_json({**payload, "error": result.failure, "exit_code": result.exit_code})
        err.print(styled("triage did not finish:", "bold red", result.failure), highlight=False)
        raise typer.Exit(result.exit_code)
    if as_json:
        emit_json(payload)
    else:
        out.print(payload["reply"], highlight=False)


def _patient_in(request: str) -> str | None:
    from graphs.triage import patient_from_request

    return patient_from_request(request)
