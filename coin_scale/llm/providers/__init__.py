"""Provider adapters: each turns a neutral `ChatRequest` into its official SDK's call and the reply
into a `ChatResponse`, raising `ProviderError` (classified) on failure.

The SDKs' own retries are off (`max_retries=0`, no retry options): the gateway retries, so retries
never stack. Every call has a timeout.
"""

from __future__ import annotations

from typing import Protocol

from coin_scale.llm.messages import ChatRequest, ChatResponse

PROVIDERS = ("openai", "anthropic", "gemini")
"""Provider names, as `--explainer` takes them (`openai` also covers any OpenAI-compatible server
through `--base-url`)."""


class ChatClient(Protocol):
    """One provider's client, bound to an API key and an optional base URL."""

    provider: str

    async def complete(self, request: ChatRequest, *, model: str, timeout: float) -> ChatResponse:
        """One chat call; `ProviderError` on any failure (never an SDK exception)."""
        ...


def make_client(provider: str, *, api_key: str, base_url: str | None = None) -> ChatClient:
    """The adapter for `provider` (one of `PROVIDERS`)."""
    if provider == "openai":
        from coin_scale.llm.providers.openai_chat import OpenAIChat

        return OpenAIChat(api_key=api_key, base_url=base_url)
    if provider == "anthropic":
        from coin_scale.llm.providers.anthropic_messages import AnthropicMessages

        return AnthropicMessages(api_key=api_key, base_url=base_url)
    if provider == "gemini":
        from coin_scale.llm.providers.gemini_genai import GeminiGenAI

        return GeminiGenAI(api_key=api_key, base_url=base_url)
    raise ValueError(f"unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}")
