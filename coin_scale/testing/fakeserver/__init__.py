"""Fake provider servers: real HTTP servers on 127.0.0.1 that speak the OpenAI, Anthropic and
Gemini wire formats closely enough for their official SDKs, answer with a scripted `Policy`, and
inject faults (latency, 429 with Retry-After, 5xx, malformed bodies, spend limits, an RPM limit).

`POLICIES` names the policies `python -m coin_scale.testing.fakeserver --policy NAME` can serve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from coin_scale.testing import agent_policies
from coin_scale.testing.fakeserver.faults import Faults
from coin_scale.testing.fakeserver.server import FakeProviderServer, RequestRecord, max_in_window
from coin_scale.testing.policy import (
    Action,
    CallTool,
    ConversationView,
    Policy,
    Reply,
    Scripted,
    SeenToolResult,
)

FINISH_LABEL = "fake label"
"""The label the `finish` policy gives every unit."""


@dataclass(frozen=True)
class FinishPolicy:
    """Calls the `finish` tool at once with a fixed label when it is offered, else replies text."""

    label: str = FINISH_LABEL
    description: str = "A label from the fake provider server."

    def __call__(self, view: ConversationView) -> Action:
        if "finish" in view.tools:
            arguments = {
                "label": self.label,
                "description": self.description,
                "confidence": 0.5,
                "evidence": [],
            }
            return CallTool(name="finish", arguments=arguments)
        return Reply(text=f"{self.label}: {self.description}")


@dataclass(frozen=True)
class ReplyPolicy:
    """Always answers with the same text (no tool call)."""

    text: str = "A reply from the fake provider server."

    def __call__(self, view: ConversationView) -> Action:
        return Reply(text=self.text)


POLICIES: dict[str, Callable[[], Policy]] = {
    "finish": FinishPolicy,
    "reply": ReplyPolicy,
    "experimenter": agent_policies.ExperimenterPolicy,
    "photo-experimenter": agent_policies.PhotoExperimenter,
    "never-finishes": agent_policies.NeverFinishes,
    "text-answer": agent_policies.TextAnswer,
    "garbage": agent_policies.Garbage,
}
"""Policies by name, each a factory (register more with `POLICIES[name] = factory`)."""

__all__ = [
    "POLICIES",
    "Action",
    "CallTool",
    "ConversationView",
    "FakeProviderServer",
    "Faults",
    "FinishPolicy",
    "Policy",
    "Reply",
    "ReplyPolicy",
    "RequestRecord",
    "Scripted",
    "SeenToolResult",
    "max_in_window",
]
