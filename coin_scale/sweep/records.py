"""Records of one image sweep: what the report, the tables and the printed text are made from."""

from __future__ import annotations

from dataclasses import dataclass, field

from coin_scale.chain.faithfulness import AblationScore
from coin_scale.chain.graph import Edge
from coin_scale.eval.explanation_scores import UnitScores
from coin_scale.eval.generated import GeneratedScore
from coin_scale.eval.heldout import HeldOutScore
from coin_scale.explain.explanation import Status


@dataclass(frozen=True, kw_only=True)
class ActivationMap:
    """A unit's spatial activation map on one image, at its layer's resolution (7 x 7 for a
    resnet's layer4; a ViT's patch grid)."""

    height: int
    width: int
    values: tuple[float, ...]
    """The map, row by row: height x width raw activations (float32)."""
    crop_fraction: float = 1.0
    """The map covers the centred square the model saw, of side crop_fraction x the image's
    short side (its preprocessing: resize the short side, centre-crop; crop / resize)."""


@dataclass(frozen=True, kw_only=True)
class UnitThreshold:
    """Where a unit counts as firing at a position (MAIA-style, after NetDissect): the top
    quantile of its activations over every position of its maps on probe images."""

    value: float
    """The activation at `quantile`."""
    quantile: float
    """e.g. 0.99: the positions above `value` are the unit's top 1%."""
    images: int
    """Probe images (drawn at random) whose map positions the quantile is over."""


@dataclass(frozen=True, kw_only=True)
class Exemplar:
    """One probe image among a unit's strongest."""

    image_path: str
    activation: float
    label: str | None = None
    """Folder label, or for a rendered probe set a short attribute summary."""
    activation_map: ActivationMap | None = None
    """The unit's spatial map on the image (the sweep's exemplars and target); None when the
    layer has no spatial extent or the maps were not computed."""


@dataclass(frozen=True, kw_only=True)
class UnitFinding:
    """One selected unit: how much it drove the prediction and what it seems to detect."""

    layer: str
    unit: int
    rank: int
    """0 = largest positive contribution; negative contributors are ranked among themselves."""
    contribution: float
    """Contribution to the predicted class logit (method in ClassExplanation.method)."""
    share: float
    """contribution / the predicted logit (NaN when the logit is not positive)."""
    status: Status | None = None
    """The explanation's status (`ok`, `empty`, `failed`); None when the unit was not explained
    (no probe set)."""
    reason: str | None = None
    """Why the status is not `ok` (`coin_scale.explain.explanation`)."""
    label: str | None = None
    """The explainer's label (the formula in words for the offline explainer); None unless the
    status is `ok`."""
    description: str | None = None
    formula: str | None = None
    """Machine-readable formula, e.g. `(shape=star AND color=red)`."""
    iou: float | None = None
    """IoU between the unit's mask and the formula over the probe set (offline explainer)."""
    confidence: float | None = None
    """The LLM agent's own confidence in its label, 0..1 (LLM explainers)."""
    score: float | None = None
    """The explainer's own score of its label, as stored (`score_name` says which)."""
    score_name: str | None = None
    """`iou`, `confidence` or `soft_wpmi`; None when the unit has no label."""
    explainer: str | None = None
    exemplars: tuple[Exemplar, ...] = ()
    error: str | None = None
    """Why the unit could not be explained, when it could not (stored, never hidden)."""
    visualization: Exemplar | None = None
    """A feature visualization of the unit (`--visualize`), measured like the exemplars."""
    target_map: Exemplar | None = None
    """The target image with the unit's spatial activation map on it (`activation`: the map's
    peak); None without maps."""
    threshold: UnitThreshold | None = None
    """The unit's firing threshold over the probe, which its masked exemplars are cut at."""
    heldout: HeldOutScore | None = None
    """Its explanation scored on the folder probe's images held out from the explainer (AUC,
    Pearson r, F1, AUPRC: `coin_scale.eval.heldout`), or why not; None when nothing was held
    out (a rendered probe, `--held-out 0`) or the unit has no label."""
    generated: GeneratedScore | None = None
    """MAIA's predictive evaluation of its label on generated images (`--image-generator
    diffusion`): its activation on images of the label's prompts against neutral ones."""
    trajectory: tuple[TrajectoryStep, ...] = ()
    """An LLM agent's experiments on the unit, round by round (empty for other explainers)."""
    test_prompts: tuple[str, ...] = ()
    """The LLM agent's prompts for testing its label on generated images (its `finish`); the
    predictive evaluation uses them instead of the templates."""


@dataclass(frozen=True, kw_only=True)
class TrajectoryStep:
    """One step of an LLM agent's experiments on a unit, as the report shows it."""

    round: int
    step: int
    tool: str | None
    """The tool called; None for a reply without a tool call."""
    arguments: str | None
    """The arguments as sent (JSON text)."""
    status: str
    """As in `experiments.status`."""
    summary: str | None
    """What the agent was told, in short."""
    hypothesis: str | None = None
    """The text the model wrote with the round's reply (on its first step)."""
    images: tuple[Exemplar, ...] = ()
    """The images the step showed the agent: `label` is the image's id, `activation` the
    unit's activation on it (NaN when not measured)."""


@dataclass(frozen=True, kw_only=True)
class ConceptShare:
    """One concept's part of a class explanation in one layer (`coin_scale.sweep.class_concepts`)."""

    layer: str
    part: str
    """`concept`, `unexplained` or `rest` (see the module doc)."""
    concept: str
    """The concept in words (`red`, `dog`, an LLM's label); "" for the other parts."""
    contribution: float
    """Summed contribution of its units (their share of it when a unit names several concepts)."""
    share: float
    """`contribution` over the logit (the explained layer) or over the layer's total drive into
    the chain (earlier layers); NaN when that total is not positive."""
    units: tuple[int, ...] = ()
    """The units labelled with the concept, strongest first."""
    mean_score: float | None = None
    """Mean of those units' explanation scores (`score_name`), where they have one."""
    score_name: str | None = None
    """`iou`, `soft_wpmi` or `confidence`: the explainers' own score (None when mixed or none)."""


@dataclass(frozen=True, kw_only=True)
class ClassExplanation:
    """Why the model predicted a class for the target image, in units of one layer."""

    run_id: str
    image_path: str
    model: str
    weights: str
    random_weights: bool
    class_name: str
    class_index: int
    probability: float
    logit: float
    layer: str
    method: str
    """`exact_linear`, `exact_sae_decoder` or `grad_x_activation`."""
    head_bias: float | None
    """The head's bias for the class (exact methods only)."""
    top_classes: tuple[tuple[str, float], ...]
    positive: tuple[UnitFinding, ...]
    negative: tuple[UnitFinding, ...] = ()
    text: str = ""
    """The readable paragraph."""
    notes: tuple[str, ...] = field(default=())
    """Caveats printed and stored with the explanation (random weights, fallbacks)."""
    unit_kind: str = "neuron"
    """`neuron` (the layer's channels) or `sae` (features of an SAE of the layer)."""
    sae: SAESummary | None = None
    """The SAE whose features are the units (unit_kind `sae`)."""
    terms: tuple[tuple[str, float], ...] = ()
    """Parts of the logit that belong to no unit (an SAE's decoder bias and reconstruction
    error); with an exact method, all contributions + head_bias + terms = logit."""

    layers: tuple[str, ...] = ()
    """The chain's layers, input side first, ending with `layer` (empty: `layer` alone)."""
    chain_nodes: tuple[UnitFinding, ...] = ()
    """Units of the layers before `layer` that drive the selected units (each explained);
    `contribution` is the sum of its edges' weights, `rank` its order within its layer."""
    chain_edges: tuple[Edge, ...] = ()
    """Unit -> unit edges between consecutive chain layers (class edges are `positive`)."""
    faithfulness: tuple[AblationScore, ...] = ()
    """Ablation tests of the chain's units in each chain layer, against random and most-active
    units (a deletion curve over k)."""
    unit_scores: tuple[UnitScores, ...] = ()
    """Per explained unit: predictive score and InterpScore on held-out rendered images."""
    scoring_images: int = 0
    """Images of the held-out rendered set the unit scores were measured on."""
    concepts: tuple[ConceptShare, ...] = ()
    """The logit by concept: the explained units' contributions summed per concept they were
    labelled with, the unlabelled ones and the rest; then each earlier chain layer's."""
    concept_text: str = ""
    """The same as a paragraph: 'Predicted tabby (p=0.81) because of furry texture (40% ...'."""

    @property
    def unit_noun(self) -> str:
        """What one unit is called in text: 'unit' or 'SAE feature'."""
        return "SAE feature" if self.unit_kind == "sae" else "unit"


@dataclass(frozen=True, kw_only=True)
class SAESummary:
    """Which SAE turned a layer's channels into features, and how well it reconstructs them."""

    path: str
    sha256: str
    d_sae: int
    k: int
    kind: str
    """`topk` or `batchtopk`."""
    fvu: float | None
    """Fraction of variance unexplained, from the checkpoint's final training metrics."""
