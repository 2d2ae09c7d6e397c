"""The chat model factory: COVIU_AGENT_MODEL names the model.

- A bare name (`gpt-4o`, `qwen2.5:7b`, `llama3.1:8b`): langchain-openai's ChatOpenAI over the Chat Completions API,
  so any OpenAI-compatible server works through OPENAI_BASE_URL (vLLM, llama.cpp, Ollama, LiteLLM) with
  OPENAI_API_KEY.
- LangChain's `provider:model` form (`openai:gpt-4o`, `anthropic:claude-sonnet-4-5`, `ollama:qwen2.5:7b`):
  LangChain's `init_chat_model`. `openai:` is the same ChatOpenAI as a bare name; another provider reads its own
  key from its usual variable (ANTHROPIC_API_KEY, ...) and needs its package, an optional extra
  (`pip install 'coviu-agent[anthropic]'`); a missing one is a configuration error (exit 2) naming the extra.

Only a prefix that is one of LangChain's providers is a provider: an Ollama tag such as `qwen2.5:7b` stays a
bare name. The graphs retry the model's 429s and 5xx themselves (graphs/planning.py `invoke_model`: the run's wait
budget, the injected clock), so the SDKs' own retries are off.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from agent.errors import ConfigError

if TYPE_CHECKING:  # langchain_core is heavy: imported where a model is made, not by `--help` or `tools`
    from langchain_core.language_models import BaseChatModel

    from agent.settings import Settings

MODEL_TIMEOUT_SECONDS = 60.0
MODEL_MAX_RETRIES = 0  # retried by graphs/planning.py invoke_model, within the run's wait budget
OPENAI = "openai"
# the providers this project ships an extra for (pyproject's optional-dependencies); others name their package
EXTRAS = {"anthropic": "anthropic", "ollama": "ollama"}


def _langchain_providers() -> dict[str, str]:
    """LangChain's providers for `init_chat_model`, each with the module it needs (read only when a name has a
    colon: importing langchain.chat_models costs time that `--help` should not pay)."""
    from langchain.chat_models import base  # the registry is private; a fallback keeps the common ones working

    registry = getattr(base, "_BUILTIN_PROVIDERS", None)
    if isinstance(registry, dict):
        return {name: str(entry[0]).split(".")[0] for name, entry in registry.items()}
    return {"openai": "langchain_openai", "anthropic": "langchain_anthropic", "ollama": "langchain_ollama"}


def model_provider(model: str) -> tuple[str, str]:
    """(provider, model name): `openai` for a bare name, else the LangChain provider its prefix names."""
    prefix, sep, name = model.partition(":")
    if not sep or prefix not in _langchain_providers():
        return OPENAI, model
    return prefix, name


def uses_openai_key(model: str) -> bool:
    """Whether the model is reached with OPENAI_API_KEY (a bare name or `openai:`); other providers read their own."""
    return ":" not in model or model_provider(model)[0] == OPENAI


def make_model(settings: Settings) -> BaseChatModel | None:
    """The configured model; None when an OpenAI-compatible model is named and no OPENAI_API_KEY is set."""
    provider, name = model_provider(settings.model)
    if provider == OPENAI:
        if settings.openai_api_key is None:
            return None
        from langchain_openai import ChatOpenAI

        return ChatOpenAI(
            model=name,
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=MODEL_TIMEOUT_SECONDS,
            max_retries=MODEL_MAX_RETRIES,
            temperature=0,
            use_responses_api=False,
        )
    module = _langchain_providers()[provider]
    if importlib.util.find_spec(module) is None:
        extra = EXTRAS.get(provider)
        how = (
            f"install the extra: pip install 'coviu-agent[{extra}]' (or uv sync --extra {extra})"
            if extra
            else f"install its package: pip install {module.replace('_', '-')}"
        )
        raise ConfigError(f"COVIU_AGENT_MODEL={settings.model}: the {provider} provider needs {module}; {how}")
    from langchain.chat_models import init_chat_model

    try:
        return init_chat_model(
            name,
            model_provider=provider,
            temperature=0,
            timeout=MODEL_TIMEOUT_SECONDS,
            max_retries=MODEL_MAX_RETRIES,
        )
    except (ValueError, TypeError) as exc:  # e.g. the provider's key is missing: say which setting, not the value
        raise ConfigError(
            f"COVIU_AGENT_MODEL={settings.model}: the {provider} model could not be made ({exc})"
        ) from None
