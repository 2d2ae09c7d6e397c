"""A waiting patient's link (issue 28): `coviu-agent --sandbox triage ...` imports nothing it does not need.

The goal is a time (the command to its printed links within 1.10x of `python -c "import langgraph.graph"`,
measured by bench/scale_bench.py, never here); what this test guards deterministically is the cause: the modules the
triage path loads beyond those `import langgraph.graph` loads anyway. Each package allowed here is one the path
uses before its links are printed; anything else (a validator, a telemetry SDK, a notification library, a driver, a
report renderer, typer's rich help) is start-up time a patient waits for.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

# Top-level packages the triage path may import beyond `import langgraph.graph`, each with its reason.
ALLOWED = {
    "agent": "ours: the CLI, settings, services, the run",
    "graphs": "ours: the triage graph",
    "tools": "ours: the Truto client, the catalog, the governor",
    "prompts": "ours: the planner's prompts (text files)",
    "sandbox": "ours: the embedded sandbox the command asked for (--sandbox)",
    "typer": "the CLI",
    "shellingham": "typer's shell detection (completion)",
    "annotated_doc": "typer's parameter docs",
    "pydantic": "settings (a submodule langgraph did not load)",
    "pydantic_settings": "settings from the environment and .env",
    "dotenv": "pydantic-settings' .env reader",
    "starlette": "the sandbox's ASGI request",
    "python_multipart": "starlette's form parser (imported by its Request)",
    "anyio": "a submodule of httpx's async stack",
    "sqlite3": "the checkpoint and rate-store files",
    "_sqlite3": "the checkpoint and rate-store files",
    "aiosqlite": "LangGraph's async SQLite checkpointer",
    "langgraph": "submodules of langgraph (the SQLite checkpointer)",
    "langchain_core": "submodules of langchain_core the graph uses",
    "jsonschema_rs": "tool arguments checked before anything is sent",
}

# Named because each once was (or could easily be) on this path: none may come back.
NEVER = (
    "jsonschema",  # the pure-Python validator: ~30 ms of imports (referencing, attrs, rpds, rfc3987...)
    "apprise",
    "psycopg",
    "uvicorn",
    "jinja2",
    "pygal",
    "openai",
    "langchain_openai",
    "mcp",
    "reporting",
    "workers",
    "agent.notify",  # notification channels: only when COVIU_AGENT_NOTIFY* is set
    "rich.markdown",
    "rich.traceback",
)

SCRIPT = """
import atexit, json, sys
out, args = sys.argv[1], sys.argv[2:]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["coviu-agent", *args]
if args:
    from agent.cli import main
    main()
else:
    import langgraph.graph
"""


def _modules(tmp_path: Path, name: str, *args: str) -> set[str]:
    out = tmp_path / f"{name}.json"
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "COVIU_AGENT_STATE": str(tmp_path / "state" / "state.sqlite"),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out), *args], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    if args:
        assert "Patient link" in done.stdout and "Clinician link" in done.stdout, done.stdout
    return set(json.loads(out.read_text()))


def test_triage_loads_only_what_it_needs_beyond_langgraph(tmp_path: Path):
    baseline = _modules(tmp_path, "baseline")
    triage = _modules(
        tmp_path,
        "triage",
        "--sandbox",
        "triage",
        "A priority patient needs a duty nurse now",
        "--patient-name",
        "Ava Jenkins",
    )
    extra = triage - baseline
    unexpected = sorted({name.split(".")[0] for name in extra} - set(ALLOWED))
    assert not unexpected, f"the triage path imports more than it needs: {unexpected}"
    back = sorted(m for m in triage if any(m == n or m.startswith(n + ".") for n in NEVER))
    assert not back, back
