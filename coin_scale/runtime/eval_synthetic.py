"""`coin-scale eval synthetic`: label accuracy of an explainer on synthetic units of a probe set.

Probe set -> concepts -> synthetic units (spec file or random) -> their activations -> the
explainer -> one `UnitScore` per unit -> a `KindSummary` per kind and overall. The activations
come either straight from the probe's ground-truth concepts (`through` 'truth', the default) or
from a model that computes the units from pixels (`through` 'model': the attribute net and
`coin_scale.models.synthetic_model`), dissected on Ray like any layer (`dissect --layer units`). LLM explainers (`openai`,
`anthropic`, `gemini`) run an agent per unit through the model and their labels are read back to
formulas by the matcher (`coin_scale.eval.llm_units`).

A driver: it dissects through `coin_scale.runtime.dissect` and starts the LLM gateway actors
(`coin_scale.runtime.pools.gateway_pool`) for the agents; the stages it calls never start Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import torch

from coin_scale.agent.generation import ImageGenerator
from coin_scale.concepts.formula import Formula, Leaf, parse_text
from coin_scale.concepts.matrix import ConceptMatrix
from coin_scale.concepts.synthetic import (
    DEFAULT_COVERAGE,
    DEFAULT_NOISE,
    FORMULA_KINDS,
    FormulaKind,
    SyntheticUnit,
    load_spec,
    random_units,
    synthetic_activations,
)
from coin_scale.eval.metrics import KindSummary, UnitScore, score_unit, summarize
from coin_scale.explain.evidence import LayerEvidence
from coin_scale.explain.explanation import Explanation
from coin_scale.explain.offline import OfflineExplainer, OfflineExplainerConfig
from coin_scale.explain.registry import Explainer, get_explainer
from coin_scale.models.loading import ModelPayload
from coin_scale.probe import scan_probe
from coin_scale.probe.rendered import PROBE_SIZE

if TYPE_CHECKING:
    from coin_scale.explain.llm import LLMExplainerConfig

log = logging.getLogger(__name__)

RENDERED = "rendered"
"""`probe`: the cached rendered probe set (`coin_scale.probe.rendered.rendered_probe`)."""

Through = Literal["truth", "model"]
THROUGH: tuple[Through, ...] = get_args(Through)
"""Where the units' activations come from: `truth` (the probe's attributes) or `model`."""

MODEL_COVERAGE = (0.4, 1.4)
"""`coverage` of random formulas with `through` 'model' when `coverage` is left at its default:
in scenes of one large object the most common concepts are the lights (1/3 each), textures and
backgrounds (1/5), so an AND of two attributes covers at most 1/15 of the images, below the
default window's 0.6 x 15% (9%)."""

MODEL_DISSECT_QUANTILE = 0.99
"""The dissection's own threshold quantile (unit_stats); the explainer uses `quantile`."""


@dataclass(frozen=True, kw_only=True)
class SyntheticEvalConfig:
    """What `coin-scale eval synthetic` measures."""

    n: int = 100
    """Random units (ignored with `spec`)."""
    seed: int = 0
    """Seed of the random formulas and of the activation noise."""
    spec: str | None = None
    """YAML spec file of the units (see `coin_scale.concepts.synthetic.parse_spec`); None: random."""
    kinds: tuple[FormulaKind, ...] = FORMULA_KINDS
    """Kinds of random unit, in equal shares."""
    noise: float = DEFAULT_NOISE
    """Standard deviation of the noise on the 0/1 formula indicator (spec units may override)."""
    probe: str = RENDERED
    """`rendered` (rendered once at `PROBE_SIZE` px and cached) or a probe set directory."""
    probe_images: int = 1000
    """Images of the rendered probe set."""
    explainer: str = "offline"
    """A registered explainer (`coin_scale.explain.registry`); an LLM one needs `through`
    'model' (its agents experiment on new images)."""
    quantile: float = 0.85
    """The explainer's mask quantile; 0.85 (15% masks), as in `coin-scale bench explain`, leaves
    room for ORs of two ~10% concepts; random formulas are drawn to fit it (`coverage`)."""
    coverage: tuple[float, float] = DEFAULT_COVERAGE
    """Random formulas cover between these multiples of (1 - quantile) of the probe images."""
    progress: bool = False
    """Show the progress bar while rendering the probe set."""
    through: Through = "truth"
    scores: bool = True
    """With `through` 'model': also score each explanation and each true formula (predictive
    AUC) on held-out rendered scenes through the model."""
    """`truth`: activations from the probe's ground-truth attributes (no model, no Ray);
    `model`: the units as a model on pixels (`synthetic_units` over the cached attribute net),
    dissected on Ray; a rendered probe is then the single-object set the net was trained on
    (one large object per image), and random formulas cover `MODEL_COVERAGE`."""
    workdir: str | None = None
    """`model` only: where the synthetic checkpoint and the dissection's warehouse go; None: a
    temporary directory, removed afterwards."""
    address: str | None = None
    """`model` only: the Ray address (None: a local Ray)."""
    llm: LLMExplainerConfig | None = None
    """Provider settings of an LLM `explainer` (None: the provider's defaults)."""
    generator: ImageGenerator = field(default_factory=ImageGenerator)
    """What makes an LLM agent's images (`--image-generator`)."""

    def __post_init__(self) -> None:
        if self.through not in THROUGH:
            raise ValueError(
                f"through: expected one of {', '.join(THROUGH)}; got {self.through!r}. "
                "Fix: --through truth or --through model."
            )
        if self.n < 1:
            raise ValueError(f"n: expected >= 1 units; got {self.n}. Fix: e.g. 100.")
        if self.probe_images < 1:
            raise ValueError(
                f"probe_images: expected >= 1; got {self.probe_images}. Fix: e.g. 1000."
            )
        if not self.noise >= 0:
            raise ValueError(f"noise: expected >= 0; got {self.noise}. Fix: e.g. {DEFAULT_NOISE}.")
        if not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile: expected in (0, 1); got {self.quantile}. Fix: e.g. 0.85.")
        bad = [k for k in self.kinds if k not in FORMULA_KINDS]
        if bad or not self.kinds:
            raise ValueError(
                f"kinds: expected some of {', '.join(FORMULA_KINDS)}; got "
                f"{', '.join(self.kinds) or 'none'}. Fix: e.g. mono,or."
            )
        entry = get_explainer(self.explainer)  # ValueError naming the choices
        if self.generator.kind != "procedural" and not entry.uses_llm:
            raise ValueError(
                f"--image-generator {self.generator.kind}: the image generator serves the LLM "
                "agents' experiments; use it with an LLM explainer"
            )
        if entry.uses_llm and self.through != "model":
            raise ValueError(
                f"explainer {self.explainer!r}: an LLM agent experiments on new images, so the "
                "units must be computed from pixels. Fix: add --through model."
            )

    @property
    def uses_llm(self) -> bool:
        return get_explainer(self.explainer).uses_llm

    @property
    def image_text(self) -> bool:
        """The explainer reads concept scores (here from the attribute net, a stand-in for the
        image-text model): the probe is the single-object set the net was trained on."""
        return get_explainer(self.explainer).image_text

    @property
    def net_concepts_only(self) -> bool:
        """Units are drawn over the attribute net's concepts only (it computes or scores them)."""
        return self.through == "model" or self.image_text

    def llm_explainer(self) -> LLMExplainerConfig:
        """The LLM settings for `explainer` (the config's, else the provider's defaults)."""
        from coin_scale.explain.llm import LLMExplainerConfig

        if self.llm is not None:
            return replace(self.llm, provider=self.explainer)
        return LLMExplainerConfig(provider=self.explainer)


@dataclass(frozen=True, kw_only=True)
class SyntheticEvalResult:
    """Label accuracy of one explainer on one set of synthetic units."""

    probe: str
    """The probe set directory."""
    n_images: int
    """Probe images."""
    n_concepts: int
    """Concepts of the probe set."""
    units: tuple[SyntheticUnit, ...]
    """The synthetic units, in score order."""
    scores: tuple[UnitScore, ...]
    """One per unit."""
    summary: tuple[KindSummary, ...]
    """One row per kind present, then `all`."""
    seconds: float
    """Wall time of the explainer on all units."""
    model: ModelRun | None = None
    """With `through` 'model': the synthetic model and its dissection; None otherwise."""
    reference: tuple[KindSummary, ...] = ()
    """Image-text explainers: the offline explainer's summary on the probe's true concepts, for
    the same units and activations (what the concept scorer's errors cost); () otherwise."""
    scorer: str = ""
    """Image-text explainers: the attribute-net checkpoint standing in for the image-text model."""
    scorer_accuracy: dict[str, float] = field(default_factory=dict)
    """Its held-out accuracy per attribute (from the checkpoint)."""


@dataclass(frozen=True, kw_only=True)
class ModelRun:
    """How the units' activations were measured with `through` 'model'."""

    attribute_net: str
    """The attribute-net checkpoint the units read their concepts from."""
    attribute_accuracy: dict[str, float]
    """Its held-out accuracy per attribute (from the checkpoint)."""
    dissection_id: str
    """The dissection of the `units` layer over the probe set."""
    dissect_seconds: float
    """Wall time of the dissection (planning, Ray start, probe pass)."""
    mean_truth_iou: float = float("nan")
    """Mean IoU of each unit's true formula with its mask (its probe images above `quantile`):
    how closely the units computed from pixels follow their definitions (~`mean IoU` of the
    truth mode when the attribute net is perfect)."""
    beats_truth: int = 0
    """Units whose explanation is not the true formula but fits the mask better than it does:
    misses due to the attribute net (the unit does not compute its formula), not the explainer."""
    predictive_auc: dict[str, float] = field(default_factory=dict)
    """Median predictive AUC per kind (and 'all') of the explanations, on held-out rendered
    scenes through the model (`coin_scale.eval.explanation_scores`)."""
    truth_auc: dict[str, float] = field(default_factory=dict)
    """The same for the true formulas: what a perfect explanation scores through this model."""
    scored: int = 0
    """Units whose explanation could be scored."""
    interp_score: dict[str, float] = field(default_factory=dict)
    """Median InterpScore (S, C, R; no human ratings) per kind and 'all' of the explanations."""
    truth_interp_score: dict[str, float] = field(default_factory=dict)
    """The same for the true formulas."""
    interp_parts: dict[str, float] = field(default_factory=dict)
    """Median S, C and R over all scored explanations."""
    llm_requests: int = 0
    """LLM explainers: requests made (answered from the cache or paid)."""
    llm_cached: int = 0
    """Of those, answered from the request cache (nothing paid)."""
    llm_cost_usd: float = 0.0
    """Dollars paid for them."""


def probe_concepts(config: SyntheticEvalConfig) -> tuple[str, ConceptMatrix]:
    """(probe directory, its concepts): the cached rendered set, or the given directory."""
    from coin_scale.probe.concepts import concepts_from_probe

    if config.probe == RENDERED:
        from coin_scale.probe.rendered import rendered_probe
        from coin_scale.runtime.pools import render_opener

        root = rendered_probe(
            config.probe_images, PROBE_SIZE, progress=config.progress,
            single_object=config.net_concepts_only,
            open_renderer=render_opener(address=config.address),  # on the render pool
        )  # fmt: skip
    else:
        root = config.probe
    return root, concepts_from_probe(scan_probe(root))


def _units(
    config: SyntheticEvalConfig,
    concepts: ConceptMatrix,
    drawable: ConceptMatrix,
    coverage: tuple[float, float],
) -> tuple[SyntheticUnit, ...]:
    """The spec's units, or random ones drawn over the `drawable` concepts."""
    if config.spec is not None:
        return load_spec(config.spec, concepts, default_noise=config.noise)
    return random_units(
        config.n,
        config.seed,
        drawable,
        mix={kind: 1.0 for kind in config.kinds},
        quantile=config.quantile,
        coverage=coverage,
        noise=config.noise,
    )


def _known_concepts(concepts: ConceptMatrix, names: tuple[str, ...]) -> ConceptMatrix:
    """The probe's concepts that the attribute net predicts (random model units use only these)."""
    keep = [i for i, name in enumerate(concepts.names) if name in set(names)]
    if not keep:
        raise ValueError(
            f"the probe set has none of the attribute net's concepts ({', '.join(names[:4])}, "
            "...). Fix: use --probe rendered or a rendered single-object probe set."
        )
    return ConceptMatrix(
        names=tuple(concepts.names[i] for i in keep), matrix=concepts.matrix[keep].clone()
    )


def model_activations(
    config: SyntheticEvalConfig, units: tuple[SyntheticUnit, ...], root: str, n_images: int
) -> tuple[torch.Tensor, ModelRun, ModelPayload | None]:
    """float32 (image, unit) activations of the units as a `synthetic_units` model over the
    cached attribute net, dissected on Ray over the probe set (layer `units`, kept dense), and
    the model's payload when the agents or the scores need it (they run it on replicas)."""
    import tempfile

    from coin_scale.dissect.config import DissectConfig
    from coin_scale.dissect.pipeline import load_activations
    from coin_scale.models.checkpoint import read_checkpoint
    from coin_scale.models.synthetic_model import LAYER, save_synthetic_model
    from coin_scale.runtime.dissect import run_dissection
    from coin_scale.storage import Warehouse
    from coin_scale.training.attribute_net import ensure_attribute_net

    net = ensure_attribute_net()
    accuracy = dict(read_checkpoint(net)["extra"].get("val_accuracy", {}))
    with tempfile.TemporaryDirectory(prefix="coin-scale-synthetic-") as tmp:
        work = Path(config.workdir or tmp)
        checkpoint = save_synthetic_model(
            work / f"synthetic-seed{config.seed}.pt", units, net, noise_seed=config.seed
        )
        dissect_config = DissectConfig(
            model=str(checkpoint), layer=LAYER, probe=root, warehouse=str(work / "warehouse"),
            top_k=16, quantile=MODEL_DISSECT_QUANTILE, keep_activations=True,
            address=config.address,
        )  # fmt: skip
        start = time.perf_counter()
        result = run_dissection(dissect_config, progress=config.progress)
        seconds = time.perf_counter() - start
        dense = load_activations(Warehouse(str(work / "warehouse")), result.dissection_id)
        if config.scores or config.uses_llm:  # the weights travel in the payload, not the file
            from coin_scale.models import ModelSource, resolve_model

            scorer = resolve_model(ModelSource(model=str(checkpoint)))
    activations = torch.from_numpy(dense.astype("float32"))
    if activations.shape != (n_images, len(units)) or bool(activations.isnan().any()):
        raise ValueError(
            f"the dissection of {root} gave activations of shape {tuple(activations.shape)} with "
            f"{int(activations.isnan().sum())} missing; expected ({n_images}, {len(units)}) and "
            "none: every probe image must be readable."
        )
    run = ModelRun(
        attribute_net=str(net), attribute_accuracy=accuracy,
        dissection_id=result.dissection_id, dissect_seconds=seconds,
    )  # fmt: skip
    return activations, run, scorer if config.scores or config.uses_llm else None


def run_synthetic_eval(config: SyntheticEvalConfig) -> SyntheticEvalResult:
    """Build the units, explain them, score each one against its true formula."""
    prepared = None
    if config.uses_llm:
        from coin_scale.explain.llm import prepare

        prepared = prepare(config.llm_explainer())  # a missing key stops here, before any work
    root, concepts = probe_concepts(config)
    model: ModelRun | None = None
    scorer = None
    if config.net_concepts_only:
        from coin_scale.models.attribute_net import concept_names, head_spec

        drawable = _known_concepts(concepts, concept_names(head_spec()))
        default = config.coverage == DEFAULT_COVERAGE
        units = _units(config, concepts, drawable, MODEL_COVERAGE if default else config.coverage)
    else:
        units = _units(config, concepts, concepts, config.coverage)
    if config.through == "model":
        activations, model, scorer = model_activations(config, units, root, concepts.n_images)
    else:
        activations = synthetic_activations(units, concepts, config.seed)
    evidence = LayerEvidence(
        dissection_id=model.dissection_id if model else "", activations=activations,
        concepts=concepts, probe=scan_probe(root),
    )  # fmt: skip
    offline = OfflineExplainer(OfflineExplainerConfig(quantile=config.quantile))
    stand_in = _stand_in(config) if config.image_text else None
    start = time.perf_counter()
    if prepared is not None:
        assert model is not None and scorer is not None
        explanations, model = _explain_with_llm(
            prepared, scorer, model, root, activations, concepts, config
        )
    else:
        explainer = stand_in[0] if stand_in is not None else offline
        explanations = explainer.explain(evidence, range(activations.shape[1]))
    seconds = time.perf_counter() - start
    scores = _scores(units, explanations, concepts)
    reference: tuple[KindSummary, ...] = ()
    if stand_in is not None:
        truth = offline.explain(evidence, range(activations.shape[1]))
        reference = summarize(_scores(units, truth, concepts))
    if model is not None:
        model = _compare_with_truth(model, activations, concepts, units, explanations, config)
        if scorer is not None and config.scores:
            model = _predictive_through_model(model, scorer, units, explanations, config)
    return SyntheticEvalResult(
        probe=root,
        n_images=concepts.n_images,
        n_concepts=concepts.n_concepts,
        units=units,
        scores=scores,
        summary=summarize(scores),
        seconds=seconds,
        model=model,
        reference=reference,
        scorer=stand_in[1] if stand_in is not None else "",
        scorer_accuracy=stand_in[2] if stand_in is not None else {},
    )


def _stand_in(config: SyntheticEvalConfig) -> tuple[Explainer, str, dict[str, float]]:
    """(the image-text explainer over the attribute net's concept scores, the net's checkpoint,
    its held-out accuracy per attribute)."""
    from coin_scale.eval.stand_in import AttributeNetScorer
    from coin_scale.explain.image_text import ClipExplainerConfig, image_text_explainer
    from coin_scale.models.checkpoint import read_checkpoint
    from coin_scale.training.attribute_net import ensure_attribute_net

    net = ensure_attribute_net()
    accuracy = dict(read_checkpoint(net)["extra"].get("val_accuracy", {}))
    defaults = ClipExplainerConfig()
    settings = replace(defaults, search=replace(defaults.search, quantile=config.quantile))
    explainer = image_text_explainer(config.explainer, settings, AttributeNetScorer(net))
    return explainer, str(net), accuracy


def _scores(
    units: tuple[SyntheticUnit, ...], explanations: list[Explanation], concepts: ConceptMatrix
) -> tuple[UnitScore, ...]:
    """Each explanation against its unit's true formula. A label without a formula (the `clip`
    explainer's one concept) counts as that concept's formula."""
    names = concepts.names

    def predicted(e: Explanation) -> Formula | None:
        if e.formula:
            return parse_text(e.formula, names)
        return Leaf(names.index(e.label)) if e.ok and e.label in names else None

    return tuple(
        score_unit(
            name=unit.name, kind=unit.kind, true=parse_text(unit.formula, names),
            predicted=predicted(e), names=names, matrix=concepts.matrix, status=e.status,
            reason=e.reason, iou=e.iou or 0.0, label=e.label,
        )  # fmt: skip
        for unit, e in zip(units, explanations, strict=True)
    )


def _explain_with_llm(
    prepared: object,
    payload: ModelPayload,
    model: ModelRun,
    root: str,
    activations: torch.Tensor,
    concepts: ConceptMatrix,
    config: SyntheticEvalConfig,
) -> tuple[list[Explanation], ModelRun]:
    """An agent per unit through the synthetic model; labels read back to formulas (a unit whose
    agent failed is a `failed` explanation with the agent's reason)."""
    import dataclasses

    from coin_scale.eval.llm_units import explain_synthetic_with_llm
    from coin_scale.explain.llm import PreparedLLM
    from coin_scale.models import find_layer
    from coin_scale.models.loading import payload_layers
    from coin_scale.models.synthetic_model import LAYER
    from coin_scale.runtime.agent_images import agent_image_tools
    from coin_scale.runtime.agent_replicas import agent_replicas
    from coin_scale.runtime.pools import gateway_pool

    assert isinstance(prepared, PreparedLLM)
    layer = find_layer(payload_layers(payload), LAYER, payload.model_id)
    with (
        gateway_pool(prepared, address=config.address) as gateways,
        agent_replicas(payload, layer, address=config.address) as replicas,
        agent_image_tools(config.generator, address=config.address) as render_tools,
    ):  # the agents measure and visualize on model replicas and render on a pool, as in a sweep
        result = explain_synthetic_with_llm(
            prepared, lambda unit: (replicas.meter(unit), replicas.visualizer(unit)), payload,
            LAYER, scan_probe(root), activations, concepts, config.quantile,
            run_id=f"eval-synthetic-seed{config.seed}-{config.explainer}", gateways=gateways,
            progress=config.progress, render_tools=render_tools,
        )  # fmt: skip
    model = dataclasses.replace(
        model, llm_requests=result.requests, llm_cached=result.cached,
        llm_cost_usd=result.cost_usd,
    )  # fmt: skip
    return result.explanations, model


def _compare_with_truth(
    model: ModelRun,
    activations: torch.Tensor,
    concepts: ConceptMatrix,
    units: tuple[SyntheticUnit, ...],
    explanations: list[Explanation],
    config: SyntheticEvalConfig,
) -> ModelRun:
    """`model` with `mean_truth_iou` and `beats_truth` filled in."""
    import dataclasses

    from coin_scale.concepts.formula import canonical_text, evaluate
    from coin_scale.explain.offline import unit_masks

    masks, _ = unit_masks(activations, config.quantile)  # (image, unit)
    names = concepts.names
    truth = torch.stack([evaluate(parse_text(u.formula, names), concepts.matrix) for u in units])
    inter = (truth & masks.T).sum(1).double()
    union = (truth | masks.T).sum(1).double().clamp_min(1)
    truth_iou = (inter / union).tolist()
    beats = sum(
        1
        for unit, e, iou in zip(units, explanations, truth_iou, strict=True)
        if e.formula
        and canonical_text(parse_text(e.formula, names), names)
        != canonical_text(parse_text(unit.formula, names), names)
        and e.iou > iou + 1e-9
    )
    mean = sum(truth_iou) / len(truth_iou)
    return dataclasses.replace(model, mean_truth_iou=mean, beats_truth=beats)


def _predictive_through_model(
    model: ModelRun,
    payload: ModelPayload,
    units: tuple[SyntheticUnit, ...],
    explanations: list[Explanation],
    config: SyntheticEvalConfig,
) -> ModelRun:
    """`model` with the median predictive AUC of the explanations and of the true formulas, per
    kind, on the sweep's held-out rendered scoring set run through the synthetic model."""
    import dataclasses
    import statistics

    from coin_scale.eval.explanation_scores import UnitScores, score_explanations
    from coin_scale.models.module_call import ModuleCall
    from coin_scale.models.synthetic_model import LAYER
    from coin_scale.probe.scoring_set import load_scoring_set
    from coin_scale.runtime.pools import ReplicaModel, render_opener

    scoring = load_scoring_set(payload, single_object=True, progress=config.progress,
                               open_renderer=render_opener(address=config.address))  # fmt: skip
    with ReplicaModel(payload, address=config.address) as runner:  # the driver holds no model
        said = runner(ModuleCall.of(
            score_explanations, LAYER, "nc", payload.preprocess,
            [(i, e.formula or None) for i, e in enumerate(explanations)], scoring, seed=config.seed,
        ))  # fmt: skip
        truth = runner(ModuleCall.of(
            score_explanations, LAYER, "nc", payload.preprocess,
            [(i, u.formula) for i, u in enumerate(units)], scoring, seed=config.seed,
        ))  # fmt: skip

    def medians(scores: list, value: Callable) -> dict[str, float]:  # type: ignore[type-arg]
        by_kind: dict[str, list[float]] = {}
        for unit, s in zip(units, scores, strict=True):
            v = value(s)
            if v is not None:
                by_kind.setdefault(unit.kind, []).append(v)
                by_kind.setdefault("all", []).append(v)
        return {kind: statistics.median(v) for kind, v in by_kind.items()}

    def auc(s: UnitScores) -> float | None:
        return s.predictive.auc if s.predictive is not None else None

    def interp(s: UnitScores) -> float | None:
        return s.interp.score if s.interp is not None else None

    parts = {
        name: values["all"]
        for name in ("S", "C", "R")
        if "all" in (values := medians(said, lambda s, n=name: s.interp and s.interp.part(n)))
    }
    return dataclasses.replace(
        model, predictive_auc=medians(said, auc), truth_auc=medians(truth, auc),
        interp_score=medians(said, interp), truth_interp_score=medians(truth, interp),
        interp_parts=parts, scored=sum(s.predictive is not None for s in said),
    )  # fmt: skip
