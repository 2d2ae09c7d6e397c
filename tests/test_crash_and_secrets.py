"""Crash safety (SIGKILL mid-run, then rerun) and secrets: no token or key in any output or file."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from agent.checkpoint import stored_bytes
from sandbox import FaultConfig, SandboxConfig, create_sandbox
from sandbox.profiles import Profile
from tests.e2e import CLI, FAKE_OPENAI_KEY, FAKE_TRUTO_TOKEN, cli_env, run_cli, serve

pytestmark = pytest.mark.e2e


def test_triage_killed_between_session_and_participants_finishes_the_same_session(
    tmp_path: Path, sandbox_config: SandboxConfig
):
    sandbox = create_sandbox(sandbox_config)
    # participant creates are written, then answered slowly: the kill lands between create and reply
    sandbox.set_faults(FaultConfig(slow=1.0, slow_seconds=30, only_resources=["participants"]))
    with serve(sandbox) as s:
        env = cli_env(tmp_path, s.url)
        args = ["triage", "urgent", "--patient-name", "Crash Test", "--json"]
        proc = subprocess.Popen([*CLI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sandbox.count(resource="participants", truto_method="create") < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert sandbox.count(resource="sessions", truto_method="create") == 1
        sandbox.set_faults(FaultConfig())
        rerun = run_cli(args, env, tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        assert "resuming triage thread" in rerun.stderr
        out = json.loads(rerun.stdout)
    made = [x for x in sandbox.store.sessions.values() if x.session_name == "Triage – Crash Test"]
    assert len(made) == 1, "the rerun finished the same session instead of making a second"
    assert out["session"]["session_id"] == made[0].session_id
    roles = sorted(sandbox.store.participants[p].role for p in made[0].participant_ids)
    assert roles == ["GUEST", "HOST"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_audit_killed_at_a_random_point_gives_the_identical_report(tmp_path: Path, seed: int, sandbox_profile: Profile):
    if sandbox_profile.name != "default" and seed != 1:
        pytest.skip("one kill point per non-default profile (each run is 20-100 s); the default profile runs three")
    sandbox = create_sandbox(sandbox_profile.config.model_copy(update={"rate_limit": 500}))
    yesterday = sandbox.clock.now().date() - timedelta(days=1)
    sandbox.store.generate_sessions(yesterday, 400, seed=seed)
    with serve(sandbox) as s:
        env = cli_env(tmp_path, s.url, TRUTO_RATE_LIMIT_PER_10S="500")
        args = ["audit", "--date", yesterday.isoformat(), "--out", str(tmp_path / "r"), "--json"]
        clean = run_cli(args, cli_env(tmp_path / "clean", s.url, TRUTO_RATE_LIMIT_PER_10S="500"), tmp_path)
        assert clean.returncode == 0, clean.stderr
        baseline = sandbox.count(resource="session_summaries")
        kill_at = random.Random(seed).randint(20, 380)
        proc = subprocess.Popen([*CLI, *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while sandbox.count(resource="session_summaries") - baseline < kill_at and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        fetched_before_kill = sandbox.count(resource="session_summaries") - baseline
        rerun = run_cli(args, env, tmp_path)
        assert rerun.returncode == 0, rerun.stderr
        refetched = sandbox.count(resource="session_summaries") - baseline - fetched_before_kill
    report, fresh = json.loads(rerun.stdout), json.loads(clean.stdout)
    report.pop("generated_at")
    report.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    fresh.pop("generated_at")
    fresh.pop("summaries_from_cache", None)  # how the run got its summaries, not what they say
    assert report == fresh
    total = fresh["totals"]["sessions"]
    # bounded refetching: at most the unfinished batch is fetched again (batch = 250)
    assert fetched_before_kill + refetched <= total + 250


NOTIFY_PASSWORD = "staff-hook-password-5150"
NOTIFY_TOKEN = "T0KENxyzSTAFF998877"


def test_no_secret_in_output_logs_reports_or_checkpoints(tmp_path: Path):
    from tests.receivers import webhook

    sandbox = create_sandbox()
    with serve(sandbox) as s, webhook() as hook:
        # a staff channel whose URL holds a password and a token (both secrets), up for every command
        notify = hook.url.replace("json://", f"json://staff:{NOTIFY_PASSWORD}@") + f"/{NOTIFY_TOKEN}"
        env = cli_env(
            tmp_path,
            s.url,
            OPENAI_API_KEY=FAKE_OPENAI_KEY,
            COVIU_AGENT_PLANNER="rules",
            COVIU_AGENT_LOG_LEVEL="DEBUG",
            COVIU_AGENT_NOTIFY=notify,
        )
        outputs = []
        for args in (
            ["notify", "test", "-vv"],
            ["tools", "--json"],
            ["tools", "-v"],
            ["triage", "now", "--patient-name", "Secret Scan", "-v"],
            ["triage", "now", "--patient-name", "Secret Scan", "--json"],
            ["queue", "watch", "--once", "-v"],
            ["audit", "--out", str(tmp_path / "reports"), "-v"],
            ["audit", "--out", str(tmp_path / "reports"), "--json"],
        ):
            result = run_cli(args, env, tmp_path)
            assert result.returncode == 0, (args, result.stderr)
            outputs.append(result.stdout + result.stderr)
    blobs = list(outputs)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            blobs.append(path.read_bytes().decode("utf-8", "replace"))
    state = tmp_path / "state.sqlite"
    assert state.exists()
    with sqlite3.connect(state) as db:
        for (table,) in db.execute("select name from sqlite_master where type='table'"):
            for row in db.execute(f"select * from {table}"):
                blobs.append(repr(row))
                blobs.extend(expanded(row))  # large values are stored compressed: read them as they are
    assert len(hook.posts) >= 3  # the test message, the queue's alerts and the audit's report went out
    for blob in blobs:
        assert FAKE_TRUTO_TOKEN not in blob
        assert FAKE_OPENAI_KEY not in blob
        assert NOTIFY_PASSWORD not in blob and NOTIFY_TOKEN not in blob


def expanded(row: tuple[object, ...]) -> list[str]:
    """The text of every value in a stored row that the checkpointer compressed (`zlib+` type before it)."""
    out = []
    for kind, value in itertools.pairwise(row):
        if isinstance(kind, str) and isinstance(value, bytes):
            out.append(stored_bytes(kind, value).decode("utf-8", "replace"))
    return out


def test_info_logs_carry_no_patient_names(tmp_path: Path):
    sandbox = create_sandbox()
    with serve(sandbox) as s:
        env = cli_env(tmp_path, s.url)
        result = run_cli(["triage", "now", "--patient-name", "Zelda Private", "--json"], env, tmp_path)
        assert result.returncode == 0, result.stderr
        audit = run_cli(["audit", "--out", str(tmp_path / "r"), "--json"], env, tmp_path)
        assert audit.returncode == 0
    assert "INFO" in result.stderr
    assert "Zelda Private" not in result.stderr
    names = {r["session_name"] for r in json.loads(audit.stdout)["sessions"]}
    assert not any(name in audit.stderr for name in names if name)


def test_state_file_is_owner_only(tmp_path: Path):
    sandbox = create_sandbox()
    with serve(sandbox) as s:
        args = ["triage", "now", "--patient-name", "Owner Only", "--json"]
        result = run_cli(args, cli_env(tmp_path, s.url), tmp_path)
    assert result.returncode == 0
    assert ((tmp_path / "state.sqlite").stat().st_mode & 0o777) == 0o600


class EchoingUpstream:
    """The sandbox, except that proxy calls answer 401 echoing the caller's token, and a chat-completions endpoint
    answers 400 echoing the OpenAI key: an upstream that repeats what it is sent."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.sandbox(scope, receive, send)
        path = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        token = headers.get("authorization", "").partition(" ")[2]
        if path.startswith("/proxy/"):
            status, body = 401, {"error": {"message": f"token {token} is not valid for this account"}}
        elif path.endswith("/chat/completions"):
            status, body = 400, {"error": {"message": f"Incorrect API key provided: {token}", "code": "bad_key"}}
        else:
            return await self.sandbox(scope, receive, send)
        data = json.dumps(body).encode()
        await send(
            {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
        )
        await send({"type": "http.response.body", "body": data})


def test_an_upstream_that_echoes_secrets_leaks_nothing_not_even_into_checkpoints(tmp_path: Path):
    import threading

    import uvicorn

    from tests.e2e import free_port

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            EchoingUpstream(create_sandbox()), host="127.0.0.1", port=port, lifespan="off", log_level="error"
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    url = f"http://127.0.0.1:{port}"
    outputs = []
    try:
        env = cli_env(tmp_path, url, OPENAI_API_KEY=FAKE_OPENAI_KEY, OPENAI_BASE_URL=f"{url}/v1")
        for args, extra in (
            (["triage", "now", "--patient-name", "Echo Test", "--json"], {"COVIU_AGENT_PLANNER": "rules"}),
            (["triage", "now", "--patient-name", "Echo Test", "-v"], {"COVIU_AGENT_PLANNER": "llm"}),
            (["ask", "Cancel session S", "--json"], {}),
            (["ask", "Cancel session S", "-v"], {}),
            (["audit", "--out", str(tmp_path / "reports"), "--json"], {}),
        ):
            result = run_cli(args, {**env, **extra}, tmp_path)
            assert result.returncode != 0, (args, result.stdout)
            assert "Traceback" not in result.stderr or "-v" in args
            outputs.append(result.stdout + result.stderr)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    blobs = [o.encode() for o in outputs]
    blobs += [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]  # the checkpoint DB's bytes too
    assert (tmp_path / "state.sqlite").exists()
    with sqlite3.connect(tmp_path / "state.sqlite") as db:  # and its compressed values, expanded
        for table in ("checkpoints", "writes"):
            for row in db.execute(f"select * from {table}"):
                blobs.extend(text.encode() for text in expanded(row))
    for blob in blobs:
        assert FAKE_TRUTO_TOKEN.encode() not in blob
        assert FAKE_OPENAI_KEY.encode() not in blob
    with sqlite3.connect(tmp_path / "state.sqlite") as db:
        kinds = {kind for (kind,) in db.execute("select distinct type from writes")}
    assert "pickle" not in kinds
