"""The import layout: no import cycle among the project's modules, and imports only run down the layers.

Layers (docs/architecture.md): agent → graphs → reporting → tools, agent → workers → tools; prompts is read by
graphs; sandbox is the simulator and imports none of the product; evals (the planner evals) sits beside agent, which
runs it (`coviu-agent eval`), and nothing below imports it. Every import counts, at any level: inside functions
and under `if TYPE_CHECKING:` too, since two modules that name each other are one concern or need a third (a
protocol, as sandbox/gateway.py is for the sandbox's MCP servers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "tools", "graphs", "reporting", "workers", "prompts", "sandbox", "evals")

# package -> packages it must never import
FORBIDDEN: dict[str, set[str]] = {
    "tools": {"agent", "graphs", "reporting", "workers", "sandbox", "evals"},
    "graphs": {"agent", "workers", "sandbox", "evals"},
    "reporting": {"agent", "graphs", "workers", "sandbox", "evals"},
    "workers": {"agent", "graphs", "reporting", "sandbox", "evals"},
    "prompts": {"agent", "graphs", "tools", "reporting", "workers", "sandbox", "evals"},
    "sandbox": {"agent", "graphs", "tools", "reporting", "workers", "evals"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, typing_only: bool = False) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under `node`, with whether it sits in an `if TYPE_CHECKING:` block."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, typing_only
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), True)
            for stmt in child.orelse:
                yield from _imports(ast.Module(body=[stmt], type_ignores=[]), typing_only)
        else:
            yield from _imports(child, typing_only)


def imported_modules(name: str, path: Path, known: set[str]) -> Iterator[tuple[str, bool]]:
    """(project module imported by `name`, typing only), resolving relative imports and `from pkg import mod`."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for stmt, typing_only in _imports(tree):
        if isinstance(stmt, ast.Import):
            targets = [alias.name for alias in stmt.names]
        else:
            base = stmt.module or ""
            if stmt.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (stmt.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in stmt.names]
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a module: the deepest project module
                target = target.rpartition(".")[0]
            if target and target != name:
                yield target, typing_only


def import_graph(*, runtime_only: bool) -> dict[str, set[str]]:
    modules = project_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, typing_only in imported_modules(name, path, known):
            if not (runtime_only and typing_only):
                graph[name].add(target)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (the import cycles)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle_and_a_function_level_import(tmp_path: Path) -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x.y\n"
        "def f():\n    from x import z\n    from . import w\n"
    )
    found = sorted(imported_modules("x.m", source, {"x", "x.y", "x.z", "x.w", "x.m"}))
    assert found == [("x.w", False), ("x.y", True), ("x.z", False)]


def test_no_import_cycles_at_any_level() -> None:
    cycles = strongly_connected(import_graph(runtime_only=False))
    listed = "\n".join(" <-> ".join(c) for c in cycles)
    assert cycles == [], f"import cycles (move the shared names down a layer):\n{listed}"


def test_imports_run_down_the_layers() -> None:
    wrong = sorted(
        f"{source} imports {target}"
        for source, targets in import_graph(runtime_only=False).items()
        for target in targets
        if target.partition(".")[0] in FORBIDDEN.get(source.partition(".")[0], set())
    )
    assert wrong == []


def test_the_services_layer_does_not_import_the_cli() -> None:
    graph = import_graph(runtime_only=False)
    below_cli = [m for m in graph if m.startswith("agent.") and not m.startswith("agent.cli") and m != "agent.__main__"]
    assert sorted(f"{m} imports {t}" for m in below_cli for t in graph[m] if t.startswith("agent.cli")) == []


def _product_sources() -> dict[str, str]:
    return {
        str(path.relative_to(ROOT)): path.read_text(encoding="utf-8")
        for package in ("agent", "tools", "graphs", "reporting", "workers")
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def test_owner_only_files_are_made_in_one_place() -> None:
    """Reports, manifests, transcripts, locks and state files get their 0600/0700 modes from tools/private_files.py
    (`write_private`, `private_file`, `private_dir`, `owner_only_opener`): no module sets a mode of its own."""
    mode_setting = ("0o600", "0o700", "chmod(", "OWNER_ONLY_FILE", "OWNER_ONLY_DIR", "touch(mode", "mode=0o")
    setting_modes = sorted(
        f"{name} ({word})"
        for name, text in _product_sources().items()
        for word in mode_setting
        if word in text and name != "tools/private_files.py"
    )
    assert setting_modes == []


def test_time_zones_are_named_in_one_place() -> None:
    """An unknown zone is found by tools/timeparse.py's known_zone (ZoneInfo raises two different errors)."""
    catching = sorted(
        name
        for name, text in _product_sources().items()
        if "ZoneInfoNotFoundError" in text and name != "tools/timeparse.py"
    )
    assert catching == []


def test_times_are_read_and_written_in_one_place() -> None:
    """Times are read (`parse_time` for what an upstream or a file holds, `parse_iso` for what a person types) and
    written (`utc_z`, `iso_z`, `clinic_time`) by tools/timeparse.py; the sandbox keeps its own (sandbox/timefmt.py)."""
    own_helpers = ("fromisoformat(", "strptime(", "parsedate", 'strftime("%Y-%m-%d %H:%M %Z")')
    reading = sorted(
        f"{name} ({word})"
        for name, text in _product_sources().items()
        for word in own_helpers
        if word in text and name != "tools/timeparse.py"
    )
    assert reading == []


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def _doc_import_rules() -> dict[str, set[str]]:
    """docs/architecture.md's "Who imports whom" table: package -> the project packages it may import."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Who imports whom", 1)[1].split("\n## ", 1)[0]
    rules: dict[str, set[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`") and cells[0].endswith("/`"):
            allowed = {c.strip() for c in cells[1].split(",")} - {"nothing"}
            rules[cells[0].strip("`/")] = allowed
    return rules


def test_the_architecture_pages_import_rules_are_the_import_graph() -> None:
    rules = _doc_import_rules()
    assert sorted(rules) == sorted(PACKAGES)
    actual: dict[str, set[str]] = {package: set() for package in PACKAGES}
    for source, targets in import_graph(runtime_only=False).items():
        for target in targets:
            if source.partition(".")[0] != target.partition(".")[0]:
                actual[source.partition(".")[0]].add(target.partition(".")[0])
    assert {p: sorted(actual[p] - rules[p]) for p in PACKAGES} == {p: [] for p in PACKAGES}  # imports it does not say
    assert {p: sorted(rules[p] - actual[p]) for p in PACKAGES} == {p: [] for p in PACKAGES}  # rules nothing uses
    assert {p: sorted(rules[p] & FORBIDDEN.get(p, set())) for p in PACKAGES} == {p: [] for p in PACKAGES}


def test_every_path_the_architecture_page_names_exists() -> None:
    import re

    text = ARCHITECTURE.read_text(encoding="utf-8")
    top = "agent|graphs|tools|reporting|workers|sandbox|evals|prompts|tests|docs"
    named = set(re.findall(rf"\b((?:{top})/[\w/.*]*)", text))
    missing = sorted(p for p in named if not any(ROOT.glob(p.rstrip(".").rstrip("/") or ".")))
    assert named and missing == []


def test_the_recordings_worker_holds_one_concern_per_module() -> None:
    """workers/recordings/: what is fetched (media), one file to disk (stream), the bookkeeping (manifest), audio to
    text (transcription) and the orchestration (worker); only the worker ties them together."""
    graph = import_graph(runtime_only=False)
    package = "workers.recordings"
    parts = {m.removeprefix(package + "."): graph[m] for m in graph if m.startswith(package + ".")}
    assert sorted(parts) == ["manifest", "media", "stream", "transcription", "worker"]
    inside = {
        name: sorted(t.removeprefix(package + ".") for t in targets if t.startswith(package))
        for name, targets in parts.items()
    }
    assert inside == {
        "media": [],
        "stream": ["media"],
        "manifest": ["media"],
        "transcription": ["manifest"],
        "worker": ["manifest", "media", "stream", "transcription"],
    }
    for path in (ROOT / "workers").rglob("*.py"):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 600, path


MODULE_LINES_MAX = 600


# Product modules left a little over MODULE_LINES_MAX because they hold one concern (path -> its most lines). The
# sandbox/ (the simulator, not the product) is not held to the rule.
LONG_MODULES_OF_ONE_CONCERN = {
    "graphs/audit.py": 620,  # the audit's state, nodes and builder (its other concerns are graphs/audit_*.py)
}


def test_no_module_of_the_agent_or_the_reports_is_over_600_lines() -> None:
    """A file over ~600 lines holds more than one concern: agent/ (its CLI's command modules included) and reporting/
    are split into modules of one concern each (agent/runs/, reporting/audit_report/, agent/notify/)."""
    long = sorted(
        f"{path.relative_to(ROOT)} ({lines} lines)"
        for package in ("agent", "reporting")
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES_MAX
    )
    assert long == []


def test_no_module_of_the_graphs_the_tools_or_the_workers_is_over_600_lines() -> None:
    """The same rule for graphs/, tools/ and workers/ (issue 26): the triage's calls, one tool call's path, the rate
    limits' header parsing and telemetry's configuration are modules of their own; only the listed modules of one
    concern may be a little longer."""
    long = sorted(
        f"{relative} ({lines} lines)"
        for package in ("graphs", "tools", "workers")
        for path in (ROOT / package).rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines()))
        > LONG_MODULES_OF_ONE_CONCERN.get(relative := path.relative_to(ROOT).as_posix(), MODULE_LINES_MAX)
    )
    assert long == []
    assert all((ROOT / path).is_file() for path in LONG_MODULES_OF_ONE_CONCERN)  # no entry outlives its module


def test_the_runs_the_messages_and_the_report_hold_one_concern_per_module() -> None:
    """agent/runs/: the shared machinery (base) and the results it reads sit below every run, and no run imports
    another; agent/notify/: channels, a message's send, the outbox, then what staff are told; reporting/audit_report/:
    each module imports only those above it (text, view, then the writers), and only `files` ties the writers
    together. Callers import the public names from the package."""
    graph = import_graph(runtime_only=False)

    def inside(package: str) -> dict[str, list[str]]:
        return {
            m.removeprefix(package + "."): sorted(
                t.removeprefix(package + ".") for t in graph[m] if t.startswith(package + ".")
            )
            for m in graph
            if m.startswith(package + ".")
        }

    assert inside("agent.runs") == {
        "results": [],
        "base": ["results"],
        "triage": ["base", "results"],
        "audit": ["base", "results"],
        "ask": ["base"],
        "queue_watch": ["base"],
        "recordings": ["base", "results"],
        "catalog": ["base"],
    }
    assert inside("agent.notify") == {
        "channels": [],
        "sending": ["channels"],
        "outbox": ["channels", "sending"],
        "messages": ["outbox", "sending"],
    }
    assert inside("reporting.audit_report") == {
        "text": [],
        "view": ["text"],
        "markdown": ["text", "view"],
        "html_page": ["text", "view"],
        "schema": [],
        "files": ["html_page", "markdown", "schema", "text", "view"],
    }
