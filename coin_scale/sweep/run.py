"""The image sweep: predict, select units by contribution, explain them over a probe set, chain
them into a class-level explanation, store it and write the report.

`run_sweep` is `prepare` and then `STAGES`, each a function of the one `SweepState`
(`coin_scale.sweep.stages`), timed phase by phase.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coin_scale.accounting import FORWARDS, RENDERS, ForwardCounts, RenderCounts
from coin_scale.models.payload import require_class_logits
from coin_scale.runtime.pools import keep_ray
from coin_scale.storage.runs import RunRecorder, new_run_id
from coin_scale.sweep import stages
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.records import ClassExplanation
from coin_scale.sweep.state import Reporter, SweepInputs, SweepState


@dataclass(frozen=True, slots=True)
class SweepOutcome:
    """The explanation and where its artefacts went."""

    explanation: ClassExplanation
    report_path: str | None
    warehouse: str
    forward_passes: ForwardCounts = field(default_factory=ForwardCounts)
    """The explained model's forward passes during the sweep, by where they ran."""
    rendered_images: RenderCounts = field(default_factory=RenderCounts)
    """Images rendered during the sweep (a cached probe set: none), by where."""
    phases: tuple[tuple[str, float], ...] = ()
    """Wall seconds of each phase, in order (model and attribution, chain edges, dissect and
    explain, activation maps, faithfulness, explanation scores, visualizations, report and tables)."""


class PhaseClock:
    """Wall time per named phase: `lap(name)` closes the phase that ran since the last lap."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.phases: list[tuple[str, float]] = []

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.phases.append((name, now - self.last))
        self.last = now


@dataclass(frozen=True)
class Stage:
    """One phase of the sweep: its name in the timings and the function that runs it."""

    name: str
    run: Callable[[SweepState], None]
    when: Callable[[SweepConfig], bool] = lambda config: True


STAGES: tuple[Stage, ...] = (
    Stage("model and attribution", stages.attribute),
    Stage("chain edges", stages.trace_chain),
    Stage("dissect and explain", stages.explain),
    Stage("activation maps", stages.map_units, when=lambda config: bool(config.probe.probe)),
    Stage("faithfulness", stages.test_faithfulness),
    Stage("explanation scores", stages.score),
    Stage(
        "generated-image predictions", stages.predict_on_generated,
        when=lambda config: config.generator.generates,
    ),
    Stage("visualizations", stages.visualize, when=lambda config: config.scoring.visualize > 0),
)
"""The sweep's stages in order; `store` (report and tables) follows them."""


def run_sweep(config: SweepConfig, *, reporter: Reporter | None = None) -> SweepOutcome:
    """The whole pipeline for one image; user errors are raised before any work is stored.
    `reporter` writes the HTML report (none is written without it)."""
    run_id = config.run.run_id or new_run_id()
    forwards, renders = FORWARDS.snapshot(), RENDERS.snapshot()
    with keep_ray():  # every pool of the sweep, its model replica first, on one Ray start
        inputs = stages.prepare(config, run_id)
        try:
            explanation, report, phases = _run_stages(config, run_id, inputs, reporter)
        finally:
            inputs.runner.release()
    return SweepOutcome(
        explanation=explanation, report_path=str(report) if report else None,
        warehouse=config.run.warehouse, phases=phases,
        forward_passes=FORWARDS.snapshot().minus(forwards),
        rendered_images=RENDERS.snapshot().minus(renders),
    )  # fmt: skip


def _run_stages(
    config: SweepConfig, run_id: str, inputs: SweepInputs, reporter: Reporter | None
) -> tuple[ClassExplanation, Path | None, tuple[tuple[str, float], ...]]:
    require_class_logits(inputs.payload, "the sweep")  # an image encoder's embedding has no class
    recorder = RunRecorder(
        warehouse=inputs.warehouse, run_id=run_id, command="sweep",
        model=inputs.payload.model_id, weights=inputs.payload.weights_id,
        layers=[layer.name for layer in inputs.chain], probe=str(config.probe.probe),
        config=config.to_dict(),
        secrets=[inputs.prepared.api_key] if inputs.prepared and inputs.prepared.api_key else [],
    )  # fmt: skip
    with recorder:
        state = SweepState(inputs=inputs)
        clock = PhaseClock()
        for stage in STAGES:
            if stage.when(config):
                stage.run(state)
                clock.lap(stage.name)
        explanation = stages.class_explanation(state)
        report = stages.store(state, explanation, reporter)
        clock.lap("report and tables")
        recorder.n_images, recorder.n_failed = 1, 0  # the one target image, read
    return explanation, report, tuple(clock.phases)


def dry_run_lines(config: SweepConfig) -> list[str]:
    """What an LLM-explained sweep of `config` would cost; nothing is loaded or sent."""
    from coin_scale.agent.generation import generation_plan_lines
    from coin_scale.explain.llm import (
        describe_plan_lines,
        dry_run,
        limit_lines,
        prepare,
        prepare_describer,
    )

    assert config.llm is not None, "a dry run needs an LLM explainer (SweepConfig checks it)"
    prepared = prepare(config.llm, require_key=False)
    sel, fanout = config.selection, config.chain.fanout
    units, targets = sel.top_k + sel.negatives, sel.top_k
    for _ in sel.chain_layers[:-1]:  # at most fanout new drivers per unit one layer up
        targets *= fanout
        units += targets
    estimate = dry_run(
        prepared, units=units, exemplars=12, layer=sel.layer or "last block",
        model=config.target.model, generates=config.generator.generates,
        edits_images=config.generator.edits_images,
    )  # fmt: skip
    rounds = prepared.config.max_rounds
    return (
        estimate.lines(config.explainer, prepared.model)
        + describe_plan_lines(prepare_describer(prepared), units=units, max_rounds=rounds)
        + generation_plan_lines(config.generator, units=units, max_rounds=rounds)
        + limit_lines(prepared, "sweep")
    )
