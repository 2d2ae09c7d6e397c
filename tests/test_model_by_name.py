"""COVIU_AGENT_MODEL: a bare name is OpenAI-compatible (the default); LangChain's `provider:model` goes through
`init_chat_model`; a provider whose package is missing is a configuration error (exit 2) naming the extra."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from langchain_openai import ChatOpenAI

from agent.errors import ConfigError
from agent.model import make_model, model_provider
from agent.settings import Settings


def settings(tmp_path: Path, **env: str) -> Settings:
    return Settings(_env_file=None, COVIU_AGENT_STATE=str(tmp_path / "s.sqlite"), **env)  # type: ignore[arg-type]


def test_provider_prefixes_are_langchains_and_ollama_tags_stay_bare() -> None:
    assert model_provider("gpt-4o") == ("openai", "gpt-4o")
    assert model_provider("openai:gpt-4o") == ("openai", "gpt-4o")
    assert model_provider("anthropic:claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert model_provider("qwen2.5:7b") == ("openai", "qwen2.5:7b")  # an Ollama tag through its OpenAI API
    assert model_provider("ollama:qwen2.5:7b") == ("ollama", "qwen2.5:7b")


def test_openai_prefix_is_the_same_chat_openai(tmp_path: Path) -> None:
    model = make_model(settings(tmp_path, OPENAI_API_KEY="sk-x", COVIU_AGENT_MODEL="openai:gpt-4o-mini"))
    assert isinstance(model, ChatOpenAI) and model.model_name == "gpt-4o-mini"
    assert make_model(settings(tmp_path, COVIU_AGENT_MODEL="openai:gpt-4o-mini")) is None  # no key: no model


def test_another_provider_goes_through_init_chat_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[tuple[str, dict[str, object]]] = []

    def init_chat_model(model: str, **kwargs: object) -> str:
        made.append((model, kwargs))
        return "a model"

    monkeypatch.setattr("langchain.chat_models.init_chat_model", init_chat_model)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object())  # the extra is installed
    configured = settings(tmp_path, COVIU_AGENT_MODEL="anthropic:claude-sonnet-4-5")
    assert configured.llm_configured and configured.effective_planner == "llm"  # no OPENAI_API_KEY needed
    assert make_model(configured) == "a model"
    assert made[0][0] == "claude-sonnet-4-5" and made[0][1]["model_provider"] == "anthropic"
    assert made[0][1]["temperature"] == 0


def test_a_missing_provider_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "langchain_anthropic", None)  # as if the extra were not installed
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "langchain_anthropic" else 1)
    with pytest.raises(ConfigError, match=r"coviu-agent\[anthropic\]") as raised:
        make_model(settings(tmp_path, COVIU_AGENT_MODEL="anthropic:claude-sonnet-4-5"))
    assert "COVIU_AGENT_MODEL" in str(raised.value)


def test_the_cli_exits_2_naming_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from agent.cli import app

    monkeypatch.chdir(tmp_path)
    for name in ("OPENAI_API_KEY", "TRUTO_API_KEY", "COVIU_AGENT_PLANNER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COVIU_AGENT_SANDBOX", "1")
    monkeypatch.setenv("COVIU_AGENT_STATE", str(tmp_path / "s.sqlite"))
    monkeypatch.setenv("COVIU_AGENT_MODEL", "anthropic:claude-sonnet-4-5")
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    result = CliRunner().invoke(app, ["ask", "Billable minutes for session S", "--json"])
    assert result.exit_code == 2, result.output
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert "coviu-agent[anthropic]" in payload["error"] and "COVIU_AGENT_MODEL" in payload["error"]
