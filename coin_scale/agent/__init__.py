"""The LLM agent that explains one unit by experiments: exemplars, renders, controlled edits,
measured activations, a final label. Pure core: no Ray, no HTTP (the `chat` callable is given)."""

from coin_scale.agent.budget import Budget, SweepBudget
from coin_scale.agent.loop import (
    AgentConfig,
    AgentOutcome,
    CallContext,
    Chat,
    ChatResult,
    explain_unit,
    parse_final_text,
)
from coin_scale.agent.subject import (
    ExemplarImage,
    TorchUnitMeter,
    UnitMeter,
    UnitSubject,
    exemplars_from_paths,
)
from coin_scale.agent.tools import Describer, ExperimentTools, FinishAnswer, ToolOutcome

__all__ = [
    "AgentConfig",
    "AgentOutcome",
    "Budget",
    "CallContext",
    "Chat",
    "ChatResult",
    "Describer",
    "ExemplarImage",
    "ExperimentTools",
    "FinishAnswer",
    "SweepBudget",
    "ToolOutcome",
    "TorchUnitMeter",
    "UnitMeter",
    "UnitSubject",
    "exemplars_from_paths",
    "explain_unit",
    "parse_final_text",
]
