"""Machine Interpretability Score (MIS): machine psychophysics on a unit's extreme exemplars.

After Zimmermann, Klindt & Brendel, "Measuring Mechanistic Interpretability at Scale Without
Humans" (arXiv:2403.17230, NeurIPS 2024), which automates the 2-alternative forced-choice task of
Borowski et al. (2021). For one unit and each of N tasks:

- draw K+1 distinct images from the top `quantile` of the unit's activations over the probe set;
  the K most activating are the positive references (the "explanation"), the least activating of
  the K+1 is the positive query q+; likewise K+1 from the bottom `quantile`: the K least
  activating are the negative references, the most activating of them the negative query q-;
- with a perceptual similarity s (DreamSim in the paper), each query's evidence is
  delta(q) = mean_r+ s(q, r+) - mean_r- s(q, r-);
- the machine picks the query with the larger delta; the task is answered correctly when that is
  q+, and its expected accuracy is sigmoid(alpha * (delta(q+) - delta(q-))).

MIS = the mean over tasks of the expected accuracy (`alpha` set), or of the hard 0/1 answers
(`alpha` None: the plain psychophysics accuracy, 1.0 for a unit whose references always pick the
right query; a tie counts 0.5). The paper fits alpha to human interpretability annotations.

The defaults are the reference code's (klindtlab/machine-interpretability, `MIS.py`):
K = 9 and N = 20 (`query_explanation_generation(I_set, activations, K=9, N=20)`, line 70),
quantile 0.1 (`quantile = 0.1`, line 81: the top and bottom 10% of activations), the soft score
sigmoid(alpha * (d+ - d-)) (`calc_MIS`, line 129) with alpha = 0.16 (`calc_MIS_set(...,
alpha=0.16)`, line 134). The reference keeps the images strictly above the (1 - quantile)
activation quantile (and strictly below the quantile) in its pools; here a pool is the
ceil(quantile x images) images by rank. For distinct activations the two differ by at most the
one image at the boundary; with many tied values (zeros after a ReLU) the reference's strict
inequality can empty the bottom pool and stop, where ranking keeps it full.

The task math here is pure numpy over one unit's per-image activations; the images and the
similarity are passed in. `run_mis` is the pipeline that loads a model, measures a layer's units
over a probe set and scores them (torch and PIL imported there only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:

    from coin_scale.eval.explained_detection import ExplainedDetection
    from coin_scale.eval.similarity import Similarity
    from coin_scale.models.batches import OpenReplicas
    from coin_scale.probe import ProbeSet
    from coin_scale.storage.runs import RunRecorder
    from coin_scale.storage.schemas.scores import Row as ScoreRow

log = logging.getLogger(__name__)


REFERENCE_ALPHA = 0.16
"""The reference code's sigmoid slope (`calc_MIS_set(..., alpha=0.16)`)."""


@dataclass(frozen=True, kw_only=True)
class MISConfig:
    """How the 2-AFC tasks of one unit are built and scored."""

    k: int = 9
    """References per side of a task (the paper's K = 9 positive and 9 negative images)."""
    n: int = 20
    """Tasks per unit (the paper's N = 20)."""
    quantile: float = 0.1
    """Fraction of the probe images in each pool: references and queries of the positive side are
    drawn from the `quantile` most activating images, the negative side's from the least; in
    (0, 0.5] so the two pools never share an image (the reference's 0.1, `MIS.py` line 81)."""
    seed: int = 0
    """Seed of the draws; the same activations and seed give the same tasks."""
    alpha: float | None = REFERENCE_ALPHA
    """Slope of the sigmoid of the evidence difference (the paper's expected accuracy; the
    reference's 0.16, `MIS.py` line 134); None scores the hard choices (accuracy)."""

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k: expected >= 1 references per side; got {self.k}. Fix: e.g. 9.")
        if self.n < 1:
            raise ValueError(f"n: expected >= 1 tasks; got {self.n}. Fix: e.g. 20.")
        if not 0.0 < self.quantile <= 0.5:
            raise ValueError(
                f"quantile: expected in (0, 0.5] so the top and bottom pools are disjoint; got "
                f"{self.quantile}. Fix: e.g. 0.1 (the reference's)."
            )
        if self.alpha is not None and not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"alpha: expected a finite value > 0 or None; got {self.alpha}.")


@dataclass(frozen=True, kw_only=True)
class MISTask:
    """One 2-AFC task: image indices into the probe set."""

    positive_refs: tuple[int, ...]
    """K references from the top pool, most activating first."""
    negative_refs: tuple[int, ...]
    """K references from the bottom pool, least activating first."""
    positive_query: int
    """The query that belongs with the positive references (the correct answer)."""
    negative_query: int
    """The query that belongs with the negative references."""


@dataclass(frozen=True, kw_only=True)
class TaskAnswer:
    """The machine's answer to one task."""

    delta_positive: float
    """Evidence of q+: mean similarity to the positive minus to the negative references."""
    delta_negative: float
    """Evidence of q-, the same way."""
    correct: float
    """1.0 when q+ had the larger evidence, 0.0 when q-, 0.5 on a tie."""
    p_correct: float
    """Expected accuracy: sigmoid(alpha * (delta_positive - delta_negative)), or `correct` when
    alpha is None."""


@dataclass(frozen=True, kw_only=True)
class UnitMIS:
    """The MIS of one unit."""

    mis: float
    """Mean of `p_correct` over the tasks."""
    std: float
    """Standard deviation of `p_correct` over the tasks."""
    accuracy: float
    """Mean of the hard answers (`correct`)."""
    answers: tuple[TaskAnswer, ...] = field(repr=False)
    """One per task, in task order."""


def task_pools(activations: np.ndarray, quantile: float) -> tuple[np.ndarray, np.ndarray]:
    """(top pool, bottom pool) of image indices: the ceil(quantile * images) most activating
    images (most first) and as many least activating (least first); ties broken by index."""
    values = np.asarray(activations, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(
            f"activations: expected one value per image (1-D); got shape {values.shape}"
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("activations: expected finite values; got NaN or inf")
    size = math.ceil(values.size * quantile)
    ascending = np.lexsort((np.arange(values.size), values))
    descending = np.lexsort((np.arange(values.size), -values))
    if 2 * size > values.size:
        size = values.size // 2  # quantile 0.5 on an odd count: keep the pools disjoint
    return descending[:size], ascending[:size]


def build_tasks(activations: np.ndarray, config: MISConfig) -> tuple[MISTask, ...]:
    """The N tasks of one unit from its activation on each probe image (shape: image).

    Each task draws K+1 distinct images from each pool (independently of the other tasks, as in
    the paper); within a task the references and the query are disjoint and the two sides never
    share an image. Raises ValueError when a pool holds fewer than K+1 images."""
    top, bottom = task_pools(activations, config.quantile)
    need = config.k + 1
    if len(top) < need:
        n_images = int(np.asarray(activations).size)
        least = math.ceil(need / config.quantile)
        raise ValueError(
            f"too few probe images for MIS: {n_images} images give pools of {len(top)} at "
            f"quantile {config.quantile:g}, but a task needs k+1 = {need} per pool. Fix: at least "
            f"{least} images, a smaller k or a larger quantile (<= 0.5)."
        )
    values = np.asarray(activations, dtype=np.float64)
    rng = np.random.default_rng(config.seed)
    tasks = []
    for _ in range(config.n):
        pos = top[rng.choice(len(top), size=need, replace=False)]
        neg = bottom[rng.choice(len(bottom), size=need, replace=False)]
        pos = pos[np.lexsort((pos, -values[pos]))]  # most activating first
        neg = neg[np.lexsort((neg, values[neg]))]  # least activating first
        tasks.append(
            MISTask(
                positive_refs=tuple(int(i) for i in pos[:-1]),
                negative_refs=tuple(int(i) for i in neg[:-1]),
                positive_query=int(pos[-1]),
                negative_query=int(neg[-1]),
            )
        )
    return tuple(tasks)


def _sigmoid(x: float) -> float:
    return 0.5 * (1.0 + math.tanh(0.5 * x))


def answer(
    task: MISTask, similarity_of: Callable[[int, Sequence[int]], np.ndarray], alpha: float | None
) -> TaskAnswer:
    """Answer one task from `similarity_of(query, references) -> (reference,)` similarities."""

    def delta(query: int) -> float:
        pos = similarity_of(query, task.positive_refs)
        neg = similarity_of(query, task.negative_refs)
        return float(np.mean(pos) - np.mean(neg))

    d_pos, d_neg = delta(task.positive_query), delta(task.negative_query)
    margin = d_pos - d_neg
    correct = 1.0 if margin > 0 else 0.0 if margin < 0 else 0.5
    p = correct if alpha is None else _sigmoid(alpha * margin)
    return TaskAnswer(delta_positive=d_pos, delta_negative=d_neg, correct=correct, p_correct=p)


def score_tasks(
    tasks: Sequence[MISTask],
    images: Sequence[Any] | Callable[[int], Any],
    similarity: Similarity,
    alpha: float | None = None,
) -> UnitMIS:
    """Score one unit's tasks with one similarity call: every query against every reference.

    `images` maps a probe index to what `similarity` compares (a PIL image for DreamSim/LPIPS; any
    object for a test similarity); a sequence or a loader function."""
    if not tasks:
        raise ValueError("tasks: expected at least one task")
    get = images if callable(images) else images.__getitem__
    queries = sorted({i for t in tasks for i in (t.positive_query, t.negative_query)})
    refs = sorted({i for t in tasks for i in (*t.positive_refs, *t.negative_refs)})
    matrix = np.asarray(similarity([get(i) for i in queries], [get(i) for i in refs]), float)
    if matrix.shape != (len(queries), len(refs)):
        raise ValueError(
            f"similarity returned shape {matrix.shape}; expected (queries, references) = "
            f"({len(queries)}, {len(refs)})"
        )
    row = {i: r for r, i in enumerate(queries)}
    col = {i: c for c, i in enumerate(refs)}

    def similarity_of(query: int, references: Sequence[int]) -> np.ndarray:
        return matrix[row[query], [col[i] for i in references]]

    answers = tuple(answer(t, similarity_of, alpha) for t in tasks)
    p = np.array([a.p_correct for a in answers])
    return UnitMIS(
        mis=float(p.mean()),
        std=float(p.std()),
        accuracy=float(np.mean([a.correct for a in answers])),
        answers=answers,
    )


def unit_mis(
    activations: np.ndarray,
    images: Sequence[Any] | Callable[[int], Any],
    similarity: Similarity,
    config: MISConfig,
) -> UnitMIS:
    """Build the unit's tasks from its activations and score them: its MIS."""
    return score_tasks(build_tasks(activations, config), images, similarity, config.alpha)


# --- pipeline: model -> a layer's activations over a probe set -> MIS per unit -> warehouse ----


@dataclass(frozen=True, kw_only=True)
class MISRunConfig:
    """What `coin-scale eval mis` measures."""

    model: str
    """Model name or checkpoint (as `--model`)."""
    weights: str = "default"
    """As `--weights`; `none` gives random weights (and the usual warning)."""
    seed: int = 0
    """Seed of random weights (`--weights none`)."""
    layer: str
    """Layer whose units are scored."""
    units: tuple[int, ...] | None = None
    """Unit indices (of the SAE's features with `unit_kind` 'sae'); None: every unit."""
    unit_kind: str = "neuron"
    """'neuron' (the layer's channels) or 'sae' (the features of the SAE at `sae`)."""
    sae: str | None = None
    """The SAE checkpoint of the layer (`--units sae --sae PATH`)."""
    probe: str = "rendered"
    """`rendered` (the cached rendered probe set) or a probe set directory."""
    probe_images: int = 1000
    """Images of the rendered probe set."""
    similarity: str = "dreamsim"
    """Name in `coin_scale.eval.similarity.SIMILARITIES`."""
    similarity_cache: str | None = None
    """Where the similarity's weights are (or are downloaded to); None: its default."""
    reduction: str = "max"
    """Spatial reduction of a unit's map to one value per image (as in a dissection)."""
    batch_size: int = 32
    """Images per forward pass."""
    mis: MISConfig = MISConfig()
    """Task parameters."""


@dataclass(frozen=True, kw_only=True)
class MISRunResult:
    """MIS of the scored units of one layer."""

    model: str
    """Model id (as in the warehouse)."""
    layer: str
    n_images: int
    """Probe images read."""
    random_weights: bool
    units: tuple[int, ...]
    scores: tuple[UnitMIS, ...]
    """One per unit, in `units` order."""
    detections: tuple[ExplainedDetection, ...] = ()
    """One per unit when the probe set has concepts (rendered attributes or folder labels): the
    unit's offline explanation and its F1, IoU and AUPRC; empty otherwise."""
    no_detection_reason: str = ""
    """Why `detections` is empty."""

    @property
    def mean(self) -> float:
        """Mean MIS over the units."""
        return float(np.mean([s.mis for s in self.scores]))


class _InProcess:
    """A `BatchRunner` on a `ReplicaCore` in this process (no Ray: tests and library use)."""

    def __init__(self, core: Any) -> None:
        self.core = core

    def run(self, batches: Sequence[Any]) -> Any:
        return (self.core.run(i, batch) for i, batch in enumerate(batches))


def probe_activations(
    open_pool: OpenReplicas | None,
    payload: Any,
    layer: Any,
    paths: Sequence[str],
    config: MISRunConfig,
    sae: Any = None,
) -> tuple[np.ndarray, list[int]]:
    """((image, unit) float activations, indices of the images read) over `paths`, with the
    dissection's decoding, hooks and reduction (through `sae`'s encoder for its features): on
    model replicas from `open_pool` (GPUs where present), or, without it, on a replica core in
    this process. Unreadable images are skipped and logged."""
    from contextlib import nullcontext

    from coin_scale.models.batches import ReplicaWork, dense_activations

    transforms = {layer.name: sae} if sae is not None else None
    work = ReplicaWork(payload, {layer.name: layer.layout}, (config.reduction,), transforms)
    if open_pool is None:
        from coin_scale.models.replica_core import ReplicaCore

        core = ReplicaCore(payload, {layer.name: layer.layout}, (config.reduction,),  # type: ignore[arg-type]
                           unit_transforms=transforms)  # fmt: skip
        opened: Any = nullcontext(_InProcess(core))
    else:
        opened = open_pool(work)
    with opened as runner:
        acts, read, failures = dense_activations(
            runner, paths, layer.name, config.reduction, config.batch_size
        )
    for index, reason in failures:
        log.warning("skipped unreadable probe image %s: %s", paths[index], reason)
    if not read:
        raise ValueError("no probe image could be read")
    return acts, read


def probe_set(config: MISRunConfig, open_renderer: Any = None) -> ProbeSet:
    """The probe set: the cached rendered set (64 px; rendered by `open_renderer`'s pool when
    given and not cached) or the given folder."""
    from coin_scale.probe import scan_probe

    if config.probe == "rendered":
        from coin_scale.probe.rendered import PROBE_SIZE, rendered_probe

        root = rendered_probe(
            config.probe_images, PROBE_SIZE, progress=False, open_renderer=open_renderer
        )
    else:
        root = config.probe
    return scan_probe(root)


def probe_paths(config: MISRunConfig) -> list[str]:
    """The probe images' paths."""
    return [image.path for image in probe_set(config).images]


def _detections(
    probe: ProbeSet, acts: np.ndarray, read: list[int], units: tuple[int, ...]
) -> tuple[tuple[ExplainedDetection, ...], str]:
    """(each unit's offline explanation with F1/IoU/AUPRC, "") or ((), why not)."""
    from coin_scale.eval.explained_detection import concepts_of_images, explained_detections
    from coin_scale.probe.concepts import concepts_from_probe

    try:
        concepts = concepts_of_images(concepts_from_probe(probe), read)
    except ValueError as err:
        return (), f"no F1/IoU/AUPRC: the probe set has no concepts to explain units with ({err})"
    return tuple(explained_detections(acts, concepts, units)), ""


def run_mis(
    config: MISRunConfig,
    similarity: Similarity | None = None,
    *,
    on_start: Callable[[str, str], None] | None = None,
    open_pool: OpenReplicas | None = None,
    open_renderer: Any = None,
    open_similarity: Callable[[Any], Any] | None = None,
) -> MISRunResult:
    """Measure the layer's units over the probe set and score each one's MIS.

    The similarity named by `config.similarity` is checked before any model work (its package,
    LPIPS's weights file), so a missing one fails fast, and loaded where it runs: with
    `open_similarity` (the CLI passes a similarity replica on Ray, a GPU where present) there,
    else in this process; it compares the probe's images by index, each image read and (DreamSim)
    embedded once. Pass `similarity` (on PIL images) to use another one in process (tests).
    `on_start(model id, layer)` is called once the model, layer and units are checked, before the
    probe pass (the CLI starts its `runs` row there). With `open_pool` (the CLI passes replicas
    on Ray) the probe pass runs on the model replica pool; without it, in this process."""
    from contextlib import nullcontext

    from coin_scale.eval.similarity import (
        IndexedSimilarity,
        SimilarityWork,
        check_similarity,
        indexed_similarity,
    )
    from coin_scale.models import find_layer, resolve_model
    from coin_scale.models.loading import ModelSource, payload_layers

    # Checked before any model work (a missing package fails fast); loaded where it runs.
    loader = check_similarity(config.similarity, config.similarity_cache) if similarity is None else None
    payload = resolve_model(
        ModelSource(model=config.model, weights=config.weights, seed=config.seed)
    )
    layer = find_layer(payload_layers(payload), config.layer, payload.model_id)  # no model built
    sae = None
    width, noun = layer.units, "units"
    if config.unit_kind == "sae":
        from coin_scale.dissect.pipeline import load_sae_units

        sae = load_sae_units(config.sae, payload, layer)
        width, noun = sae.config.d_sae, "SAE features"
    elif config.sae is not None:
        raise ValueError("--sae is for --units sae (the SAE's features); drop it or add --units sae")
    units = tuple(range(width)) if config.units is None else config.units
    bad = [u for u in units if not 0 <= u < width]
    if bad:
        raise ValueError(
            f"units {bad} out of range: {payload.model_id}/{layer.name} has {noun} 0-{width - 1}"
        )
    if on_start is not None:
        on_start(payload.model_id, layer.name)
    probe = probe_set(config, open_renderer)
    paths = [image.path for image in probe.images]
    acts, read = probe_activations(open_pool, payload, layer, paths, config, sae)
    images = list(range(len(read)))  # the tasks name images by index into those read
    read_paths = tuple(paths[i] for i in read)
    if loader is None:  # a similarity handed in (tests, library use): in this process
        assert similarity is not None
        judge: Any = IndexedSimilarity(read_paths, similarity)
        scores = tuple(unit_mis(acts[:, u], images, judge, config.mis) for u in units)
    else:
        work = SimilarityWork(loader, config.similarity_cache, read_paths)
        # On a similarity replica (the CLI: GPUs where present), or loaded in this process.
        opened = open_similarity(work) if open_similarity else nullcontext(indexed_similarity(work))
        with opened as judge:
            scores = tuple(unit_mis(acts[:, u], images, judge, config.mis) for u in units)
    detections, why = _detections(probe, acts, read, units)
    return MISRunResult(
        model=payload.model_id, layer=layer.name, n_images=len(read),
        random_weights=payload.random_weights, units=units, scores=scores,
        detections=detections, no_detection_reason=why,
    )  # fmt: skip


def score_rows(result: MISRunResult, run: MISRunConfig, run_id: str) -> list[ScoreRow]:
    """`scores` table rows (test 'mis', metric 'mis'), one per unit: `k` the references per side,
    `draws` the tasks, `std` over the tasks, the other settings and the accuracy in `details`."""
    import json

    from coin_scale.storage.schemas.scores import Row

    c = run.mis
    rows = []
    for unit, s in zip(result.units, result.scores, strict=True):
        details = {
            "model": result.model, "similarity": run.similarity, "quantile": c.quantile,
            "seed": c.seed, "alpha": c.alpha, "accuracy": s.accuracy, "images": result.n_images,
            "probe": run.probe, "reduction": run.reduction,
            "random_weights": result.random_weights, "sae": run.sae,
        }  # fmt: skip
        rows.append(
            Row(
                run_id=run_id,
                test="mis",
                metric="mis",
                value=s.mis,
                layer=result.layer,
                unit=unit,
                kind=run.unit_kind,
                k=c.k,
                draws=c.n,
                std=s.std,
                details=json.dumps(details, sort_keys=True),
            )  # fmt: skip
        )
    for d in result.detections:
        if d.detection is None:
            continue
        found = d.detection
        found_details = json.dumps({
            "model": result.model, "formula": d.formula, "label": d.label,
            "threshold": found.threshold, "positives": found.positives,
            "predicted": found.predicted, "explainer": "offline", "probe": run.probe,
        }, sort_keys=True)  # fmt: skip
        for metric, value in (("f1", found.f1), ("iou", found.iou), ("auprc", found.auprc)):
            rows.append(
                Row(
                    run_id=run_id,
                    test="mis",
                    metric=metric,
                    value=value,
                    layer=result.layer,
                    unit=d.unit,
                    kind=run.unit_kind,
                    details=found_details,
                )  # fmt: skip
            )
    return rows


def run_recorder(
    warehouse: str,
    run: MISRunConfig,
    run_id: str,
    *,
    model: str,
    layer: str,
    started_at: datetime | None = None,
) -> RunRecorder:
    """The `runs` rows of one `eval mis` run (not yet started; `start` writes 'running')."""
    from dataclasses import asdict

    from coin_scale.storage.runs import RunRecorder
    from coin_scale.storage.warehouse import Warehouse

    return RunRecorder(
        warehouse=Warehouse(warehouse), run_id=run_id, command="eval mis", model=model,
        weights=run.weights, layers=[layer], probe=run.probe, config=asdict(run),
        started_at=started_at,
    )  # fmt: skip


def store_scores(recorder: RunRecorder, result: MISRunResult, run: MISRunConfig) -> None:
    """The unit rows in `scores`, then the recorder's 'complete' `runs` row (both keyed by the
    run id, so a rerun replaces them)."""
    recorder.warehouse.write(
        "scores", score_rows(result, run, recorder.run_id), key=recorder.run_id
    )
    recorder.complete(n_images=result.n_images, n_failed=0)
