"""`Explanation`: what any explainer says about one unit, in one status vocabulary, and the
`explanations` table rows made from it.

Every explainer (the offline formula search, an LLM agent per unit) returns one `Explanation` per
unit. Its `status` is one of `STATUSES`:

- `ok`: the unit has a label (and, for the offline explainer, a formula and its IoU);
- `empty`: there was nothing to explain or nothing matched; `reason` says which
  (`constant`, `empty_mask`, `no_overlap`, `no_concepts`);
- `failed`: the explainer could not answer; `reason` says how (`parse_failure`, `agent_error`,
  `no_label`) and `error` holds the message.

A unit that is not `ok` never carries a label, so it cannot be mistaken for a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from coin_scale.agent import AgentOutcome

Status = Literal["ok", "empty", "failed"]
STATUSES: tuple[Status, ...] = ("ok", "empty", "failed")

EMPTY_REASONS = {
    "constant": "the unit's activation is the same on every probe image",
    "empty_mask": "no probe image is above the unit's threshold (ties at its top activation)",
    "no_overlap": "no concept of the probe shares an image with the unit's mask",
    "no_concepts": "no concept of the vocabulary tells the probe images apart (clip-formula)",
}
"""Why an explanation is `empty`."""
FAILED_REASONS = {
    "parse_failure": "the agent's last answer did not parse",
    "agent_error": "the agent stopped on an error (budget, rounds, the provider)",
    "no_label": "the agent finished without a label",
}
"""Why an explanation is `failed`."""


@dataclass(frozen=True, kw_only=True)
class Explanation:
    """One unit's explanation, from any explainer."""

    unit: int
    """Index of the unit in its layer (or SAE)."""
    explainer: str = "offline"
    """The registered explainer that made it (`coin_scale.explain.registry`)."""
    status: Status = "ok"
    """`ok`, `empty` or `failed` (see the module's doc)."""
    reason: str | None = None
    """Why the status is not `ok` (a key of `EMPTY_REASONS` or `FAILED_REASONS`); None when ok."""
    label: str = ""
    """Short label in words (the formula in words for the offline explainer); "" unless ok."""
    description: str = ""
    """One or two sentences of evidence, or why nothing was found."""
    formula: str = ""
    """Machine form over probe concepts, e.g. `(shape=star AND color=red)`; "" when none."""
    iou: float | None = None
    """IoU of the formula's probe images with the unit's mask (offline; an LLM label read back
    to a formula); None when there is no formula."""
    confidence: float | None = None
    """An LLM agent's own confidence in its label, 0..1."""
    match: float | None = None
    """The label's soft-WPMI with the unit over the probe (the image-text explainer; nats)."""
    mask_size: int | None = None
    """Probe images in the unit's mask (activation above `threshold`), where one was drawn."""
    threshold: float | None = None
    """The activation above which an image is in the unit's mask."""
    error: str | None = None
    """The message of a failed explanation."""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status: expected one of {STATUSES}; got {self.status!r}")
        if self.status == "ok" and self.reason is not None:
            raise ValueError(f"an ok explanation has no reason; got {self.reason!r}")
        if self.status != "ok" and (self.reason is None or self.label):
            raise ValueError(
                f"a {self.status} explanation needs a reason and no label; got reason "
                f"{self.reason!r}, label {self.label!r}"
            )

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def score(self) -> tuple[float | None, str | None]:
        """The explainer's own score and its name, as the table stores them."""
        if not self.ok:
            return None, None
        if self.iou is not None:
            return self.iou, "iou"
        if self.confidence is not None:
            return self.confidence, "confidence"
        if self.match is not None:
            return self.match, "soft_wpmi"
        return None, None


def from_agent(unit: int, outcome: AgentOutcome, explainer: str) -> Explanation:
    """An LLM agent's outcome as an `Explanation` (its label only when it gave a valid one)."""
    if outcome.status == "ok" and outcome.label:
        return Explanation(
            unit=unit, explainer=explainer, label=outcome.label,
            description=outcome.description or "", confidence=outcome.confidence,
        )  # fmt: skip
    reason = (
        "no_label" if outcome.status == "ok"
        else "parse_failure" if outcome.status == "parse_failure"
        else "agent_error"
    )  # fmt: skip
    return Explanation(
        unit=unit, explainer=explainer, status="failed", reason=reason,
        error=outcome.error or FAILED_REASONS[reason],
    )  # fmt: skip


def explanation_rows(
    explanations: Sequence[Explanation],
    *,
    run_id: str,
    model: str,
    layer: str,
    kind: str,
    dissection_id: str | None,
) -> list[dict[str, Any]]:
    """The `explanations` table rows of one layer's explanations."""
    rows = []
    for e in explanations:
        score, score_name = e.score()
        rows.append({
            "run_id": run_id, "model": model, "layer": layer, "unit": e.unit, "kind": kind,
            "explainer": e.explainer, "status": e.status, "reason": e.reason,
            "label": e.label or None, "description": e.description or None,
            "formula": e.formula or None, "score": score, "score_name": score_name,
            "error": e.error, "dissection_id": dissection_id,
        })  # fmt: skip
    return rows
