"""Provider-neutral chat types: what the agent loop builds and what every provider adapter returns.

The agent never sees a provider's wire format: an adapter (`coin_scale.llm.providers`) turns a
`ChatRequest` into its SDK's call and the SDK's reply into a `ChatResponse`. Both sides are plain
frozen dataclasses, JSON-round-trippable (the request cache stores responses; the request's
canonical form, with images by hash, is the cache key).
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal

from coin_scale.llm import jsontext

Role = Literal["user", "assistant"]

CHARS_PER_TOKEN = 4
"""Rough characters per token, for estimates before a reply reports real usage."""
TOKENS_PER_IMAGE = 258
"""Tokens per image part of at most 512 x 512 px (agents send 128 px images): OpenAI counts 255,
Gemini 258, Anthropic about width x height / 750 (22 for 128 px)."""


@dataclass(frozen=True, kw_only=True)
class ImagePart:
    """An image sent to the model: encoded bytes and their media type.

    A ref part (`digest` set, `data` empty) stands for bytes the receiver already holds under
    that sha256 (`coin_scale.llm.image_store`): requests to a gateway actor carry each image's
    bytes once. Refs are expanded before a provider adapter sees the request.
    """

    data: bytes
    media_type: str = "image/png"
    digest: str = ""
    """sha256 of bytes the receiver holds (a ref part, `data` empty); "" for a full part."""

    def __post_init__(self) -> None:
        if self.digest and self.data:
            raise ValueError("ImagePart: a ref part (digest set) carries no data")

    @property
    def is_ref(self) -> bool:
        return bool(self.digest)

    def as_ref(self) -> ImagePart:
        """This image as a ref part (no bytes), for a receiver that holds them."""
        if self.digest:
            return self
        return ImagePart(data=b"", media_type=self.media_type, digest=self.sha256)

    @functools.cached_property
    def sha256(self) -> str:
        """Hex digest of the bytes (computed once: every round's cache key needs it); a ref
        part's `digest`, so a request's cache key is the same with refs or bytes."""
        return self.digest or hashlib.sha256(self.data).hexdigest()

    @functools.cached_property
    def _base64(self) -> str:
        if self.digest:
            raise ValueError(
                f"ImagePart: ref {self.digest[:12]} has no bytes to encode (not expanded)"
            )
        return base64.b64encode(self.data).decode("ascii")

    def base64(self) -> str:
        """The bytes in base64, encoded once per part (an actor reuses its stored parts, so the
        SDK adapters encode each image once per process); raises on a ref part."""
        return self._base64

    def __getstate__(self) -> dict[str, Any]:
        # The memoized base64 is a third larger than the bytes: it never travels with the part.
        state = dict(self.__dict__)
        state.pop("_base64", None)
        return state

    def to_dict(self) -> dict[str, Any]:
        if self.digest:
            return {"media_type": self.media_type, "digest": self.digest}
        return {"media_type": self.media_type, "data": self.base64()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ImagePart:
        if d.get("digest"):
            return cls(data=b"", media_type=d["media_type"], digest=d["digest"])
        return cls(data=base64.b64decode(d["data"]), media_type=d["media_type"])


@dataclass(frozen=True, kw_only=True)
class ToolCall:
    """A structured tool call the model made.

    `arguments` is the parsed JSON object, or None when the model sent something that is not a
    JSON object; `raw_arguments` always keeps what was sent, so the error can quote it.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "raw_arguments": self.raw_arguments,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(
            id=d["id"],
            name=d["name"],
            arguments=d.get("arguments"),
            raw_arguments=d.get("raw_arguments", ""),
        )


@dataclass(frozen=True, kw_only=True)
class ToolResult:
    """The answer to one tool call: JSON text for the model, optional images, error flag."""

    call_id: str
    name: str
    content: str
    """JSON text (a tool's result, or `{"error": ...}` when `is_error`)."""
    images: tuple[ImagePart, ...] = ()
    is_error: bool = False


@dataclass(frozen=True, kw_only=True)
class Message:
    """One turn. A user turn carries text, images and/or tool results; an assistant turn carries
    text and/or tool calls."""

    role: Role
    text: str = ""
    images: tuple[ImagePart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_results: tuple[ToolResult, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ToolSpec:
    """A tool offered to the model: name, what it does, JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    @functools.cached_property
    def parameters_json(self) -> str:
        """The schema as compact JSON with sorted keys, encoded once per spec (an agent offers
        the same specs every round): the cache key and the request bodies splice it in."""
        return jsontext.encode(self.parameters, sort_keys=True)

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # The encoded schema travels with the spec (to a gateway actor), so it is made once.
        return (_rebuild_tool_spec, (self.name, self.description, self.parameters,
                                     self.parameters_json))  # fmt: skip


def _rebuild_tool_spec(
    name: str, description: str, parameters: dict[str, Any], parameters_json: str
) -> ToolSpec:
    spec = ToolSpec(name=name, description=description, parameters=parameters)
    spec.__dict__["parameters_json"] = parameters_json
    return spec


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """Everything that determines the reply (besides provider and model)."""

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 1024
    temperature: float = 0.0

    def canonical(self) -> dict[str, Any]:
        """JSON-ready for `jsontext.dumps` (the tool schemas as `RawJSON` with sorted keys),
        images replaced by their sha256: the cache key's input (`cache.request_key`)."""

        def message(m: Message) -> dict[str, Any]:
            return {
                "role": m.role,
                "text": m.text,
                "images": [i.sha256 for i in m.images],
                "tool_calls": [c.to_dict() for c in m.tool_calls],
                "tool_results": [
                    {
                        "call_id": r.call_id,
                        "name": r.name,
                        "content": r.content,
                        "images": [i.sha256 for i in r.images],
                        "is_error": r.is_error,
                    }
                    for r in m.tool_results
                ],
            }

        return {
            "system": self.system,
            "messages": [message(m) for m in self.messages],
            "tools": [
                {
                    "name": t.name,
                    "description": t.description,
                    "parameters": jsontext.RawJSON(t.parameters_json),
                }
                for t in self.tools
            ],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }

    def estimate_input_tokens(self, canonical_json: str | None = None) -> int:
        """A rough count for rate limiting and dry runs, before the reply reports real usage;
        `canonical_json` (`cache.canonical_json` of `canonical()`), when the caller has it,
        spares encoding the request again."""
        text = canonical_json or jsontext.dumps(self.canonical())
        images = sum(
            len(m.images) + sum(len(r.images) for r in m.tool_results) for m in self.messages
        )
        return len(text) // CHARS_PER_TOKEN + images * TOKENS_PER_IMAGE


@dataclass(frozen=True, kw_only=True)
class Usage:
    """Tokens the provider billed for one call."""

    input_tokens: int = 0
    """Every input token of the request, cached or not."""
    output_tokens: int = 0
    cached_input_tokens: int = 0
    """Of `input_tokens`: read from the provider's prompt cache (billed at its cached price)."""
    cache_write_tokens: int = 0
    """Of `input_tokens`: written to the prompt cache (Anthropic bills them above the input
    price; the other providers cache for free and report none)."""

    @property
    def total(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def uncached_input_tokens(self) -> int:
        """Input tokens not read from the cache: billed at the full input price (Anthropic's
        cache writes at 1.25x)."""
        return max(0, self.input_tokens - self.cached_input_tokens)


@dataclass(frozen=True, kw_only=True)
class ChatResponse:
    """The model's reply: text, tool calls, usage and why it stopped."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    usage: Usage = field(default_factory=Usage)
    stop_reason: str = ""
    """The provider's own word (`tool_calls`, `tool_use`, `STOP`, `end_turn`, ...)."""
    model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": dataclasses.asdict(self.usage),
            "stop_reason": self.stop_reason,
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ChatResponse:
        return cls(
            text=d["text"],
            tool_calls=tuple(ToolCall.from_dict(c) for c in d["tool_calls"]),
            usage=Usage(**d["usage"]),
            stop_reason=d["stop_reason"],
            model=d["model"],
        )


ErrorKind = Literal[
    "rate_limit",  # 429 that will clear: retried after Retry-After
    "spend_limit",  # 429 for an exhausted quota or budget: not retried
    "server",  # 5xx: retried
    "timeout",  # no reply within the timeout: retried
    "connection",  # could not connect: retried
    "bad_request",  # 400, 404, 422: not retried
    "auth",  # 401, 403: not retried
    "malformed",  # a 200 whose body does not parse as the API's format: retried
]

RETRYABLE: frozenset[str] = frozenset(
    {"rate_limit", "server", "timeout", "connection", "malformed"}
)


class ProviderError(Exception):
    """A failed provider call, classified so the gateway knows whether to retry and when."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{provider}: {kind}{f' (HTTP {status})' if status else ''}: {message}")
        self.kind: ErrorKind = kind
        self.provider = provider
        self.status = status
        self.retry_after = retry_after
        """Seconds the server asked us to wait (Retry-After / retry-after-ms), when it did."""

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword-only arguments do not survive pickling (Ray) without this.
        return (
            _rebuild_provider_error,
            (self.kind, str(self), self.provider, self.status, self.retry_after),
        )


def _rebuild_provider_error(
    kind: ErrorKind, text: str, provider: str, status: int | None, retry_after: float | None
) -> ProviderError:
    err = ProviderError(kind, "", provider=provider, status=status, retry_after=retry_after)
    err.args = (text,)
    return err
