"""Provider adapters: each turns a neutral `ChatRequest` into its official SDK's call and the reply
into a `ChatResponse`, raising `ProviderError` (classified) on failure.

The SDKs' own retries are off (`max_retries=0`, no retry options): the gateway retries, so retries
never stack. Every call has a timeout.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from coin_scale.llm.messages import ChatRequest, ChatResponse


@dataclass(frozen=True, kw_only=True)
class ProviderEntry:
    """One registered LLM provider: its name (as `--explainer` takes it) and its adapter."""

    name: str
    client: Callable[..., ChatClient]
    """`client(api_key=..., base_url=...)`: the adapter bound to a key (imports its SDK)."""


def _openai(**kwargs: Any) -> ChatClient:
    from coin_scale.llm.providers.openai_chat import OpenAIChat

    return OpenAIChat(**kwargs)


def _anthropic(**kwargs: Any) -> ChatClient:
    from coin_scale.llm.providers.anthropic_messages import AnthropicMessages

    return AnthropicMessages(**kwargs)


def _gemini(**kwargs: Any) -> ChatClient:
    from coin_scale.llm.providers.gemini_genai import GeminiGenAI

    return GeminiGenAI(**kwargs)


_REGISTRY: dict[str, ProviderEntry] = {
    entry.name: entry
    for entry in (
        ProviderEntry(name="openai", client=_openai),
        ProviderEntry(name="anthropic", client=_anthropic),
        ProviderEntry(name="gemini", client=_gemini),
    )
}

PROVIDERS: tuple[str, ...] = tuple(_REGISTRY)
"""Provider names, as `--explainer` takes them (`openai` also covers any OpenAI-compatible server
through `--base-url`)."""


def get_provider(name: str) -> ProviderEntry:
    """The entry of `name`; `ValueError` naming the choices when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown provider {name!r}; expected one of {', '.join(PROVIDERS)}"
        ) from None


@dataclass(frozen=True, kw_only=True)
class CallOptions:
    """How a request is sent, beyond its content."""

    overrides: tuple[tuple[str, Any], ...] = ()
    """Request parameters (the SDK's names) set on the call; a None value removes the
    parameter (configs/llm.yaml `request_overrides`)."""
    prompt_caching: bool = True
    """Mark the unchanging prefix for the provider's prompt cache, as each provider documents."""


NO_OPTIONS = CallOptions()


def apply_overrides(params: dict[str, Any], options: CallOptions) -> dict[str, Any]:
    """`params` with the overrides set (None: removed)."""
    for name, value in options.overrides:
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    return params


class ChatClient(Protocol):
    """One provider's client, bound to an API key and an optional base URL."""

    provider: str

    async def complete(
        self,
        request: ChatRequest,
        *,
        model: str,
        timeout: float,
        options: CallOptions = NO_OPTIONS,
    ) -> ChatResponse:
        """One chat call; `ProviderError` on any failure (never an SDK exception)."""
        ...


def make_client(provider: str, *, api_key: str, base_url: str | None = None) -> ChatClient:
    """The adapter for `provider` (one of `PROVIDERS`)."""
    return get_provider(provider).client(api_key=api_key, base_url=base_url)
