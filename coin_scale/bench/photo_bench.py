"""The photo sweep's speed: a whole layer dissected over a folder of photographs and labelled by an
image-text explainer, against the two models' bare forward passes over the same images.

`coin-scale bench photo` (default: resnet152 `layer4`, 2,048 units, random weights, which do not
change the speed; open_clip ViT-B-32, random weights; the 1,000 ImageNet photos of
`../shared/data/images/imagenet_sample` when they are there). Phases, each timed on its own:

1. `vocabulary`: the vocabulary's text embeddings, once per (image-text model, weights,
   vocabulary) and cached in the user's cache: the first run embeds them, every later one reads
   them (reported, not in the ratio);
2. `ray start`: the local Ray and the replicas' start-up (reported, not in the ratio);
3. `probe pass`: the dissection, decoding every photo, the explained model's forward pass on the
   replica pool, running top-k and the dense (image, unit) activations;
4. `concept scoring`: every probe image through the image-text model on its own replica pool
   (decode, preprocess, forward; cached for the next run), the replicas' start-up counted in 2;
5. `labelling`: matching every unit to the concepts (or the formula search) and storing the
   `explanations` rows.

The ratio is (3 + 4 + 5) over the bare forward passes of both models over as many images
(random tensors already at the models' input size, `inference_mode`, the same batch size), timed
just before and just after each run and averaged; the median over repeats is reported, each
repeat's beside it; the issue's target is at most 1.2. Each run starts from a cache (but
for the vocabulary's embeddings) and a warehouse of its own, so no probe pass and no probe image
embedding is reused between repeats.
"""

from __future__ import annotations

import logging
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from coin_scale.bench.dissect_bench import bare_forward_img_s
from coin_scale.cache import cache_root
from coin_scale.errors import UserError

log = logging.getLogger(__name__)

SHARED_SAMPLE = Path(__file__).resolve().parents[2].parent / "shared/data/images/imagenet_sample"
"""The 1,000 ImageNet photos beside the project's checkout, when they are there."""


@dataclass(frozen=True, kw_only=True)
class PhotoBenchConfig:
    """What `coin-scale bench photo` measures."""

    model: str = "resnet152"
    weights: str = "none"
    layer: str = "layer4"
    probe: str | None = None
    """A folder of photographs; None: `SHARED_SAMPLE` (an error when it is not there)."""
    explainer: str = "clip"
    """`clip` or `clip-formula`."""
    clip_model: str = "ViT-B-32"
    clip_weights: str = "none"
    concepts: str = "photo"
    batch_size: int = 32
    bare_images: int = 256
    """Images each bare forward pass is timed on (its time per image is scaled to the probe)."""
    repeats: int = 1
    """Whole runs; medians are reported."""
    address: str | None = None


def probe_folder(config: PhotoBenchConfig) -> Path:
    """The probe folder of `config`; a one-line error when the default sample is not there."""
    if config.probe is not None:
        return Path(config.probe)
    if not SHARED_SAMPLE.is_dir():
        raise UserError(
            f"bench photo: the ImageNet sample is not at {SHARED_SAMPLE}; pass --probe DIR (a "
            "folder of photographs)"
        )
    return SHARED_SAMPLE


def bare_image_text_img_s(model: Any, batch_size: int, n_images: int) -> float:
    """Images/s of the image-text model's image tower alone on random input-size tensors."""
    side = model.input_size
    x = torch.randn(batch_size, 3, side, side)
    batches = max(1, n_images // batch_size)
    with torch.inference_mode():
        model.model.encode_image(x)  # warm-up
        start = time.perf_counter()
        for _ in range(batches):
            model.model.encode_image(x)
    return batches * batch_size / (time.perf_counter() - start)


@dataclass(frozen=True, kw_only=True)
class PhotoRun:
    """One timed run."""

    vocabulary_s: float
    ray_start_s: float
    probe_pass_s: float
    concept_scoring_s: float
    labelling_s: float
    images: int
    units: int
    concepts: int
    explained: int

    @property
    def pipeline_s(self) -> float:
        return self.probe_pass_s + self.concept_scoring_s + self.labelling_s


class _TimedEncoders:
    """`image_text_opener`'s pools, their start-up (model built on every replica) recorded."""

    def __init__(self, address: str | None) -> None:
        self.address = address
        self.startup_s = 0.0

    @contextmanager
    def __call__(self, source: Any) -> Iterator[Any]:
        from coin_scale.runtime.pools import image_text_pool

        with image_text_pool(source, address=self.address, replicas=None) as pool:
            self.startup_s += pool.startup_seconds
            yield pool


def _one_run(config: PhotoBenchConfig, probe: Path, payload: Any) -> PhotoRun:
    from coin_scale.actors.cluster import connect
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.explain.image_text import ClipExplainerConfig, image_text_explainer
    from coin_scale.explain.whole_layer import explain_whole_layer
    from coin_scale.models.image_text import text_embeddings
    from coin_scale.probe import scan_probe
    from coin_scale.storage import Warehouse
    from coin_scale.sweep.evidence import layer_evidence

    settings = ClipExplainerConfig(
        model=config.clip_model, weights=config.clip_weights, concepts=config.concepts
    )
    encoders = _TimedEncoders(config.address)
    explainer = image_text_explainer(config.explainer, settings, open_encoders=encoders)
    scorer = explainer.scorer
    vocabulary = scorer.vocabulary  # type: ignore[attr-defined]
    start = time.perf_counter()  # in the user's cache: embedded on first use, then read
    text_embeddings(scorer.model, vocabulary.concepts, vocabulary.fingerprint)  # type: ignore[attr-defined]
    vocabulary_s = time.perf_counter() - start
    texts = cache_root() / "image_text" / "text"
    with tempfile.TemporaryDirectory(prefix="coin-scale-bench-photo-") as tmp:
        previous = os.environ.get("COIN_SCALE_CACHE")
        os.environ["COIN_SCALE_CACHE"] = str(Path(tmp) / "cache")  # no probe embeddings from before
        shutil.copytree(texts, cache_root() / "image_text" / "text")  # the vocabulary's, as cached
        try:
            start = time.perf_counter()
            connect(config.address)
            ray_s = time.perf_counter() - start
            warehouse = str(Path(tmp) / "warehouse")
            dissect = DissectConfig(
                model=config.model, weights=config.weights, layer=config.layer, probe=str(probe),
                warehouse=warehouse, batch_size=config.batch_size, address=config.address,
            )  # fmt: skip
            start = time.perf_counter()
            evidence = layer_evidence(dissect, payload, progress=False, probe=scan_probe(probe))
            probe_pass_s = time.perf_counter() - start
            assert evidence.result is not None
            startup = evidence.result.startup_seconds  # the replicas' one-off start
            start = time.perf_counter()
            scorer.scores(evidence)  # every probe image embedded on the replicas (and cached)
            scoring_s = time.perf_counter() - start - encoders.startup_s
            start = time.perf_counter()
            explained = explain_whole_layer(
                evidence, Warehouse(warehouse), run_id="bench-photo", model=payload.model_id,
                layer=config.layer, kind="neuron", explainer=explainer,
            )  # fmt: skip
            labelling_s = time.perf_counter() - start
        finally:
            if previous is None:
                os.environ.pop("COIN_SCALE_CACHE", None)
            else:
                os.environ["COIN_SCALE_CACHE"] = previous
    return PhotoRun(
        vocabulary_s=vocabulary_s, ray_start_s=ray_s + startup + encoders.startup_s,
        probe_pass_s=probe_pass_s - startup, concept_scoring_s=scoring_s,
        labelling_s=labelling_s, images=int(evidence.activations.shape[0]),
        units=int(evidence.activations.shape[1]), concepts=len(scorer.names),
        explained=explained.statuses.get("ok", 0),
    )  # fmt: skip


def _bare_rates(config: PhotoBenchConfig, module: Any, payload: Any, image_text: Any) -> tuple[float, float]:
    """(explained model, image-text model) bare images/s, timed now."""
    return (
        bare_forward_img_s(module, config.batch_size, config.bare_images, payload.preprocess.crop),
        bare_image_text_img_s(image_text, config.batch_size, config.bare_images),
    )


def run_photo_bench(config: PhotoBenchConfig) -> dict[str, Any]:
    """Median phase times, rates and the pipeline / bare-forward ratio over `repeats` runs."""
    from coin_scale.explain.registry import get_explainer
    from coin_scale.models import ModelSource, build_module, resolve_model
    from coin_scale.models.image_text import ImageTextModel, ImageTextSource

    if not get_explainer(config.explainer).image_text:
        raise UserError(f"bench photo: --explainer must be clip or clip-formula; got {config.explainer}")
    probe = probe_folder(config)
    payload = resolve_model(ModelSource(model=config.model, weights=config.weights))
    module = build_module(payload)
    image_text = ImageTextModel(ImageTextSource(model=config.clip_model, weights=config.clip_weights))
    runs, model_rates, clip_rates, ratios = [], [], [], []
    for repeat in range(config.repeats):
        # The bare passes are timed just before and just after each run, and averaged: this
        # shared machine's speed drifts by a third over minutes, so a baseline timed once, minutes
        # away from the run, moves the ratio more than the pipeline does.
        before = _bare_rates(config, module, payload, image_text)
        runs.append(_one_run(config, probe, payload))
        after = _bare_rates(config, module, payload, image_text)
        model_rates.extend([before[0], after[0]])
        clip_rates.extend([before[1], after[1]])
        run = runs[-1]
        bare = run.images / statistics.mean([before[0], after[0]]) + run.images / statistics.mean(
            [before[1], after[1]]
        )
        ratios.append(run.pipeline_s / bare)
        log.info("repeat %d: %s; bare before %s, after %s; ratio %.3f", repeat, run, before, after, ratios[-1])
    med = statistics.median
    first = runs[0]
    model_s = first.images / med(model_rates)
    clip_s = first.images / med(clip_rates)
    pipeline = med(r.pipeline_s for r in runs)
    return {
        "config": asdict(config),
        "probe": str(probe),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
        "images": first.images,
        "units": first.units,
        "concepts": first.concepts,
        "explained_ok": first.explained,
        "phases_s": {
            "vocabulary (once per model and vocabulary, cached)": med(r.vocabulary_s for r in runs),
            "ray and replica start (both pools)": med(r.ray_start_s for r in runs),
            "probe pass (decode + model forward + top-k)": med(r.probe_pass_s for r in runs),
            "concept scoring (image-text replicas over the probe)": med(r.concept_scoring_s for r in runs),
            "labelling (matching + explanations rows)": med(r.labelling_s for r in runs),
        },
        "pipeline_s": pipeline,
        "bare_forward_s": {"model": model_s, "image_text": clip_s, "both": model_s + clip_s},
        "bare_img_s": {"model": med(model_rates), "image_text": med(clip_rates)},
        "bare_img_s_range": {
            "model": [min(model_rates), max(model_rates)],
            "image_text": [min(clip_rates), max(clip_rates)],
        },
        "pipeline_over_bare_forward": med(ratios),
        "pipeline_over_bare_forward_each": ratios,
        "concept_scoring_img_s": first.images / med(r.concept_scoring_s for r in runs),
        "labelling_units_s": first.units / med(r.labelling_s for r in runs),
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": [asdict(r) | {"pipeline_s": r.pipeline_s} for r in runs],
    }
