"""Configuration of `run_sweep.py`; every field is a flag and a YAML key."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from coin_scale.chain.graph import EDGE_METHODS, EdgeMethod
from coin_scale.dissect.config import UnitKind, check_units

if TYPE_CHECKING:
    from coin_scale.explain.llm import LLMExplainerConfig

EXPLAINERS = ("offline", "openai", "anthropic", "gemini")
"""`offline` (formulas over probe concepts, no network) or an LLM agent through that provider."""
PROBE_MODEL = "probe"
"""`--model probe`: the CNN coin-scale trains on its rendered scenes (trained once, cached)."""
RENDERED = "rendered"
"""`--probe rendered`: a rendered probe set with ground-truth attributes (rendered once, cached)."""


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """One target image through one model; the defaults run offline with nothing to download."""

    image: str | None = None
    """The image whose prediction is explained; default a rendered scene (saved in the warehouse)."""
    model: str = PROBE_MODEL
    """torchvision model name, a coin-scale checkpoint, or `probe` (trained on first use)."""
    weights: str = "default"
    """default | none | weights enum name | state-dict path (ignored for checkpoints)."""
    seed: int = 0
    """Seed of random weights (weights none) and of the default target scene."""
    layer: str | None = None
    """Layer whose units are selected; default the last block before the classifier."""
    layers: str | None = None
    """A chain of layers, input side first, comma-separated (e.g. `layer2,layer3,layer4`): the
    last one's units drive the class, each earlier layer's units drive the next's. Replaces
    `layer`."""
    fanout: int = 3
    """Drivers kept per chain unit in the layer before it."""
    chain_method: EdgeMethod = "grad_x_activation"
    """How a unit's drivers are ranked: `grad_x_activation` or `integrated_gradients`."""
    ig_steps: int = 16
    """Integrated-gradients steps (chain_method integrated_gradients)."""
    ablation_draws: int = 20
    """Random unit sets averaged in the faithfulness test."""
    visualize: int = 0
    """Steps of one feature visualization per explained unit, shown in the report beside its
    exemplars (0: none)."""
    unit_scores: bool = True
    """Score every explanation over rendered attributes: predictive AUC and Cohen's d, InterpScore
    (S, C, R) on a held-out rendered set (needs the `rendered` probe)."""
    human_ratings: str | None = None
    """A ratings CSV (`layer`, `unit`, `soft_correct`; `coin_scale.eval.human_ratings`) giving
    InterpScore's H for the units it rates; None: H stays null."""
    units: UnitKind = "neuron"
    """What the layer's units are: `neuron` (its channels) or `sae` (the features of the SAE
    checkpoint `sae`, trained on this layer by `coin-scale train-sae`)."""
    sae: str | None = None
    """SAE checkpoint whose features are the units (of the last chain layer with `layers`); only
    with units `sae`."""
    top_k: int = 8
    """Positive contributors explained."""
    negatives: int = 3
    """Strongest negative contributors listed."""
    probe: str | None = RENDERED
    """`rendered`, a probe folder, or None (attribution only, nothing explained)."""
    probe_images: int = 1000
    """Images of the `rendered` probe set."""
    explainer: str = "offline"
    """How units are explained: `offline` (formulas over probe concepts, no network), or an LLM
    agent that experiments on each unit: `openai` (any OpenAI-compatible server with
    `base_url`), `anthropic`, `gemini`."""
    llm_model: str | None = None
    """LLM model name (default: the provider's default in configs/llm.yaml)."""
    base_url: str | None = None
    """The provider API's URL, e.g. http://localhost:8000/v1 for vLLM (default: the provider's)."""
    rpm: float | None = None
    """Requests per minute allowed (default: configs/llm.yaml)."""
    tpm: float | None = None
    """Tokens per minute allowed (default: configs/llm.yaml)."""
    max_rounds: int = 12
    """LLM rounds per unit at most."""
    unit_budget_usd: float | None = 1.0
    """Dollars one unit may spend."""
    budget_usd: float | None = 20.0
    """Dollars the whole sweep may spend."""
    unit_budget_tokens: int | None = 200_000
    """Tokens (input + output) one unit may use."""
    budget_tokens: int | None = None
    """Tokens the whole sweep may use (None: only the dollar budget)."""
    concurrency: int = 32
    """Units explained at the same time by LLM agents."""
    llm_config: str | None = None
    """Another configs/llm.yaml (models, prices, rate limits)."""
    dry_run: bool = False
    """Print the expected LLM calls, tokens, dollars and minutes, and stop before any work."""
    warehouse: str = "warehouse"
    """Parquet warehouse directory; reports go to WAREHOUSE/reports/RUN_ID/."""
    exemplars: int = 6
    """Exemplars shown per unit."""
    address: str | None = None
    """Ray address (None: a local Ray)."""
    run_id: str | None = None
    """Name of the run; generated when absent."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.visualize < 0:
            raise ValueError(f"--visualize takes optimisation steps >= 1 (0: none), got {self.visualize}")
        if self.negatives < 0 or self.exemplars < 1:
            raise ValueError(
                f"negatives must be >= 0 and exemplars >= 1, got {self.negatives}, {self.exemplars}"
            )
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
        if self.chain_method not in EDGE_METHODS:
            raise ValueError(
                f"unknown chain method {self.chain_method!r}; available: {', '.join(EDGE_METHODS)}"
            )
        if self.fanout < 1 or self.ig_steps < 1 or self.ablation_draws < 1:
            raise ValueError(
                f"fanout, ig_steps and ablation_draws must be >= 1, got {self.fanout}, "
                f"{self.ig_steps}, {self.ablation_draws}"
            )
        if self.explainer not in EXPLAINERS:
            raise ValueError(
                f"unknown explainer {self.explainer!r}; available: {', '.join(EXPLAINERS)}"
            )
        if self.dry_run and self.explainer == "offline":
            raise ValueError("--dry-run estimates LLM costs; use it with --explainer openai|anthropic|gemini")
        if self.max_rounds < 1 or self.concurrency < 1:
            raise ValueError(
                f"max_rounds and concurrency must be >= 1, got {self.max_rounds}, {self.concurrency}"
            )
        if self.probe_images < 50:
            raise ValueError(f"probe_images must be >= 50, got {self.probe_images}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def chain_layers(self) -> tuple[str, ...]:
        """The `layers` chain as names (empty when only `layer` is used)."""
        if self.layers is None:
            return ()
        return tuple(name.strip() for name in self.layers.split(","))

    @property
    def uses_llm(self) -> bool:
        return self.explainer != "offline"

    def llm_explainer(self) -> LLMExplainerConfig:
        """The LLM explainer's settings (the key is never part of a config)."""
        from coin_scale.explain.llm import LLMExplainerConfig, default_cache_dir

        return LLMExplainerConfig(
            provider=self.explainer, model=self.llm_model, base_url=self.base_url,
            requests_per_minute=self.rpm, tokens_per_minute=self.tpm, max_rounds=self.max_rounds,
            unit_budget_usd=self.unit_budget_usd, sweep_budget_usd=self.budget_usd,
            unit_budget_tokens=self.unit_budget_tokens, sweep_budget_tokens=self.budget_tokens,
            concurrency=self.concurrency, cache_dir=default_cache_dir(self.warehouse),
            settings_path=self.llm_config,
        )  # fmt: skip
