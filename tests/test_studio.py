"""`make studio` (agent/studio.py): a port that is free (an explicit busy one refused), the URL the server itself
announces, and one working directory per port so two servers never share (or overwrite) state."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent import studio


@pytest.fixture
def busy() -> Iterator[int]:
    """A port held by a listener for the test's duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield int(holder.getsockname()[1])


def test_an_explicit_busy_port_is_refused(busy: int) -> None:
    with pytest.raises(studio.BusyPort, match=f"STUDIO_PORT={busy}: the port is in use"):
        studio.choose_port("127.0.0.1", busy)
    assert studio.main(["127.0.0.1", str(busy)]) == 2  # nothing started


def test_a_busy_default_port_moves_to_the_next_free_one_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    taken = {studio.DEFAULT_PORT, studio.DEFAULT_PORT + 1}
    monkeypatch.setattr(studio, "port_is_free", lambda host, port: port not in taken)
    port, said = studio.choose_port("127.0.0.1", None)
    assert port == studio.DEFAULT_PORT + 2
    assert said == f"port {studio.DEFAULT_PORT} is in use on 127.0.0.1: using {port}"
    monkeypatch.setattr(studio, "port_is_free", lambda host, port: True)
    assert studio.choose_port("127.0.0.1", None) == (studio.DEFAULT_PORT, None)


def test_the_printed_url_is_the_one_the_server_announces() -> None:
    banner = "- \U0001f680 API: \x1b[36mhttp://127.0.0.1:2031\x1b[0m\n"
    assert studio.bound_url(banner) == "http://127.0.0.1:2031"
    assert studio.studio_url("http://127.0.0.1:2031").endswith("?baseUrl=http://127.0.0.1:2031")
    assert studio.bound_url("- \U0001f4da API Docs: http://127.0.0.1:2031/docs") is None


def test_each_port_runs_in_its_own_directory_with_paths_back_to_the_project(tmp_path: Path) -> None:
    first = studio.server_config(tmp_path / "2024")
    second = studio.server_config(tmp_path / "2025")
    assert first.parent != second.parent
    config = json.loads(first.read_text(encoding="utf-8"))
    for entry in config["graphs"].values():
        path = Path(entry["path"] if isinstance(entry, dict) else entry).as_posix().split(":")[0]
        assert Path(path).is_absolute() and Path(path).is_file()
    assert all(Path(d).is_absolute() for d in config["dependencies"])
