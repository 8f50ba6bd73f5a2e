"""Configuration of `run_sweep.py`: one config per stage of the sweep, composed in `SweepConfig`.

Every field is a flag and a YAML key of `run_sweep.py` (dashes for underscores); the LLM
explainer's settings are `LLMExplainerConfig` itself (`--rpm` is its `requests_per_minute`, as in
`coin-scale dissect` and `coin-scale eval`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from coin_scale.agent.generation import ImageGenerator
from coin_scale.chain.graph import EDGE_METHODS, EdgeMethod
from coin_scale.dissect.config import check_units
from coin_scale.explain.image_text import ClipExplainerConfig
from coin_scale.explain.llm import LLMExplainerConfig
from coin_scale.explain.registry import get_explainer
from coin_scale.probe.split import DEFAULT_HELD_OUT, check_share
from coin_scale.records import LayerUnitKind, UnitSelection

PROBE_CNN = "probe"
"""`--model probe`: the probe CNN, which coin-scale trains on its rendered scenes (trained once,
cached)."""
RENDERED = "rendered"
"""`--probe rendered`: a rendered probe set with ground-truth attributes (rendered once, cached)."""


@dataclass(frozen=True, kw_only=True)
class TargetConfig:
    """The image and the model whose prediction is explained."""

    image: str | None = None
    """The image whose prediction is explained; default a rendered scene (saved in the warehouse)."""
    model: str = PROBE_CNN
    """torchvision model name, a coin-scale checkpoint, or `probe`: the probe CNN (trained on
    first use)."""
    weights: str = "default"
    """default | none | weights enum name | state-dict path (ignored for checkpoints)."""
    seed: int = 0
    """Seed of random weights (weights none) and of the default target scene."""


@dataclass(frozen=True, kw_only=True)
class SelectionConfig:
    """Which units are explained: the layer (or chain of layers) and how many contributors."""

    layer: str | None = None
    """Layer whose units are selected; default the last block before the classifier."""
    layers: str | None = None
    """A chain of layers, input side first, comma-separated (e.g. `layer2,layer3,layer4`): the
    last one's units drive the class, each earlier layer's units drive the next's. Replaces
    `layer`."""
    units: LayerUnitKind = "neuron"
    """What the layer's units are: `neuron` (its channels) or `sae` (the features of the SAE
    checkpoint `sae`, trained on this layer by `coin-scale train-sae`)."""
    sae: str | None = None
    """SAE checkpoint whose features are the units (of the last chain layer with `layers`); only
    with units `sae`."""
    top_k: int = 8
    """Positive contributors explained."""
    negatives: int = 3
    """Strongest negative contributors listed."""
    select: UnitSelection | None = None
    """Units chosen by hand (`--select layer4=12,45`, or `@FILE`): exactly these are explained,
    with their contributions, in place of the `top_k` and `negatives` strongest. It names the
    explained layer (the last one with `layers`, whose drivers the chain then finds)."""

    def __post_init__(self) -> None:
        if self.select is not None:
            names = self.select.names
            last = self.chain_layers[-1] if self.layers else self.layer
            if len(names) != 1 or (last is not None and names[0] != last):
                where = f"the explained layer ({last})" if last else "one layer"
                raise ValueError(
                    f"--select {self.select} must name {where}"
                    + ("; with --layers the chain finds the drivers in the earlier layers" if self.layers else "")
                )
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")
        check_units(self.units, self.sae)
        if self.layers is not None:
            names = self.chain_layers
            if not names or any(not n for n in names):
                raise ValueError(f"--layers takes comma-separated layer names, got {self.layers!r}")
            if self.layer is not None and self.layer != names[-1]:
                raise ValueError(
                    f"--layer {self.layer} and --layers {self.layers} disagree: the chain ends at "
                    "the layer whose units drive the class; pass one of them"
                )

    @property
    def explained_layer(self) -> str | None:
        """The layer named by `layer`, or by `select` (None: the default, the last block)."""
        return self.layer or (self.select.names[0] if self.select else None)

    @property
    def chain_layers(self) -> tuple[str, ...]:
        """The `layers` chain as names (empty when only `layer` is used)."""
        if self.layers is None:
            return ()
        return tuple(name.strip() for name in self.layers.split(","))


@dataclass(frozen=True, kw_only=True)
class ChainConfig:
    """How the chain's edges are found and its faithfulness tested."""

    fanout: int = 3
    """Drivers kept per chain unit in the layer before it."""
    chain_method: EdgeMethod = "grad_x_activation"
    """How a unit's drivers are ranked: `grad_x_activation` or `integrated_gradients`."""
    ig_steps: int = 16
    """Integrated-gradients steps (chain_method integrated_gradients)."""
    ablation_draws: int = 20
    """Random unit sets averaged in the faithfulness test."""

    def __post_init__(self) -> None:
        if self.chain_method not in EDGE_METHODS:
            raise ValueError(
                f"unknown chain method {self.chain_method!r}; available: {', '.join(EDGE_METHODS)}"
            )
        if self.fanout < 1 or self.ig_steps < 1 or self.ablation_draws < 1:
            raise ValueError(
                f"fanout, ig_steps and ablation_draws must be >= 1, got {self.fanout}, "
                f"{self.ig_steps}, {self.ablation_draws}"
            )


PROBE_RENDERERS = ("procedural", "generator")
"""What may render a `rendered` probe set (`--probe-renderer`)."""


@dataclass(frozen=True, kw_only=True)
class ProbeConfig:
    """The probe set the units are explained over, and how many exemplars are shown."""

    probe: str | None = RENDERED
    """`rendered`, a probe folder, or None (attribution only, nothing explained)."""
    probe_images: int = 1000
    """Images of the `rendered` probe set."""
    exemplars: int = 6
    """Exemplars shown per unit."""
    renderer: str = "procedural"
    """What renders the `rendered` probe and scoring sets: `procedural` (the render pool's
    procedural workers) or `generator` (the `--image-generator` backend: Unity or diffusion)."""

    def __post_init__(self) -> None:
        if self.renderer not in PROBE_RENDERERS:
            raise ValueError(
                f"probe renderer: expected one of {', '.join(PROBE_RENDERERS)}; got {self.renderer!r}"
            )
        if self.probe_images < 50:
            raise ValueError(f"probe_images must be >= 50, got {self.probe_images}")
        if self.exemplars < 1:
            raise ValueError(f"exemplars must be >= 1, got {self.exemplars}")


@dataclass(frozen=True, kw_only=True)
class ScoringConfig:
    """Scores of every explanation, and the views drawn beside them."""

    unit_scores: bool = True
    """Score every explanation over rendered attributes: predictive AUC and Cohen's d, InterpScore
    (S, C, R) on a held-out rendered set (needs the `rendered` probe)."""
    human_ratings: str | None = None
    """A ratings CSV (`layer`, `unit`, `soft_correct`; `coin_scale.eval.human_ratings`) giving
    InterpScore's H for the units it rates; None: H stays null."""
    visualize: int = 0
    """Steps of one feature visualization per explained unit, shown in the report beside its
    exemplars (0: none)."""
    held_out: float = DEFAULT_HELD_OUT
    """Share of a folder probe's images held out from the explainer (chosen by a hash of each
    image's path, `coin_scale.probe.split`), on which every explanation is scored: AUC, Pearson r,
    F1 and AUPRC (`coin_scale.eval.heldout`); 0: none held out, no such scores."""

    def __post_init__(self) -> None:
        check_share(self.held_out)
        if self.visualize < 0:
            raise ValueError(
                f"--visualize takes optimisation steps >= 1 (0: none), got {self.visualize}"
            )


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Where the sweep runs and where its rows go."""

    warehouse: str = "warehouse"
    """Parquet warehouse directory; reports go to WAREHOUSE/reports/RUN_ID/."""
    address: str | None = None
    """Ray address (None: a local Ray)."""
    run_id: str | None = None
    """Name of the run; generated when absent."""
    progress: bool = True
    """Show progress bars."""


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One target image through one model; the defaults run offline with nothing to download."""

    target: TargetConfig = field(default_factory=TargetConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    chain: ChainConfig = field(default_factory=ChainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    explainer: str = "offline"
    """A registered explainer (`coin_scale.explain.registry`): `offline` (formulas over probe
    concepts, no network) or an LLM agent per unit (`openai`, `anthropic`, `gemini`)."""
    llm: LLMExplainerConfig | None = None
    """The LLM explainer's provider, model, limits and budgets; set exactly when `explainer` is
    an LLM one (its `provider` is the explainer's)."""
    clip: ClipExplainerConfig | None = None
    """The image-text explainer's model, weights and vocabulary; set when `explainer` is `clip`
    or `clip-formula`, and optionally with an LLM explainer, whose labels its model then reads
    on the held-out images (`scoring.held_out`)."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    run: RunConfig = field(default_factory=RunConfig)
    generator: ImageGenerator = field(default_factory=ImageGenerator)
    """What makes the LLM agents' images (`--image-generator`); with a diffusion generator every
    explainer's labels are also tested on generated images, and `--probe-renderer generator`
    renders the rendered probe and scoring sets with it."""
    dry_run: bool = False
    """Print the expected LLM calls, tokens, dollars and minutes, and stop before any work."""

    def __post_init__(self) -> None:
        entry = get_explainer(self.explainer)
        if entry.uses_llm != (self.llm is not None):
            raise ValueError(
                f"explainer {self.explainer!r} "
                + ("needs its LLM settings (llm)" if entry.uses_llm else "takes no LLM settings")
            )
        if self.llm is not None and self.llm.provider != entry.provider:
            raise ValueError(
                f"llm.provider {self.llm.provider!r} is not explainer {self.explainer!r}'s provider"
            )
        if self.clip is not None and not (entry.image_text or entry.uses_llm):
            raise ValueError(
                f"explainer {self.explainer!r}: the clip settings go with --explainer "
                "clip or clip-formula (or an LLM's, to score its labels on held-out images)"
            )
        if entry.image_text and self.clip is None:
            raise ValueError(f"explainer {self.explainer!r} needs its clip settings (clip)")
        renders_probe = self.probe.renderer == "generator"
        if renders_probe and self.generator.command() is None:
            raise ValueError(
                "--probe-renderer generator renders the probe set with the image generator; "
                "add --image-generator unity or diffusion"
            )
        if self.generator.kind == "unity" and not entry.uses_llm and not renders_probe:
            raise ValueError(
                "--image-generator unity serves the LLM agents' experiments or, with "
                "--probe-renderer generator, renders the probe set; use one of them"
            )
        if self.dry_run and not entry.uses_llm:
            raise ValueError(
                "--dry-run estimates LLM costs; use it with --explainer openai|anthropic|gemini"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
