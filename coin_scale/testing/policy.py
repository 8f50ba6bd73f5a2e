"""What a stand-in for the LLM answers: a policy looks at the conversation (provider-neutral) and
returns the next action, which a fake provider server encodes in its API's wire format (or
`chat.policy_chat` hands to the agent loop in process).

Policies stand in for the LLM in tests and benchmarks; they are scripted, deterministic Python.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, kw_only=True)
class SeenToolResult:
    """A tool result the client sent back, as the server parsed it from the wire."""

    name: str
    """The tool's name (for OpenAI, recovered from the matching assistant tool call)."""
    content: str
    """The result text (JSON for coin-scale's tools)."""
    is_error: bool = False
    images: int = 0
    """Image parts that came with it."""

    def json(self) -> Any:
        """`content` parsed as JSON (None if it is not JSON)."""
        try:
            return json.loads(self.content)
        except ValueError:
            return None


@dataclass(frozen=True, kw_only=True)
class ConversationView:
    """The request as a policy sees it."""

    provider: str
    model: str
    system: str
    user_texts: tuple[str, ...]
    """Every plain-text user part, in order."""
    tool_results: tuple[SeenToolResult, ...]
    """Every tool result, in order."""
    rounds: int
    """Assistant turns already in the conversation."""
    tools: tuple[str, ...]
    """Names of the tools offered."""
    images: int = 0
    """Image parts in the whole request."""


@dataclass(frozen=True, kw_only=True)
class CallTool:
    """Answer with one tool call. `raw_arguments`, when given, is sent verbatim instead of the
    JSON of `arguments` (to inject malformed arguments)."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw_arguments: str | None = None
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Reply:
    """Answer with plain text and no tool call."""

    text: str


Action = CallTool | Reply


class Policy(Protocol):
    """Decides the next action from the conversation so far."""

    def __call__(self, view: ConversationView) -> Action: ...


@dataclass(frozen=True)
class Scripted:
    """Plays `actions` in order, one per round; past the end it repeats the last one."""

    actions: tuple[Action, ...]

    def __call__(self, view: ConversationView) -> Action:
        return self.actions[min(view.rounds, len(self.actions) - 1)]
