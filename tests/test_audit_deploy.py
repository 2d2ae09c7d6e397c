"""The LangGraph Server deployment: `langgraph dockerfile` turns langgraph.json into a valid Dockerfile (no Docker
daemon needed), naming every graph at a path that exists in the image."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = {"FROM", "RUN", "ENV", "ADD", "COPY", "WORKDIR", "ARG", "LABEL", "USER", "EXPOSE", "ENTRYPOINT", "CMD"}


def test_langgraph_dockerfile_is_valid(tmp_path: Path) -> None:
    cli = shutil.which("langgraph", path=str(Path(sys.executable).parent))
    if cli is None:
        pytest.skip("langgraph-cli is not installed (uv sync --group dev)")
    target = tmp_path / "Dockerfile"
    done = subprocess.run(
        [cli, "dockerfile", "-c", str(ROOT / "langgraph.json"), str(target)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in target.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("FROM langchain/langgraph-api:")
    assert {line.split()[0] for line in lines} <= INSTRUCTIONS, "a line that is not a Dockerfile instruction"
    graphs_env = next(line for line in lines if line.startswith("ENV LANGSERVE_GRAPHS="))
    graphs = json.loads(graphs_env.split("=", 1)[1].strip("'"))
    declared = json.loads((ROOT / "langgraph.json").read_text())["graphs"]
    assert set(graphs) == set(declared) >= {"triage", "audit", "assistant"}
    for spec in graphs.values():
        path, _, attribute = spec["path"].partition(":")
        prefix = f"/deps/{ROOT.name}/"  # the checkout's folder, whatever the clone is called
        assert path.startswith(prefix) and attribute
        assert (ROOT / path.removeprefix(prefix)).is_file(), path
