"""The explainers, behind one protocol: a layer's evidence and some of its units in, one
`Explanation` per unit out.

`offline` (compositional formulas over the probe's concepts, no network), `clip` (concept words
matched through an image-text model, `coin_scale.explain.image_text.ClipExplainer`),
`clip-formula` (formulas over the same model's per-image concepts) and one
LLM-agent explainer per registered LLM provider (`coin_scale.llm.providers`) are registered here; every
command takes its `--explainer` choices from `explainer_names()`. An agent explainer needs an
LLM gateway and the model to experiment on, which the driver layer opens
(`coin_scale.sweep.agents.AgentExplainer`); the offline one is `OfflineExplainer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from coin_scale.llm.providers import PROVIDERS

if TYPE_CHECKING:
    from coin_scale.explain.evidence import LayerEvidence
    from coin_scale.explain.explanation import Explanation


class Explainer(Protocol):
    """Explains units of one layer from its evidence over a probe set."""

    name: str
    """The registered name (`ExplainerEntry.name`)."""

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        """One `Explanation` per unit of `units`, in that order; a unit that could not be
        explained is an explanation with status `empty` or `failed`, never an exception."""
        ...


@dataclass(frozen=True, kw_only=True)
class ExplainerEntry:
    """One registered explainer."""

    name: str
    summary: str
    """One line for `--help`."""
    provider: str | None = None
    """The LLM provider whose agents explain the units; None for an explainer without an LLM."""
    image_text: bool = False
    """Reads its concepts from an image-text model (`--clip-model`, `--clip-weights`,
    `--concepts`; `coin_scale.explain.image_text`)."""

    @property
    def uses_llm(self) -> bool:
        return self.provider is not None


_REGISTRY: dict[str, ExplainerEntry] = {}


def register_explainer(entry: ExplainerEntry) -> ExplainerEntry:
    """Add an explainer; its name becomes a `--explainer` choice of every command."""
    if entry.name in _REGISTRY:
        raise ValueError(f"explainer {entry.name!r} is already registered")
    _REGISTRY[entry.name] = entry
    return entry


def explainer_names() -> tuple[str, ...]:
    """Every registered explainer's name, `offline` first."""
    return tuple(_REGISTRY)


def get_explainer(name: str) -> ExplainerEntry:
    """The entry of `name`; `ValueError` naming the choices when there is none."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown explainer {name!r}; available: {', '.join(_REGISTRY)}") from None


def explainer_help() -> str:
    """The choices, one clause each, for a `--explainer` flag's help."""
    return "; ".join(f"{e.name}: {e.summary}" for e in _REGISTRY.values())


register_explainer(
    ExplainerEntry(name="offline", summary="formulas over the probe's concepts, no network")
)
register_explainer(
    ExplainerEntry(
        name="clip",
        image_text=True,
        summary="the word of --concepts whose image-text similarity over the probe best matches "
        "the unit (open_clip, soft-WPMI; any folder of photographs, no labels, no API key)",
    )
)
register_explainer(
    ExplainerEntry(
        name="clip-formula",
        image_text=True,
        summary="AND / OR / AND NOT formulas over the words of --concepts that each probe image "
        "shows by its image-text similarity (open_clip; no labels, no API key)",
    )
)
for _provider in PROVIDERS:
    register_explainer(
        ExplainerEntry(
            name=_provider,
            provider=_provider,
            summary=f"an LLM agent per unit through {_provider}"
            + (
                " (or any OpenAI-compatible server with --base-url)"
                if _provider == "openai"
                else ""
            ),
        )  # fmt: skip
    )
