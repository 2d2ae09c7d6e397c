"""The Makefile's quick loop and its timing line, with stand-in tools (nothing is installed or really tested here)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def fake_bin(folder: Path, pytest_exit: int = 0) -> Path:
    """ruff, mypy and pytest that only record how they were called."""
    folder.mkdir()
    log = folder / "calls.log"
    for name, code in (("ruff", 0), ("mypy", 0), ("pytest", pytest_exit)):
        script = folder / name
        script.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\nexit {code}\n', encoding="utf-8")
        script.chmod(0o755)
    return folder


def make(target: str, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    # `-o .venv/.installed`: treat the environment as installed (no uv sync in a test)
    return subprocess.run(
        ["make", "--no-print-directory", "-o", ".venv/.installed", target, f"BIN={bin_dir}"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "MAKEFLAGS": ""},
    )


def test_make_check_runs_lint_types_and_the_fast_tests(tmp_path: Path):
    bin_dir = fake_bin(tmp_path / "bin")
    result = make("check", bin_dir)
    assert result.returncode == 0, result.stdout + result.stderr
    calls = (bin_dir / "calls.log").read_text(encoding="utf-8").splitlines()
    assert [c.strip() for c in calls] == [
        "ruff check .",
        "ruff format --check .",
        "mypy",
        "pytest -q -m not e2e and not slow",
    ]
    assert re.search(r"make check: passed in \d+ min \d+ s", result.stdout)


def test_make_test_says_how_long_it_took_even_when_it_fails(tmp_path: Path):
    bin_dir = fake_bin(tmp_path / "bin", pytest_exit=1)
    result = make("test", bin_dir)
    assert result.returncode != 0
    calls = (bin_dir / "calls.log").read_text(encoding="utf-8").splitlines()
    assert calls[-1] == "pytest "  # the whole suite
    assert re.search(r"make test: FAILED in \d+ min \d+ s", result.stdout)
