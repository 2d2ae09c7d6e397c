"""`make studio`: LangGraph's dev server for this project's graphs, for LangGraph Studio.

- The port: `STUDIO_PORT` when given (a busy one is refused: exit 2, nothing started); else 2024, or the next free
  port when 2024 is busy (said on the first line).
- The URL printed is the one the server announces once it has bound (its "API:" line), never the one asked for.
- Each port's server keeps its state apart: it runs in `.studio/<port>/` (its `.langgraph_api` store, written on
  exit), with a copy of langgraph.json whose paths point back at the project, so a second server never overwrites
  the first one's threads.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PROJECT = Path(__file__).resolve().parents[1]
DEFAULT_PORT = 2024
STUDIO_ORIGIN = "https://smith.langchain.com"
_API_LINE = re.compile(r"API:\s*(?:\x1b\[[0-9;]*m)?(https?://[^\s\x1b]+)")
_OFFLINE = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGSMITH_TRACING": "false"}


class BusyPort(Exception):
    """The port asked for (STUDIO_PORT) is taken."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, asked: int | None, *, tries: int = 50) -> tuple[int, str | None]:
    """(the port, a line saying why it is not the default, or None). An explicit port that is busy: BusyPort."""
    if asked is not None:
        if not port_is_free(host, asked):
            raise BusyPort(
                f"STUDIO_PORT={asked}: the port is in use on {host} (another `make studio`?); "
                "stop that server or pick another STUDIO_PORT"
            )
        return asked, None
    for port in range(DEFAULT_PORT, DEFAULT_PORT + tries):
        if port_is_free(host, port):
            said = None if port == DEFAULT_PORT else f"port {DEFAULT_PORT} is in use on {host}: using {port}"
            return port, said
    raise BusyPort(f"ports {DEFAULT_PORT} to {DEFAULT_PORT + tries - 1} are all in use on {host}: set STUDIO_PORT")


def server_config(workdir: Path, project: Path = PROJECT) -> Path:
    """The project's langgraph.json for a server running in `workdir`: graph paths, dependencies and the `.env` file
    made absolute (the dev server reads them relative to its working directory)."""
    config: dict[str, Any] = json.loads((project / "langgraph.json").read_text(encoding="utf-8"))

    def absolute(spec: str) -> str:
        return str(project / spec) if spec.startswith(".") else spec

    config["graphs"] = {
        name: {**entry, "path": absolute(entry["path"])} if isinstance(entry, dict) else absolute(entry)
        for name, entry in config["graphs"].items()
    }
    config["dependencies"] = [str((project / d).resolve()) if d.startswith(".") else d for d in config["dependencies"]]
    env = config.get("env")
    if isinstance(env, str):
        env_file = project / env
        config["env"] = str(env_file) if env_file.is_file() else dict(_OFFLINE)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "langgraph.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def bound_url(line: str) -> str | None:
    """The server's own URL from its start-up banner ("- 🚀 API: http://127.0.0.1:2024")."""
    found = _API_LINE.search(line)
    return found.group(1).rstrip("/") if found else None


def studio_url(api_url: str) -> str:
    return f"{STUDIO_ORIGIN}/studio/?baseUrl={api_url}"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    host = args[0] if args else "127.0.0.1"
    asked = int(args[1]) if len(args) > 1 and args[1] else None
    try:
        port, said = choose_port(host, asked)
    except BusyPort as exc:
        sys.stderr.write(f"make studio: {exc}\n")
        return 2
    if said:
        say(f"make studio: {said}")
    workdir = PROJECT / ".studio" / str(port)
    config = server_config(workdir)
    say(f"make studio: this server's state is kept in {workdir.relative_to(PROJECT)}/ (one per port)")
    command = [
        str(Path(sys.executable).parent / "langgraph"),
        "dev",
        "--no-browser",
        "--no-reload",  # the server runs in .studio/<port>/: its reloader would watch that, not the code
        "--host",
        host,
        "--port",
        str(port),
        "--config",
        str(config),
    ]
    env = {**os.environ, **_OFFLINE}
    process = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    import signal

    def stop(signum: int, frame: Any) -> None:  # `kill <pid>` of make studio stops the server too, never orphaned
        process.terminate()

    signal.signal(signal.SIGTERM, stop)
    announced = False
    try:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            url = None if announced else bound_url(line)
            if url:
                announced = True
                say("")
                say(f"LangGraph Studio: {studio_url(url)}")
                say(f"(the server bound {url}; the UI is LangSmith's: it needs a login and the internet)")
                say("")
        return process.wait()
    except KeyboardInterrupt:
        process.wait()  # Ctrl-C reached the server too (same process group): let it write its state and stop
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
