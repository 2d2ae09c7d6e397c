"""Issue 23, the environment and the product's own files: the embedded sandbox runs only when asked for and every
output names its source; the state store, rate store, fleet file and `--out` are input, checked before the first
request (exit 2 local, 3 a server that does not answer; never 1)."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent.cli import app
from sandbox import SandboxConfig, create_sandbox
from sandbox.profiles import Profile
from tests.e2e import FAKE_TRUTO_TOKEN, free_port, serve
from tools.ratestore import SqliteRateStore

runner = CliRunner()
ACCOUNT_SETTINGS = ("TRUTO_API_KEY", "TRUTO_INTEGRATED_ACCOUNT_ID", "TRUTO_BASE_URL", "TRUTO_MCP_URL")


@pytest.fixture
def no_account(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No Truto account and no sandbox asked for; the state in this test's folder (returned)."""
    for name in (*ACCOUNT_SETTINGS, "COVIU_AGENT_SANDBOX", "COVIU_SANDBOX_PROFILE", "COVIU_SANDBOX_SEED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no `.env` of the developer's
    state = tmp_path / "state" / "checkpoints.sqlite"
    monkeypatch.setenv("COVIU_AGENT_STATE", str(state))
    return state


def one_error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


# --------------------------------------------------------------------------- demo only when asked


@pytest.mark.parametrize(
    "args",
    [
        ["tools"],
        ["triage", "A priority patient needs a duty nurse now", "--patient-name", "Ava"],
        ["audit"],
        ["queue", "watch", "--once"],
        ["recordings"],
        ["mcp", "list"],
    ],
    ids=lambda a: a[0] + ("-" + a[1] if a[0] in ("queue", "mcp") else ""),
)
def test_no_key_and_no_sandbox_asked_for_is_exit_2_before_anything_runs(no_account: Path, args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "TRUTO_API_KEY" in line and "--sandbox" in line and "COVIU_AGENT_SANDBOX=1" in line
    assert "embedded Coviu sandbox" not in result.output
    assert not no_account.parent.exists()  # nothing ran: not even the state store was made


def test_no_key_and_no_sandbox_asked_for_json_says_so(no_account: Path):
    result = runner.invoke(app, ["audit", "--json"])
    assert result.exit_code == 2
    payload = json.loads(result.stdout.splitlines()[0])
    assert payload["exit_code"] == 2 and "--sandbox" in payload["error"]


def test_the_sandbox_asked_for_by_flag_or_setting_names_its_source(no_account: Path, monkeypatch):
    flagged = runner.invoke(app, ["--sandbox", "tools", "--json"])
    assert flagged.exit_code == 0, flagged.output
    assert json.loads(flagged.stdout)["source"] == "sandbox"
    assert "embedded Coviu sandbox" in flagged.stderr

    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    by_setting = runner.invoke(app, ["tools", "--json"])
    assert by_setting.exit_code == 0, by_setting.output
    payload = json.loads(by_setting.stdout)
    assert payload["source"] == "sandbox" and payload["catalog"] == "tools" and payload["count"] >= 10


def test_the_sandbox_flag_never_reaches_a_truto_account_in_the_settings(no_account: Path, monkeypatch):
    """`make demo` with a real account in `.env`: the demo runs on the sandbox, the account is left alone."""
    with serve(create_sandbox()) as served:
        monkeypatch.setenv("TRUTO_API_KEY", FAKE_TRUTO_TOKEN)
        monkeypatch.setenv("TRUTO_INTEGRATED_ACCOUNT_ID", "sandbox")
        monkeypatch.setenv("TRUTO_BASE_URL", served.url)
        monkeypatch.setenv("COVIU_TEAM_ID", "team-of-the-real-clinic")
        result = runner.invoke(
            app, ["--sandbox", "triage", "A priority patient needs a duty nurse now", "--patient-name", "Ava", "--json"]
        )
        assert result.exit_code == 0, result.output
        assert served.sandbox.requests == []  # the account's server saw nothing
    payload = json.loads(result.stdout)
    assert payload["source"] == "sandbox" and payload["session"]["session_id"]


def test_a_key_wins_over_the_sandbox_setting_and_the_source_is_the_account(no_account: Path, monkeypatch):
    config = SandboxConfig()
    config.accounts = [*config.accounts, "clinic-north"]
    with serve(create_sandbox(config)) as served:
        monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
        monkeypatch.setenv("TRUTO_API_KEY", FAKE_TRUTO_TOKEN)
        monkeypatch.setenv("TRUTO_INTEGRATED_ACCOUNT_ID", "clinic-north")
        monkeypatch.setenv("TRUTO_BASE_URL", served.url)
        result = runner.invoke(app, ["tools", "--json"])
        assert result.exit_code == 0, result.output
        assert served.sandbox.requests  # the account was asked
    assert json.loads(result.stdout)["source"] == "clinic-north"


def test_a_sandbox_audit_report_says_demo_where_a_person_looks(
    no_account: Path, monkeypatch, tmp_path: Path, sandbox_profile: Profile
):
    monkeypatch.setenv("COVIU_SANDBOX_PROFILE", sandbox_profile.name)
    if sandbox_profile.seed is not None:
        monkeypatch.setenv("COVIU_SANDBOX_SEED", str(sandbox_profile.seed))
    out = tmp_path / "reports"
    result = runner.invoke(app, ["--sandbox", "audit", "--out", str(out), "--json"])
    assert result.exit_code in (0, 5), result.output
    assert json.loads(result.stdout)["source"] == "sandbox"
    (md,) = out.glob("*.md")
    (html,) = out.glob("*.html")
    (report,) = out.glob("*.json")
    assert md.read_text(encoding="utf-8").startswith("# DEMO (embedded sandbox")
    assert "<h1>DEMO (embedded sandbox" in html.read_text(encoding="utf-8")
    assert json.loads(report.read_text(encoding="utf-8"))["source"] == "sandbox"


# --------------------------------------------------------------------------- every local file is input


@pytest.fixture
def account(no_account: Path, monkeypatch: pytest.MonkeyPatch):
    """A Truto account on a served sandbox (so the rate store is the shared SQLite file); yields the sandbox."""
    with serve(create_sandbox()) as served:
        monkeypatch.setenv("TRUTO_API_KEY", FAKE_TRUTO_TOKEN)
        monkeypatch.setenv("TRUTO_INTEGRATED_ACCOUNT_ID", "sandbox")
        monkeypatch.setenv("TRUTO_BASE_URL", served.url)
        yield served.sandbox


def _garbage(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x00garbage, not SQLite\xff" * 300)


def _truncated(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [("x" * 400,) for _ in range(300)])
    conn.commit()
    conn.close()
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 2)


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_an_unreadable_rate_store_is_set_aside_and_rebuilt(tmp_path: Path, caplog, damage):
    path = tmp_path / "checkpoints.ratelimit.sqlite"
    damage(path)
    before = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="tools.ratestore"):
        store = SqliteRateStore(path)
    try:
        assert store.transact("acct", lambda state: "ok") == "ok"  # usable again
    finally:
        store.close()
    (aside,) = tmp_path.glob("checkpoints.ratelimit.sqlite.corrupt-*")
    assert aside.read_bytes() == before  # kept for a look, never deleted
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(path) in warning.getMessage() and aside.name in warning.getMessage()


def test_a_garbage_rate_store_does_not_stop_a_run(account, no_account: Path):
    _garbage(no_account.with_name("checkpoints.ratelimit.sqlite"))
    result = runner.invoke(app, ["tools", "--json"])
    assert result.exit_code == 0, result.output
    assert "checkpoints.ratelimit.sqlite" in result.stderr and "set aside" in result.stderr


@pytest.mark.parametrize("damage", [_garbage, _truncated], ids=["garbage", "truncated"])
def test_an_unreadable_state_store_is_exit_2_naming_it_before_any_request(account, no_account: Path, damage):
    damage(no_account)
    result = runner.invoke(app, ["audit"])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "COVIU_AGENT_STATE" in line and str(no_account) in line
    assert account.requests == []


def test_a_state_path_under_a_regular_file_is_exit_2(account, tmp_path: Path, monkeypatch):
    (tmp_path / "plain").write_text("a file", encoding="utf-8")
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "plain" / "state.sqlite"))
    for args in (["tools"], ["audit"], ["triage", "Queue check", "--patient-name", "Ava"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.output)
        assert "COVIU_AGENT_STATE" in line and "is a file, not a directory" in line
    assert account.requests == []


def test_a_postgresql_state_nobody_listens_on_is_exit_3_before_any_request(account, monkeypatch):
    monkeypatch.setenv("COVIU_AGENT_STATE", f"postgresql://coviu:hunter2-pw@127.0.0.1:{free_port()}/coviu")
    for args in (["tools"], ["audit"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 3, result.output
        line = one_error_line(result.output)
        assert "COVIU_AGENT_STATE" in line and "does not answer" in line
        assert "hunter2-pw" not in result.output
    assert account.requests == []


def test_a_state_path_that_is_a_device_is_exit_2_before_any_request(account, monkeypatch: pytest.MonkeyPatch):
    """COVIU_AGENT_STATE=/dev/null (to 'turn state off'): SQLite opens it and its check reads nothing wrong, then
    the first write failed mid-run: exit 1 `unexpected error (OperationalError): disk I/O error`."""
    monkeypatch.setenv("COVIU_AGENT_STATE", "/dev/null")
    for args in (["audit", "--json"], ["triage", "Queue check", "--patient-name", "Ava", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.stderr)
        assert "COVIU_AGENT_STATE" in line and "not a regular file" in line
    assert account.requests == []


def test_a_thread_lock_folder_that_cannot_be_used_is_exit_2_before_any_request(account, no_account: Path):
    """The lock folder beside the state store (`<state>.locks`, one run per thread) is input too: a file in its place
    (or a folder another user made, e.g. a run under sudo) was `unexpected error (FileExistsError)`, exit 1."""
    no_account.parent.mkdir(parents=True, exist_ok=True)
    no_account.with_name(no_account.name + ".locks").write_text("not a folder", encoding="utf-8")
    for args in (["audit", "--json"], ["triage", "Queue check", "--patient-name", "Ava", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.stderr)
        assert "COVIU_AGENT_STATE" in line and ".locks" in line and "not a directory" in line
        assert json.loads(result.stdout)["exit_code"] == 2
    assert account.requests == []


@pytest.mark.parametrize(
    "state",
    [
        "postgresql+psycopg://coviu:hunter2-pw@127.0.0.1:5432/coviu",  # SQLAlchemy's form
        "POSTGRESQL://coviu:hunter2-pw@127.0.0.1:5432/coviu",  # libpq takes the scheme in lower case only
        "host=127.0.0.1 port=5432 dbname=coviu password=hunter2-pw",  # libpq's keyword form
    ],
    ids=["sqlalchemy-url", "upper-case-scheme", "libpq-keywords"],
)
def test_a_postgresql_state_in_a_form_not_taken_is_exit_2_never_a_local_file(
    account, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state: str
):
    """Taken as a SQLite path, it made a local store named after the URL (its password in a folder name) and exit 0:
    the operator believed the state shared in PostgreSQL."""
    monkeypatch.setenv("COVIU_AGENT_STATE", state)
    before = set(tmp_path.rglob("*"))
    for args in (["tools"], ["audit", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        line = one_error_line(result.stderr)
        assert "COVIU_AGENT_STATE" in line and "postgresql://" in line
        assert "hunter2-pw" not in result.output
    assert set(tmp_path.rglob("*")) == before  # nothing made in the working folder
    assert account.requests == []


def test_an_out_directory_that_cannot_be_made_is_exit_2_before_any_request(account, tmp_path: Path):
    (tmp_path / "plain").write_text("a file", encoding="utf-8")
    result = runner.invoke(app, ["audit", "--out", str(tmp_path / "plain" / "reports")])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "--out" in line and "is a file, not a directory" in line
    assert account.requests == []


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("fleet.json", '{"clinics": [{"account": "caf\xe9"}]}'.encode("latin-1"), "not UTF-8"),
        ("fleet.toml", b"[[clinics]\naccount = 1", "not valid TOML"),
        ("fleet.json", b'{"clinics": [{"account": "a",}]}', "not valid JSON"),
    ],
    ids=["not-utf8", "bad-toml", "bad-json"],
)
def test_a_bad_fleet_file_is_exit_2_naming_it(account, tmp_path: Path, name: str, content: bytes, expected: str):
    fleet = tmp_path / name
    fleet.write_bytes(content)
    result = runner.invoke(app, ["audit", "--fleet", str(fleet), "--out", str(tmp_path / "reports")])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "--fleet" in line and name in line and expected in line
    assert account.requests == []


# --------------------------------------------------------------------------- URLs with userinfo are bad input

PASSWORD = "s3cretpw-in-url"


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("TRUTO_BASE_URL", {"TRUTO_BASE_URL": f"https://clinic:{PASSWORD}@api.truto.one"}),
        ("TRUTO_BASE_URL", {"TRUTO_BASE_URL": f"http://:{PASSWORD}@127.0.0.1:9"}),
        ("OPENAI_BASE_URL", {"OPENAI_BASE_URL": f"https://llm:{PASSWORD}@llm.example/v1"}),
        ("TRUTO_MCP_URL", {"TRUTO_MCP_URL": f"https://mcp:{PASSWORD}@api.truto.one/mcp/token-abcdef123456"}),
    ],
    ids=["truto", "truto-password-only", "openai", "mcp"],
)
def test_a_url_with_userinfo_is_exit_2_and_its_password_is_never_printed(
    no_account: Path, monkeypatch: pytest.MonkeyPatch, name: str, settings: dict[str, str]
):
    monkeypatch.setenv("TRUTO_API_KEY", FAKE_TRUTO_TOKEN)
    monkeypatch.setenv("TRUTO_INTEGRATED_ACCOUNT_ID", "acct-1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-KEY-0123456789")
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    for args in (["tools", "-vv"], ["audit", "-vv", "--json"]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert PASSWORD not in result.output
        line = one_error_line(result.stderr)
        assert name in line and "user:password@" in line


def test_every_logger_passes_the_redaction_step_at_vv(capsys: pytest.CaptureFixture[str]):
    """httpx, httpcore and a library logger with a handler of its own: a URL's password never reaches a stream."""
    import io

    import httpx

    from agent.logging import configure_logging

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogRecordFactory())
    own = logging.getLogger("some.library")
    sink = io.StringIO()
    own_handler = logging.StreamHandler(sink)
    own.addHandler(own_handler)
    own.propagate = False
    try:
        configure_logging("DEBUG", [FAKE_TRUTO_TOKEN], libraries_debug=True)
        url = httpx.URL(f"http://clinic:{PASSWORD}@127.0.0.1:9/integrated-account/a/tools")
        logging.getLogger("httpx").info('HTTP Request: %s %s "%s %d %s"', "GET", url, "HTTP/1.1", 401, "")
        logging.getLogger("httpcore.connection").debug("connect_tcp.started url=%r", str(url))
        own.warning("retrying %s with token %s", url, FAKE_TRUTO_TOKEN)
        own.warning(f"postgresql://coviu:{PASSWORD}@db:5432/coviu refused")
    finally:
        own.removeHandler(own_handler)
        own.propagate = True
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.setLogRecordFactory(saved[2])
        for name in ("httpx", "httpcore", "some.library"):
            logging.getLogger(name).setLevel(logging.NOTSET)
    written = capsys.readouterr().err + sink.getvalue()
    assert "HTTP Request: GET http://clinic:[redacted]@127.0.0.1:9/" in written  # the rest stays readable
    assert "401" in written and "db:5432" in written
    assert PASSWORD not in written and FAKE_TRUTO_TOKEN not in written


# --------------------------------------------------------------------------- the two commands still work

PROJECT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(__import__("shutil").which("make") is None, reason="make is not installed")
def test_make_demo_runs_on_the_embedded_sandbox_with_nothing_set(tmp_path: Path):
    """`make demo` asks for the sandbox itself: no key, no COVIU_AGENT_SANDBOX, and every step exits 0."""
    import os
    import subprocess
    import sys

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    cli = bin_dir / "coviu-agent"  # the real CLI, run in the test's folder (its reports land there)
    cli.write_text(f'#!/bin/sh\ncd {work} && exec {sys.executable} -m agent "$@"\n', encoding="utf-8")
    cli.chmod(0o755)
    launcher = bin_dir / "python"  # `make studio`'s launcher (agent/studio.py), standing in: says what it was given
    launcher.write_text('#!/bin/sh\necho "python COVIU_AGENT_SANDBOX=$COVIU_AGENT_SANDBOX $*"\n', encoding="utf-8")
    launcher.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRUTO_", "COVIU_", "OPENAI_"))}
    env.update(MAKEFLAGS="", HOME=str(tmp_path), COVIU_AGENT_STATE=str(tmp_path / "state.sqlite"))
    env["PYTHONPATH"] = str(PROJECT)

    def make(target: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["make", "--no-print-directory", "-o", ".venv/.installed", target, f"BIN={bin_dir}"],
            cwd=PROJECT,
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )

    demo = make("demo")
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "embedded Coviu sandbox" in demo.stderr
    (report,) = (work / "reports").glob("*.md")
    assert report.read_text(encoding="utf-8").startswith("# DEMO (embedded sandbox")

    studio = make("studio")
    assert studio.returncode == 0, studio.stdout + studio.stderr
    assert "python COVIU_AGENT_SANDBOX=1 -m agent.studio" in studio.stdout


def test_a_download_directory_that_cannot_be_made_is_exit_2_before_any_request(account, tmp_path: Path):
    (tmp_path / "plain").write_text("a file", encoding="utf-8")
    result = runner.invoke(app, ["recordings", "--download", str(tmp_path / "plain" / "recordings")])
    assert result.exit_code == 2, result.output
    line = one_error_line(result.output)
    assert "--download" in line and "is a file, not a directory" in line
    assert account.requests == []


def test_services_without_a_key_or_a_sandbox_asked_for_refuse_before_any_request(no_account: Path):
    """The LangGraph server and library callers build services the same way: a clear ConfigError (exit 2)."""
    from agent.errors import ConfigError
    from agent.services import truto_account
    from agent.settings import Settings

    with pytest.raises(ConfigError, match=r"TRUTO_API_KEY is not set.*--sandbox.*COVIU_AGENT_SANDBOX=1"):
        truto_account(Settings(_env_file=None))  # type: ignore[call-arg]
    asked = Settings(_env_file=None, COVIU_AGENT_SANDBOX="1")  # type: ignore[call-arg]
    assert asked.uses_sandbox and asked.source == "sandbox" and truto_account(asked).embedded
