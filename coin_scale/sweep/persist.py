"""Write a sweep's tables: runs, units, explanations, chain_edges, scores (with the held-out
scores of `sweep/heldout.py`), class_explanations."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime

import pyarrow as pa

from coin_scale.explain.resume import clear_run
from coin_scale.storage import Warehouse
from coin_scale.storage.schemas import get_spec
from coin_scale.sweep.config import SweepConfig
from coin_scale.sweep.heldout import heldout_rows
from coin_scale.sweep.records import ClassExplanation, ConceptShare


def _table(name: str, rows: list[dict]) -> pa.Table:
    return get_spec(name).from_dicts(rows)


def unit_score_rows(run_id: str, e: ClassExplanation) -> list[dict]:
    """Per explained unit: test 'predictive' (auc, cohens_d, f1, iou, auprc) and 'interpscore'
    (S, C, R, interpscore), each with the formula and settings in `details`."""
    rows = []
    for s in e.unit_scores:
        if s.predictive is None or s.interp is None:
            continue
        p, i = s.predictive, s.interp
        kind = e.unit_kind if s.layer == e.layer else "neuron"
        details = json.dumps({
            "formula": s.formula, "formula_source": s.formula_source,
            "n_satisfying": p.n_satisfying, "n_other": p.n_other,
            "scoring_images": e.scoring_images, "parts": list(i.parts), "notes": list(i.notes),
        })  # fmt: skip
        measured = [
            ("predictive", "auc", p.auc), ("predictive", "cohens_d", p.cohens_d),
            ("predictive", "f1", p.detection.f1), ("predictive", "iou", p.detection.iou),
            ("predictive", "auprc", p.detection.auprc),
            ("interpscore", "S", i.S), ("interpscore", "C", i.C), ("interpscore", "R", i.R),
            ("interpscore", "H", i.H), ("interpscore", "interpscore", i.score),
        ]  # fmt: skip
        rows += [
            {"run_id": run_id, "test": test, "metric": metric, "value": float(value),
             "layer": s.layer, "unit": s.unit, "kind": kind, "details": details}
            for test, metric, value in measured
            if value is not None and math.isfinite(value)
        ]  # fmt: skip
    return rows


def generated_rows(run_id: str, e: ClassExplanation) -> list[dict]:
    """Per unit scored on generated images (`--image-generator diffusion`): test 'predictive',
    metrics generated_auc, generated_delta, generated_cohens_d, generated_mean_positive and
    generated_mean_neutral, the prompts in `details`."""
    rows = []
    for f in (*e.positive, *e.negative, *e.chain_nodes):
        g = f.generated
        if g is None:
            continue
        kind = e.unit_kind if f.layer == e.layer else "neuron"
        details = json.dumps({
            "protocol": "generated images (MAIA)", "label": f.label, "explainer": f.explainer,
            "positive_prompts": list(g.positive_prompts), "neutral_prompts": list(g.neutral_prompts),
            "prompts_from": g.prompts_from,
        })  # fmt: skip
        for metric, value in (
            ("generated_auc", g.auc), ("generated_delta", g.delta),
            ("generated_cohens_d", g.cohens_d), ("generated_mean_positive", g.mean_positive),
            ("generated_mean_neutral", g.mean_neutral),
        ):  # fmt: skip
            if math.isfinite(value):
                rows.append({"run_id": run_id, "test": "predictive", "metric": metric,
                             "value": float(value), "layer": f.layer, "unit": f.unit,
                             "kind": kind, "details": details})  # fmt: skip
    return rows


def store_sweep(
    warehouse: Warehouse,
    explanation: ClassExplanation,
    config: SweepConfig,
    *,
    dissection_ids: Mapping[str, str],
) -> None:
    """Every row keyed by run_id, so a rerun of the same run id replaces rather than duplicates
    (the `runs` row is the run recorder's: `coin_scale.storage.runs`)."""
    e = explanation
    findings = [("positive", f) for f in e.positive] + [("negative", f) for f in e.negative]
    explained = [f for _, f in findings] + list(e.chain_nodes)
    run_id = e.run_id
    terms = dict(e.terms)
    warehouse.write("units", _table("units", [
        {"run_id": run_id, "model": e.model, "layer": f.layer, "unit": f.unit, "kind": e.unit_kind,
         "contribution": f.contribution, "share": f.share, "rank": f.rank, "sign": sign,
         "method": e.method}
        for sign, f in findings
    ]), key=run_id)  # fmt: skip
    warehouse.write("explanations", _table("explanations", [
        {"run_id": run_id, "model": e.model, "layer": f.layer, "unit": f.unit,
         "kind": e.unit_kind if f.layer == e.layer else "neuron", "explainer": f.explainer,
         "status": f.status, "reason": f.reason,
         "label": f.label, "description": f.description, "formula": f.formula,
         "score": f.score, "score_name": f.score_name,
         "error": f.error,
         "dissection_id": dissection_ids.get(f.layer)}
        for f in explained if f.status is not None
    ]), key=run_id)  # fmt: skip
    warehouse.write("chain_edges", _table("chain_edges", [
        {"run_id": run_id, "source_layer": f.layer, "source_unit": f.unit, "target_kind": "class",
         "target_layer": None, "target": e.class_index, "weight": f.contribution,
         "method": e.method, "source_kind": e.unit_kind}
        for _, f in findings
    ] + [
        {"run_id": run_id, "source_layer": edge.source_layer, "source_unit": edge.source_unit,
         "target_kind": "unit", "target_layer": edge.target_layer, "target": edge.target_unit,
         "weight": edge.weight, "method": edge.method, "source_kind": "neuron"}
        for edge in e.chain_edges
    ]), key=run_id)  # fmt: skip
    ablation_rows = [
        {"run_id": run_id, "test": "ablation", "metric": metric, "value": value,
         "layer": score.layer, "unit": None, "kind": e.unit_kind, "ablation": score.ablation,
         "selection": score.selection, "k": score.k, "draws": score.draws,
         "std": score.margin_drop_std if metric == "margin_drop" and score.draws > 1 else None}
        for score in e.faithfulness
        for metric, value in (("margin_drop", score.margin_drop), ("logit_drop", score.logit_drop),
                              ("probability_drop", score.probability_drop))
    ]  # fmt: skip
    scores = ablation_rows + unit_score_rows(run_id, e) + heldout_rows(e) + generated_rows(run_id, e)
    warehouse.write("scores", _table("scores", scores), key=run_id)
    warehouse.write("class_explanations", _table("class_explanations", [{
        "run_id": run_id, "model": e.model, "weights": e.weights,
        "random_weights": e.random_weights, "image_path": e.image_path,
        "class_name": e.class_name, "class_index": e.class_index, "probability": e.probability,
        "logit": e.logit, "layer": e.layer, "method": e.method,
        "text": e.text + ("" if not e.notes else " [" + " ".join(e.notes) + "]"),
        "created_at": datetime.now(UTC), "unit_kind": e.unit_kind, "head_bias": e.head_bias,
        "sae_sha256": e.sae.sha256 if e.sae else None,
        "sae_decoder_bias": terms.get("sae_decoder_bias"), "sae_error": terms.get("sae_error"),
    }]), key=run_id)  # fmt: skip
    warehouse.write("class_concepts", _table("class_concepts", [
        {"run_id": run_id, "model": e.model, "class_name": e.class_name,
         "class_index": e.class_index, "layer": s.layer, "part": s.part,
         "concept": s.concept or None, "rank": rank, "contribution": s.contribution,
         "share": s.share if math.isfinite(s.share) else None, "units": list(s.units),
         "mean_score": s.mean_score, "score_name": s.score_name}
        for rank, s in _ranked(e)
    ]), key=run_id)  # fmt: skip
    clear_run(warehouse.fs, run_id)  # every row is stored: the resume checkpoints are spent


def _ranked(e: ClassExplanation) -> list[tuple[int, ConceptShare]]:
    """Each concept row with its rank within its layer (concepts first, then the other parts)."""
    seen: dict[str, int] = {}
    out = []
    for share in e.concepts:
        rank = seen.get(share.layer, 0)
        seen[share.layer] = rank + 1
        out.append((rank, share))
    return out
