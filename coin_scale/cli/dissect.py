"""`coin-scale dissect`: statistics and top-k exemplars of every unit of a layer."""

from __future__ import annotations

import argparse
import json

from coin_scale.cli.common import add_config_arg, add_model_args, add_warehouse_arg


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "dissect", help="dissect every unit of a layer over a probe set on Ray"
    )
    add_config_arg(parser)
    add_model_args(parser)
    parser.add_argument("--layer", required=True, help="layer to dissect (`coin-scale layers`)")
    parser.add_argument("--probe", required=True, help="folder of images, searched recursively")
    add_warehouse_arg(parser)
    parser.add_argument("--top-k", type=int, default=16, help="exemplars kept per unit")
    parser.add_argument("--quantile", type=float, default=0.99, help="threshold quantile")
    parser.add_argument("--reduction", choices=["max", "mean"], default="max",
                        help="spatial reduction of a unit's map to one value per image")  # fmt: skip
    parser.add_argument("--units", choices=["neuron", "sae"], default="neuron",
                        help="neuron: the layer's channels; sae: the latents of --sae")  # fmt: skip
    parser.add_argument("--sae", default=None, metavar="PATH",
                        help="SAE checkpoint of this layer (train-sae --out); needs --units sae")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--replicas", type=int, default=None,
                        help="model replicas (default: one per GPU, else one using all cores)")  # fmt: skip
    parser.add_argument("--address", default=None,
                        help="Ray address: none starts a local Ray; auto or ray://host:10001 joins")  # fmt: skip
    parser.add_argument("--run-id", default=None, help="name of this run in the runs table")
    parser.add_argument("--force", action="store_true", help="recompute even if cached")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from coin_scale.dissect.config import DissectConfig
    from coin_scale.dissect.pipeline import dissect
    from coin_scale.errors import UserError

    try:
        config = DissectConfig(
            model=args.model, weights=args.weights, seed=args.seed, layer=args.layer,
            probe=args.probe, warehouse=args.warehouse, top_k=args.top_k, quantile=args.quantile,
            reduction=args.reduction, batch_size=args.batch_size, replicas=args.replicas,
            address=args.address, force=args.force, run_id=args.run_id, units=args.units,
            sae=args.sae,
        )  # fmt: skip
    except ValueError as err:
        raise UserError(str(err)) from None
    result = dissect(config, progress=not args.no_progress)
    summary = {
        "dissection_id": result.dissection_id, "run_id": result.run_id, "cached": result.cached,
        "model": result.model, "layer": result.layer, "units": result.n_units,
        "images": result.n_images, "unreadable": result.n_failed,
        "seconds": round(result.seconds, 2),
        "images_per_s": None if result.cached else round(result.images_per_second, 1),
        "startup_s": round(result.startup_seconds, 2),
        "warehouse": args.warehouse,
    }  # fmt: skip
    if args.json:
        print(json.dumps(summary))
        return 0
    if result.cached:
        print(f"reused cached dissection {result.dissection_id} (run {result.run_id}); --force recomputes")
    else:
        what = "SAE latents" if args.units == "sae" else "units"
        print(
            f"dissected {result.n_units} {what} of {result.model}/{result.layer} over "
            f"{result.n_images} images ({result.n_failed} unreadable) in {result.seconds:.1f}s "
            f"({result.images_per_second:.1f} img/s)"
        )
    print(f"warehouse: {args.warehouse}  (try: coin-scale query --warehouse {args.warehouse} "
          f"\"SELECT * FROM unit_stats ORDER BY threshold DESC LIMIT 5\")")  # fmt: skip
    return 0
