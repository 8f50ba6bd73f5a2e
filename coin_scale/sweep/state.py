"""`SweepState`: what the sweep's stages hand on to each other, filled in stage by stage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from coin_scale.chain.attribution import UnitContributions
from coin_scale.chain.faithfulness import AblationScore
from coin_scale.chain.graph import Edge
from coin_scale.eval.explanation_scores import UnitScores
from coin_scale.models.activations import SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.models.loading import ModelPayload
from coin_scale.models.module_call import ModelRunner
from coin_scale.models.sae import SparseAutoencoder
from coin_scale.probe import ProbeSet
from coin_scale.storage import Warehouse
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.records import ClassExplanation, UnitFinding

if TYPE_CHECKING:
    from coin_scale.eval.human_ratings import UnitRating
    from coin_scale.explain.image_text import ClipExplainer, ClipFormulaExplainer, LabelScorer
    from coin_scale.explain.llm import PreparedLLM


Reporter = Callable[[ClassExplanation, Path], Path]
"""Writes a sweep's report into a directory and returns its path (`coin_scale.report.write_report`:
the report stands above the sweep, so the caller hands it in)."""


@dataclass(frozen=True, kw_only=True)
class SweepInputs:
    """What is checked and loaded before the clock starts: the run, the LLM (its key found), the
    human ratings, and the model with the layers whose units are explained."""

    config: SweepConfig
    run_id: str
    warehouse: Warehouse
    prepared: PreparedLLM | None
    """The LLM explainer resolved (None: the offline or an image-text explainer)."""
    clip: ClipExplainer | ClipFormulaExplainer | None
    """The image-text explainer, its model and vocabulary loaded (`--explainer clip` or
    `clip-formula`)."""
    labels: LabelScorer | None
    """The image-text model that reads an LLM explainer's labels on the held-out images
    (`--clip-model` / `--clip-weights` with an LLM explainer over a folder probe)."""
    ratings: dict[tuple[str, int], UnitRating] | None
    """Human ratings by (layer, unit) (`--human-ratings`)."""
    model: str
    """The model as the dissections name it (`probe` resolved to its checkpoint)."""
    payload: ModelPayload
    runner: ModelRunner
    """Where the model's work runs (`ReplicaModel`: a replica; the driver holds no model)."""
    chain: list[LayerInfo]
    """The chain's layers, input side first; `[layer]` without `--layers`."""
    sae: SAEUnits | None
    sae_model: SparseAutoencoder | None

    @property
    def layer(self) -> LayerInfo:
        """The layer whose units drive the class."""
        return self.chain[-1]

    @property
    def single_object(self) -> bool:
        """The probe CNN was trained on one large object per scene: it is explained over such
        scenes."""
        return self.payload.arch == "probe_cnn"


@dataclass(kw_only=True)
class SweepState:
    """The inputs and everything the stages have found so far."""

    inputs: SweepInputs
    image_path: str = ""
    pixels: torch.Tensor | None = None
    """The target image, preprocessed: float (1, 3, H, W)."""
    probabilities: torch.Tensor | None = None
    top_classes: tuple[tuple[str, float], ...] = ()
    contributions: UnitContributions | None = None
    notes: list[str] = field(default_factory=list)
    positive: list[UnitFinding] = field(default_factory=list)
    negative: list[UnitFinding] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    nodes: list[UnitFinding] = field(default_factory=list)
    """The chain's units in the layers before the last."""
    probe: ProbeSet | None = None
    dissection_ids: dict[str, str] = field(default_factory=dict)
    faithfulness: list[AblationScore] = field(default_factory=list)
    unit_scores: list[UnitScores] = field(default_factory=list)
    scoring_images: int = 0
    visualizations: list[dict] = field(default_factory=list)

    @property
    def config(self) -> SweepConfig:
        return self.inputs.config

    def attributed(self) -> tuple[torch.Tensor, UnitContributions]:
        """The target's pixels and the units' contributions (after the attribution stage)."""
        if self.pixels is None or self.contributions is None:
            raise RuntimeError("the attribution stage has not run")
        return self.pixels, self.contributions
