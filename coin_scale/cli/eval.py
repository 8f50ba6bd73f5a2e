"""`coin-scale eval`: explainers against ground truth (synthetic units with known formulas)."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

DESCRIPTION = """\
Units whose activation is a formula's 0/1 indicator on the probe images plus Gaussian noise,
explained like neurons and scored against their formula: exact match, same probe images,
concept precision/recall/F1, per kind (mono, or, and, and_not). The activations come straight
from the probe set's ground-truth attributes (no model, no Ray).
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
    s.add_argument("--explainer", default="offline", help="offline (LLM explainers: later)")
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
    s.add_argument("--json", action="store_true", help="print JSON (summary and every unit)")
    s.add_argument("--no-progress", action="store_true", help="hide the rendering progress bar")
    s.set_defaults(func=run_synthetic)


def run_synthetic(args: argparse.Namespace) -> int:
    from coin_scale.errors import UserError
    from coin_scale.eval.run import SyntheticEvalConfig, run_synthetic_eval

    if args.spec is not None and args.n is not None:
        raise UserError("eval synthetic: give --n (random units) or --spec (a file), not both")
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    try:
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
    print(_table(result.summary))
    return 0


def _table(summary: Any) -> str:
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
            f"{row.mean_iou:.3f}",
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
        "summary": [asdict(row) for row in result.summary],
        "units": [
            {**asdict(score), "noise": unit.noise}
            for unit, score in zip(result.units, result.scores, strict=True)
        ],
    }
