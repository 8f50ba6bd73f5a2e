"""The sweep's held-out scores over a folder probe: the explainer reads the probe minus its
held-out images (`coin_scale.explain.evidence.held_out_split`), and each explanation is then
scored on them (`coin_scale.eval.heldout_predictors`), stored in `scores` (test `heldout`)."""

from __future__ import annotations

from collections.abc import Sequence

from coin_scale.errors import UserError
from coin_scale.eval.heldout import HeldOutScore, score_rows
from coin_scale.eval.heldout_predictors import held_out_sources, score_held_out
from coin_scale.explain.evidence import EvidenceSplit, LayerEvidence, held_out_split
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.image_text import LabelScorer, label_scorer
from coin_scale.explain.registry import Explainer
from coin_scale.runtime.pools import image_text_opener
from coin_scale.sweep.config import RENDERED, SweepConfig
from coin_scale.sweep.records import ClassExplanation


def prepare_labels(config: SweepConfig) -> LabelScorer | None:
    """The image-text model that reads an LLM explainer's labels on held-out images, loaded now
    (a bad one is a one-line `UserError`): set when `--clip-model` / `--clip-weights` go with an
    LLM explainer over a folder probe; None otherwise."""
    if config.llm is None or config.clip is None or config.scoring.held_out <= 0.0:
        return None
    if config.probe.probe in (None, RENDERED):
        return None
    try:
        return label_scorer(config.clip, image_text_opener(address=config.run.address))
    except ValueError as err:
        raise UserError(
            f"--clip-weights (to score the LLM's labels on held-out images): {err}"
        ) from None


def explained_rows(
    config: SweepConfig, evidence: LayerEvidence, notes: list[str]
) -> tuple[LayerEvidence, EvidenceSplit | None]:
    """(what the explainer reads, the held-out split or None); a probe too small to hold images
    out adds its note once."""
    split, why = held_out_split(evidence, config.scoring.held_out)
    if why and why not in notes:
        notes.append(why)
    return (split.explain if split else evidence), split


def held_out_scores(
    split: EvidenceSplit | None,
    explanations: Sequence[Explanation],
    explainer: Explainer,
    labels: LabelScorer | None,
) -> dict[int, HeldOutScore]:
    """Each ok explanation's held-out score by unit (none without a split)."""
    if split is None:
        return {}
    return score_held_out(explanations, split, held_out_sources(explainer, labels))


def heldout_rows(e: ClassExplanation) -> list[dict[str, object]]:
    """The `scores` rows (test `heldout`) of every explained unit of the sweep, each once."""
    seen: set[tuple[str, int]] = set()
    rows: list[dict[str, object]] = []
    for f in (*e.positive, *e.negative, *e.chain_nodes):
        if f.heldout is None or (f.layer, f.unit) in seen:
            continue
        seen.add((f.layer, f.unit))
        kind = e.unit_kind if f.layer == e.layer else "neuron"
        rows += score_rows({f.unit: f.heldout}, run_id=e.run_id, layer=f.layer, kind=kind)
    return rows
