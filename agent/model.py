"""The chat model factory: langchain-openai's ChatOpenAI over the Chat Completions API.

Any OpenAI-compatible server works through OPENAI_BASE_URL. The graphs retry the model's 429s and 5xx themselves
(graphs/planning.py `invoke_model`: the run's wait budget, the injected clock), so the SDK's own retries are off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # langchain_core is heavy: imported where a model is made, not by `--help` or `tools`
    from langchain_core.language_models import BaseChatModel

    from agent.settings import Settings

MODEL_TIMEOUT_SECONDS = 60.0
MODEL_MAX_RETRIES = 0  # retried by graphs/planning.py invoke_model, within the run's wait budget


def make_model(settings: Settings) -> BaseChatModel | None:
    """The configured model, or None when no OPENAI_API_KEY is set."""
    if settings.openai_api_key is None:
        return None
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=settings.model,
        api_key=settings.openai_api_key,
        base_url=settings.openai_base_url,
        timeout=MODEL_TIMEOUT_SECONDS,
        max_retries=MODEL_MAX_RETRIES,
        temperature=0,
        use_responses_api=False,
    )
