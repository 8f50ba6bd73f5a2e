"""The sweep's LLM step: each selected unit explained by an agent that experiments on it.

Exemplars are each unit's strongest images among the evidence's rows (the dissection's dense
activations; over a folder probe, without its held-out images), with ground-truth attributes for a
rendered probe set. The agents' experiments run on the model replica pool (`agent_replicas`):
every agent's `measure` goes through one `MeasureBatcher`, so agents running at once share
forward passes, and `visualize(n)` optimises its images on a replica; the driver holds no copy of
the model for them. Renders and edits go through a pool of render workers (`RenderPool`, the
procedural renderer; a worker lost mid-render is replaced and its batch sent again). The agents' steps and the gateway's
ledger are written as soon as the agents finish (they were paid for), keyed by the run id.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coin_scale.agent import AgentOutcome, ExperimentTools, UnitSubject, exemplars_from_paths
from coin_scale.agent.describe import GatewayDescriber
from coin_scale.agent.generation import ImageGenerator
from coin_scale.agent.loop import StepImage
from coin_scale.agent.masks import with_masks
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import Explanation, from_agent
from coin_scale.explain.llm import PreparedLLM, explain_subjects, prepare_describer
from coin_scale.explain.resume import ExplainCheckpoint, scope_name
from coin_scale.llm.gateway import CallMeta
from coin_scale.models import ModelPayload
from coin_scale.models.activations import Reduction, SAEUnits
from coin_scale.models.layers import LayerInfo
from coin_scale.models.unit_maps import SPATIAL_LAYOUTS, UnitMapsRequest
from coin_scale.probe import ProbeSet
from coin_scale.runtime.agent_images import RenderToolsMaker, agent_image_tools
from coin_scale.runtime.agent_replicas import (  # noqa: F401 (re-exported: the sweep's names)
    MEASURE_BATCH,
    MEASURE_WINDOW_S,
    AgentReplicas,
    ReplicaVisualizer,
    agent_replicas,
)
from coin_scale.runtime.pools import gateway_pool
from coin_scale.storage import Warehouse
from coin_scale.storage.fs import local_dir
from coin_scale.storage.schemas import agent_images, experiments, llm_calls
from coin_scale.sweep.maps import (
    MAPS_BATCH,
    THRESHOLD_IMAGES,
    THRESHOLD_QUANTILE,
    spatial_thresholds,
    threshold_sample,
)

log = logging.getLogger(__name__)

AGENT_EXEMPLARS = 12
"""Exemplars each agent can see (the first message shows `AgentConfig.exemplars_shown`)."""

@dataclass
class AgentLedger:
    """The agents' steps and LLM calls of one run, over several layers: each layer's rows are
    written as soon as its agents finish (they were paid for), together with the earlier ones,
    since a write replaces the run's rows."""

    warehouse: Warehouse
    run_id: str
    steps: list[experiments.Row] = field(default_factory=list)
    calls: list[llm_calls.Row] = field(default_factory=list)
    images: list[agent_images.Row] = field(default_factory=list)

    def add(
        self,
        steps: list[experiments.Row],
        calls: list[llm_calls.Row],
        images: list[agent_images.Row] | None = None,
    ) -> None:
        self.steps += steps
        self.calls += calls
        self.images += images or []
        self.warehouse.write("experiments", experiments.to_arrow(self.steps), key=self.run_id)
        self.warehouse.write("llm_calls", llm_calls.to_arrow(self.calls), key=self.run_id)
        self.warehouse.write("agent_images", agent_images.to_arrow(self.images), key=self.run_id)


@dataclass(frozen=True, kw_only=True)
class AgentRun:
    """What the agents of one run need besides the layer and its units: the resolved LLM, the
    warehouse their rows go to, the run they belong to, the Ray cluster of the gateway actors
    (None: a local Ray) and whether to show the progress bar."""

    prepared: PreparedLLM
    warehouse: str
    run_id: str
    address: str | None = None
    progress: bool = True
    reduction: Reduction = "max"
    """The dissection's spatial reduction: activations the agents measure compare with the
    exemplars' only when reduced the same way."""
    replicas: int | None = None
    """Model replicas measuring for the agents (None: one per GPU, else one using every core)."""
    generator: ImageGenerator = field(default_factory=ImageGenerator)
    """What makes the agents' images (`--image-generator`): the procedural renderer by default;
    with diffusion the agents also get text2image and edits of any image by instruction."""


def explain_with_agents(
    run: AgentRun,
    evidence: LayerEvidence,
    payload: ModelPayload,
    layer: LayerInfo,
    units: list[int],
    *,
    sae: SAEUnits | None = None,
    ledger: AgentLedger | None = None,
) -> dict[int, FinishedUnit]:
    """Each unit's agent outcome (a label or an error, never both) with its calls and the images
    its steps showed the agent; stores `experiments`, `llm_calls` and `agent_images` (through
    `ledger`, which keeps the rows of earlier calls in the same run). With
    `sae` the units are its features: agents measure them through it. The gateway actors are
    started for the units not yet finished by a killed run of the same run id."""
    prepared, run_id = run.prepared, run.run_id
    subjects = _subjects(evidence, payload, layer, units, sae)
    ledger = ledger or AgentLedger(Warehouse(run.warehouse), run_id)
    image_dir = Path(local_dir(run.warehouse, f"agent_images/{run_id}"))
    ckpt = ExplainCheckpoint(ledger.warehouse.fs, run_id, scope_name(
        "agents", evidence.dissection_id, layer.name, prepared.config.provider, prepared.model,
        "sae" if sae else "neuron",
        *((f"held_out={evidence.held_out}",) if evidence.held_out else ()),
    ))  # fmt: skip
    done = load_finished_units(ckpt)
    if done:
        print(f"resuming run {run_id}: {sum(u in done for u in units)}/{len(units)} units already "
              f"explained ({layer.name})", file=sys.stderr, flush=True)  # fmt: skip
    todo = [s for s in subjects if s.unit not in done]
    calls: list[llm_calls.Row] = [c for u in units if u in done for c in done[u].calls]
    describe = prepare_describer(prepared)
    if todo:
        with (
            agent_replicas(
                payload, layer, sae, reduction=run.reduction, address=run.address,
                replicas=run.replicas,
            ) as replicas,
            agent_image_tools(run.generator, address=run.address) as render_tools,
            gateway_pool(prepared, address=run.address) as gateways,
            (
                gateway_pool(describe, address=run.address) if describe else nullcontext()
            ) as describers,
        ):
            describer = _describer(describers, describe, run_id, layer.name)
            todo = masked_subjects(replicas, todo, evidence.probe, seed=0)
            shown: dict[int, list[agent_images.Row]] = {}  # each unit's images, as written

            def finished(subject: UnitSubject, outcome: AgentOutcome, mine: list) -> None:
                shown[subject.unit] = write_step_images(outcome, image_dir, kind=subject.kind)
                save_finished_unit(ckpt, FinishedUnit(subject.unit, outcome, mine, shown[subject.unit]))

            result = explain_subjects(
                prepared, todo, _tool_maker(replicas, sae, render_tools, describer),
                run_id=run_id, gateways=gateways, progress=run.progress, on_outcome=finished,
            )  # fmt: skip
        done |= {
            s.unit: FinishedUnit(s.unit, o, [], shown.get(s.unit, []))
            for s, o in zip(todo, result.outcomes, strict=True)
        }
        calls += result.calls + (describers.ledger() if describers is not None else [])
    outcomes = {u: done[u].outcome for u in units}
    ledger.add(
        [row for u in units for row in outcomes[u].experiments], calls,
        [row for u in units for row in done[u].images],
    )  # fmt: skip
    failed = sum(o.status != "ok" for o in outcomes.values())
    log.info(
        "%d units explained by %s:%s in %d calls, $%.4f; %d failed",
        len(units) - failed, prepared.config.provider, prepared.model, len(calls),
        sum(c.cost_usd for c in calls), failed,
    )  # fmt: skip
    return {u: done[u] for u in units}


class AgentExplainer:
    """The `Explainer` (`coin_scale.explain.registry`) of the LLM explainers: an agent per unit
    that experiments on it on model replicas (through `sae`'s features), its calls through gateway
    actors this opens for the call; `outcomes` keeps every agent's full outcome by unit."""

    def __init__(
        self,
        run: AgentRun,
        payload: ModelPayload,
        layer: LayerInfo,
        *,
        sae: SAEUnits | None = None,
        ledger: AgentLedger | None = None,
    ) -> None:
        self.name = run.prepared.config.provider
        self.run, self.payload, self.layer = run, payload, layer
        self.sae, self.ledger = sae, ledger
        self.outcomes: dict[int, AgentOutcome] = {}
        self.images: dict[int, list[agent_images.Row]] = {}
        """The images each unit's agent was shown, by unit (their thumbnails' rows)."""

    def explain(self, evidence: LayerEvidence, units: Sequence[int]) -> list[Explanation]:
        finished = explain_with_agents(
            self.run, evidence, self.payload, self.layer, list(units), sae=self.sae,
            ledger=self.ledger,
        )  # fmt: skip
        outcomes = {u: f.outcome for u, f in finished.items()}
        self.outcomes |= outcomes
        self.images |= {u: f.images for u, f in finished.items()}
        return [from_agent(u, outcomes[u], self.name) for u in units]


def _subjects(
    evidence: LayerEvidence,
    payload: ModelPayload,
    layer: LayerInfo,
    units: list[int],
    sae: SAEUnits | None,
) -> list[UnitSubject]:
    """Each unit as an agent's subject, with its strongest exemplars among the evidence's rows
    (over a folder probe, never a held-out image)."""
    top = {unit: evidence.top_images(unit, AGENT_EXEMPLARS) for unit in units}
    attributes = evidence.probe.attributes_path
    return [
        UnitSubject(
            model=payload.model_id,
            layer=layer.name,
            unit=unit,
            kind="sae" if sae else "neuron",
            exemplars=exemplars_from_paths(
                top.get(unit, []), attributes_path=attributes, max_side=256
            ),
        )  # fmt: skip
        for unit in units
    ]


def masked_subjects(
    replicas: AgentReplicas, subjects: list[UnitSubject], probe: ProbeSet, *, seed: int
) -> list[UnitSubject]:
    """`subjects` with MAIA's masked exemplars: every unit's spatial map on its exemplars and on
    `THRESHOLD_IMAGES` probe images drawn by `seed`, one pass of the replicas over them; a unit
    fires above the top 1% of its positions on the drawn images (the report's threshold). A layer
    with no spatial extent keeps its plain exemplars."""
    layer = replicas.layer
    if layer.layout not in SPATIAL_LAYOUTS or not subjects:
        return subjects
    sources = sorted({ex.source for s in subjects for ex in s.exemplars if ex.source})
    sample = threshold_sample(probe, THRESHOLD_IMAGES, seed=seed)
    sampled = {path for _, path in sample}
    extra = [p for p in sources if p not in sampled]
    base = max((i for i, _ in sample), default=-1) + 1
    images = [*sample, *((base + k, p) for k, p in enumerate(extra))]
    request = UnitMapsRequest(layer.name, layer.layout, tuple(s.unit for s in subjects))
    batches = [images[k : k + MAPS_BATCH] for k in range(0, len(images), MAPS_BATCH)]
    maps: dict[int, np.ndarray] = {}
    for result in replicas.pool.run_unit_maps(batches, [request]):
        for row, index in enumerate(result.indices):
            maps[int(index)] = result.maps[layer.name][row]
    thresholds = spatial_thresholds(
        {k: {layer.name: m} for k, m in maps.items()}, [k for k, _ in sample], [request],
        THRESHOLD_QUANTILE,
    )  # fmt: skip
    by_path = {path: index for index, path in images}
    crop = replicas.payload.preprocess.crop / replicas.payload.preprocess.resize
    out = []
    for col, subject in enumerate(subjects):
        found = [
            maps[by_path[ex.source]][col] if by_path.get(ex.source) in maps else None
            for ex in subject.exemplars
        ]
        t = thresholds.get((layer.name, subject.unit))
        out.append(with_masks(subject, found, t.value if t is not None else None, crop))
    log.info("masked exemplars: %d units' maps on %d images", len(subjects), len(maps))
    return out


def _describer(
    pool: Any, describe: PreparedLLM | None, run_id: str, layer: str
) -> Callable[[int], GatewayDescriber] | None:
    """Each unit's `describe` / `summarize` on the describe model's gateways, or None (off)."""
    if describe is None:
        return None
    return lambda unit: GatewayDescriber(
        pool.complete, CallMeta(run_id=run_id, layer=layer, unit=unit), model=describe.model
    )


def _tool_maker(
    replicas: AgentReplicas,
    sae: SAEUnits | None,
    render_tools: RenderToolsMaker,
    describer: Callable[[int], GatewayDescriber] | None = None,
) -> Callable[[UnitSubject], ExperimentTools]:
    """A subject's tools: measured and visualized on the replicas (an SAE feature through its
    decoder direction); rendered, edited and (with a diffusion generator) generated on the
    agents' render pool (`render_tools`)."""

    def make_tools(subject: UnitSubject) -> ExperimentTools:
        direction = sae.state["w_dec"][subject.unit].detach().clone() if sae is not None else None
        return ExperimentTools(
            subject, replicas.meter(subject.unit), render_tools(),
            describer=describer(subject.unit) if describer is not None else None,
            visualizer=replicas.visualizer(subject.unit, direction),
        )  # fmt: skip

    return make_tools


@dataclass(frozen=True)
class FinishedUnit:
    """One unit's agent outcome, the ledger rows of its calls and the rows of the images its
    steps showed the agent, as checkpointed."""

    unit: int
    outcome: AgentOutcome
    calls: list[llm_calls.Row]
    images: list[agent_images.Row] = field(default_factory=list)


def _image_path(image_dir: Path, row: experiments.Row, image: StepImage, position: int) -> Path:
    suffix = ".jpg" if image.media_type == "image/jpeg" else ".png"
    name = f"r{image.round}-s{image.step}-{position}-{image.image_id}{suffix}"
    return image_dir / row.layer / row.explainer / f"unit-{row.unit}" / name


def _image_rows(outcome: AgentOutcome, image_dir: Path, *, kind: str) -> list[agent_images.Row]:
    """The `agent_images` rows of a unit's outcome (its files: `write_step_images`)."""
    if not outcome.experiments:
        return []
    first = outcome.experiments[0]
    rows, positions = [], Counter[tuple[int, int]]()
    for image in outcome.images:
        position = positions[(image.round, image.step)]
        positions[(image.round, image.step)] += 1
        rows.append(agent_images.Row(
            run_id=first.run_id, model=first.model, layer=first.layer, unit=first.unit,
            kind=kind, explainer=first.explainer, round=image.round, step=image.step,
            position=position, image_id=image.image_id, activation=image.activation,
            image_path=str(_image_path(image_dir, first, image, position)),
        ))  # fmt: skip
    return rows


def write_step_images(
    outcome: AgentOutcome, image_dir: Path, *, kind: str
) -> list[agent_images.Row]:
    """Write the thumbnails a unit's agent was shown under `image_dir` (as soon as the unit
    finishes, beside its checkpoint) and return their rows."""
    rows = _image_rows(outcome, image_dir, kind=kind)
    for row, image in zip(rows, outcome.images, strict=True):
        path = Path(row.image_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image.data)
    return rows


def save_finished_unit(ckpt: ExplainCheckpoint, done: FinishedUnit) -> None:
    """Checkpoint a unit as soon as its agent finishes: its steps and calls, then its outcome
    (written last: its presence means the unit is done)."""
    name = f"unit-{done.unit}"
    ckpt.put_table(f"{name}-experiments", experiments.to_arrow(done.outcome.experiments))
    ckpt.put_table(f"{name}-calls", llm_calls.to_arrow(done.calls))
    ckpt.put_table(f"{name}-images", agent_images.to_arrow(done.images))
    scalars = {
        k: v for k, v in asdict(done.outcome).items() if k not in ("experiments", "images")
    }
    ckpt.put_json(name, {"unit": done.unit, "outcome": scalars})


def load_finished_units(ckpt: ExplainCheckpoint) -> dict[int, FinishedUnit]:
    """The units a killed run of the same run id, layer and explainer finished, by unit."""
    found = {}
    for name, piece in ckpt.pieces().items():
        scalars = dict(piece["outcome"], evidence=tuple(piece["outcome"]["evidence"]))
        steps = experiments.from_arrow(ckpt.get_table(f"{name}-experiments"))
        outcome = AgentOutcome(**scalars, experiments=steps)
        calls = llm_calls.from_arrow(ckpt.get_table(f"{name}-calls"))
        images = agent_images.from_arrow(ckpt.get_table(f"{name}-images"))
        found[int(piece["unit"])] = FinishedUnit(int(piece["unit"]), outcome, calls, images)
    return found
