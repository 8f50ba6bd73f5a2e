"""Every unit of a dissected layer explained at once (`coin-scale dissect --explainer offline` or
`clip`): an explainer over the dissection's dense activations, one `explanations` row per unit.
`LayerExplanations` is also what the LLM agents' whole-layer run returns
(`coin_scale.sweep.whole_layer_agents`)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import Explanation, explanation_rows
from coin_scale.explain.offline import OfflineExplainer, OfflineExplainerConfig
from coin_scale.explain.registry import Explainer
from coin_scale.explain.resume import ExplainCheckpoint, clear_run, scope_name
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec

CHUNK_UNITS = 128
"""Units explained (and checkpointed) at a time."""


@dataclass(frozen=True)
class LayerExplanations:
    """A layer's explanations and how they went."""

    run_id: str
    explanations: tuple[Explanation, ...]
    cost_usd: float = 0.0
    """Dollars the LLM calls cost (0 offline)."""
    tokens: int = 0
    """LLM tokens, input and output (0 offline)."""
    selected: bool = False
    """Only the units chosen with `--select` were explained, not the whole layer."""

    @property
    def statuses(self) -> Counter[str]:
        """Units per status (`ok`, `empty`, `failed`)."""
        return Counter(e.status for e in self.explanations)

    @property
    def reasons(self) -> Counter[str]:
        """Units per reason of the explanations that are not ok."""
        return Counter(e.reason for e in self.explanations if e.reason)

    @property
    def mean_iou(self) -> float:
        ok = [e.iou for e in self.explanations if e.ok and e.iou is not None]
        return sum(ok) / len(ok) if ok else 0.0

    def best(self, n: int) -> list[Explanation]:
        ok = [e for e in self.explanations if e.ok and e.iou is not None]
        return sorted(ok, key=lambda e: (-(e.iou or 0.0), e.unit))[:n]


def explain_whole_layer(
    evidence: LayerEvidence,
    warehouse: Warehouse,
    *,
    run_id: str,
    model: str,
    layer: str,
    kind: str,
    config: OfflineExplainerConfig | None = None,
    chunk: int = CHUNK_UNITS,
    units: Sequence[int] | None = None,
    explainer: Explainer | None = None,
) -> LayerExplanations:
    """Explain every unit of `evidence` (or only `units`) and store the rows under `run_id`
    (replacing a rerun's).

    Units are explained `chunk` at a time, each chunk checkpointed, so a rerun of a killed run
    explains only the units not yet done (the explainer treats every unit on its own, so the
    result is the same)."""
    if explainer is None:
        explainer = OfflineExplainer(config)
    else:  # explained in one piece: its units are matched against the whole layer at once
        chunk = max(1, int(evidence.activations.shape[1]))
    n_units = int(evidence.activations.shape[1])
    settings = repr(getattr(explainer, "config", None))
    held = (f"held_out={evidence.held_out}",) if evidence.held_out else ()  # other rows, new scope
    ckpt = ExplainCheckpoint(
        warehouse.fs, run_id, scope_name(explainer.name, evidence.dissection_id, settings, *held)
    )
    done = {e.unit: e for piece in ckpt.pieces().values() for e in map(_from_json, piece)}
    selected = units is not None
    wanted = list(units) if units is not None else list(range(n_units))
    if done:
        print(f"resuming run {run_id}: {sum(u in done for u in wanted)}/{len(wanted)} units "
              "already explained", file=sys.stderr, flush=True)  # fmt: skip
    missing = [u for u in wanted if u not in done]
    for start in range(0, len(missing), chunk):
        piece = missing[start : start + chunk]
        explained = explainer.explain(evidence, piece)
        ckpt.put_json(f"units-{piece[0]:07d}", [asdict(e) for e in explained])
        done.update((e.unit, e) for e in explained)
    everything = tuple(done[u] for u in wanted)
    rows = explanation_rows(
        everything, run_id=run_id, model=model, layer=layer, kind=kind,
        dissection_id=evidence.dissection_id,
    )  # fmt: skip
    warehouse.write("explanations", get_spec("explanations").from_dicts(rows), key=run_id)
    clear_run(warehouse.fs, run_id)
    return LayerExplanations(run_id=run_id, explanations=everything, selected=selected)


def _from_json(value: dict[str, Any]) -> Explanation:
    return Explanation(**value)
