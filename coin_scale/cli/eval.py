"""`coin-scale eval`: explainers against ground truth (synthetic units with known formulas) and
the Machine Interpretability Score of a layer's units (`eval mis`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

DESCRIPTION = """\
Units whose activation is a formula's 0/1 indicator on the probe images plus Gaussian noise,
explained like neurons and scored against their formula: exact match, same probe images,
concept precision/recall/F1, per kind (mono, or, and, and_not). By default the activations come
straight from the probe set's ground-truth attributes (no model, no Ray); with --through model
the units are a model that computes each formula from pixels (an attribute net trained on
rendered single-object scenes, cached on first use, a few minutes), dissected on Ray like any
layer (`coin-scale dissect --layer units`), over the rendered probe set of one large object per
image that the net was trained on.
"""

SPEC_HELP = """\
A spec file is a YAML list of units, each a formula over the probe's concepts and an optional
name and noise, e.g.:
  - formula: color=red
  - name: red-stripes
    formula: color=red AND texture=stripes
    noise: 0.2
  - formula: shape=circle OR shape=star
  - formula: shape=star AND NOT color=red
"""


def register(sub: argparse._SubParsersAction) -> None:
    from coin_scale.cli.common import add_llm_args
    from coin_scale.explain.registry import explainer_help

    parser = sub.add_parser("eval", help="label accuracy of explainers on units with ground truth")
    evals = parser.add_subparsers(dest="evaluation", metavar="EVALUATION", required=True)
    s = evals.add_parser(
        "synthetic",
        help="synthetic units defined by formulas over the probe's attributes: does the "
        "explainer recover them?",
        description=DESCRIPTION,
        epilog=SPEC_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("--n", type=int, default=None, help="random units (default 100)")
    s.add_argument("--seed", type=int, default=0, help="seed of the formulas and the noise")
    s.add_argument("--spec", default=None, help="YAML file of units instead of random ones")
    s.add_argument(
        "--kinds",
        default="mono,or,and,and_not",
        help="kinds of random unit, in equal shares (default all four)",
    )
    s.add_argument("--explainer", default="offline",
                   help=f"how units are explained (default offline). {explainer_help()}. An LLM "
                   "needs --through model; its labels are read back to formulas by the matcher")  # fmt: skip
    s.add_argument(
        "--probe",
        default="rendered",
        help="rendered (cached rendered probe set) or a probe set directory",
    )
    s.add_argument(
        "--probe-images",
        type=int,
        default=1000,
        help="images of the rendered probe set (default 1000)",
    )
    s.add_argument(
        "--noise",
        type=float,
        default=0.3,
        help="noise std on the 0/1 formula indicator (default 0.3)",
    )
    s.add_argument(
        "--quantile", type=float, default=0.85, help="the explainer's mask quantile (default 0.85)"
    )
    s.add_argument(
        "--through",
        choices=["truth", "model"],
        default="truth",
        help="truth: activations from the ground-truth attributes (default); model: the units "
        "computed from pixels by the attribute net, dissected on Ray",
    )
    s.add_argument("--address", default=None, help="Ray address (--through model; default local)")
    add_llm_args(s, flag="--explainer")
    s.add_argument("--llm-cache", default=None, metavar="DIR",
                   help="request cache: a rerun pays only for new requests "
                   "(default $COIN_SCALE_CACHE/llm, else ~/.cache/coin-scale/llm)")  # fmt: skip
    s.add_argument("--json", action="store_true", help="print JSON (summary and every unit)")
    s.add_argument("--no-progress", action="store_true", help="hide the rendering progress bar")
    s.set_defaults(func=run_synthetic)
    _register_mis(evals)


MIS_DESCRIPTION = """\
Machine Interpretability Score (Zimmermann, Klindt & Brendel, arXiv:2403.17230) of a layer's units:
N 2-alternative tasks per unit, each with K of its most and K of its least activating probe images
as references and one query from each side (drawn from the top and bottom --quantile of its
activations); a perceptual similarity picks the query more like the top references. MIS is the
mean over tasks of the expected accuracy (sigmoid of the evidence difference times --alpha), or of
the hard choices with --hard. The defaults (K 9, N 20, quantile 0.1, alpha 0.16) are the reference
code's (klindtlab/machine-interpretability, MIS.py). DreamSim and LPIPS are optional: pip install
'coin-scale[mis]'.
"""


def _register_mis(evals: argparse._SubParsersAction) -> None:
    from coin_scale.cli.common import add_model_args

    m = evals.add_parser(
        "mis",
        help="Machine Interpretability Score of a layer's units (DreamSim or LPIPS psychophysics)",
        description=MIS_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(m)
    m.add_argument(
        "--layer", required=True, help="layer whose units are scored (`coin-scale layers`)"
    )
    m.add_argument("--units", default=None, metavar="neuron|sae|INDICES",
                   help="neuron (the layer's channels, default), sae (the features of --sae), or "
                   "unit indices such as 0-9,12 (the same as --select)")  # fmt: skip
    m.add_argument("--sae", default=None, metavar="PATH",
                   help="the layer's SAE checkpoint, with --units sae")  # fmt: skip
    m.add_argument("--select", default=None, metavar="INDICES",
                   help="the units (or SAE features) scored, e.g. 0-9,12 (default: all)")  # fmt: skip
    m.add_argument("--probe", default="rendered",
                   help="rendered (cached rendered probe set) or a probe set directory")  # fmt: skip
    m.add_argument("--probe-images", type=int, default=1000,
                   help="images of the rendered probe set (default 1000)")  # fmt: skip
    m.add_argument("--similarity", default="dreamsim", help="dreamsim (default) or lpips")
    m.add_argument("--similarity-cache", default=None, metavar="DIR",
                   help="where the similarity's weights are (dreamsim: default "
                   "~/.cache/coin-scale/dreamsim; lpips: a torch hub directory)")  # fmt: skip
    m.add_argument("--k", type=int, default=9, help="references per side of a task (default 9)")
    m.add_argument("--n", type=int, default=20, help="tasks per unit (default 20)")
    m.add_argument("--quantile", type=float, default=0.1,
                   help="fraction of the probe images each side draws from (default 0.1, the "
                   "reference code's)")  # fmt: skip
    m.add_argument("--task-seed", type=int, default=0, help="seed of the task draws (default 0)")
    m.add_argument("--alpha", type=float, default=0.16,
                   help="sigmoid slope of the expected accuracy (default 0.16, the reference "
                   "code's)")  # fmt: skip
    m.add_argument("--hard", action="store_true",
                   help="score the hard 0/1 choices (accuracy) instead of the expected accuracy")  # fmt: skip
    m.add_argument("--reduction", choices=["max", "mean"], default="max",
                   help="spatial reduction of a unit's map to one value per image")  # fmt: skip
    m.add_argument("--batch-size", type=int, default=32)
    m.add_argument("--warehouse", default=None,
                   help="also write the scores (test 'mis') to this warehouse")  # fmt: skip
    m.add_argument("--run-id", default=None,
                   help="run id of the scores rows (default mis-MODEL-LAYER-SIMILARITY)")  # fmt: skip
    m.add_argument("--json", action="store_true", help="print JSON (settings and every unit)")
    m.add_argument("--address", default=None,
                   help="Ray cluster of the model replicas (default: a local Ray)")  # fmt: skip
    m.set_defaults(func=run_mis)


def parse_units(text: str) -> tuple[int, ...]:
    """'0-3,7' -> (0, 1, 2, 3, 7); a UserError on anything else."""
    from coin_scale.errors import UserError
    from coin_scale.records import parse_unit_list

    try:
        return parse_unit_list(text)
    except ValueError:
        raise UserError(f"--units: expected indices like 0-9,12; got {text!r}") from None


def _selected(args: argparse.Namespace) -> tuple[int, ...] | None:
    """The unit indices of `--select`, or of `--units` given as indices (the older form)."""
    from coin_scale.errors import UserError

    given = args.units if args.units not in (None, "neuron", "sae") else None
    if given is not None and args.select is not None:
        raise UserError("give the unit indices once: --select (or --units INDICES), not both")
    text = args.select if args.select is not None else given
    return None if text is None else parse_units(text)


def run_mis(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from coin_scale.errors import UserError
    from coin_scale.eval.mis import MISConfig, MISRunConfig, run_recorder, store_scores
    from coin_scale.eval.mis import run_mis as run
    from coin_scale.storage.runs import RunRecorder
    from coin_scale.storage.spec import check_safe_name

    started: list[RunRecorder] = []  # with --warehouse, the run's recorder once it has started

    def start(model: str, layer: str) -> None:  # the model and layer are checked: 'running'
        if args.warehouse is not None:
            run_id = check_safe_name(args.run_id or f"mis-{model}-{layer}-{config.similarity}",
                                     "--run-id")  # fmt: skip
            recorder = run_recorder(args.warehouse, config, run_id, model=model, layer=layer,
                                    started_at=started_at)  # fmt: skip
            started.append(recorder.start())

    try:
        try:
            config = MISRunConfig(
                model=args.model, weights=args.weights, seed=args.seed, layer=args.layer,
                units=_selected(args), unit_kind="sae" if args.units == "sae" else "neuron",
                sae=args.sae, probe=args.probe,
                probe_images=args.probe_images, similarity=args.similarity,
                similarity_cache=args.similarity_cache, reduction=args.reduction,
                batch_size=args.batch_size,
                mis=MISConfig(k=args.k, n=args.n, quantile=args.quantile, seed=args.task_seed,
                              alpha=None if args.hard else args.alpha),
            )  # fmt: skip
            started_at = datetime.now(UTC)
            from coin_scale.runtime.pools import render_opener, replica_opener, similarity_opener

            # The probe pass on model replicas (a local Ray unless --address), as a dissection's;
            # a rendered probe set not cached yet is rendered on the render pool.
            opener = replica_opener(address=args.address, replicas=None)
            result = run(config, on_start=start, open_pool=opener,
                         open_renderer=render_opener(address=args.address),
                         open_similarity=similarity_opener(address=args.address))  # fmt: skip
            if started:  # scores, then 'complete'
                store_scores(started[0], result, config)
        except ValueError as err:
            raise UserError(f"eval mis: {err}") from None
    except BaseException as err:  # 'failed', with the error (Ctrl-C: 'interrupted')
        for recorder in started:
            recorder.fail(err)
        raise
    run_id = args.run_id or f"mis-{result.model}-{result.layer}-{config.similarity}"
    if args.json:
        print(json.dumps(_mis_json(config, result, run_id if args.warehouse else None), indent=2))
        return 0
    c = config.mis
    scoring = "accuracy of the hard choices" if c.alpha is None else f"sigmoid, alpha {c.alpha:g}"
    print(
        f"MIS of {len(result.units)} units of {result.model}/{result.layer} over "
        f"{result.n_images} probe images; {config.similarity}, k {c.k}, {c.n} tasks, quantile "
        f"{c.quantile:g}, task seed {c.seed}; {scoring}"
        + (
            "; RANDOM weights: says nothing about a trained network"
            if result.random_weights
            else ""
        )
    )
    for line in _mis_table(result):
        print(line)
    print(f"mean MIS: {result.mean:.3f} over {len(result.units)} units")
    if result.detections:
        print("F1, IoU and AUPRC: each unit as a detector of the images its offline explanation "
              "covers (at the explainer's threshold; AUPRC over the ranking)")  # fmt: skip
    elif result.no_detection_reason:
        print(f"note: {result.no_detection_reason}")
    if args.warehouse is not None:
        print(f"warehouse: {args.warehouse}, scores run_id {run_id!r} (try: coin-scale query "
              f"--warehouse {args.warehouse} \"SELECT unit, value FROM scores WHERE test = 'mis'\")")  # fmt: skip
    return 0


def _mis_table(result: Any) -> list[str]:
    """One line per unit: MIS, std, accuracy, then the offline formula's F1, IoU and AUPRC."""
    header = ["unit", "MIS", "std", "accuracy"]
    if result.detections:
        header += ["F1", "IoU", "AUPRC", "explanation"]
    rows = [header]
    found = {d.unit: d for d in result.detections}
    for u, s in zip(result.units, result.scores, strict=True):
        row = [str(u), f"{s.mis:.3f}", f"{s.std:.3f}", f"{s.accuracy:.3f}"]
        d = found.get(u)
        if d is not None and d.detection is not None:
            det = d.detection
            row += [f"{det.f1:.2f}", f"{det.iou:.2f}", f"{det.auprc:.2f}", d.label]
        elif result.detections:
            row += ["-", "-", "-", "(no explanation)"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(w) if i == len(header) - 1 and result.detections else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _mis_json(config: Any, result: Any, run_id: str | None) -> dict[str, Any]:
    return {
        "evaluation": "mis",
        "config": asdict(config),
        "model": result.model,
        "layer": result.layer,
        "images": result.n_images,
        "random_weights": result.random_weights,
        "mean_mis": result.mean,
        "run_id": run_id,
        "units": [
            {
                "unit": u,
                "mis": s.mis,
                "std": s.std,
                "accuracy": s.accuracy,
                **_detection_json(result, u),
            }
            for u, s in zip(result.units, result.scores, strict=True)
        ],  # fmt: skip
        "no_detection_reason": result.no_detection_reason or None,
    }


def _detection_json(result: Any, unit: int) -> dict[str, Any]:
    """The unit's offline explanation with its F1, IoU and AUPRC (empty without concepts)."""
    for d in result.detections:
        if d.unit == unit:
            det = d.detection
            return {
                "explanation": d.formula or None,
                "f1": det.f1 if det else None,
                "iou": det.iou if det else None,
                "auprc": det.auprc if det else None,
            }
    return {}


def run_synthetic(args: argparse.Namespace) -> int:
    from coin_scale.cli.common import image_generator_of
    from coin_scale.errors import UserError
    from coin_scale.runtime.eval_synthetic import SyntheticEvalConfig, run_synthetic_eval

    if args.spec is not None and args.n is not None:
        raise UserError("eval synthetic: give --n (random units) or --spec (a file), not both")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
        llm = _llm_settings(args)
        config = SyntheticEvalConfig(
            n=100 if args.n is None else args.n,
            seed=args.seed,
            spec=args.spec,
            kinds=kinds,  # type: ignore[arg-type]  # checked by the config
            noise=args.noise,
            probe=args.probe,
            probe_images=args.probe_images,
            explainer=args.explainer,
            quantile=args.quantile,
            progress=not args.no_progress,
            through=args.through,
            address=args.address,
            llm=llm,
            generator=image_generator_of(args),
        )
        result = run_synthetic_eval(config)
    except ValueError as err:
        raise UserError(f"eval synthetic: {err}") from None
    if args.json:
        print(json.dumps(_json(config, result), indent=2))
        return 0
    source = f"spec {config.spec}" if config.spec else f"random, seed {config.seed}"
    print(
        f"{len(result.units)} synthetic units ({source}) on {result.n_images} probe images, "
        f"{result.n_concepts} concepts ({result.probe}); {config.explainer} explainer, quantile "
        f"{config.quantile:g}, noise {config.noise:g}; explained in {result.seconds:.2f}s"
    )
    if result.model is not None:
        accuracy = ", ".join(f"{a} {v:.3f}" for a, v in result.model.attribute_accuracy.items())
        print(
            f"through the model: layer units of the synthetic model over {result.model.attribute_net} "
            f"(held-out accuracy: {accuracy}), dissected on Ray in "
            f"{result.model.dissect_seconds:.1f}s (dissection {result.model.dissection_id}); "
            f"true formulas' mean IoU with the masks {result.model.mean_truth_iou:.3f}; "
            f"{result.model.beats_truth} misses fit the mask better than the truth (the "
            "attribute net's errors, not the explainer's)"
        )
    if result.model is not None and config.uses_llm:
        m = result.model
        print(
            f"{config.explainer} agents: {m.llm_requests} LLM requests ({m.llm_cached} from the "
            f"request cache), ${m.llm_cost_usd:.4f}; labels read back to formulas by the matcher"
        )
    if result.scorer:
        accuracy = ", ".join(f"{a} {v:.3f}" for a, v in result.scorer_accuracy.items())
        print(
            f"concept scores: the attribute net {result.scorer} stands in for the image-text "
            f"model (held-out accuracy: {accuracy}); its probabilities are what {config.explainer} "
            "matches"
            + (" (soft-WPMI)" if config.explainer == "clip" else " as per-image pseudo-attributes")
        )
    print(_table(result.summary, iou=config.explainer != "clip"))
    if result.reference:
        print("the offline explainer on the probe's true attributes, same units and activations:")
        print(_table(result.reference))
    if result.model is not None and result.model.predictive_auc:
        from coin_scale.concepts.synthetic import FORMULA_KINDS

        m = result.model
        shown = [k for k in (*FORMULA_KINDS, "all") if k in m.predictive_auc]
        print(
            f"predictive AUC on held-out rendered scenes through the model, median "
            f"({m.scored} of {len(result.units)} explanations scorable): "
            + ", ".join(
                f"{k} {m.predictive_auc[k]:.3f} (true formula {m.truth_auc.get(k, float('nan')):.3f})"
                for k in shown
            )
        )
        if m.interp_score:
            parts = ", ".join(f"{p} {v:.3f}" for p, v in m.interp_parts.items())
            print(
                "InterpScore (S, C, R; no human ratings), median: "
                + ", ".join(
                    f"{k} {m.interp_score[k]:.3f} (true formula "
                    f"{m.truth_interp_score.get(k, float('nan')):.3f})"
                    for k in shown
                    if k in m.interp_score
                )
                + f"; parts over all: {parts}"
            )
    return 0


def _llm_settings(args: argparse.Namespace) -> Any:
    """The LLM explainer settings of `eval synthetic` (None for the offline explainer)."""
    from coin_scale.explain.registry import get_explainer

    try:
        if not get_explainer(args.explainer).uses_llm:
            return None
    except ValueError:
        return None  # the config names the valid explainers
    from coin_scale.cache import cache_root
    from coin_scale.cli.common import llm_settings

    return llm_settings(args, args.explainer, args.llm_cache or str(cache_root() / "llm"))


def _table(summary: Any, *, iou: bool = True) -> str:
    """The kind rows as a text table; `iou` False prints '-' for the mean IoU (an explainer that
    names a concept without drawing a mask, `clip`)."""
    header = ("kind", "n", "exact", "same-images", "precision", "recall", "F1", "mean IoU")
    rows = [header] + [
        (
            row.kind,
            str(row.n),
            f"{row.exact:.3f}",
            f"{row.same_images:.3f}",
            f"{row.precision:.3f}",
            f"{row.recall:.3f}",
            f"{row.f1:.3f}",
            f"{row.mean_iou:.3f}" if iou else "-",
        )
        for row in summary
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _json(config: Any, result: Any) -> dict[str, Any]:
    return {
        "evaluation": "synthetic",
        "config": asdict(config),
        "probe": result.probe,
        "images": result.n_images,
        "concepts": result.n_concepts,
        "seconds": round(result.seconds, 4),
        **({"model": asdict(result.model)} if result.model is not None else {}),
        "summary": [asdict(row) for row in result.summary],
        **(
            {"scorer": result.scorer, "scorer_accuracy": result.scorer_accuracy,
             "reference": [asdict(row) for row in result.reference]}
            if result.scorer else {}
        ),  # fmt: skip
        "units": [
            {**asdict(score), "noise": unit.noise}
            for unit, score in zip(result.units, result.scores, strict=True)
        ],
    }
